/**
 * The upload-triggered ingest against the emulators and the Functions Framework test server:
 * the dataset appears in the bucket (byte-identical to a local create), the ledger holds its
 * shards, and the workers' subscription receives one doorbell per shard, exactly once.
 */
import { Firestore } from '@google-cloud/firestore';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';
import request from 'supertest';

import '../../../functions/index';
import { GcsBlobStore } from '../../../core/blob/gcs';
import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import type { IngestRecord } from '../../../core/ingest/records';
import { silentLogger } from '../../../core/log';
import { createDataset } from '../../../core/split/create-dataset';
import { sourceFromStore } from '../../../core/split/source';
import { SHARDLINE_VERSION } from '../../../core/version';
import { cli } from '../../support/cli';
import { readAndCheckDataset } from '../../support/dataset-check';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import type { World } from '../../support/functions-world';
import { captureLogs, closeWorld, deliver, makeWorld } from '../../support/functions-world';
import { generateJsonl } from '../../support/jsonl-gen';
import { finalizedCloudEvent, pullAll } from '../../support/pubsub';
import { makeTempDir } from '../../support/tmp';

const { projectId } = emulatorEnv();
const storage = new Storage({ projectId });
const pubsub = new PubSub({ projectId });
const firestore = new Firestore({ projectId });
const { dir, cleanup } = makeTempDir('fn-ingest');
const cliEnv = Object.fromEntries(
  Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined),
);
afterAll(async () => {
  cleanup();
  await pubsub.close();
  await firestore.terminate();
});

let world: World;

afterEach(() => closeWorld(world));

async function upload(
  name: string,
  data: Buffer,
  metadata?: Record<string, string>,
): Promise<{ name: string; generation: string; size: number }> {
  const store = new GcsBlobStore(storage, world.bucket, '');
  const info = await store.writeAll(name, data);
  return { name, generation: info.generation, size: info.size, ...(metadata ? { metadata } : {}) };
}

async function postFinalized(
  obj: { name: string; generation: string; size: number; metadata?: Record<string, string> },
  id: string,
): Promise<void> {
  await request(getTestServer('ingest'))
    .post('/')
    .set('Content-Type', 'application/cloudevents+json')
    .send(JSON.stringify(finalizedCloudEvent({ bucket: world.bucket, ...obj }, id)))
    .expect(204);
}

async function recordsOf(object: string): Promise<IngestRecord[]> {
  const snap = await firestore
    .collection(`${world.ns}-ingests`)
    .where('object', '==', object)
    .get();
  return snap.docs.map((d) => d.data() as IngestRecord);
}

/** The dataset a local `create` makes of the same bytes. */
async function localDataset(
  input: Buffer,
  datasetId: string,
  numShards: number,
  chunkSizeMb: number,
) {
  const root = `${dir}/${uniqueName('local')}`;
  const store = new LocalBlobStore(root);
  await store.writeAll('in.jsonl', input);
  await createDataset({
    source: await sourceFromStore(store, 'in.jsonl'),
    output: new LocalBlobStore(`${root}/ds`),
    datasetId,
    numShards,
    chunkSizeMb,
    strict: false,
    clock: systemClock,
    log: silentLogger,
    createdBy: `shardline ${SHARDLINE_VERSION}`,
    creator: { host: 'test', pid: 1 },
  });
  return readAndCheckDataset(new LocalBlobStore(`${root}/ds`));
}

async function expectSameDataset(record: IngestRecord, input: Buffer): Promise<void> {
  const cloud = await readAndCheckDataset(
    new GcsBlobStore(storage, world.bucket, `datasets/${record.dataset_id}`),
  );
  const local = await localDataset(
    input,
    record.dataset_id,
    record.num_shards,
    record.chunk_size_mb,
  );
  expect([...cloud.files.keys()]).toEqual([...local.files.keys()]);
  for (const [key, bytes] of local.files)
    expect({ key, same: cloud.files.get(key)?.equals(bytes) }).toEqual({ key, same: true });
  expect(cloud.shards).toEqual(local.shards);
  const { created_at: _c, source: cs, ...cm } = cloud.master;
  const { created_at: _l, source: ls, ...lm } = local.master;
  expect(cm).toEqual(lm);
  expect(cs).toMatchObject({
    bytes: ls.bytes,
    crc32c: ls.crc32c,
    uri: `gs://${world.bucket}/${record.object}`,
    generation: record.generation,
  });
}

