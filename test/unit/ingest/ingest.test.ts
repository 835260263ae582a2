/**
 * The ingest without emulators: admission, the direct path and the fan-out decisions, on local
 * folders standing in for buckets, an SQLite ledger, ingest records in memory and a publisher
 * that records what it was given. The same code runs against the emulators in
 * test/integration/functions/ingest.test.ts.
 */
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { ShardlineError } from '../../../core/errors';
import { handleObjectFinalized } from '../../../core/ingest/admission';
import { handleIngestStep, redriveStalled } from '../../../core/ingest/fanout';
import type { IngestConfig, IngestDeps, IngestOutcome } from '../../../core/ingest/ingest';
import { MemoryIngestRecords } from '../../../core/ingest/memory-records';
import {
  METADATA_MAX_ATTEMPTS,
  METADATA_NUM_SHARDS,
  ingestIdOf,
} from '../../../core/ingest/object';
import type { IngestRecord } from '../../../core/ingest/records';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { silentLogger } from '../../../core/log';
import type { IngestStep, Message, ShardAvailable } from '../../../core/messages';
import { DEFAULT_TOPICS } from '../../../core/messages';
import type { Publisher } from '../../../core/wakeup/publisher';
import { readAndCheckDataset } from '../../support/dataset-check';
import { generateJsonl } from '../../support/jsonl-gen';
import { FakeClock } from '../../support/ledger-fixtures';
import { makeTempDir } from '../../support/tmp';

