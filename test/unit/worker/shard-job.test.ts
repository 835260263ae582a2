/**
 * The shard job with a fake model: parts cut deterministically, resume after the last committed
 * part, and a zombie (a worker whose lease was taken) never commits or completes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';

import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import type { Claim, Ledger } from '../../../core/ledger/ledger';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { ShardlineError, errorCode, isRetryable } from '../../../core/errors';
import { silentLogger } from '../../../core/log';
import { parseSafetensorsHeader, readTensor } from '../../../core/safetensors';
import { createDataset } from '../../../core/split/create-dataset';
import { sourceFromStore } from '../../../core/split/source';
import type { ExtractedBatch } from '../../../worker/extraction/activations';
import type { EngineInfo, Extractor } from '../../../worker/extraction/engine';
import { loadPromptTemplate } from '../../../worker/extraction/prompt-template';
import { resolveSampleOptions } from '../../../worker/extraction/samples';
import type { PromptTokenizer } from '../../../worker/extraction/tokenizer';
import { loadTokenizer } from '../../../worker/extraction/tokenizer';
import type { ShardJobDeps, ShardJobSettings } from '../../../worker/shard-job';
import { processShard } from '../../../worker/shard-job';
import { FakeTimers } from '../../support/fake-timers';
import { FakeClock } from '../../support/ledger-fixtures';
import { makeTempDir } from '../../support/tmp';
import { arcJsonl } from '../../support/worker-fixtures';

let tokenizer: PromptTokenizer;
beforeAll(() => {
  tokenizer = loadTokenizer();
});
let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = makeTempDir('shard-job')));
afterEach(() => cleanup());

/** A model stand-in: row values derived from the token ids; optionally held until released. */
class FakeExtractor implements Extractor {
  readonly info: EngineInfo = {
    backend: 'fake',
    modelPath: 'fake.onnx',
    modelSha256: '0'.repeat(64),
    preparedModelPath: 'fake.onnx',
    reusedPreparedModel: false,
    residualMethod: 'optimum',
    numLayers: 2,
    layers: [1],
    hiddenSize: 4,
    dtype: 'float32',
    executionProviders: ['cpu'],
    loadMs: 0,
  };
  calls = 0;
  private gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  private onHeld: () => void = () => undefined;
  /** Resolves when a call first waits at the gate that `hold()` closes. */
  readonly held = new Promise<void>((r) => (this.onHeld = r));
  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }
  release(): void {
    this.open?.();
    this.gate = null;
  }
  async extract(
    sequences: ReadonlyArray<ArrayLike<number>>,
    positions?: ReadonlyArray<ArrayLike<number>>,
  ): Promise<ExtractedBatch> {
    this.calls++;
    if (this.gate) {
      this.onHeld();
      await this.gate;
    }
    // Row values derived from the token ids (and positions), so the test can check placement.
    const perSequence = sequences.map((s, k) => {
      const at = positions?.[k] ?? Array.from({ length: s.length }, (_, i) => i);
      const rows = new Float32Array(at.length * 4);
      for (let r = 0; r < at.length; r++) rows.fill(s[at[r]!]! / 1000, r * 4, r * 4 + 4);
      return rows;
    });
    return {
      dtype: 'float32',
      hiddenSize: 4,
      layers: [1],
      rowCounts: perSequence.map((r) => r.length / 4),
      rows: [perSequence],
    };
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function dataset(tasks: number, name = 'ds'): Promise<{ ledger: Ledger; root: string }> {
  const root = path.join(dir, name);
  const input = new LocalBlobStore(dir);
  await input.writeAll('in.jsonl', arcJsonl(tasks));
  const result = await createDataset({
    source: await sourceFromStore(input, 'in.jsonl'),
    output: new LocalBlobStore(root),
    datasetId: 'ds',
    numShards: 1,
    chunkSizeMb: 0.002,
    strict: false,
    clock: systemClock,
    log: silentLogger,
    createdBy: 'test',
    creator: { host: 'h', pid: 1 },
  });
  const ledger = SqliteLedger.open(path.join(root, 'ledger.sqlite'), { clock: systemClock });
  await ledger.registerDataset(result.master, { datasetUri: root });
  return { ledger, root };
}

function deps(
  ledger: Ledger,
  root: string,
  extractor: Extractor,
  stop = new AbortController().signal,
): ShardJobDeps {
  return {
    ledger,
    dataset: new LocalBlobStore(root),
    output: new LocalBlobStore(path.join(root, 'activations')),
    datasetUri: root,
    extractor,
    tokenizer,
    sampleOptions: resolveSampleOptions({
      template: loadPromptTemplate(),
      predictionsPerTask: 2,
      maxSeqLength: 4096,
    }),
    runMetadata: { model: 'fake' },
    positions: { kind: 'all' },
    fingerprint: 'fake-run',
    clock: systemClock,
    log: silentLogger,
    stop,
  };
}

const settings = (leaseMs = 60_000): ShardJobSettings => ({
  leaseMs,
  partSizeBytes: 40_000,
  batch: { maxBatchSize: 2 },
});

test('a shard is processed into contiguous parts, a manifest, and completion', async () => {
  const { ledger, root } = await dataset(12);
  try {
    const claim = (await ledger.claim('ds', 'w1'))!;
    const outcome = await processShard(claim, deps(ledger, root, new FakeExtractor()), settings());
    expect(outcome).toMatchObject({ kind: 'completed', samples: 24 });
    const parts = await ledger.listParts(claim);
    expect(parts.length).toBeGreaterThan(1);
    parts.forEach((p, i) =>
      expect(p.first_task_index).toBe(i === 0 ? 0 : parts[i - 1]!.next_task_index),
    );
    expect(parts.at(-1)!.next_task_index).toBe(12);
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'completed',
      samples_committed: 24,
    });
  } finally {
    await ledger.close();
  }
});

