/**
 * `reap` (the scheduler tick) and `progress` (the events topic), against the emulators and the
 * Functions Framework test server, with an injected clock.
 */
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';

import '../../../functions/index';
import { GcsBlobStore } from '../../../core/blob/gcs';
import { MESSAGE_VERSION } from '../../../core/messages';
import { mergeStats } from '../../../core/layer-stats';
import type { LayerStats } from '../../../core/layer-stats';
import type { DatasetManifest } from '../../../core/rollup/manifests';
import { emulatorEnv } from '../../support/emulators';
import type { World } from '../../support/functions-world';
import {
  captureLogs,
  closeWorld,
  deliver,
  makeWorld,
  writeShardManifest,
} from '../../support/functions-world';
import { FakeClock, makeDataset } from '../../support/ledger-fixtures';
import { pullAll } from '../../support/pubsub';

const { projectId } = emulatorEnv();
const pubsub = new PubSub({ projectId });
const storage = new Storage({ projectId });
afterAll(() => pubsub.close());

let world: World;
afterEach(() => closeWorld(world));

async function registered(clock: FakeClock, numShards: number) {
  world = await makeWorld(projectId, pubsub, {}, clock);
  const { master } = makeDataset({ datasetId: 'reaped', numShards });
  const datasetUri = `gs://${world.bucket}/datasets/reaped`;
  await world.deps.ledger.registerDataset(master, { datasetUri });
  return { datasetId: master.dataset_id, datasetUri };
}

test('reap frees an expired shard and rings its doorbell again; a live lease is left alone', async () => {
  const clock = new FakeClock();
  const { datasetId, datasetUri } = await registered(clock, 2);
  const expiring = await world.deps.ledger.claim(datasetId, 'worker-a', {
    preferredShardId: 0,
    leaseMs: 60_000,
  });
  clock.advance(30_000);
  const live = await world.deps.ledger.claim(datasetId, 'worker-b', {
    preferredShardId: 1,
    leaseMs: 600_000,
  });
  expect([expiring?.shard_id, live?.shard_id]).toEqual([0, 1]);

  clock.advance(31_000); // worker-a's lease ran out 1 s ago; worker-b has minutes left
  await deliver('reap', projectId, 'shardline-tick', '{}', 'tick-1');

  const s0 = await world.deps.ledger.getShard(datasetId, 0);
  const s1 = await world.deps.ledger.getShard(datasetId, 1);
  expect(s0).toMatchObject({ status: 'available', attempts: 1, assigned_to: null });
  expect(s1).toMatchObject({ status: 'in_use', assigned_to: 'worker-b' });
  const bells = await pullAll(projectId, world.topics.work, world.subs.work);
  expect(bells.map((b) => b.json)).toEqual([
    expect.objectContaining({
      type: 'shard.available',
      dataset_id: datasetId,
      shard_id: 0,
      dataset_uri: datasetUri,
      reason: 'reap',
    }),
  ]);
  // The zombie cannot finish what it lost.
  await expect(world.deps.ledger.complete(expiring!)).rejects.toMatchObject({ code: 'LEASE_LOST' });

  // A second tick has nothing to do: the ledger is as the first left it (worker-b's lease is
  // live), and no doorbell or event went out (each topic read up to a marker sent after it).
  await deliver('reap', projectId, 'shardline-tick', '', 'tick-2');
  expect(await world.deps.ledger.getShard(datasetId, 0)).toEqual(s0);
  expect(await world.deps.ledger.getShard(datasetId, 1)).toEqual(s1);
  expect(await pullAll(projectId, world.topics.work, world.subs.work)).toEqual([]);
  expect(await pullAll(projectId, world.topics.events, world.subs.events)).toEqual([]);
});

test('a shard whose leases keep expiring ends failed, with a final shard.failed event', async () => {
  const clock = new FakeClock();
  const { datasetId } = await registered(clock, 1);
  for (let attempt = 1; attempt <= 3; attempt++) {
    const c = await world.deps.ledger.claim(datasetId, `worker-${attempt}`, { leaseMs: 10_000 });
    expect(c?.shard_id).toBe(0);
    clock.advance(11_000);
    await deliver('reap', projectId, 'shardline-tick', '{}', `tick-${attempt}`);
  }
  expect(await world.deps.ledger.getShard(datasetId, 0)).toMatchObject({
    status: 'failed',
    attempts: 3,
  });
  const events = await pullAll(projectId, world.topics.events, world.subs.events);
  expect(events.map((e) => e.json)).toEqual([
    expect.objectContaining({
      type: 'shard.failed',
      dataset_id: datasetId,
      shard_id: 0,
      final: true,
      attempts: 3,
    }),
  ]);
  expect(
    (await pullAll(projectId, world.topics.work, world.subs.work)).map(
      (b) => (b.json as { reason: string }).reason,
    ),
  ).toEqual(['reap', 'reap']);
});

