/**
 * `shardline create` from and to Cloud Storage (the emulator) makes the same dataset, byte
 * for byte, as from and to local disk.
 */
import { Firestore } from '@google-cloud/firestore';
import { Storage } from '@google-cloud/storage';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';

import { GcsBlobStore } from '../../../core/blob/gcs';
import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { FirestoreLedger } from '../../../core/ledger/firestore';
import { EXIT } from '../../../cli/exit-codes';
import { cli } from '../../support/cli';
import { readAndCheckDataset } from '../../support/dataset-check';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { generateJsonl } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';

const { projectId } = emulatorEnv();
const storage = new Storage({ projectId });
const bucket = 'shardline-it';
const env = Object.fromEntries(
  Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined),
);

const { dir, cleanup } = makeTempDir('gcs-create');
afterAll(cleanup);

test('gs:// in and out gives the byte-identical dataset of a local run', async () => {
  const prefix = uniqueName('create');
  const { input } = generateJsonl(11, {
    lines: 2500,
    blankRate: 0.05,
    badRate: 0.03,
    crlfRate: 0.2,
    bigChance: 0.01,
  });
  writeFileSync(path.join(dir, 'tasks.jsonl'), input);
  const inputStore = new GcsBlobStore(storage, bucket, prefix);
  await inputStore.writeAll('incoming/tasks.jsonl', input);

  // One dataset id for both runs, and a Firestore root of this test's own for the gs:// one.
  const flags = ['--num_shards', '5', '--chunk_size_mb', '0.05', '--dataset_id', 'tasks'];
  const gsFlags = [...flags, '--firestore_root', `${prefix}-datasets`];
  const local = await cli(
    ['create', '--input_file', 'tasks.jsonl', '--output_dir', 'local', ...flags],
    { cwd: dir, env },
  );
  expect(local.code).toBe(EXIT.OK);
  const remote = await cli(
    [
      'create',
      '--input_file',
      `gs://${bucket}/${prefix}/incoming/tasks.jsonl`,
      '--output_dir',
      `gs://${bucket}/${prefix}/datasets/local`,
      ...gsFlags,
    ],
    { cwd: dir, env },
  );
  expect([remote.code, remote.stderr]).toEqual([EXIT.OK, expect.any(String)]);
  // A gs:// dataset is registered in the Firestore ledger.
  const firestore = new Firestore({ projectId });
  const ledger = new FirestoreLedger(firestore, {
    clock: systemClock,
    root: `${prefix}-datasets`,
    closeClient: true,
  });
  try {
    const status = await ledger.status('tasks');
    expect(status.totals).toMatchObject({ shards: 5, available: 5 });
    expect(status.dataset.dataset_uri).toBe(`gs://${bucket}/${prefix}/datasets/local`);
  } finally {
    await ledger.close();
  }

  const a = await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'local')));
  const b = await readAndCheckDataset(
    new GcsBlobStore(storage, bucket, `${prefix}/datasets/local`),
  );
  expect([...b.files.keys()]).toEqual([...a.files.keys()]);
  for (const [key, bytes] of a.files)
    expect({ key, same: b.files.get(key)?.equals(bytes) }).toEqual({ key, same: true });
  expect(b.shards).toEqual(a.shards);
  const { created_at: _a, source: sa, ...ma } = a.master;
  const { created_at: _b, source: sb, ...mb } = b.master;
  expect(mb).toEqual(ma);
  expect(sb).toMatchObject({
    bytes: sa.bytes,
    crc32c: sa.crc32c,
    gzip: false,
    uri: `gs://${bucket}/${prefix}/incoming/tasks.jsonl`,
  });
  expect(sb.generation).toMatch(/^\d+$/);
  const rejectedLocal = readFileSync(path.join(dir, 'local/rejected.jsonl'));
  const rejectedRemote = await new GcsBlobStore(
    storage,
    bucket,
    `${prefix}/datasets/local`,
  ).readAll('rejected.jsonl');
  expect(rejectedRemote.equals(rejectedLocal)).toBe(true);

  // Re-running the same create on Cloud Storage changes nothing.
  const again = await cli(
    [
      'create',
      '--input_file',
      `gs://${bucket}/${prefix}/incoming/tasks.jsonl`,
      '--output_dir',
      `gs://${bucket}/${prefix}/datasets/local`,
      ...gsFlags,
    ],
    { cwd: dir, env },
  );
  expect([again.code, again.stdout]).toEqual([
    EXIT.OK,
    expect.stringContaining('already up to date'),
  ]);
});

test('a .jsonl.gz object is read through gunzip', async () => {
  const prefix = uniqueName('gz');
  const { input, tasks } = generateJsonl(12, { lines: 300 });
  const store = new GcsBlobStore(storage, bucket, prefix);
  await store.writeAll('incoming/t.jsonl.gz', gzipSync(input));
  const run = await cli(
    [
      'create',
      '--input_file',
      `gs://${bucket}/${prefix}/incoming/t.jsonl.gz`,
      '--output_dir',
      `gs://${bucket}/${prefix}/out`,
      '--json',
    ],
    {
      cwd: dir,
      env,
    },
  );
  expect(run.code).toBe(EXIT.OK);
  const back = await readAndCheckDataset(new GcsBlobStore(storage, bucket, `${prefix}/out`));
  expect(back.tasks.map(String)).toEqual(tasks.map(String));
});