test('a resumed shard makes the same parts, byte for byte, as an uninterrupted run', async () => {
  // X: one uninterrupted run.
  const x = await dataset(12, 'x');
  const cx = (await x.ledger.claim('ds', 'w1'))!;
  await processShard(cx, deps(x.ledger, x.root, new FakeExtractor()), settings());
  const xOut = new LocalBlobStore(path.join(x.root, 'activations'));
  const files = new Map<string, Buffer>();
  for await (const f of xOut.list('shard_000/part_')) files.set(f.key, await xOut.readAll(f.key));
  expect(files.size).toBeGreaterThan(4);
  await x.ledger.close();

  // Y: the same dataset, stopped after two committed parts, then resumed by another worker.
  const y = await dataset(12, 'y');
  try {
    const stop = new AbortController();
    const c1 = (await y.ledger.claim('ds', 'w1'))!;
    const first = await processShard(
      c1,
      {
        ...deps(y.ledger, y.root, new FakeExtractor(), stop.signal),
        onProgress: (p) => p.partsCommitted >= 2 && stop.abort(),
      },
      settings(),
    );
    expect(first.kind).toBe('stopped');
    const committed = await y.ledger.listParts({ dataset_id: 'ds', shard_id: 0 });
    expect(committed.length).toBe(2);
    const c2 = (await y.ledger.claim('ds', 'w2'))!;
    expect(
      (await processShard(c2, deps(y.ledger, y.root, new FakeExtractor()), settings())).kind,
    ).toBe('completed');
    const parts = await y.ledger.listParts(c2);
    expect(parts.map((p) => p.worker_id)).toEqual(parts.map((_, i) => (i < 2 ? 'w1' : 'w2')));
    const yOut = new LocalBlobStore(path.join(y.root, 'activations'));
    const yKeys: string[] = [];
    for await (const f of yOut.list('shard_000/part_')) yKeys.push(f.key);
    expect(yKeys).toEqual([...files.keys()]);
    for (const [key, bytes] of files)
      expect({ key, same: (await yOut.readAll(key)).equals(bytes) }).toEqual({ key, same: true });
  } finally {
    await y.ledger.close();
  }
});

