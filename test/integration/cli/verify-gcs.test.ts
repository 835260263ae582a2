/**
 * `shardline verify` over Cloud Storage (the emulator): a local dataset whose worker wrote its
 * parts to `gs://` (`work --output_dir`) verifies clean; a part rewritten with one byte changed
 * and a deleted index object are found, named by their gs:// URIs.
 */
import { Storage } from '@google-cloud/storage';
import * as path from 'node:path';

import { EXIT } from '../../../cli/exit-codes';
import type { VerifyReport } from '../../../cli/verify-report';
import { GcsBlobStore } from '../../../core/blob/gcs';
import { cli } from '../../support/cli';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { createDataset, extract, mixedTaskLines } from '../../support/extracted';
import { makeTempDir } from '../../support/tmp';
import { makeModel } from '../../support/worker-fixtures';

jest.setTimeout(180_000);

const { projectId } = emulatorEnv();
const storage = new Storage({ projectId });
const bucket = 'shardline-it';
const env = Object.fromEntries(
  Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined),
);

const { dir: root, cleanup } = makeTempDir('verify-gcs');
afterAll(cleanup);

test('verify reads parts from gs://, passes them clean and names damaged objects by URI', async () => {
  const prefix = `${uniqueName('verify')}/activations`;
  const outputs = `gs://${bucket}/${prefix}`;
  const model = makeModel(path.join(root, 'model'));
  const dataset = await createDataset(root, 'dataset', mixedTaskLines());
  const run = await extract(root, dataset, model, '--layers', '0,1', '--output_dir', outputs);
  expect([run.code, run.code === 0 ? '' : run.stderr]).toEqual([0, '']);

  const verify = async (): Promise<{ code: number; report: VerifyReport }> => {
    const r = await cli(
      ['verify', '--dataset_dir', dataset, '--output_dir', outputs, '--json', '--recompute_stats'],
      { cwd: root, env },
    );
    return { code: r.code, report: JSON.parse(r.stdout) as VerifyReport };
  };
  const clean = await verify();
  expect(clean.report.problems).toEqual([]);
  expect(clean.code).toBe(EXIT.OK);
  expect(clean.report.output_dir).toBe(outputs);
  expect(clean.report.totals.files).toBeGreaterThanOrEqual(4);
  expect(clean.report.bytes_read).toBe(clean.report.totals.bytes);

  const store = new GcsBlobStore(storage, bucket, prefix);
  const part = 'shard_001/part_00000.safetensors';
  const bytes = await store.readAll(part);
  bytes[bytes.length - 7] = bytes[bytes.length - 7]! ^ 0x10;
  await store.writeAll(part, bytes);
  await store.delete('shard_000/part_00001.index.jsonl');

  const damaged = await verify();
  expect(damaged.code).toBe(EXIT.VERIFY_FAILED);
  expect(damaged.report.problems).toContainEqual(
    expect.objectContaining({ uri: `${outputs}/${part}`, kind: 'checksum' }),
  );
  expect(damaged.report.problems).toContainEqual(
    expect.objectContaining({ uri: `${outputs}/${part}`, kind: 'stats' }),
  );
  expect(damaged.report.problems).toContainEqual(
    expect.objectContaining({
      uri: `${outputs}/shard_000/part_00001.index.jsonl`,
      kind: 'missing',
    }),
  );
});