/** Keeps every published message, in order. */
class RecordingPublisher implements Publisher {
  readonly sent: Array<{ topic: string; message: Message }> = [];
  publish(topic: string, message: Message): Promise<string> {
    this.sent.push({ topic, message: structuredClone(message) });
    return Promise.resolve(String(this.sent.length));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  of<T extends Message['type']>(type: T): Array<Extract<Message, { type: T }>> {
    return this.sent
      .map((s) => s.message)
      .filter((m): m is Extract<Message, { type: T }> => m.type === type);
  }
}

const { dir, cleanup } = makeTempDir('ingest-unit');
afterAll(cleanup);

const BUCKET = 'uploads';
let n = 0;

interface World {
  deps: IngestDeps;
  clock: FakeClock;
  records: MemoryIngestRecords;
  publisher: RecordingPublisher;
  ledger: SqliteLedger;
  root: string;
}

function makeWorld(config: Partial<IngestConfig> = {}): World {
  const root = path.join(dir, `w${n++}`);
  const clock = new FakeClock();
  const records = new MemoryIngestRecords(clock);
  const publisher = new RecordingPublisher();
  const ledger = SqliteLedger.open(path.join(dir, `ledger-${n}.sqlite`), { clock });
  const deps: IngestDeps = {
    records,
    ledger,
    publisher,
    store: (bucket, prefix) => new LocalBlobStore(path.join(root, bucket, prefix)),
    clock,
    log: silentLogger,
    createdBy: 'shardline test',
    config: {
      incomingPrefix: 'incoming/',
      datasetsPrefix: 'datasets/',
      defaultNumShards: 4,
      defaultChunkSizeMb: 0.01,
      defaultMaxAttempts: 3,
      stepBudgetMs: 60_000,
      directMaxBytes: 1 << 30,
      rangeBytes: 512 << 20,
      gzipMaxBytes: 1 << 20,
      maxLineBytes: 1 << 20,
      staleMs: 180_000,
      maxAttempts: 5,
      topics: DEFAULT_TOPICS,
      ...config,
    },
  };
  return { deps, clock, records, publisher, ledger, root };
}

const worlds: World[] = [];
function world(config: Partial<IngestConfig> = {}): World {
  const w = makeWorld(config);
  worlds.push(w);
  return w;
}
afterEach(async () => {
  for (const w of worlds.splice(0)) await w.ledger.close();
});

/** Writes an upload into the local stand-in bucket; returns the event's data. */
async function upload(
  w: World,
  name: string,
  data: Buffer,
  metadata?: Record<string, string>,
): Promise<{ bucket: string; name: string; generation: string; size: number }> {
  const info = await new LocalBlobStore(path.join(w.root, BUCKET)).writeAll(name, data);
  return {
    bucket: BUCKET,
    name,
    generation: info.generation,
    size: info.size,
    ...(metadata ? { metadata } : {}),
  };
}

function datasetStore(w: World, record: IngestRecord): LocalBlobStore {
  return new LocalBlobStore(path.join(w.root, BUCKET, 'datasets', record.dataset_id));
}

/** Delivers every `ingest.step` published so far and since, until none is left. */
async function drainSteps(w: World, skip?: (step: IngestStep['step']) => boolean) {
  const outcomes: IngestOutcome[] = [];
  let next = 0;
  for (;;) {
    const steps = w.publisher.of('ingest.step');
    if (next >= steps.length) return outcomes;
    const m = steps[next++]!;
    if (skip?.(m.step)) continue;
    outcomes.push(await handleIngestStep(Buffer.from(JSON.stringify(m)), w.deps));
  }
}

const input = generateJsonl(7, { lines: 400, blankRate: 0.02, badRate: 0.02 });

describe('admission', () => {
  test('an event that is not a storage object is invalid and records nothing', async () => {
    const w = world();
    const out = await handleObjectFinalized({ bucket: 'b' }, 'e1', w.deps);
    expect(out.kind).toBe('invalid');
    expect(await w.records.recent(10)).toEqual([]);
    expect(w.publisher.sent).toEqual([]);
  });

  test("objects outside incoming/ (the project's own chunks and parts) are ignored", async () => {
    const w = world();
    for (const name of [
      'datasets/x/shard_000/chunk_0000.jsonl',
      'activations/shard_000/part_00000.index.jsonl',
      'incoming/notes.txt',
      'incoming/folder/',
    ]) {
      const out = await handleObjectFinalized(
        { bucket: BUCKET, name, generation: '1', size: 10 },
        name,
        w.deps,
      );
      expect(out.kind).toBe('ignored');
    }
    expect(await w.records.recent(10)).toEqual([]);
    expect(w.publisher.sent).toEqual([]);
  });

  test('invalid split settings in the metadata fail the ingest with the key named', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/a.jsonl', input.input, { [METADATA_NUM_SHARDS]: 'many' });
    const out = await handleObjectFinalized(obj, 'e1', w.deps);
    expect(out.kind).toBe('failed');
    const [record] = await w.records.recent(1);
    expect(record).toMatchObject({ state: 'failed' });
    expect(record!.error).toMatch(/shardline-num-shards="many" must be a whole number/);
    expect(w.publisher.sent).toEqual([]);
    expect(await w.ledger.getDataset(record!.dataset_id)).toBeNull();
  });

  test("the shards' attempt budget comes from the upload's metadata, else the deployment's", async () => {
    const w = world({ defaultMaxAttempts: 4 });
    const withBudget = await upload(w, 'incoming/a.jsonl', input.input, {
      [METADATA_MAX_ATTEMPTS]: '10',
    });
    await handleObjectFinalized(withBudget, 'e1', w.deps);
    const plain = await upload(w, 'incoming/b.jsonl', input.input);
    await handleObjectFinalized(plain, 'e2', w.deps);
    const a = (await w.records.get(ingestIdOf(withBudget)))!;
    const b = (await w.records.get(ingestIdOf(plain)))!;
    expect((await w.ledger.getDataset(a.dataset_id))!.max_attempts).toBe(10);
    expect((await w.ledger.getShard(a.dataset_id, 0))!.max_attempts).toBe(10);
    expect((await w.ledger.getDataset(b.dataset_id))!.max_attempts).toBe(4);
    const bad = await upload(w, 'incoming/c.jsonl', input.input, { [METADATA_MAX_ATTEMPTS]: '0' });
    expect(await handleObjectFinalized(bad, 'e3', w.deps)).toMatchObject({ kind: 'failed' });
    expect((await w.records.get(ingestIdOf(bad)))!.error).toMatch(/shardline-max-attempts="0"/);
  });

  test('a gzip upload over the limit fails with what to do instead', async () => {
    const w = world({ gzipMaxBytes: 10 });
    const obj = await upload(w, 'incoming/a.jsonl.gz', Buffer.alloc(100));
    const out = await handleObjectFinalized(obj, 'e1', w.deps);
    expect(out.kind).toBe('failed');
    expect((await w.records.recent(1))[0]!.error).toMatch(/Upload it uncompressed/);
  });

  test('a redelivered event is a duplicate: one dataset, one set of doorbells', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/a.jsonl', input.input);
    expect((await handleObjectFinalized(obj, 'e1', w.deps)).kind).toBe('completed');
    const bells = w.publisher.of('shard.available').length;
    expect(bells).toBe(4);
    expect((await handleObjectFinalized(obj, 'e1', w.deps)).kind).toBe('duplicate');
    expect((await handleObjectFinalized(obj, 'e2', w.deps)).kind).toBe('duplicate');
    expect(w.publisher.of('shard.available')).toHaveLength(bells);
    expect(await w.records.recent(10)).toHaveLength(1);
  });