/** Every sample of a shard's outputs in manifest order: id, and its rows' bytes. */
async function samplesOf(root: string): Promise<Array<{ id: string; rows: string }>> {
  const out = new LocalBlobStore(path.join(root, 'activations'));
  const manifest = JSON.parse((await out.readAll('shard_000/_MANIFEST.json')).toString()) as {
    parts: Array<{ name: string }>;
  };
  const samples: Array<{ id: string; rows: string }> = [];
  for (const p of manifest.parts) {
    const file = await out.readAll(`shard_000/${p.name}.safetensors`);
    const parsed = parseSafetensorsHeader(file);
    const offsets = Array.from(readTensor(file, parsed, 'sample_offsets') as BigInt64Array, Number);
    const rows = readTensor(file, parsed, 'resid_post.1') as Float32Array;
    const index = (await out.readAll(`shard_000/${p.name}.index.jsonl`))
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { sample_id: string });
    index.forEach((r, k) =>
      samples.push({
        id: r.sample_id,
        rows: Buffer.from(
          rows.buffer,
          rows.byteOffset + offsets[k]! * 16,
          (offsets[k + 1]! - offsets[k]!) * 16,
        ).toString('hex'),
      }),
    );
  }
  return samples;
}

test('a holder whose unit is split cuts its last part at the new end, completes its unit only; the splitter completes the shard, with the same samples as an unsplit run', async () => {
  const plain = await dataset(12, 'plain');
  await processShard(
    (await plain.ledger.claim('ds', 'w0'))!,
    deps(plain.ledger, plain.root, new FakeExtractor()),
    settings(),
  );
  await plain.ledger.close();

  const { ledger, root } = await dataset(12, 'split');
  try {
    // A fixed clock (no rate yet: the holder reserves 4 tasks at a time) and timers that never
    // fire: the holder hears from the ledger only when it reserves.
    const clock = new FakeClock();
    const timers = new FakeTimers(clock);
    const c0 = (await ledger.claim('ds', 'w1'))!;
    const slow = new FakeExtractor();
    slow.hold();
    const calls: Call[] = [];
    const holder = processShard(
      c0,
      { ...deps(recording(ledger, calls), root, slow), clock, timers },
      settings(),
    );
    await slow.held; // it reserved tasks 0-3 and is inside its first batch
    const split = (await ledger.split('ds', 'w2', { leaseMs: 60_000 }))!;
    expect(split.from).toMatchObject({ unit: 0, holder: 'w1', end_task_index: 6 });
    expect(split.claim).toMatchObject({ unit: 1, end_task_index: 12 });
    slow.release();
    const first = await holder;
    expect(first).toMatchObject({ kind: 'completed', shardCompleted: false, manifestUri: null });
    // It learned its end when it asked to reserve past task 3, and never asked again.
    expect(calls.filter((c) => c.verb === 'heartbeat')).toEqual([
      { verb: 'heartbeat', worker: 'w1', outcome: 'ok' },
      { verb: 'heartbeat', worker: 'w1', outcome: 'ok' },
    ]);
    const unit0 = await ledger.listParts(c0);
    expect(unit0.at(-1)).toMatchObject({ next_task_index: 6 });
    expect(unit0.at(-1)!.name).toMatch(/^part_\d{5}_to6$/);

    const second = await processShard(
      split.claim,
      deps(ledger, root, new FakeExtractor()),
      settings(),
    );
    expect(second).toMatchObject({ kind: 'completed', shardCompleted: true });
    const parts = await ledger.listShardParts({ dataset_id: 'ds', shard_id: 0 });
    expect(parts.map((p) => p.unit)).toEqual(parts.map((p) => (p.first_task_index < 6 ? 0 : 1)));
    expect(parts.filter((p) => p.unit === 1).every((p) => /^part_u1_\d{5}$/.test(p.name))).toBe(
      true,
    );
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'completed',
      units_completed: 2,
    });
    // The same samples, in the same order, with the same rows, as the run never split.
    const got = await samplesOf(root);
    expect(got).toHaveLength(24);
    expect(got).toEqual(await samplesOf(plain.root));
  } finally {
    await ledger.close();
  }
});

