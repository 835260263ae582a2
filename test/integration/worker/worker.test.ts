/**
 * `shardline work` as separate processes of the built CLI, on a generated model with the real
 * Qwen tokenizer: parallel workers, a worker killed mid-shard, a graceful shutdown, doorbells.
 * The user's promise: every expected sample is in the outputs exactly once.
 */
import { Firestore } from '@google-cloud/firestore';
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { GcsBlobStore } from '../../../core/blob/gcs';
import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { FirestoreLedger } from '../../../core/ledger/firestore';
import type { Ledger } from '../../../core/ledger/ledger';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { MESSAGE_VERSION, encodeMessage } from '../../../core/messages';
import { cli } from '../../support/cli';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { pullAll, topicWithSubscription } from '../../support/pubsub';
import { makeTempDir } from '../../support/tmp';
import {
  arcJsonl,
  createArgs,
  collectSamples,
  expectedSampleIds,
  makeModel,
  spawnWorker,
  waitFor,
} from '../../support/worker-fixtures';

const { projectId } = emulatorEnv();
const storage = new Storage({ projectId });
const pubsub = new PubSub({ projectId });
const bucket = 'shardline-worker-it';
const env = { ...process.env, SHARDLINE_LOG_FORMAT: 'json' };
const cliEnv = Object.fromEntries(
  Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined),
);
const { dir, cleanup } = makeTempDir('worker-it');
let model: string;

beforeAll(() => {
  model = makeModel(path.join(dir, 'model'));
});
afterAll(async () => {
  cleanup();
  await pubsub.close();
});

const P = 2; // predictions per task: two augmentations of each test input
const common = () => ['--model_path', model, '--predictions_per_task', String(P)];

async function localDataset(name: string, tasks: number, shards: number): Promise<string> {
  const input = path.join(dir, `${name}.jsonl`);
  writeFileSync(input, arcJsonl(tasks));
  const out = path.join(dir, name);
  const run = await cli(createArgs(input, out, shards, '--chunk_size_mb', '0.002'), {
    cwd: dir,
    env: cliEnv,
  });
  expect(run.code).toBe(0);
  return out;
}

async function gcsDataset(
  prefix: string,
  tasks: number,
  shards: number,
  root: string,
): Promise<string> {
  const store = new GcsBlobStore(storage, bucket, prefix);
  await store.writeAll('incoming/tasks.jsonl', arcJsonl(tasks, 2));
  const uri = `gs://${bucket}/${prefix}/datasets/ds`;
  const run = await cli(
    createArgs(
      `gs://${bucket}/${prefix}/incoming/tasks.jsonl`,
      uri,
      shards,
      '--dataset_id',
      'ds',
      '--firestore_root',
      root,
    ),
    { cwd: dir, env: cliEnv },
  );
  expect([run.code, run.stderr]).toEqual([0, expect.any(String)]);
  return uri;
}

async function expectExactlyOnce(
  output: LocalBlobStore | GcsBlobStore,
  tasks: number,
  shards: number,
): Promise<void> {
  const { ids, manifests } = await collectSamples(output, shards);
  expect(ids.length).toBe(new Set(ids).size); // no sample twice
  expect([...ids].sort()).toEqual(expectedSampleIds(tasks, P)); // none missing
  expect(manifests.reduce((n, m) => n + m.samples, 0)).toBe(tasks * P);
}

test('three workers, six shards, a local dataset: every shard completed, every sample exactly once', async () => {
  const ds = await localDataset('three-local', 30, 6);
  const workers = ['a', 'b', 'c'].map((w) =>
    spawnWorker(
      ['--sharded_dataset_dir', ds, ...common(), '--part_size_mb', '0.05', '--worker_id', `w-${w}`],
      env,
      dir,
    ),
  );
  const codes = await Promise.all(workers.map((w) => w.exited));
  expect(codes).toEqual([0, 0, 0]);
  const ledger = SqliteLedger.open(path.join(ds, 'ledger.sqlite'), { clock: systemClock });
  try {
    const status = await ledger.status('three-local');
    expect(status.totals).toMatchObject({ shards: 6, completed: 6, attempts: 0 });
    // The work was shared: more than one worker completed shards.
    expect(new Set(status.shards.map((s) => s.assigned_to)).size).toBeGreaterThan(1);
  } finally {
    await ledger.close();
  }
  await expectExactlyOnce(new LocalBlobStore(path.join(ds, 'activations')), 30, 6);
  const manifest = JSON.parse(
    (await new LocalBlobStore(path.join(ds, 'activations')).readAll('_MANIFEST.json')).toString(),
  ) as { num_shards: number; samples: number };
  expect(manifest).toMatchObject({ num_shards: 6, samples: 30 * P });
});

