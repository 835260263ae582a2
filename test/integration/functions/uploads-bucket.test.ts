/**
 * The ingest trigger sits on the uploads bucket alone, so the project's own writes never wake
 * `ingest`: 200 chunk and part objects written into the data bucket in one burst with a real
 * upload, and only the upload reaches the function, which ingests it exactly once, into the
 * data bucket; a fanned-out ingest keeps its staging area there too.
 *
 * What this simulates: Eventarc's side. There is no Eventarc here, so the delivery is built
 * from the real deploy plan: the ingest trigger's event filters (`type`, `bucket`) and its
 * concurrency are read from `infra/deploy.sh --dry-run` for these buckets. Every object written
 * (to the Storage emulator) becomes a `google.cloud.storage.object.v1.finalized` event made
 * from the emulator's own metadata for it; only the events those filters let through are
 * POSTed to the Functions Framework test server, in binary content mode (`ce-*` headers) as
 * Eventarc delivers, as many at once as the deployed concurrency, with the upload's event
 * delivered three times (delivery is at least once) and a failed delivery retried as Eventarc
 * would (up to the trigger subscription's delivery attempts).
 *
 * What it cannot show: Eventarc itself (its matching of real Storage notifications, its
 * Pub/Sub transport, authentication, 429 back-pressure and retry timing), Cloud Storage's
 * notifications (the events are made here, the objects are real), and IAM.
 */

import '../../../functions/index';
import { GcsBlobStore } from '../../../core/blob/gcs';
import type { IngestRecord } from '../../../core/ingest/records';
import { readAndCheckDataset } from '../../support/dataset-check';
import { uniqueName } from '../../support/emulators';
import type { World } from '../../support/functions-world';
import { closeWorld, deliver, makeWorld } from '../../support/functions-world';
import { generateJsonl } from '../../support/jsonl-gen';
import { finalizedCloudEvent, pullAll } from '../../support/pubsub';
import { flag, flags, parsePlan, runScript, startsWith } from '../../unit/infra/plan';
import { postBinary } from './cloudevents';
import { emulatorClients } from './clients';

const { projectId, storage, pubsub, firestore } = emulatorClients();

let world: World;
afterEach(() => closeWorld(world));

/** The ingest trigger of the deploy plan for these buckets: its filters and delivery settings. */
function ingestTrigger(dataBucket: string, uploadsBucket: string) {
  const run = runScript('infra/deploy.sh', [
    '--dry-run',
    '--project',
    'demo-uploads-plan',
    '--bucket',
    dataBucket,
    '--uploads-bucket',
    uploadsBucket,
  ]);
  expect(run.status).toBe(0);
  const plan = parsePlan(run.stdout);
  const deploy = plan.find(
    (c) => startsWith(c, 'gcloud', 'functions', 'deploy') && flag(c, 'entry-point') === 'ingest',
  )!;
  const filters = Object.fromEntries(
    flags(deploy, 'trigger-event-filters').map((f) => [
      f.slice(0, f.indexOf('=')),
      f.slice(f.indexOf('=') + 1),
    ]),
  );
  const policy = plan.find(
    (c) =>
      startsWith(c, 'gcloud', 'pubsub', 'subscriptions', 'update') &&
      c.words[4] === '${INGEST_TRIGGER_SUBSCRIPTION}',
  )!;
  // No other function has a Storage trigger.
  expect(
    plan.filter((c) => flags(c, 'trigger-event-filters').length > 0).map((c) => c.words[3]),
  ).toEqual(['shardline-ingest']);
  return {
    filters,
    concurrency: Number(flag(deploy, 'concurrency') ?? '1'),
    maxDeliveries: Number(flag(policy, 'max-delivery-attempts')),
  };
}