test('a preemption notice: the job reads no further, commits the part in hand where it stopped, releases the unit with no attempt; the next holder finishes it exactly', async () => {
  const plain = await dataset(12, 'plain');
  await processShard(
    (await plain.ledger.claim('ds', 'w0'))!,
    deps(plain.ledger, plain.root, new FakeExtractor()),
    settings(),
  );
  await plain.ledger.close();

  const { ledger, root } = await dataset(12, 'drained');
  try {
    const drain = new AbortController();
    const c1 = (await ledger.claim('ds', 'w1'))!;
    const outcome = await processShard(
      c1,
      {
        ...deps(ledger, root, new FakeExtractor()),
        drain: drain.signal,
        onProgress: (p) => p.tasksDone >= 5 && drain.abort(),
      },
      // Parts of many tasks: the notice comes while one is in hand.
      { ...settings(), partSizeBytes: 1 << 20 },
    );
    expect(outcome.kind).toBe('stopped');
    const after = (await ledger.getShard('ds', 0))!;
    expect(after).toMatchObject({ status: 'available', attempts: 0, assigned_to: null });
    expect(after.next_task_index).toBeGreaterThanOrEqual(5);
    expect(after.next_task_index).toBeLessThan(12);
    const parts = await ledger.listParts(c1);
    expect(parts).toHaveLength(1);
    expect(parts[0]).toMatchObject({
      first_task_index: 0,
      next_task_index: after.next_task_index,
      name: `part_00000_to${after.next_task_index}`,
    });
    const c2 = (await ledger.claim('ds', 'w2'))!;
    expect(
      await processShard(c2, deps(ledger, root, new FakeExtractor()), {
        ...settings(),
        partSizeBytes: 1 << 20,
      }),
    ).toMatchObject({ kind: 'completed', shardCompleted: true });
    expect(await samplesOf(root)).toEqual(await samplesOf(plain.root));
  } finally {
    await ledger.close();
  }
});

/** Ledger verbs a job calls, in order, with how each ended (`ok` or the error's code). */
type Call = { verb: string; worker: string; outcome: string };

/** `ledger` with every verb that writes for a holder recorded into `calls`. */
function recording(ledger: Ledger, calls: Call[]): Ledger {
  const spying = Object.create(ledger) as Ledger;
  for (const verb of ['heartbeat', 'commitPart', 'complete', 'fail', 'release'] as const) {
    const real = (ledger[verb] as (c: Claim, ...rest: unknown[]) => Promise<unknown>).bind(ledger);
    (spying as unknown as Record<string, unknown>)[verb] = async (c: Claim, ...rest: unknown[]) => {
      try {
        const out = await real(c, ...rest);
        calls.push({ verb, worker: c.worker_id, outcome: 'ok' });
        return out;
      } catch (e: unknown) {
        calls.push({ verb, worker: c.worker_id, outcome: errorCode(e) ?? 'error' });
        throw e;
      }
    };
  }
  return spying;
}

test('a zombie whose shard was taken learns it at its next heartbeat, commits nothing and stops; the new holder finishes it', async () => {
  const { ledger, root } = await dataset(8);
  try {
    const clock = new FakeClock();
    const timers = new FakeTimers(clock);
    const zombieClaim: Claim = (await ledger.claim('ds', 'zombie', { leaseMs: 600 }))!;
    const slow = new FakeExtractor();
    slow.hold();
    const calls: Call[] = [];
    const zombie = processShard(
      zombieClaim,
      { ...deps(recording(ledger, calls), root, slow), clock, timers },
      settings(600),
    );
    await slow.held; // the zombie is inside its first batch
    // An operator resets the shard and another worker claims it (a newer epoch).
    await ledger.reset('ds', 0, 'operator');
    const fresh = (await ledger.claim('ds', 'fresh'))!;
    expect(fresh.epoch).toBeGreaterThan(zombieClaim.epoch);
    expect(await timers.fireNext()).toBe(clock.nowMs()); // the zombie's heartbeat finds out
    slow.release();
    const outcome = await zombie;
    expect(outcome).toMatchObject({
      kind: 'lost',
      reason: expect.stringMatching(/^the lease was taken/) as unknown,
    });
    // Its ledger calls: the heartbeat that reserved its first tasks, then the refused one;
    // nothing committed, nothing completed.
    expect(calls).toEqual([
      { verb: 'heartbeat', worker: 'zombie', outcome: 'ok' },
      { verb: 'heartbeat', worker: 'zombie', outcome: 'LEASE_LOST' },
    ]);
    expect(timers.count).toBe(0);

    const done = await processShard(fresh, deps(ledger, root, new FakeExtractor()), settings());
    expect(done.kind).toBe('completed');
    const parts = await ledger.listParts(fresh);
    expect(new Set(parts.map((p) => p.worker_id))).toEqual(new Set(['fresh']));
  } finally {
    await ledger.close();
  }
});