test('progress writes the dataset manifest once, when the last shard completes; duplicates change nothing', async () => {
  const clock = new FakeClock();
  const { datasetId } = await registered(clock, 3);
  const out = `gs://${world.bucket}/datasets/reaped/activations`;
  const completedEvent = (shardId: number, workerId: string, epoch: number) =>
    JSON.stringify({
      type: 'shard.completed',
      version: MESSAGE_VERSION,
      dataset_id: datasetId,
      shard_id: shardId,
      worker_id: workerId,
      epoch,
      manifest_uri: `${out}/shard_${String(shardId).padStart(3, '0')}/_MANIFEST.json`,
      parts: 2,
      samples: 10 + shardId,
      completed_at: new Date(clock.nowMs()).toISOString(),
    });
  const store = new GcsBlobStore(storage, world.bucket, 'datasets/reaped/activations');
  const written: LayerStats[] = [];
  // Completed out of shard order: the dataset's figures are merged in shard order regardless.
  for (const k of [2, 0, 1]) {
    written[k] = await writeShardManifest(store, datasetId, k, 100 * (k + 1), k + 1);
    const claim = await world.deps.ledger.claim(datasetId, `w${k}`, { preferredShardId: k });
    clock.advance(1000);
    await world.deps.ledger.complete(claim!, {
      parts: 0,
      samples: 10 + k,
      bytes: 1000 * (k + 1),
      uri: `${out}/shard_${String(k).padStart(3, '0')}/_MANIFEST.json`,
    });
    await deliver(
      'progress',
      projectId,
      world.topics.events,
      completedEvent(k, `w${k}`, claim!.epoch),
      `done-${k}`,
    );
    expect({ k, manifest: (await store.stat('_MANIFEST.json')) !== null }).toEqual({
      k,
      manifest: k === 1,
    });
  }
  const first = await store.stat('_MANIFEST.json');
  const manifest = JSON.parse(
    (await store.readAll('_MANIFEST.json')).toString(),
  ) as DatasetManifest;
  expect(manifest).toMatchObject({
    format: 'shardline.dataset-manifest',
    format_version: 2,
    dataset_id: datasetId,
    num_shards: 3,
    samples: 33,
    rows: 600,
    tokens: 1200,
    bytes: 6000,
    fingerprint: 'f'.repeat(32),
    layers: [3],
    positions: 'all',
  });
  // Exactly the shards' figures merged in shard order (the roll-up's order, not completion's).
  expect(manifest.stats).toEqual(mergeStats(written.map((s) => ({ 'resid_post.3': s }))));
  expect(manifest.stats['resid_post.3']!.count).toBe(600);
  // Mean of the three shards' means weighted by rows: (100·1 + 200·2 + 300·3) / 600.
  expect(manifest.stats['resid_post.3']!.mean[0]).toBeCloseTo(1400 / 600, 12);
  expect(manifest.shards.map((s) => [s.shard_id, s.manifest, s.worker_id])).toEqual([
    [0, 'shard_000/_MANIFEST.json', 'w0'],
    [1, 'shard_001/_MANIFEST.json', 'w1'],
    [2, 'shard_002/_MANIFEST.json', 'w2'],
  ]);
  // The same completion delivered again (at least once delivery), and a late duplicate.
  for (let i = 0; i < 3; i++)
    await deliver(
      'progress',
      projectId,
      world.topics.events,
      completedEvent(2, 'w2', 1),
      `dup-${i}`,
    );
  expect((await store.stat('_MANIFEST.json'))?.generation).toBe(first?.generation);
});

test('a malformed event is acknowledged and dropped; the valid one after it is acted on', async () => {
  const clock = new FakeClock();
  const { datasetId } = await registered(clock, 1);
  const logged = captureLogs(world);
  const out = `gs://${world.bucket}/datasets/reaped/activations`;
  const store = new GcsBlobStore(storage, world.bucket, 'datasets/reaped/activations');
  // The only shard is completed in the ledger: a valid event now writes the dataset manifest.
  await writeShardManifest(store, datasetId, 0, 10, 1);
  const claim = (await world.deps.ledger.claim(datasetId, 'w0'))!;
  await world.deps.ledger.complete(claim, {
    parts: 0,
    samples: 5,
    bytes: 100,
    uri: `${out}/shard_000/_MANIFEST.json`,
  });
  const event = {
    type: 'shard.completed',
    version: MESSAGE_VERSION,
    dataset_id: datasetId,
    shard_id: 0,
    worker_id: 'w0',
    epoch: claim.epoch,
    manifest_uri: `${out}/shard_000/_MANIFEST.json`,
    parts: 0,
    samples: 5,
    completed_at: new Date(clock.nowMs()).toISOString(),
  };

  // `deliver` expects 204: acknowledged, so Pub/Sub does not deliver them again.
  const bad: Array<[string, Buffer | string]> = [
    ['bad-1', '{"type":"shard.completed"}'],
    ['bad-2', Buffer.from([0xff, 0x00])],
    ['bad-3', JSON.stringify({ ...event, version: MESSAGE_VERSION + 1 })],
    ['bad-4', JSON.stringify({ ...event, shard_id: 'zero' })],
  ];
  for (const [id, data] of bad) await deliver('progress', projectId, world.topics.events, data, id);
  expect(logged.filter((l) => l.message === 'event dropped')).toHaveLength(bad.length);
  expect(await store.stat('_MANIFEST.json')).toBeNull();

  // The control: the same event, well formed, writes the manifest.
  await deliver('progress', projectId, world.topics.events, JSON.stringify(event), 'good-1');
  expect(logged.filter((l) => l.message === 'event dropped')).toHaveLength(bad.length);
  expect(JSON.parse((await store.readAll('_MANIFEST.json')).toString())).toMatchObject({
    dataset_id: datasetId,
    num_shards: 1,
    samples: 5,
  });
});