test('three workers, six shards, a gs:// dataset on the Firestore ledger: same promise', async () => {
  const prefix = uniqueName('wk');
  const root = `${prefix}-datasets`;
  const uri = await gcsDataset(prefix, 24, 6, root);
  const workers = ['a', 'b', 'c'].map((w) =>
    spawnWorker(
      [
        '--sharded_dataset_dir',
        uri,
        ...common(),
        '--firestore_root',
        root,
        '--worker_id',
        `g-${w}`,
      ],
      env,
      dir,
    ),
  );
  expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0, 0]);
  const ledger = new FirestoreLedger(new Firestore({ projectId }), {
    clock: systemClock,
    root,
    closeClient: true,
  });
  try {
    expect((await ledger.status('ds')).totals).toMatchObject({ shards: 6, completed: 6 });
  } finally {
    await ledger.close();
  }
  await expectExactlyOnce(
    new GcsBlobStore(storage, bucket, `${prefix}/datasets/ds/activations`),
    24,
    6,
  );
});

test('a worker killed with SIGKILL mid-shard: another takes over after the lease expires and resumes from the last committed part', async () => {
  const ds = await localDataset('killed', 30, 1);
  const tiny = ['--part_size_mb', '0.0001', '--lease_seconds', '3']; // one task per part
  const ledger: Ledger = SqliteLedger.open(path.join(ds, 'ledger.sqlite'), { clock: systemClock });
  try {
    const a = spawnWorker(
      ['--sharded_dataset_dir', ds, ...common(), ...tiny, '--worker_id', 'victim'],
      env,
      dir,
    );
    await waitFor(
      'three committed parts',
      async () => ((await ledger.getShard('killed', 0))?.parts_committed ?? 0) >= 3,
    );
    a.child.kill('SIGKILL');
    expect(await a.exited).toBe('SIGKILL');
    const before = await ledger.getShard('killed', 0);
    expect(before).toMatchObject({ status: 'in_use', assigned_to: 'victim' });

    const b = spawnWorker(
      [
        '--sharded_dataset_dir',
        ds,
        ...common(),
        ...tiny,
        '--worker_id',
        'rescuer',
        '--follow',
        '--poll_seconds',
        '0.3',
        '--max_shards',
        '1',
        // What this checks is the takeover once the lease expires; a worker that may split
        // would take the tail of the dead holder's unit instead and leave the rest to expire.
        '--split',
        'off',
      ],
      env,
      dir,
    );
    expect(await b.exited).toBe(0);
    const after = await ledger.getShard('killed', 0);
    // The victim committed parts before its lease ran out: no attempt is counted against the
    // shard (a killed worker is no evidence against it).
    expect(after).toMatchObject({ status: 'completed', assigned_to: 'rescuer', attempts: 0 });
    expect(after!.epoch).toBeGreaterThan(before!.epoch);

    const parts = await ledger.listParts({ dataset_id: 'killed', shard_id: 0 });
    const byVictim = parts.filter((p) => p.worker_id === 'victim');
    expect(byVictim.length).toBeGreaterThanOrEqual(before!.parts_committed);
    expect(parts.some((p) => p.worker_id === 'rescuer')).toBe(true);
    // Contiguous: each part starts where the previous ended, from the first task to the last.
    parts.forEach((p, i) =>
      expect(p.first_task_index).toBe(i === 0 ? 0 : parts[i - 1]!.next_task_index),
    );
    expect(parts.at(-1)!.next_task_index).toBe(30);
    await expectExactlyOnce(new LocalBlobStore(path.join(ds, 'activations')), 30, 1);
    expect(b.stderr()).toContain('resuming after the last committed part');
  } finally {
    await ledger.close();
  }
});

test('SIGTERM while the ledger is unreachable: the process still exits soon after the grace period, saying why', async () => {
  const ds = await localDataset('unreachable', 4, 1);
  // Nothing listens on port 9: every Firestore call retries until its own deadline.
  const w = spawnWorker(
    [
      '--sharded_dataset_dir',
      ds,
      '--ledger',
      'firestore',
      ...common(),
      '--follow',
      '--grace_seconds',
      '1',
      '--worker_id',
      'cut-off',
    ],
    { ...env, FIRESTORE_EMULATOR_HOST: '127.0.0.1:9' },
    dir,
  );
  await waitFor('the worker to start', () =>
    Promise.resolve(w.stderr().includes('tokenizer loaded')),
  );
  w.child.kill('SIGTERM');
  expect(await w.exited).toBe(130);
  expect(w.stderr()).toContain('the worker did not exit in time after the signal');
});