test('a zombie that reaches commitPart is refused by the ledger (fenced by epoch) and stops', async () => {
  // Four tasks: all of them reserved with the first heartbeat, so no later one warns it.
  const { ledger, root } = await dataset(4);
  try {
    const zombieClaim = (await ledger.claim('ds', 'zombie', { leaseMs: 60_000 }))!;
    const slow = new FakeExtractor();
    slow.hold();
    const calls: Call[] = [];
    // Timers that never fire: no heartbeat can warn the zombie, only commitPart's fence.
    const timers = new FakeTimers(new FakeClock());
    const zombie = processShard(
      zombieClaim,
      { ...deps(recording(ledger, calls), root, slow), timers },
      settings(60_000),
    );
    await slow.held;
    await ledger.reset('ds', 0, 'operator');
    const fresh = (await ledger.claim('ds', 'fresh'))!;
    slow.release();
    expect(await zombie).toMatchObject({
      kind: 'lost',
      reason: expect.stringMatching(
        /^commitPart: zombie \(epoch 1\) no longer holds shard 0 of dataset ds: it is held by fresh at epoch 2$/,
      ) as unknown,
    });
    // It reserved its tasks, got as far as committing its first part, and the ledger refused it.
    expect(calls).toEqual([
      { verb: 'heartbeat', worker: 'zombie', outcome: 'ok' },
      { verb: 'commitPart', worker: 'zombie', outcome: 'LEASE_LOST' },
    ]);
    expect(await ledger.listParts({ dataset_id: 'ds', shard_id: 0 })).toEqual([]);
    expect((await ledger.getShard('ds', 0))!.assigned_to).toBe(fresh.worker_id);
  } finally {
    await ledger.close();
  }
});

