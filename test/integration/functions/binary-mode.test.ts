/**
 * The functions as Eventarc calls them: CloudEvents in binary content mode (`ce-*` headers,
 * the data as the body), beside structured mode (the other tests), and Pub/Sub messages with
 * no `data` at all (a message may carry only attributes), in both modes. A single-bucket
 * deployment (no data bucket set) still ingests into the upload's own bucket.
 */
import { getTestServer } from '@google-cloud/functions-framework/testing';
import request from 'supertest';

import '../../../functions/index';
import { GcsBlobStore } from '../../../core/blob/gcs';
import type { IngestRecord } from '../../../core/ingest/records';
import { MESSAGE_VERSION } from '../../../core/messages';
import type { World } from '../../support/functions-world';
import { closeWorld, makeWorld, writeShardManifest } from '../../support/functions-world';
import { generateJsonl } from '../../support/jsonl-gen';
import { makeDataset } from '../../support/ledger-fixtures';
import { finalizedCloudEvent, pubsubCloudEvent, pullAll } from '../../support/pubsub';
import type { StructuredEvent } from './cloudevents';
import { postBinary } from './cloudevents';
import { emulatorClients } from './clients';

const { projectId, storage, pubsub, firestore } = emulatorClients();

let world: World;
afterEach(() => closeWorld(world));

/** A Pub/Sub CloudEvent whose message has attributes but no `data` field. */
function withoutData(topic: string, id: string): StructuredEvent {
  const event = pubsubCloudEvent(projectId, topic, '', id) as StructuredEvent & {
    data: { message: Record<string, unknown> };
  };
  const { data: _none, ...message } = event.data.message;
  return { ...event, data: { ...event.data, message: { ...message, attributes: { a: 'b' } } } };
}

/** POSTs in structured mode (one JSON document); resolves with the status. */
async function postStructured(fn: string, event: StructuredEvent): Promise<number> {
  const res = await request(getTestServer(fn))
    .post('/')
    .set('Content-Type', 'application/cloudevents+json')
    .send(JSON.stringify(event));
  return res.status;
}

test('a binary-mode Storage event is ingested (into the upload bucket when no data bucket is set)', async () => {
  world = await makeWorld(projectId, pubsub);
  const { input } = generateJsonl(41, { lines: 60 });
  const info = await new GcsBlobStore(storage, world.bucket, '').writeAll(
    'incoming/binary.jsonl',
    input,
  );
  const event = finalizedCloudEvent(
    {
      bucket: world.bucket,
      name: 'incoming/binary.jsonl',
      generation: info.generation,
      size: info.size,
    },
    'bin-1',
  );
  expect(await postBinary('ingest', event)).toBe(204);
  const snap = await firestore.collection(world.collections.ingests).get();
  const [record] = snap.docs.map((d) => d.data() as IngestRecord);
  expect(record).toMatchObject({ state: 'completed', object: 'incoming/binary.jsonl' });
  expect(record!.dataset_uri).toBe(`gs://${world.bucket}/datasets/${record!.dataset_id}`);
  expect(
    await new GcsBlobStore(storage, world.bucket, `datasets/${record!.dataset_id}`).stat(
      'master_metadata.json',
    ),
  ).not.toBeNull();
  expect(await pullAll(projectId, world.topics.work, world.subs.work)).toHaveLength(4);
});

test('binary-mode Pub/Sub events reach progress and ingestStep; malformed ones are acknowledged', async () => {
  world = await makeWorld(projectId, pubsub);
  const { master } = makeDataset({
    datasetId: 'bin-progress',
    numShards: 1,
  });
  const datasetUri = `gs://${world.bucket}/datasets/bin-progress`;
  await world.deps.ledger.registerDataset(master, { datasetUri });
  const claim = await world.deps.ledger.claim(master.dataset_id, 'w0', {});
  const output = new GcsBlobStore(storage, world.bucket, 'datasets/bin-progress/activations');
  await writeShardManifest(output, master.dataset_id, 0, 1, 1);
  const manifestUri = `${datasetUri}/activations/shard_000/_MANIFEST.json`;
  await world.deps.ledger.complete(claim!, { parts: 0, samples: 1, bytes: 10, uri: manifestUri });
  const completed = JSON.stringify({
    type: 'shard.completed',
    version: MESSAGE_VERSION,
    dataset_id: master.dataset_id,
    shard_id: 0,
    worker_id: 'w0',
    epoch: claim!.epoch,
    manifest_uri: manifestUri,
    parts: 0,
    samples: 1,
    completed_at: new Date().toISOString(),
  });
  expect(
    await postBinary(
      'progress',
      pubsubCloudEvent(projectId, world.topics.events, completed, 'p-1'),
    ),
  ).toBe(204);
  // The dataset manifest was written: the binary-mode event was decoded, not dropped.
  expect(await output.stat('_MANIFEST.json')).not.toBeNull();
  expect(
    await postBinary(
      'ingestStep',
      pubsubCloudEvent(projectId, world.topics.ingest, 'not json', 's-1'),
    ),
  ).toBe(204);
});

test('a Pub/Sub message with no data is acknowledged by every function, in both modes', async () => {
  world = await makeWorld(projectId, pubsub);
  for (const [fn, topic] of [
    ['progress', world.topics.events],
    ['ingestStep', world.topics.ingest],
    ['reap', 'shardline-tick'],
  ] as const) {
    expect({ fn, binary: await postBinary(fn, withoutData(topic, `${fn}-b`)) }).toEqual({
      fn,
      binary: 204,
    });
    expect({ fn, structured: await postStructured(fn, withoutData(topic, `${fn}-s`)) }).toEqual({
      fn,
      structured: 204,
    });
  }
  // Nothing was published in response.
  expect(await pullAll(projectId, world.topics.work, world.subs.work)).toEqual([]);
  expect(await pullAll(projectId, world.topics.events, world.subs.events)).toEqual([]);
});