  test('a re-upload under the same name becomes the next version, never touching the first', async () => {
    const w = world();
    const first = await upload(w, 'incoming/a.jsonl', input.input);
    await handleObjectFinalized(first, 'e1', w.deps);
    w.clock.advance(1000);
    const second = await upload(w, 'incoming/a.jsonl', input.input.subarray(0, 2000));
    expect(second.generation).not.toBe(first.generation);
    const out = await handleObjectFinalized(second, 'e2', w.deps);
    expect(out.kind).toBe('completed');
    const [v2, v1] = await w.records.recent(2);
    expect(v1!.version).toBe(1);
    expect(v2!.version).toBe(2);
    expect(v2!.dataset_id).toBe(`${v1!.dataset_id}-v2`);
    expect((await readAndCheckDataset(datasetStore(w, v1!))).tasks).toEqual(input.tasks);
  });

  test('an ingest in progress elsewhere asks for redelivery; a stalled one is taken over', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/a.jsonl', input.input);
    // Another invocation began it and is (for now) alive.
    await w.records.begin(
      {
        ingest_id: ingestIdOf(obj),
        bucket: obj.bucket,
        object: obj.name,
        generation: obj.generation,
        size: obj.size,
        event_id: 'e0',
        num_shards: 4,
        chunk_size_mb: 0.01,
        mode: 'direct',
        name: () => ({ dataset_id: 'a-x', dataset_uri: 'gs://uploads/datasets/a-x' }),
      },
      w.deps.config.staleMs,
      w.deps.config.maxAttempts,
    );
    await expect(handleObjectFinalized(obj, 'e1', w.deps)).rejects.toMatchObject({
      code: 'INTERRUPTED',
    });
    w.clock.advance(w.deps.config.staleMs);
    const out = await handleObjectFinalized(obj, 'e2', w.deps);
    expect(out.kind).toBe('completed');
    expect((await w.records.get(ingestIdOf(obj)))!.attempts).toBe(1);
  });
});

describe('the direct path', () => {
  test('splits, registers every shard and rings one doorbell per shard', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/tasks.jsonl', input.input);
    const out = await handleObjectFinalized(obj, 'e1', w.deps);
    expect(out).toMatchObject({ kind: 'completed' });
    const record = (await w.records.get(ingestIdOf(obj)))!;
    expect(record).toMatchObject({ state: 'completed', phase: 'done', mode: 'direct' });
    expect(record.stats).toMatchObject({ total_tasks: input.tasks.length, num_shards: 4 });
    const back = await readAndCheckDataset(datasetStore(w, record));
    expect(back.tasks).toEqual(input.tasks);
    const status = await w.ledger.status(record.dataset_id);
    expect(status.totals).toMatchObject({
      shards: 4,
      available: 4,
      total_tasks: input.tasks.length,
    });
    const bells: ShardAvailable[] = w.publisher.of('shard.available');
    expect(bells.map((b) => b.shard_id).sort()).toEqual([0, 1, 2, 3]);
    for (const b of bells)
      expect(b).toMatchObject({ dataset_id: record.dataset_id, dataset_uri: record.dataset_uri });
    expect(w.publisher.sent.every((s) => s.topic === DEFAULT_TOPICS.work)).toBe(true);
  });

  test('a file with no valid task fails with its first bad line, and registers nothing', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/bad.jsonl', Buffer.from('[1]\n{"a":\n'));
    const out = await handleObjectFinalized(obj, 'e1', w.deps);
    expect(out.kind).toBe('failed');
    const record = (await w.records.get(ingestIdOf(obj)))!;
    expect(record.bad_line).toMatchObject({ line: 1 });
    expect(await w.ledger.getDataset(record.dataset_id)).toBeNull();
    expect(w.publisher.sent).toEqual([]);
  });
});

