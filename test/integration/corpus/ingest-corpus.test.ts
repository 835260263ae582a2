/**
 * The bad-input corpus through the cloud ingest (issue 9), against the emulators: each input
 * uploaded to `incoming/` ends in an ingest record that is `completed` with the right counts,
 * a dataset of exactly the valid lines and a rejected.jsonl naming the bad ones, or `failed`
 * with the error and the bad line. Object names with traversal, encodings, unicode, spaces and
 * extreme length get a safe dataset id, and the dataset lands under `datasets/<id>/` and
 * nowhere else; names outside `incoming/` or with other extensions are ignored, with no record.
 *
 * Each case has a bucket of its own, so "nothing was written anywhere else" is a listing of it.
 */
import { Firestore } from '@google-cloud/firestore';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';
import request from 'supertest';

import '../../../functions/index';
import { GcsBlobStore } from '../../../core/blob/gcs';
import type { IngestRecord } from '../../../core/ingest/records';
import type { DatasetOutcome, InputCase, RefusedOutcome } from '../../support/corpus';
import { CORPUS_SETTINGS, inputCases } from '../../support/corpus';
import { readAndCheckDataset } from '../../support/dataset-check';
import { emulatorEnv } from '../../support/emulators';
import type { World } from '../../support/functions-world';
import { closeWorld, deliver, makeWorld } from '../../support/functions-world';
import { rng, taskJson } from '../../support/jsonl-gen';
import { finalizedCloudEvent, pullAll } from '../../support/pubsub';

const { projectId } = emulatorEnv();
const storage = new Storage({ projectId });
const pubsub = new PubSub({ projectId });
const firestore = new Firestore({ projectId });
afterAll(async () => {
  await pubsub.close();
  await firestore.terminate();
});

const SAFE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const CASES = inputCases();
const ENV = {
  SHARDLINE_DEFAULT_NUM_SHARDS: String(CORPUS_SETTINGS.numShards),
  SHARDLINE_CHUNK_SIZE_MB: String(CORPUS_SETTINGS.chunkSizeMb),
  SHARDLINE_MAX_LINE_MB: String(CORPUS_SETTINGS.maxLineMb),
};

let buckets = 0;
/** A fresh bucket name inside the world's namespace. */
const bucketOf = (world: World): string => `${world.bucket}-b${++buckets}`;

/** Uploads with the raw client (any object name, as a user's tool would), returns the event data. */
async function upload(
  bucket: string,
  name: string,
  data: Buffer,
): Promise<{ bucket: string; name: string; generation: string; size: number }> {
  const file = storage.bucket(bucket).file(name);
  await file.save(data, { resumable: false, contentType: 'application/octet-stream' });
  const [meta] = await file.getMetadata();
  return { bucket, name, generation: String(meta.generation), size: Number(meta.size) };
}

async function postFinalized(
  obj: { bucket: string; name: string; generation: string; size: number },
  id: string,
): Promise<void> {
  await request(getTestServer('ingest'))
    .post('/')
    .set('Content-Type', 'application/cloudevents+json')
    .send(JSON.stringify(finalizedCloudEvent(obj, id)))
    .expect(204);
}

async function recordsOf(world: World, bucket: string, object: string): Promise<IngestRecord[]> {
  const snap = await firestore
    .collection(world.collections.ingests)
    .where('bucket', '==', bucket)
    .get();
  return snap.docs.map((d) => d.data() as IngestRecord).filter((r) => r.object === object);
}

async function listBucket(bucket: string): Promise<string[]> {
  const [files] = await storage.bucket(bucket).getFiles();
  return files.map((f) => f.name).sort();
}