test('renewals that fail until the lease runs out stop the job, which commits nothing more', async () => {
  const clock = new FakeClock();
  const timers = new FakeTimers(clock);
  const { ledger, root } = await dataset(8);
  const fenced = SqliteLedger.open(path.join(root, 'ledger.sqlite'), { clock });
  await ledger.close();
  try {
    const claim = (await fenced.claim('ds', 'w1', { leaseMs: 30_000 }))!;
    const calls: Call[] = [];
    const spying = recording(fenced, calls);
    // Once the first part is committed, the ledger stops answering heartbeats (a transient
    // error, retried), nothing else.
    const outage = new ShardlineError('LEDGER', 'the ledger did not answer', {
      cause: Object.assign(new Error('14 UNAVAILABLE'), { code: 14 }),
    });
    expect(isRetryable(outage)).toBe(true);
    let down = false;
    const realHeartbeat = spying.heartbeat.bind(spying);
    spying.heartbeat = (c, o) => {
      if (!down) return realHeartbeat(c, o);
      calls.push({ verb: 'heartbeat', worker: c.worker_id, outcome: 'LEDGER' });
      return Promise.reject(outage);
    };
    const extractor = new FakeExtractor();
    // Every task closes a part; once the first part is committed, the next batch is held.
    const realCommit = spying.commitPart.bind(spying);
    spying.commitPart = async (c, p) => {
      const out = await realCommit(c, p);
      if (p.part_index === 0) {
        extractor.hold();
        down = true;
      }
      return out;
    };
    const job = processShard(
      claim,
      { ...deps(spying, root, extractor), clock, timers },
      { ...settings(30_000), partSizeBytes: 1 },
    );
    await extractor.held;
    expect(calls.filter((c) => c.verb !== 'heartbeat')).toEqual([
      { verb: 'commitPart', worker: 'w1', outcome: 'ok' },
    ]);

    // Time passes only through the keeper's timers: each renewal fails, until the lease's end.
    const expiresMs = Date.parse(claim.lease_expires_at);
    for (let i = 0; i < 1000 && timers.count > 0; i++) await timers.fireNext();
    expect(timers.count).toBe(0);
    expect(clock.nowMs()).toBeGreaterThanOrEqual(expiresMs);
    const beats = calls.filter((c) => c.verb === 'heartbeat' && c.outcome === 'LEDGER');
    expect(beats.length).toBeGreaterThan(5);

    extractor.release();
    const outcome = await job;
    expect(outcome).toMatchObject({
      kind: 'lost',
      reason: `could not renew the lease before it expired (${beats.length} failed heartbeats; last: the ledger did not answer)`,
    });
    // After the loss: no commit, no complete, no fail, no release; one part stays committed.
    expect(calls.filter((c) => c.verb !== 'heartbeat')).toEqual([
      { verb: 'commitPart', worker: 'w1', outcome: 'ok' },
    ]);
    expect((await fenced.listParts(claim)).map((p) => p.part_index)).toEqual([0]);
    expect(await fenced.getShard('ds', 0)).toMatchObject({
      status: 'in_use',
      assigned_to: 'w1',
      parts_committed: 1,
    });
    // No part was started after the loss: the output holds the committed part and at most the
    // one that was in hand (written, never committed; a resumer rewrites it, same name and bytes).
    const out = new LocalBlobStore(path.join(root, 'activations'));
    const written: string[] = [];
    for await (const f of out.list('shard_000/')) written.push(f.key);
    expect(written).toEqual(
      expect.arrayContaining([
        'shard_000/part_00000.index.jsonl',
        'shard_000/part_00000.safetensors',
      ]),
    );
    expect(written.filter((k) => !/\/part_0000[01]\.(index\.jsonl|safetensors)$/.test(k))).toEqual(
      [],
    );
  } finally {
    await fenced.close();
  }
});

test('a stop request releases the shard after the batch in hand, without an attempt', async () => {
  const { ledger, root } = await dataset(8);
  try {
    const claim = (await ledger.claim('ds', 'w1'))!;
    const slow = new FakeExtractor();
    slow.hold();
    const stop = new AbortController();
    const job = processShard(claim, deps(ledger, root, slow, stop.signal), settings());
    await slow.held; // the batch in hand
    stop.abort();
    slow.release();
    expect((await job).kind).toBe('stopped');
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'available',
      attempts: 0,
      assigned_to: null,
    });
  } finally {
    await ledger.close();
  }
});

test('an infrastructure error fails the claim with the reason (retried elsewhere, attempts + 1)', async () => {
  const { ledger, root } = await dataset(4);
  try {
    const claim = (await ledger.claim('ds', 'w1'))!;
    const broken = new FakeExtractor();
    broken.extract = () =>
      Promise.reject(Object.assign(new Error('CUDA out of memory'), { code: 'MODEL' }));
    const outcome = await processShard(claim, deps(ledger, root, broken), settings());
    expect(outcome).toMatchObject({ kind: 'failed', final: false });
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'available',
      attempts: 1,
      last_error: expect.stringContaining('CUDA out of memory') as unknown,
    });
  } finally {
    await ledger.close();
  }
});

/** A dataset store whose first `failures` reads fail the way an unavailable service does. */
function flakyStore(root: string, failures: number): LocalBlobStore & { failed: number } {
  const store = new LocalBlobStore(root) as LocalBlobStore & { failed: number };
  store.failed = 0;
  const read = store.read.bind(store);
  store.read = (key, range) => {
    if (store.failed >= failures) return read(key, range);
    store.failed++;
    const s = new PassThrough();
    const unavailable = Object.assign(new Error('503 Service Unavailable'), { code: 503 });
    setImmediate(() =>
      s.destroy(
        new ShardlineError('STORAGE', `reading ${key}: unavailable`, { cause: unavailable }),
      ),
    );
    return s;
  };
  return store;
}