function doorbellsOf(
  pulled: Array<{ json: unknown }>,
): Array<{ dataset_id: string; shard_id: number; reason: string }> {
  return pulled
    .map((m) => m.json as { dataset_id: string; shard_id: number; reason: string })
    .sort((a, b) => a.shard_id - b.shard_id);
}

test('an upload becomes a dataset: files equal a local create, shards in the ledger, one doorbell per shard', async () => {
  world = await makeWorld(projectId, pubsub);
  const { input } = generateJsonl(21, {
    lines: 400,
    blankRate: 0.05,
    badRate: 0.05,
    crlfRate: 0.1,
  });
  const obj = await upload('incoming/arc tasks.jsonl', input);
  await postFinalized(obj, 'evt-1');

  const [record] = await recordsOf(obj.name);
  expect(record).toMatchObject({
    state: 'completed',
    phase: 'done',
    mode: 'direct',
    version: 1,
    num_shards: 4,
  });
  expect(record!.dataset_id).toMatch(/^arc-tasks-[0-9a-f]{8}$/);
  await expectSameDataset(record!, input);

  const status = await world.deps.ledger.status(record!.dataset_id);
  expect(status.totals).toMatchObject({ shards: 4, available: 4 });
  expect(status.dataset.dataset_uri).toBe(`gs://${world.bucket}/datasets/${record!.dataset_id}`);

  // `shardline status` on the dataset shows the ledger and the ingest that made it.
  const cliFlags = [
    '--firestore_root',
    world.collections.datasets,
    '--ingests_collection',
    world.collections.ingests,
  ];
  const status2 = await cli(['status', '--dataset_dir', record!.dataset_uri, ...cliFlags], {
    cwd: dir,
    env: cliEnv,
  });
  expect(status2.code).toBe(0);
  expect(status2.stdout).toContain(`Dataset ${record!.dataset_id}: available`);
  expect(status2.stdout).toContain('Ingest: completed');

  const bells = doorbellsOf(await pullAll(projectId, world.topics.work, world.subs.work));
  expect(bells).toEqual(
    [0, 1, 2, 3].map(
      (k) =>
        expect.objectContaining({
          dataset_id: record!.dataset_id,
          shard_id: k,
          reason: 'ingest',
        }) as unknown,
    ),
  );
});

test('the same event delivered three times: one dataset, one set of doorbells', async () => {
  world = await makeWorld(projectId, pubsub);
  const { input } = generateJsonl(22, { lines: 120 });
  const obj = await upload('incoming/dup.jsonl', input);
  for (let i = 0; i < 3; i++) await postFinalized(obj, 'evt-same');
  const records = await recordsOf(obj.name);
  expect(records).toHaveLength(1);
  expect(records[0]).toMatchObject({ state: 'completed', version: 1 });
  expect(
    doorbellsOf(await pullAll(projectId, world.topics.work, world.subs.work)).map(
      (b) => b.shard_id,
    ),
  ).toEqual([0, 1, 2, 3]);
  const datasets = await firestore.collection(`${world.ns}-datasets`).get();
  expect(datasets.size).toBe(1);
});

test('a re-upload under the same name becomes a new version, never touching the first dataset', async () => {
  world = await makeWorld(projectId, pubsub);
  const first = await upload('incoming/again.jsonl', generateJsonl(23, { lines: 50 }).input);
  await postFinalized(first, 'evt-a');
  const second = await upload('incoming/again.jsonl', generateJsonl(24, { lines: 60 }).input);
  await postFinalized(second, 'evt-b');
  const records = (await recordsOf('incoming/again.jsonl')).sort((a, b) => a.version - b.version);
  expect(records.map((r) => [r.version, r.state])).toEqual([
    [1, 'completed'],
    [2, 'completed'],
  ]);
  expect(records[1]!.dataset_id).toBe(`${records[0]!.dataset_id}-v2`);
  const v1 = await readAndCheckDataset(
    new GcsBlobStore(storage, world.bucket, `datasets/${records[0]!.dataset_id}`),
  );
  expect(v1.master.total_tasks).toBe(50);
});