/** Asserts the record and the bucket hold what `c` must become. */
async function expectOutcome(
  world: World,
  c: InputCase,
  obj: { bucket: string; name: string },
): Promise<void> {
  const records = await recordsOf(world, obj.bucket, obj.name);
  expect(records).toHaveLength(1);
  const record = records[0]!;
  expect(record.dataset_id).toMatch(SAFE_ID);
  const files = await listBucket(obj.bucket);
  const ledgerDoc = await firestore
    .collection(world.collections.datasets)
    .doc(record.dataset_id)
    .get();
  if (c.expect.kind === 'dataset') {
    const want: DatasetOutcome = c.expect;
    expect({ state: record.state, error: record.error }).toEqual({
      state: 'completed',
      error: null,
    });
    expect(record.stats).toMatchObject({
      total_tasks: want.tasks.length,
      input_lines: want.lines,
      blank_lines: want.blank,
      rejected_lines: want.rejected.length,
    });
    const store = new GcsBlobStore(storage, obj.bucket, `datasets/${record.dataset_id}`);
    const back = await readAndCheckDataset(store);
    expect(back.tasks.map((t) => t.toString())).toEqual(want.tasks.map((t) => t.toString()));
    if (want.rejected.length > 0) {
      const recorded = (await store.readAll('rejected.jsonl'))
        .toString()
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as { line: number; reason: string; preview: string });
      expect(recorded.map((r) => r.line)).toEqual(want.rejected.map((r) => r.line));
      recorded.forEach((r, i) => {
        expect(r.reason).toMatch(want.rejected[i]!.reason);
        expect(r.preview.length).toBeLessThanOrEqual(81);
      });
    }
    expect(ledgerDoc.exists).toBe(true);
    // Nothing but the upload and the dataset's own folder.
    expect(
      files.filter((f) => f !== obj.name && !f.startsWith(`datasets/${record.dataset_id}/`)),
    ).toEqual([]);
  } else {
    const want: RefusedOutcome = c.expect;
    expect(record.state).toBe('failed');
    expect(record.error).toMatch(want.message);
    expect(record.error).toContain(`gs://${obj.bucket}/${obj.name}`);
    if (want.badLine) {
      expect(record.bad_line).toEqual({
        line: want.badLine.line,
        reason: expect.stringMatching(want.badLine.reason) as unknown,
        preview: expect.any(String) as unknown,
      });
      expect(record.bad_line!.preview.length).toBeLessThanOrEqual(81);
    } else expect(record.bad_line).toBeNull();
    expect(ledgerDoc.exists).toBe(false);
    expect(files).toEqual([obj.name]);
  }
}

describe('the byte corpus, split in the function that got the event', () => {
  let world: World;
  beforeAll(async () => {
    world = await makeWorld(projectId, pubsub, ENV);
  });
  afterAll(() => closeWorld(world));

  test.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const obj = await upload(bucketOf(world), `incoming/${c.file}`, c.bytes);
    await postFinalized(obj, `evt-${c.name}`);
    await expectOutcome(world, c, obj);
  });
});

describe('the byte corpus, fanned out over ingest.step messages', () => {
  test('every uncompressed case gives the same outcome in byte-range steps', async () => {
    // Everything fans out, in 20 KB scan ranges (the big lines span several nominal ranges).
    const world = await makeWorld(projectId, pubsub, {
      ...ENV,
      SHARDLINE_DIRECT_MAX_MB: '0',
      SHARDLINE_RANGE_MB: '0.02',
    });
    try {
      const cases = CASES.filter((c) => !c.file.endsWith('.gz'));
      const uploads = [];
      for (const c of cases) {
        const obj = await upload(bucketOf(world), `incoming/${c.file}`, c.bytes);
        await postFinalized(obj, `evt-fan-${c.name}`);
        uploads.push({ c, obj });
      }
      for (let round = 0; round < 100; round++) {
        const steps = await pullAll(projectId, world.topics.ingest, world.subs.ingest);
        if (steps.length === 0) break;
        for (const [i, s] of steps.entries())
          await deliver('ingestStep', projectId, world.topics.ingest, s.data, `${round}-${i}`);
      }
      for (const { c, obj } of uploads) {
        const [record] = await recordsOf(world, obj.bucket, obj.name);
        // An empty object is never fanned out (size 0 is within any threshold).
        expect({ case: c.name, mode: record?.mode }).toEqual({
          case: c.name,
          mode: c.bytes.length > 0 ? 'fanout' : 'direct',
        });
        await expectOutcome(world, c, obj);
        const [staging] = await storage
          .bucket(obj.bucket)
          .getFiles({ prefix: 'datasets/.ingest/' });
        expect(staging).toEqual([]);
      }
    } finally {
      await closeWorld(world);
    }
  });
});

// ------------------------------------------------------------------------------ object names

const small = (() => {
  const r = rng(5);
  return Buffer.from(Array.from({ length: 3 }, (_, i) => taskJson(r, i, 0)).join('\n') + '\n');
})();

/** Object names that must be ingested, each into a safe dataset id of its own. */
const ACCEPTED_NAMES: Array<[string, string]> = [
  ['a ".." segment', 'incoming/../escape.jsonl'],
  ['".." aimed at another dataset', 'incoming/a/../../datasets/victim/master_metadata.jsonl'],
  ['percent-encoded traversal', 'incoming/%2e%2e%2f%2e%2e%2fdatasets%2fx.jsonl'],
  ['mixed-case encoded traversal', 'incoming/..%2F..%2Fx.jsonl'],
  ['a bad percent escape', 'incoming/%zz-100%.jsonl'],
  ['an encoded right-to-left override', 'incoming/%E2%80%AEgnp.jsonl'],
  ['a raw right-to-left override', 'incoming/\u202egnp.jsonl'],
  ['Japanese with a space', 'incoming/日本語 データ.jsonl'],
  ['fullwidth dots and slash', 'incoming/ＡＢＣ．．／ｘ.jsonl'],
  ['spaces and brackets', 'incoming/my tasks (v2) final.jsonl'],
  ['leading and trailing spaces', 'incoming/  padded  .jsonl'],
  ['an empty path segment', 'incoming//double-slash.jsonl'],
  ['only an extension', 'incoming/.jsonl'],
  ['dots and an extension', 'incoming/..jsonl'],
  ['upper-case extension', 'incoming/UPPER.JSONL'],
  ['1024 bytes of ASCII', `incoming/${'a'.repeat(1024 - 9 - 6)}.jsonl`],
  ['1023 bytes of é', `incoming/${'é'.repeat(504)}.jsonl`],
  ['400 folders deep', `incoming/${'d/'.repeat(400)}x.jsonl`],
  ['emoji', 'incoming/🧩🧩🧩.jsonl'],
];