test('200 chunks and parts written to the data bucket wake nothing; the upload in the same burst is ingested once, into the data bucket', async () => {
  const dataBucket = uniqueName('data');
  world = await makeWorld(projectId, pubsub, { SHARDLINE_DATA_BUCKET: dataBucket });
  const uploadsBucket = world.bucket;
  const trigger = ingestTrigger(dataBucket, uploadsBucket);
  expect(trigger.filters).toEqual({
    type: 'google.cloud.storage.object.v1.finalized',
    bucket: uploadsBucket,
  });
  expect(trigger.concurrency).toBeGreaterThan(1);

  // The burst: chunks (as ingest writes them) and parts (as workers do), with the upload in the middle.
  const data = new GcsBlobStore(storage, dataBucket, '');
  const uploads = new GcsBlobStore(storage, uploadsBucket, '');
  const { input } = generateJsonl(31, { lines: 80 });
  const writes: Array<Promise<{ bucket: string; name: string; generation: string; size: number }>> =
    [];
  const write = (store: GcsBlobStore, bucket: string, name: string, bytes: Buffer) =>
    writes.push(
      store
        .writeAll(name, bytes)
        .then((i) => ({ bucket, name, generation: i.generation, size: i.size })),
    );
  for (let i = 0; i < 100; i++) {
    const shard = String(i % 10).padStart(3, '0');
    const n = String(Math.floor(i / 10)).padStart(4, '0');
    write(
      data,
      dataBucket,
      `datasets/other-ds/shard_${shard}/chunk_${n}.jsonl`,
      Buffer.from('{"a":1}\n'),
    );
    write(
      data,
      dataBucket,
      `datasets/other-ds/activations/shard_${shard}/part_${n.slice(1)}0.safetensors`,
      Buffer.alloc(64, i),
    );
    if (i === 50) write(uploads, uploadsBucket, 'incoming/burst.jsonl', input);
  }
  const written = await Promise.all(writes);
  expect(written).toHaveLength(201);

  // Cloud Storage's side: one finalized event per object written, with its bucket and type.
  const events = written.map((o, i) => ({
    attributes: { type: 'google.cloud.storage.object.v1.finalized', bucket: o.bucket },
    event: finalizedCloudEvent(o, `burst-${i}`),
  }));
  // Eventarc's side: the trigger's filters, every one of them matching.
  const passes = (attributes: Record<string, string>) =>
    Object.entries(trigger.filters).every(([k, v]) => attributes[k] === v);
  const delivered = events.filter((e) => passes(e.attributes));
  expect(events.filter((e) => e.attributes.bucket === dataBucket)).toHaveLength(200);
  expect(delivered.map((e) => (e.event.data as { name: string }).name)).toEqual([
    'incoming/burst.jsonl',
  ]);

  // Delivered at least once: the upload's event three times, concurrently, each retried on
  // failure as Eventarc would, up to the subscription's delivery attempts.
  const queue = [...delivered, ...delivered, ...delivered];
  const statuses: number[] = [];
  const lane = async () => {
    for (let e = queue.shift(); e; e = queue.shift()) {
      for (let attempt = 1; ; attempt++) {
        const status = await postBinary('ingest', e.event);
        statuses.push(status);
        if (status < 300) break;
        expect(attempt).toBeLessThan(trigger.maxDeliveries);
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  };
  await Promise.all(Array.from({ length: trigger.concurrency }, lane));
  expect(statuses.filter((s) => s < 300)).toHaveLength(3);

  // Ingested exactly once: one record, one dataset in the data bucket, one doorbell per shard.
  const snap = await firestore.collection(world.collections.ingests).get();
  const records = snap.docs.map((d) => d.data() as IngestRecord);
  expect(records.map((r) => [r.bucket, r.object, r.state])).toEqual([
    [uploadsBucket, 'incoming/burst.jsonl', 'completed'],
  ]);
  const record = records[0]!;
  expect(record.dataset_uri).toBe(`gs://${dataBucket}/datasets/${record.dataset_id}`);
  const dataset = await readAndCheckDataset(
    new GcsBlobStore(storage, dataBucket, `datasets/${record.dataset_id}`),
  );
  expect(dataset.master.total_tasks).toBe(80);
  expect(dataset.master.source.uri).toBe(`gs://${uploadsBucket}/incoming/burst.jsonl`);
  const [inUploads] = await storage.bucket(uploadsBucket).getFiles();
  expect(inUploads.map((f) => f.name)).toEqual(['incoming/burst.jsonl']);
  const bells = (await pullAll(projectId, world.topics.work, world.subs.work)).map(
    (m) => (m.json as { shard_id: number }).shard_id,
  );
  expect(bells.sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
  expect((await world.deps.ledger.status(record.dataset_id)).totals).toMatchObject({
    shards: 4,
    available: 4,
  });
});

test('a fanned-out ingest stages and writes in the data bucket and leaves nothing behind in either bucket', async () => {
  // Everything fans out: 3 KB scan ranges, and every shard write stops at each chunk boundary.
  const dataBucket = uniqueName('data');
  world = await makeWorld(projectId, pubsub, {
    SHARDLINE_DATA_BUCKET: dataBucket,
    SHARDLINE_DIRECT_MAX_MB: '0',
    SHARDLINE_RANGE_MB: '0.003',
    SHARDLINE_STEP_BUDGET_SECONDS: '0',
  });
  const uploadsBucket = world.bucket;
  const { input, tasks } = generateJsonl(32, { lines: 200, blankRate: 0.05 });
  const info = await new GcsBlobStore(storage, uploadsBucket, '').writeAll(
    'incoming/fan.jsonl',
    input,
  );
  const event = finalizedCloudEvent(
    {
      bucket: uploadsBucket,
      name: 'incoming/fan.jsonl',
      generation: info.generation,
      size: info.size,
    },
    'fan-1',
  );
  expect(await postBinary('ingest', event)).toBe(204);
  // The steps, delivered to ingestStep as its Pub/Sub trigger would, until none is left.
  for (let round = 0; round < 200; round++) {
    const steps = await pullAll(projectId, world.topics.ingest, world.subs.ingest);
    if (steps.length === 0) break;
    for (const [i, s] of steps.entries())
      await deliver('ingestStep', projectId, world.topics.ingest, s.data, `fan-${round}-${i}`);
    if (round === 0) {
      // The scans' results are staged in the data bucket, never beside the upload.
      const [staged] = await storage.bucket(dataBucket).getFiles({ prefix: 'datasets/.ingest/' });
      expect(staged.map((f) => f.name.split('/').pop())).toContain('scan_00000.json');
      const [beside] = await storage.bucket(uploadsBucket).getFiles();
      expect(beside.map((f) => f.name)).toEqual(['incoming/fan.jsonl']);
    }
  }
  const snap = await firestore.collection(world.collections.ingests).get();
  const [record] = snap.docs.map((d) => d.data() as IngestRecord);
  expect(record).toMatchObject({ mode: 'fanout', state: 'completed', shards_done: 4 });
  expect(record!.ranges.length).toBeGreaterThan(3);
  const dataset = await readAndCheckDataset(
    new GcsBlobStore(storage, dataBucket, `datasets/${record!.dataset_id}`),
  );
  expect(dataset.master.total_tasks).toBe(tasks.length);
  const [staging] = await storage.bucket(dataBucket).getFiles({ prefix: 'datasets/.ingest/' });
  expect(staging).toEqual([]);
  const [inUploads] = await storage.bucket(uploadsBucket).getFiles();
  expect(inUploads.map((f) => f.name)).toEqual(['incoming/fan.jsonl']);
});