test('each kind of unusable object gets its own recorded outcome', async () => {
  world = await makeWorld(projectId, pubsub);
  const outside = await upload('elsewhere/x.jsonl', Buffer.from('{"a":1}\n'));
  const wrongExt = await upload('incoming/x.csv', Buffer.from('a,b\n'));
  const empty = await upload('incoming/empty.jsonl', Buffer.alloc(0));
  const invalid = await upload(
    'incoming/bad.jsonl',
    Buffer.from('[1]\nnot json\n{"unterminated":\n'),
  );
  const badMeta = await upload('incoming/meta.jsonl', Buffer.from('{"a":1}\n'), {
    'shardline-num-shards': 'many',
  });
  for (const [i, o] of [outside, wrongExt, empty, invalid, badMeta].entries())
    await postFinalized(o, `evt-${i}`);

  // Ignored objects leave no record at all.
  expect(await recordsOf(outside.name)).toEqual([]);
  expect(await recordsOf(wrongExt.name)).toEqual([]);
  const [e] = await recordsOf(empty.name);
  expect(e).toMatchObject({
    state: 'failed',
    error: expect.stringContaining('is empty: no task to shard') as unknown,
  });
  const [b] = await recordsOf(invalid.name);
  expect(b).toMatchObject({
    state: 'failed',
    error: expect.stringContaining('holds no valid task (3 lines: 0 blank, 3 rejected') as unknown,
    bad_line: { line: 1, reason: 'not a JSON object: the line is an array', preview: '[1]' },
  });
  const [m] = await recordsOf(badMeta.name);
  expect(m).toMatchObject({
    state: 'failed',
    error: expect.stringContaining('shardline-num-shards="many"') as unknown,
  });
  // `shardline status` and `shardline ingests` say what went wrong, and where.
  const cliFlags = ['--ingests_collection', world.collections.ingests];
  const st = await cli(['status', '--dataset_dir', b!.dataset_uri, ...cliFlags], {
    cwd: dir,
    env: cliEnv,
  });
  expect(st.code).toBe(3);
  expect(st.stdout).toContain('Ingest: FAILED');
  expect(st.stdout).toContain(
    'first bad line: line 1: not a JSON object: the line is an array: [1]',
  );
  const list = await cli(['ingests', '--bucket', world.bucket, ...cliFlags], {
    cwd: dir,
    env: cliEnv,
  });
  expect(list.code).toBe(0);
  expect(list.stdout).toContain(`gs://${world.bucket}/incoming/bad.jsonl`);
  expect(list.stdout.match(/failed/g)?.length).toBeGreaterThanOrEqual(3);

  // None of them registered a dataset, left one in the bucket, rang a doorbell or started a
  // fanned-out step (each topic is read up to a marker published after the events).
  expect((await firestore.collection(world.collections.datasets).get()).size).toBe(0);
  const [files] = await storage.bucket(world.bucket).getFiles({ prefix: 'datasets/' });
  expect(files.map((f) => f.name)).toEqual([]);
  expect(await pullAll(projectId, world.topics.work, world.subs.work)).toEqual([]);
  expect(await pullAll(projectId, world.topics.ingest, world.subs.ingest)).toEqual([]);
});

test('an event without data, or of another type, is acknowledged and ignored', async () => {
  world = await makeWorld(projectId, pubsub);
  await request(getTestServer('ingest'))
    .post('/')
    .set('Content-Type', 'application/json')
    .send('{}')
    .expect(204);
  await request(getTestServer('ingest'))
    .post('/')
    .set('Content-Type', 'application/cloudevents+json')
    .send(
      JSON.stringify({
        specversion: '1.0',
        type: 'google.cloud.storage.object.v1.finalized',
        source: 'x',
        id: 'e',
        data: { bucket: 'b' },
      }),
    )
    .expect(204);
  expect(await firestore.collection(`${world.ns}-ingests`).get()).toHaveProperty('size', 0);
});