/** Object names the store cannot read: a failed record that says why, nothing written. */
const FAILED_NAMES: Array<[string, string]> = [
  ['a tab', 'incoming/tab\there.jsonl'],
  ['a backslash', 'incoming/back\\slash.jsonl'],
];

/** Object names the ingest must ignore (no record, nothing written). */
const IGNORED_NAMES: Array<[string, string]> = [
  ['outside incoming/', 'elsewhere/x.jsonl'],
  ['the datasets prefix', 'datasets/x.jsonl'],
  ['traversal into incoming/', '../incoming/x.jsonl'],
  ['incoming as a file-name prefix', 'incomingx.jsonl'],
  ['another case', 'Incoming/x.jsonl'],
  ['nested incoming/', 'x/incoming/x.jsonl'],
  ['.json', 'incoming/x.json'],
  ['.csv', 'incoming/x.csv'],
  ['.jsonl.zip', 'incoming/x.jsonl.zip'],
  ['.jsonl with a trailing space', 'incoming/x.jsonl '],
  ['a folder placeholder', 'incoming/sub.jsonl/'],
];

describe('object names', () => {
  let world: World;
  beforeAll(async () => {
    world = await makeWorld(projectId, pubsub, ENV);
  });
  afterAll(() => closeWorld(world));

  test.each(ACCEPTED_NAMES)(
    '%s: a safe dataset id, and the dataset under datasets/<id>/ only',
    async (_label, name) => {
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(1024);
      const bucket = bucketOf(world);
      const obj = await upload(bucket, name, small);
      expect(await listBucket(bucket)).toEqual([name]); // stored under exactly that name
      await postFinalized(obj, `evt-${bucket}`);
      const [record] = await recordsOf(world, bucket, name);
      expect(record).toMatchObject({ state: 'completed', error: null });
      const id = record!.dataset_id;
      expect(id).toMatch(SAFE_ID);
      expect(id).not.toContain('..');
      expect(record!.dataset_uri).toBe(`gs://${bucket}/datasets/${id}`);
      const files = await listBucket(bucket);
      const written = files.filter((f) => f !== name);
      expect(written.length).toBeGreaterThan(0);
      expect(written.filter((f) => !f.startsWith(`datasets/${id}/`))).toEqual([]);
      const back = await readAndCheckDataset(new GcsBlobStore(storage, bucket, `datasets/${id}`));
      expect(back.tasks.map((t) => t.toString())).toEqual(small.toString().trimEnd().split('\n'));
      expect(back.master.source.uri).toBe(`gs://${bucket}/${name}`);
    },
  );

  test('names that differ only where the id is made safe still get different datasets', async () => {
    const bucket = bucketOf(world);
    const names = [
      'incoming/a b.jsonl',
      'incoming/a-b.jsonl',
      'incoming/a/b.jsonl',
      'incoming/A%20B.jsonl',
    ];
    const ids: string[] = [];
    for (const [i, name] of names.entries()) {
      await postFinalized(await upload(bucket, name, small), `evt-same-${i}`);
      const [record] = await recordsOf(world, bucket, name);
      expect(record?.state).toBe('completed');
      ids.push(record!.dataset_id);
    }
    expect(new Set(ids).size).toBe(names.length);
  });

  test.each(FAILED_NAMES)(
    '%s: a failed record saying why, nothing written',
    async (_label, name) => {
      const bucket = bucketOf(world);
      const obj = await upload(bucket, name, small);
      await postFinalized(obj, `evt-${bucket}`);
      const [record] = await recordsOf(world, bucket, name);
      expect(record).toMatchObject({ state: 'failed', bad_line: null });
      expect(record!.error).toMatch(/has a backslash or a control character.*rename the object/);
      expect(record!.dataset_id).toMatch(SAFE_ID);
      expect(await listBucket(bucket)).toEqual([name]);
    },
  );

  test.each(IGNORED_NAMES)(
    '%s: ignored, with no record and nothing written',
    async (_label, name) => {
      const bucket = bucketOf(world);
      const obj = await upload(bucket, name, small);
      await postFinalized(obj, `evt-${bucket}`);
      expect(await recordsOf(world, bucket, name)).toEqual([]);
      expect(await listBucket(bucket)).toEqual([name]);
    },
  );
});