describe('the fan-out', () => {
  const big = generateJsonl(11, { lines: 1500, blankRate: 0.01, badRate: 0.01, bigChance: 0.05 });

  async function fannedOut(config: Partial<IngestConfig>, name = 'incoming/big.jsonl') {
    const w = world({ directMaxBytes: 1000, rangeBytes: 20_000, ...config });
    const obj = await upload(w, name, big.input);
    const out = await handleObjectFinalized(obj, 'e1', w.deps);
    return { w, obj, out };
  }

  test('a large upload is fanned out over scan steps, one per byte range', async () => {
    const { w, obj, out } = await fannedOut({});
    expect(out.kind).toBe('fanned-out');
    const record = (await w.records.get(ingestIdOf(obj)))!;
    expect(record).toMatchObject({ mode: 'fanout', phase: 'scan', state: 'running' });
    expect(record.ranges.length).toBeGreaterThan(3);
    const scans = w.publisher.of('ingest.step');
    expect(scans.map((s) => s.step)).toEqual(
      record.ranges.map((_, r) => ({ kind: 'scan', range: r })),
    );
    // Nothing is announced before the dataset is whole.
    expect(w.publisher.of('shard.available')).toEqual([]);
  });

  test('its steps make the same dataset as the direct path, then register and announce it', async () => {
    const { w, obj } = await fannedOut({});
    const outcomes = await drainSteps(w);
    expect(outcomes.at(-1)!.kind).toBe('completed');
    const record = (await w.records.get(ingestIdOf(obj)))!;
    expect(record).toMatchObject({ state: 'completed', phase: 'done' });
    const fanned = await readAndCheckDataset(datasetStore(w, record));

    const d = world();
    const direct = await upload(d, 'incoming/big.jsonl', big.input);
    await handleObjectFinalized(direct, 'e1', d.deps);
    const viaDirect = await readAndCheckDataset(
      datasetStore(d, (await d.records.get(ingestIdOf(direct)))!),
    );
    expect(fanned.tasks).toEqual(big.tasks);
    expect([...fanned.files.entries()]).toEqual([...viaDirect.files.entries()]);
    expect(w.publisher.of('shard.available')).toHaveLength(record.stats!.num_shards);
  });

  test('a shard write out of time continues in a new step, with identical bytes', async () => {
    const { w, obj } = await fannedOut({ stepBudgetMs: 0 });
    await drainSteps(w);
    const record = (await w.records.get(ingestIdOf(obj)))!;
    expect(record.state).toBe('completed');
    const writes = w.publisher.of('ingest.step').filter((s) => s.step.kind === 'write');
    expect(writes.length).toBeGreaterThan(record.shards);
    expect((await readAndCheckDataset(datasetStore(w, record))).tasks).toEqual(big.tasks);
  });

  test('a step delivered twice is skipped the second time', async () => {
    const { w } = await fannedOut({});
    const first = w.publisher.of('ingest.step')[0]!;
    const data = Buffer.from(JSON.stringify(first));
    expect((await handleIngestStep(data, w.deps)).kind).toBe('step-done');
    expect(await handleIngestStep(data, w.deps)).toMatchObject({ kind: 'step-skipped' });
  });

  test('a lost step stalls the ingest until the redrive publishes it again', async () => {
    const { w, obj } = await fannedOut({});
    let dropped = false;
    await drainSteps(w, (step) => {
      if (dropped || step.kind !== 'write') return false;
      dropped = true;
      return true;
    });
    expect(dropped).toBe(true);
    const stalled = (await w.records.get(ingestIdOf(obj)))!;
    expect(stalled).toMatchObject({ state: 'running', phase: 'write' });
    expect(stalled.shards_done).toBe(stalled.shards - 1);

    // Nothing is stale yet; after staleMs the tick takes it over and publishes the missing step.
    expect(await w.records.takeOverStalled(w.deps.config.staleMs, 5)).toEqual([]);
    w.clock.advance(w.deps.config.staleMs + 1);
    const taken = await w.records.takeOverStalled(w.deps.config.staleMs, 5);
    expect(taken.map((r) => r.ingest_id)).toEqual([stalled.ingest_id]);
    const before = w.publisher.of('ingest.step').length;
    expect(await redriveStalled(w.deps, taken)).toBe(1);
    expect(
      w.publisher
        .of('ingest.step')
        .slice(before)
        .map((s) => s.step.kind),
    ).toEqual(['write']);
    await drainSteps(w);
    expect((await w.records.get(ingestIdOf(obj)))!.state).toBe('completed');
  });

  test('a large file of nothing but bad lines fails after its scan, leaving no dataset behind', async () => {
    const w = world({ directMaxBytes: 100, rangeBytes: 1000 });
    const bad = Buffer.from('[1,2,3]\n'.repeat(500));
    const obj = await upload(w, 'incoming/bad.jsonl', bad);
    expect((await handleObjectFinalized(obj, 'e1', w.deps)).kind).toBe('fanned-out');
    await drainSteps(w);
    const record = (await w.records.get(ingestIdOf(obj)))!;
    expect(record.state).toBe('failed');
    expect(record.bad_line?.line).toBe(1);
    expect(record.bad_line?.reason).toMatch(/array/);
    const left: string[] = [];
    for await (const f of datasetStore(w, record).list('')) left.push(f.key);
    expect(left).toEqual([]);
    expect(w.publisher.of('shard.available')).toEqual([]);
  });
});