const quickRetry = (over: Partial<ShardJobSettings> = {}): ShardJobSettings => ({
  ...settings(),
  retry: { baseMs: 1, capMs: 5 },
  ...over,
});

test('reads that fail while Storage is unavailable are retried: the shard completes, no attempt counted', async () => {
  const { ledger, root } = await dataset(6);
  try {
    const claim = (await ledger.claim('ds', 'w1'))!;
    const store = flakyStore(root, 3);
    const outcome = await processShard(
      claim,
      { ...deps(ledger, root, new FakeExtractor()), dataset: store },
      quickRetry(),
    );
    expect(store.failed).toBe(3);
    expect(outcome).toMatchObject({ kind: 'completed', samples: 12 });
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'completed',
      attempts: 0,
      epoch: claim.epoch,
    });
  } finally {
    await ledger.close();
  }
});

test('an outage longer than the budget releases the shard, with no attempt counted', async () => {
  const { ledger, root } = await dataset(4);
  try {
    const claim = (await ledger.claim('ds', 'w1'))!;
    const outcome = await processShard(
      claim,
      { ...deps(ledger, root, new FakeExtractor()), dataset: flakyStore(root, 1_000_000) },
      quickRetry({ outageBudgetMs: 30 }),
    );
    expect(outcome).toMatchObject({ kind: 'released' });
    expect((outcome as { reason: string }).reason).toMatch(/unavailable for \d+ s/);
    expect(await ledger.getShard('ds', 0)).toMatchObject({
      status: 'available',
      attempts: 0,
      assigned_to: null,
    });
  } finally {
    await ledger.close();
  }
});

test('a chunk that fails its checksum fails the shard at once, after one attempt, with the reason', async () => {
  const { ledger, root } = await dataset(6);
  try {
    // Change one byte of a chunk after create (same length: only the CRC32C can tell).
    const chunk = path.join(root, 'shard_000', 'chunk_0000.jsonl');
    const bytes = readFileSync(chunk);
    const at = bytes.indexOf('"train"');
    bytes.write('"trian"', at);
    writeFileSync(chunk, bytes);
    const claim = (await ledger.claim('ds', 'w1'))!;
    const outcome = await processShard(
      claim,
      deps(ledger, root, new FakeExtractor()),
      quickRetry(),
    );
    expect(outcome).toMatchObject({ kind: 'failed', final: true });
    const shard = (await ledger.getShard('ds', 0))!;
    expect(shard).toMatchObject({ status: 'failed', attempts: 1, max_attempts: 3 });
    expect(shard.last_error).toMatch(/^CORRUPT: chunk .*chunk_0000\.jsonl is corrupt: .*crc32c/);
  } finally {
    await ledger.close();
  }
});

test('a ledger that is briefly unreachable at commit is retried, keeping the claim and the attempts', async () => {
  const { ledger, root } = await dataset(6);
  try {
    const claim = (await ledger.claim('ds', 'w1'))!;
    let refusals = 2;
    const flaky: Ledger = Object.create(ledger) as Ledger;
    flaky.commitPart = (c, p) => {
      if (refusals-- > 0)
        return Promise.reject(
          new ShardlineError('LEDGER', 'Firestore: unavailable', {
            cause: Object.assign(new Error('14 UNAVAILABLE'), { code: 14 }),
          }),
        );
      return ledger.commitPart(c, p);
    };
    const outcome = await processShard(claim, deps(flaky, root, new FakeExtractor()), quickRetry());
    expect(outcome.kind).toBe('completed');
    expect(refusals).toBeLessThan(0);
    expect(await ledger.getShard('ds', 0)).toMatchObject({ status: 'completed', attempts: 0 });
  } finally {
    await ledger.close();
  }
});