test('SIGTERM: the worker releases its shard at once (no attempt counted) and exits 0', async () => {
  const ds = await localDataset('sigterm', 40, 1);
  const ledger = SqliteLedger.open(path.join(ds, 'ledger.sqlite'), { clock: systemClock });
  try {
    const w = spawnWorker(
      [
        '--sharded_dataset_dir',
        ds,
        ...common(),
        '--part_size_mb',
        '0.0001',
        '--worker_id',
        'spot-vm',
      ],
      env,
      dir,
    );
    await waitFor(
      'a committed part',
      async () => ((await ledger.getShard('sigterm', 0))?.parts_committed ?? 0) >= 1,
    );
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    const s = await ledger.getShard('sigterm', 0);
    expect(s).toMatchObject({
      status: 'available',
      assigned_to: null,
      attempts: 0,
      lease_expires_at: null,
    });
    expect(s!.parts_committed).toBeGreaterThanOrEqual(1); // kept: the next worker resumes after them
    expect(w.stdout()).toContain('1 released at shutdown');
  } finally {
    await ledger.close();
  }
});

test('doorbells: an idle worker wakes on a shard.available message; a lost doorbell is covered by polling', async () => {
  const prefix = uniqueName('bell');
  const root = `${prefix}-datasets`;
  const uri = await gcsDataset(prefix, 8, 2, root);
  const work = await topicWithSubscription(pubsub, `${prefix}-work`);
  const events = await topicWithSubscription(pubsub, `${prefix}-events`);
  const flags = [
    '--firestore_root',
    root,
    '--events_topic',
    events.topic,
    '--work_topic',
    work.topic,
    '--subscription',
    work.subscription,
  ];

  // 1. A worker that knows no dataset and would not poll for 10 minutes: only the doorbell can wake it.
  const idle = spawnWorker(
    [
      ...common(),
      ...flags,
      '--follow',
      '--poll_seconds',
      '600',
      '--max_shards',
      '1',
      '--worker_id',
      'sleeper',
    ],
    env,
    dir,
  );
  const bell = encodeMessage({
    type: 'shard.available',
    version: MESSAGE_VERSION,
    dataset_id: 'ds',
    shard_id: 1,
    dataset_uri: uri,
    reason: 'ingest',
    published_at: new Date().toISOString(),
  });
  await pubsub.topic(work.topic).publishMessage(bell);
  expect(await idle.exited).toBe(0);
  const ledger = new FirestoreLedger(new Firestore({ projectId }), {
    clock: systemClock,
    root,
    closeClient: true,
  });
  try {
    expect(await ledger.getShard('ds', 1)).toMatchObject({
      status: 'completed',
      assigned_to: 'sleeper',
    });
    expect(await ledger.getShard('ds', 0)).toMatchObject({ status: 'available' });
    const completed = (await pullAll(projectId, events.topic, events.subscription)).map(
      (m) => m.json,
    );
    expect(completed).toEqual([
      expect.objectContaining({
        type: 'shard.completed',
        dataset_id: 'ds',
        shard_id: 1,
        worker_id: 'sleeper',
      }),
    ]);

    // 2. Shard 0 is held by someone whose lease runs out, and no doorbell will ever ring for it.
    const holder = await ledger.claim('ds', 'crashed-holder', {
      preferredShardId: 0,
      leaseMs: 2000,
    });
    expect(holder?.shard_id).toBe(0);
    const poller = spawnWorker(
      [
        '--sharded_dataset_dir',
        uri,
        ...common(),
        ...flags,
        '--follow',
        '--poll_seconds',
        '0.5',
        '--max_shards',
        '1',
        // What this checks is the poll finding the expired lease; a worker that may split
        // would take the tail of the held shard instead of waiting for it.
        '--split',
        'off',
        '--worker_id',
        'poller',
      ],
      env,
      dir,
    );
    expect(await poller.exited).toBe(0);
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'completed',
      assigned_to: 'poller',
      attempts: 1,
    });
  } finally {
    await ledger.close();
  }
  await expectExactlyOnce(
    new GcsBlobStore(storage, bucket, `${prefix}/datasets/ds/activations`),
    8,
    2,
  );
});

test('a chunk changed after create: its shard fails at once with the checksum reason, the others complete, and work exits 8', async () => {
  const ds = await localDataset('corrupt', 9, 3);
  // One byte of shard 1's first chunk, changed in place (same length: only its CRC32C can tell).
  const chunk = path.join(ds, 'shard_001', 'chunk_0000.jsonl');
  const bytes = readFileSync(chunk);
  bytes[bytes.indexOf('"test"') + 1] = 'T'.charCodeAt(0);
  writeFileSync(chunk, bytes);
  const w = spawnWorker(['--sharded_dataset_dir', ds, ...common()], env, dir);
  expect(await w.exited).toBe(8);
  expect(w.stdout()).toMatch(/shard 1 of corrupt is failed for good: CORRUPT: chunk .*is corrupt/);
  const status = await cli(['status', '--dataset_dir', ds, '--json'], { cwd: dir, env: cliEnv });
  const shards = (JSON.parse(status.stdout) as { shards: Array<Record<string, unknown>> }).shards;
  expect(shards.map((s) => [s.shard_id, s.status, s.attempts])).toEqual([
    [0, 'completed', 0],
    [1, 'failed', 1],
    [2, 'completed', 0],
  ]);
  expect(String(shards[1]!.last_error)).toMatch(/crc32c/);
});