describe('outages during the ingest', () => {
  const unavailable = (what: string): ShardlineError =>
    new ShardlineError('STORAGE', `${what}: unavailable`, {
      cause: Object.assign(new Error('503 Service Unavailable'), { code: 503 }),
    });

  test('Storage down mid-split: the event is retried, and the redelivery (after takeover) finishes the same dataset', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/a.jsonl', input.input);
    const realStore = w.deps.store;
    let writes = 0;
    const failing = {
      ...w.deps,
      store: (bucket: string, prefix: string) => {
        const s = realStore(bucket, prefix);
        const writeAll = s.writeAll.bind(s);
        // The fifth object written fails, as an unavailable service does.
        s.writeAll = (key, data, opts) =>
          ++writes === 5 ? Promise.reject(unavailable(key)) : writeAll(key, data, opts);
        const writer = s.writer.bind(s);
        s.writer = (key, opts) => {
          if (++writes === 5) throw unavailable(key);
          return writer(key, opts);
        };
        return s;
      },
    };
    await expect(handleObjectFinalized(obj, 'e1', failing)).rejects.toMatchObject({
      code: 'STORAGE',
    });
    const after = (await w.records.get(ingestIdOf(obj)))!;
    expect(after).toMatchObject({ state: 'running', phase: 'split' });
    expect(after.error).toMatch(/unavailable/);
    expect(await w.ledger.getDataset(after.dataset_id)).toBeNull();
    expect(w.publisher.sent).toEqual([]);
    // Eventarc delivers again; a fresh heartbeat means "busy" until the record goes stale.
    await expect(handleObjectFinalized(obj, 'e1', w.deps)).rejects.toMatchObject({
      code: 'INTERRUPTED',
    });
    w.clock.advance(w.deps.config.staleMs);
    expect((await handleObjectFinalized(obj, 'e1', w.deps)).kind).toBe('completed');
    expect((await readAndCheckDataset(datasetStore(w, after))).tasks).toEqual(input.tasks);
    expect(w.publisher.of('shard.available')).toHaveLength(4);
  });

  test('the ledger down at registration: the retry resumes at register; no half-registered dataset is claimable', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/a.jsonl', input.input);
    const register = w.ledger.registerDataset.bind(w.ledger);
    const down = new ShardlineError('LEDGER', 'Firestore: unavailable', {
      cause: Object.assign(new Error('14 UNAVAILABLE'), { code: 14 }),
    });
    w.ledger.registerDataset = () => Promise.reject(down);
    await expect(handleObjectFinalized(obj, 'e1', w.deps)).rejects.toBe(down);
    const mid = (await w.records.get(ingestIdOf(obj)))!;
    expect(mid).toMatchObject({ state: 'running', phase: 'register' });
    await expect(w.ledger.claim(mid.dataset_id, 'early-worker')).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    expect(w.publisher.sent).toEqual([]);
    w.ledger.registerDataset = register;
    w.clock.advance(w.deps.config.staleMs);
    expect((await handleObjectFinalized(obj, 'e2', w.deps)).kind).toBe('completed');
    expect((await w.ledger.status(mid.dataset_id)).totals.available).toBe(4);
    expect(w.publisher.of('shard.available')).toHaveLength(4);
  });

  test('Pub/Sub down while announcing: the retry rings every doorbell (a duplicate is harmless)', async () => {
    const w = world();
    const obj = await upload(w, 'incoming/a.jsonl', input.input);
    const publish = w.publisher.publish.bind(w.publisher);
    let n = 0;
    w.publisher.publish = (topic, message) =>
      ++n === 3 ? Promise.reject(unavailable('publish')) : publish(topic, message);
    await expect(handleObjectFinalized(obj, 'e1', w.deps)).rejects.toMatchObject({
      code: 'STORAGE',
    });
    expect((await w.records.get(ingestIdOf(obj)))!.phase).toBe('announce');
    w.publisher.publish = publish;
    w.clock.advance(w.deps.config.staleMs);
    expect((await handleObjectFinalized(obj, 'e1', w.deps)).kind).toBe('completed');
    const shards = new Set(w.publisher.of('shard.available').map((b) => b.shard_id));
    expect([...shards].sort()).toEqual([0, 1, 2, 3]);
  });
});