test('the large-file path (forced with a tiny budget) gives the same dataset as the direct path', async () => {
  // Everything fans out: 3 KB scan ranges, and every shard write stops at each chunk boundary.
  world = await makeWorld(projectId, pubsub, {
    SHARDLINE_DIRECT_MAX_MB: '0',
    SHARDLINE_RANGE_MB: '0.003',
    SHARDLINE_STEP_BUDGET_SECONDS: '0',
  });
  const { input } = generateJsonl(25, {
    lines: 300,
    blankRate: 0.05,
    badRate: 0.05,
    crlfRate: 0.2,
    bom: true,
  });
  const obj = await upload('incoming/big.jsonl', input);
  await postFinalized(obj, 'evt-big');
  let [record] = await recordsOf(obj.name);
  expect(record).toMatchObject({ mode: 'fanout', state: 'running', phase: 'scan' });
  expect(record!.ranges.length).toBeGreaterThan(3);

  // Deliver the step messages to `ingestStep`, as the Pub/Sub trigger would, until done.
  const kinds = new Map<string, number>();
  for (let round = 0; round < 200; round++) {
    const steps = await pullAll(projectId, world.topics.ingest, world.subs.ingest);
    if (steps.length === 0) break;
    for (const [i, s] of steps.entries()) {
      const kind = (s.json as { step: { kind: string } }).step.kind;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      await deliver('ingestStep', projectId, world.topics.ingest, s.data, `${round}-${i}`);
    }
  }
  [record] = await recordsOf(obj.name);
  expect(record).toMatchObject({
    state: 'completed',
    phase: 'done',
    ranges_done: record!.ranges.length,
    shards_done: 4,
  });
  expect(kinds.get('scan')).toBe(record!.ranges.length);
  expect(kinds.get('write')).toBeGreaterThan(4); // continuations at chunk boundaries
  expect(kinds.get('finalize')).toBe(1);
  await expectSameDataset(record!, input);
  const rejectedCloud = await new GcsBlobStore(
    storage,
    world.bucket,
    `datasets/${record!.dataset_id}`,
  ).readAll('rejected.jsonl');
  const local = await localDataset(input, record!.dataset_id, 4, 0.01);
  expect(local.master.rejected_lines).toBeGreaterThan(0);
  expect(rejectedCloud.toString().trim().split('\n')).toHaveLength(local.master.rejected_lines);
  expect(
    doorbellsOf(await pullAll(projectId, world.topics.work, world.subs.work)).map(
      (b) => b.shard_id,
    ),
  ).toEqual([0, 1, 2, 3]);
  // No staging left behind.
  const [staging] = await storage.bucket(world.bucket).getFiles({ prefix: 'datasets/.ingest/' });
  expect(staging).toEqual([]);
});

test('a malformed ingest step is acknowledged (not retried forever) and changes nothing', async () => {
  world = await makeWorld(projectId, pubsub);
  const logged = captureLogs(world);
  // `deliver` expects 204: acknowledged. A 5xx would make Pub/Sub redeliver it forever.
  await deliver('ingestStep', projectId, world.topics.ingest, 'not json', 'x1');
  const unknown = {
    type: 'ingest.step',
    version: 1,
    ingest_id: 'nope',
    step: { kind: 'finalize' },
  };
  await deliver('ingestStep', projectId, world.topics.ingest, JSON.stringify(unknown), 'x2');

  // Each was recognised for what it is: not a message at all, and a step of no ingest.
  expect(logged.filter((l) => l.message.startsWith('ingest step'))).toEqual([
    expect.objectContaining({
      severity: 'ERROR',
      message: 'ingest step dropped',
      message_id: 'x1',
      reason: 'message data is not JSON (8 bytes)',
    }),
    expect.objectContaining({
      severity: 'INFO',
      message: 'ingest step skipped',
      ingest_id: 'nope',
      reason: 'no such ingest',
    }),
  ]);
  // Nothing was written or published: no ingest record, no dataset, no step, no doorbell.
  expect((await firestore.collection(world.collections.ingests).get()).size).toBe(0);
  expect((await firestore.collection(world.collections.datasets).get()).size).toBe(0);
  const [files] = await storage.bucket(world.bucket).getFiles();
  expect(files.map((f) => f.name)).toEqual([]);
  expect(await pullAll(projectId, world.topics.ingest, world.subs.ingest)).toEqual([]);
  expect(await pullAll(projectId, world.topics.work, world.subs.work)).toEqual([]);
});

test('a gzip upload too large for one invocation is refused with what to do instead', async () => {
  world = await makeWorld(projectId, pubsub, { SHARDLINE_GZIP_MAX_MB: '0.0005' });
  const { gzipSync } = await import('node:zlib');
  const big = await upload(
    'incoming/big.jsonl.gz',
    gzipSync(generateJsonl(26, { lines: 200 }).input),
  );
  await postFinalized(big, 'evt-gz');
  const [r] = await recordsOf(big.name);
  expect(r).toMatchObject({
    state: 'failed',
    error: expect.stringContaining('Upload it uncompressed') as unknown,
  });
  // No dataset in the ledger or the bucket, and no doorbell (read up to a marker).
  expect((await firestore.collection(world.collections.datasets).get()).size).toBe(0);
  const [files] = await storage.bucket(world.bucket).getFiles({ prefix: 'datasets/' });
  expect(files.map((f) => f.name)).toEqual([]);
  expect(await pullAll(projectId, world.topics.work, world.subs.work)).toEqual([]);
});
