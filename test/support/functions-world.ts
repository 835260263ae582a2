/**
 * A namespace of its own for a functions test: bucket, topics with subscriptions, ledger and
 * ingest collections; the functions' dependencies point at it (functions/deps.ts).
 */
import type { PubSub } from '@google-cloud/pubsub';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import request from 'supertest';

import type { BlobStore } from '../../core/blob/store';
import type { Clock } from '../../core/clock';
import type { LayerStats } from '../../core/layer-stats';
import type { ShardManifest } from '../../core/rollup/manifests';
import { encodeManifest, shardManifestKey } from '../../core/rollup/manifests';
import { createLogger } from '../../core/log';
import type { FunctionDeps } from '../../functions/deps';
import { createDeps, useDepsForTesting } from '../../functions/deps';
import { uniqueName } from './emulators';
import { pubsubCloudEvent, topicWithSubscription } from './pubsub';

/** One test's namespace. */
export interface World {
  ns: string;
  bucket: string;
  deps: FunctionDeps;
  topics: { work: string; events: string; ingest: string };
  subs: { work: string; events: string; ingest: string };
  collections: { ingests: string; objects: string; datasets: string };
}

/** Creates the namespace and installs the functions' dependencies for it. */
export async function makeWorld(
  projectId: string,
  pubsub: PubSub,
  env: Record<string, string> = {},
  clock?: Clock,
): Promise<World> {
  const ns = uniqueName('fn');
  const [work, events, ingest] = await Promise.all(
    ['work', 'events', 'ingest'].map((t) => topicWithSubscription(pubsub, `${ns}-${t}`)),
  );
  const collections = {
    ingests: `${ns}-ingests`,
    objects: `${ns}-objects`,
    datasets: `${ns}-datasets`,
  };
  const deps = createDeps(
    {
      GCLOUD_PROJECT: projectId,
      SHARDLINE_WORK_TOPIC: work!.topic,
      SHARDLINE_EVENTS_TOPIC: events!.topic,
      SHARDLINE_INGEST_TOPIC: ingest!.topic,
      SHARDLINE_FIRESTORE_ROOT: collections.datasets,
      SHARDLINE_INGESTS_COLLECTION: collections.ingests,
      SHARDLINE_INGEST_OBJECTS_COLLECTION: collections.objects,
      SHARDLINE_DEFAULT_NUM_SHARDS: '4',
      SHARDLINE_CHUNK_SIZE_MB: '0.01',
      // Only problems in the test output; set SHARDLINE_TEST_LOG_LEVEL=INFO to see everything.
      SHARDLINE_LOG_LEVEL: process.env.SHARDLINE_TEST_LOG_LEVEL ?? 'ERROR',
      ...env,
    },
    clock,
  );
  useDepsForTesting(deps);
  return {
    ns,
    bucket: ns,
    deps,
    topics: { work: work!.topic, events: events!.topic, ingest: ingest!.topic },
    subs: { work: work!.subscription, events: events!.subscription, ingest: ingest!.subscription },
    collections,
  };
}

/** One log line the functions wrote, parsed (`severity`, `message` and the line's fields). */
export type LogLine = Record<string, unknown> & { severity: string; message: string };

/**
 * Makes the world's functions log every line (DEBUG and up) into the returned array instead
 * of stdout, so a test can see what a function decided.
 */
export function captureLogs(world: World): LogLine[] {
  const lines: LogLine[] = [];
  const log = createLogger({
    format: 'json',
    minSeverity: 'DEBUG',
    sink: (line) => void lines.push(JSON.parse(line) as LogLine),
  });
  world.deps.log = log;
  world.deps.ingest.log = log;
  return lines;
}

/** Undoes `makeWorld`. */
export async function closeWorld(world: World | undefined): Promise<void> {
  useDepsForTesting(undefined);
  await world?.deps.close();
}

/** Delivers a Pub/Sub message to a function, as its trigger would; expects success (204). */
export async function deliver(
  fn: string,
  projectId: string,
  topic: string,
  data: Buffer | string,
  id: string,
): Promise<void> {
  await request(getTestServer(fn))
    .post('/')
    .set('Content-Type', 'application/cloudevents+json')
    .send(JSON.stringify(pubsubCloudEvent(projectId, topic, data, id)))
    .expect(204);
}

/**
 * A completed shard's manifest as a worker writes it (no parts: the roll-up reads only the
 * manifests), with statistics of `rows` rows of width 2 around `centre`.
 */
export async function writeShardManifest(
  store: BlobStore,
  datasetId: string,
  shardId: number,
  rows: number,
  centre: number,
): Promise<LayerStats> {
  const stats: LayerStats = {
    count: rows,
    mean: [centre, -centre],
    m2: [rows * 0.5, rows * 2],
    norm_sum: rows * Math.SQRT2 * Math.abs(centre),
  };
  const manifest: ShardManifest = {
    format: 'shardline.shard-manifest',
    format_version: 2,
    dataset_id: datasetId,
    shard_id: shardId,
    first_task_index: shardId * 10,
    total_tasks: 10,
    worker_id: `w${shardId}`,
    epoch: 1,
    fingerprint: 'f'.repeat(32),
    model: 'synthetic',
    layers: [3],
    dtype: 'float32',
    positions: 'all',
    hidden_size: 2,
    parts: [],
    samples: 10 + shardId,
    tokens: rows * 2,
    rows,
    skipped: 0,
    bytes: 1000 * (shardId + 1),
    stats: { 'resid_post.3': stats },
  };
  await store.writeAll(shardManifestKey(shardId), encodeManifest(manifest));
  return stats;
}
