/**
 * What `shardline report` reads and derives, on an SQLite ledger driven by a fixed clock and
 * real part files: who held each shard when (expiries and reclaims where they happened),
 * failures with their reasons, skipped samples by reason from the parts' headers, per-layer
 * statistics merged exactly, throughput that accounts for every token, and the drawing of each
 * of those in the HTML.
 */
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import type { Claim } from '../../../core/ledger/ledger';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { seededRandom } from '../../../core/random';
import type { LayerStats, ReportEvent, ReportPart } from '../../../cli/report/data';
import { buildReportData, claimsOf, layerRows, throughputOf } from '../../../cli/report/data';
import { mergeStats } from '../../../core/layer-stats';
import { renderReportHtml } from '../../../cli/report/render';
import { PartWriter, unitPartName } from '../../../worker/extraction/part-writer';
import type { Sample, SkippedSample } from '../../../worker/extraction/samples';
import { FakeClock, T0, makeDataset } from '../../support/ledger-fixtures';
import { timelineLabels, timelineUnit } from '../../support/report-html';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('report-data');
afterAll(cleanup);

const ev = (at: number, kind: ReportEvent['kind'], worker: string, epoch: number): ReportEvent => ({
  at,
  kind,
  worker,
  epoch,
  attempt: false,
  note: null,
});
const part = (worker: string, epoch: number, at: number, tokens: number): ReportPart => ({
  part_index: 0,
  name: 'part_00000',
  worker,
  epoch,
  committed_at: at,
  first_task_index: 0,
  last_task_index: 0,
  samples: 1,
  tokens,
  bytes: 1,
  skipped: 0,
});

test('holds: a claim lasts until what ended it; a holder lost without notice was last seen at its last part', () => {
  const events = [
    ev(0, 'claim', 'a', 1),
    ev(100, 'expire', 'a', 1),
    ev(100, 'claim', 'b', 2),
    ev(200, 'release', 'b', 2),
    ev(250, 'claim', 'c', 3),
  ];
  const parts = [part('a', 1, 30, 10), part('a', 1, 50, 10), part('b', 2, 150, 10)];
  const running = claimsOf(events, parts, { status: 'in_use', assigned_to: 'c', epoch: 3 }, 400);
  expect(running.map((h) => [h.worker, h.from, h.to, h.end, h.last_seen, h.reclaim])).toEqual([
    ['a', 0, 100, 'expire', 50, false],
    ['b', 100, 200, 'release', 150, true],
    ['c', 250, 400, 'open', 250, true],
  ]);
  // The ledger no longer shows c as the holder and the history does not say why: unknown.
  const lost = claimsOf(events, parts, { status: 'available', assigned_to: null, epoch: 3 }, 400);
  expect(lost.at(-1)).toMatchObject({ worker: 'c', end: 'unknown', to: 250 });
});

test('throughput accounts for every token, in total and per worker', () => {
  const units = [
    {
      claims: [
        {
          worker: 'a',
          epoch: 1,
          from: 0,
          to: 9000,
          end: 'complete' as const,
          last_seen: 9000,
          reclaim: false,
        },
      ],
      parts: [part('a', 1, 4000, 400), part('a', 1, 9000, 500)],
    },
    {
      claims: [
        {
          worker: 'b',
          epoch: 1,
          from: 1000,
          to: 7000,
          end: 'expire' as const,
          last_seen: 2500,
          reclaim: false,
        },
      ],
      parts: [part('b', 1, 2500, 300)],
    },
  ];
  const t = throughputOf(units as never, { start: 0, end: 9000 });
  const seconds = t.bucket_ms / 1000;
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b * seconds, 0);
  expect(sum(t.all)).toBeCloseTo(1200, 6);
  expect(sum(t.by_worker['a']!)).toBeCloseTo(900, 6);
  expect(sum(t.by_worker['b']!)).toBeCloseTo(300, 6);
  // b worked from its claim (1 s) to its part (2.5 s): 200 tokens/s there, nothing after.
  expect(t.by_worker['b']![Math.floor(2000 / t.bucket_ms)]).toBeGreaterThan(0);
  expect(t.by_worker['b']![Math.floor(5000 / t.bucket_ms)]).toBe(0);
});

/** Exact statistics of `rows`, as a manifest carries them. */
function statsOf(rows: number[][]): LayerStats[string] {
  const h = rows[0]!.length;
  const mean = Array.from(
    { length: h },
    (_, i) => rows.reduce((a, r) => a + r[i]!, 0) / rows.length,
  );
  const m2 = Array.from({ length: h }, (_, i) =>
    rows.reduce((a, r) => a + (r[i]! - mean[i]!) ** 2, 0),
  );
  const norm = rows.reduce((a, r) => a + Math.hypot(...r), 0);
  return { count: rows.length, mean, m2, norm_sum: norm };
}

test('per-layer statistics merge exactly whatever the order, and give the SAE scaling factor', () => {
  const rnd = seededRandom(3);
  const group = (n: number, shift: number): number[][] =>
    Array.from({ length: n }, () => Array.from({ length: 8 }, () => shift + 4 * rnd()));
  const g = [group(50, 0), group(7, 3), group(120, -2)];
  const whole = statsOf(g.flat());
  const parts: LayerStats[] = g.map((rows) => ({ 'resid_post.2': statsOf(rows) }));
  for (const order of [
    [0, 1, 2],
    [2, 0, 1],
    [1, 2, 0],
  ]) {
    const merged = mergeStats(order.map((i) => parts[i]!))['resid_post.2']!;
    expect(merged.count).toBe(whole.count);
    merged.mean.forEach((m, i) => expect(m).toBeCloseTo(whole.mean[i]!, 10));
    merged.m2.forEach((m, i) => expect(m).toBeCloseTo(whole.m2[i]!, 8));
    expect(merged.norm_sum).toBeCloseTo(whole.norm_sum, 8);
  }
  const [row] = layerRows({ 'resid_post.2': whole });
  expect(row!.layer).toBe(2);
  expect(row!.scaling_factor).toBeCloseTo(Math.sqrt(8) / (whole.norm_sum / whole.count), 12);
  expect(row!.mean_variance).toBeCloseTo(whole.m2.reduce((a, b) => a + b, 0) / whole.count / 8, 12);
});

/**
 * Writes a real part (tiny activations) with these samples and skipped entries, in the shard's
 * folder under `part.name` (default `part_XXXXX`); returns its record.
 */
async function writePart(
  out: LocalBlobStore,
  shardId: number,
  partIndex: number,
  tasks: number[],
  skipped: SkippedSample[],
  part: { unit?: number; name?: string } = {},
): Promise<{ name: string; samples: number; tokens: number; bytes: number }> {
  const writer = new PartWriter({
    shardId,
    partIndex,
    ...part,
    layers: [0],
    hiddenSize: 2,
    dtype: 'float32',
    metadata: {},
  });
  const samples: Sample[] = tasks.map((t) => ({
    sampleId: `${t}.0.0`,
    taskIndex: t,
    taskId: `task${t}`,
    kind: 'text',
    testIndex: 0,
    augmentation: null,
    tokenIds: Int32Array.from({ length: 3 + t }, (_, i) => i),
    trainExamplesTotal: null,
    trainExamplesUsed: null,
    truncated: false,
    promptSha256: '0'.repeat(64),
  }));
  const tokens = samples.reduce((n, s) => n + s.tokenIds.length, 0);
  for (const s of samples) writer.addSample(s, [new Float32Array(s.tokenIds.length * 2)], null);
  writer.addSkipped(skipped);
  const r = await writer.finish(out);
  return { name: r.name, samples: r.samples, tokens, bytes: r.safetensors.bytes + r.index.bytes };
}

/**
 * Writes a real part of tasks `first`..`last` (less the skipped ones) for the claim's unit, named
 * as the worker names it (`cutAt`: the end a split set, where the part was cut), and commits it.
 */
async function commitPart(
  ledger: SqliteLedger,
  out: LocalBlobStore,
  claim: Claim,
  index: number,
  first: number,
  last: number,
  options: { cutAt?: number; skipped?: SkippedSample[] } = {},
): Promise<{ name: string; samples: number; tokens: number; bytes: number }> {
  const unit = claim.unit ?? 0;
  const skipped = options.skipped ?? [];
  const tasks = Array.from({ length: last - first + 1 }, (_, i) => first + i).filter(
    (t) => !skipped.some((k) => k.taskIndex === t),
  );
  const name = unitPartName(unit, index, options.cutAt);
  const p = await writePart(out, claim.shard_id, index, tasks, skipped, { unit, name });
  await ledger.commitPart(claim, {
    part_index: index,
    name: p.name,
    first_task_index: first,
    last_task_index: last,
    next_task_index: last + 1,
    first_sample: 0,
    next_sample: 0,
    samples: p.samples,
    bytes: p.bytes,
    checksums: {},
    fingerprint: 'run-1',
  });
  return p;
}

/** Task `t` skipped for being too long. */
const tooLong = (t: number): SkippedSample => ({
  taskIndex: t,
  taskId: `task${t}`,
  testIndex: 0,
  augmentationIndex: null,
  reason: 'too_long',
  detail: '3000 tokens > max_seq_length 2048',
});

test('a run read back: an expiry and a reclaim where they happened, a failure with its reason, skipped samples by reason, statistics, a running shard', async () => {
  const clock = new FakeClock();
  const ledger = SqliteLedger.open(path.join(dir, 'ledger.sqlite'), { clock });
  const out = new LocalBlobStore(path.join(dir, 'activations'));
  const { master } = makeDataset({ datasetId: 'rep', numShards: 3, tasksPerShard: 10 });
  await ledger.registerDataset(master, { datasetUri: dir });
  const commit = (
    claim: Claim,
    index: number,
    first: number,
    last: number,
    skipped: SkippedSample[] = [],
  ) => commitPart(ledger, out, claim, index, first, last, { skipped });
  try {
    // Shard 0: a is lost after one part; b reclaims it, finishes it, writes its manifest.
    const a = (await ledger.claim('rep', 'worker-a', { preferredShardId: 0, leaseMs: 10_000 }))!;
    clock.advance(4000);
    const p0 = await commit(a, 0, 0, 4, [tooLong(2)]);
    clock.advance(20_000);
    const b = (await ledger.claim('rep', 'worker-b', { preferredShardId: 0, leaseMs: 10_000 }))!;
    expect(b.shard_id).toBe(0);
    clock.advance(3000);
    const p1 = await commit(b, 1, 5, 9, [
      tooLong(7),
      { ...tooLong(8), reason: 'invalid_grid', detail: 'row 3' },
    ]);
    await out.writeAll(
      'shard_000/_MANIFEST.json',
      JSON.stringify({
        parts: [p0, p1].map((p, i) => ({ ...p, skipped: i === 0 ? 1 : 2 })),
        stats: {
          'resid_post.0': statsOf([
            [3, 4],
            [6, 8],
          ]),
        },
      }),
    );
    await ledger.complete(b, {
      parts: 2,
      samples: p0.samples + p1.samples,
      bytes: p0.bytes + p1.bytes,
      uri: out.uriOf('shard_000/_MANIFEST.json'),
    });
    // Shard 1: b fails it; c takes it again and is still at work.
    clock.advance(1000);
    const b1 = (await ledger.claim('rep', 'worker-b', { preferredShardId: 1, leaseMs: 10_000 }))!;
    clock.advance(1000);
    await ledger.fail(b1, 'MODEL: the extraction thread died');
    clock.advance(120_000);
    const c = (await ledger.claim('rep', 'worker-<c>', { preferredShardId: 1, leaseMs: 600_000 }))!;
    expect(c.shard_id).toBe(1);
    clock.advance(2000);
    await commit(c, 0, 10, 12);
    clock.advance(500);

    const data = await buildReportData({
      ledger,
      datasetId: 'rep',
      output: out,
      nowMs: clock.nowMs(),
    });
    expect(data.state).toBe('in_use');
    expect(data.span.end).toBe(clock.nowMs());
    // Nothing was split: one unit per shard, unit 0, the whole shard.
    expect(data.shards.map((s) => s.units.map((u) => [u.unit, u.unit_start, u.unit_end]))).toEqual([
      [[0, 0, 10]],
      [[0, 10, 20]],
      [[0, 20, 30]],
    ]);
    const [u0, u1, u2] = data.shards.map((s) => s.units[0]);
    expect(u0!.events.map((e) => [e.kind, e.worker])).toEqual([
      ['claim', 'worker-a'],
      ['expire', 'worker-a'],
      ['claim', 'worker-b'],
      ['complete', 'worker-b'],
    ]);
    expect(u0!.claims.map((h) => [h.worker, h.end, h.reclaim, h.last_seen - T0])).toEqual([
      ['worker-a', 'expire', false, 4000],
      ['worker-b', 'complete', true, 27_000],
    ]);
    expect(u1!.claims.map((h) => [h.worker, h.end, h.reclaim])).toEqual([
      ['worker-b', 'fail', false],
      ['worker-<c>', 'open', true],
    ]);
    expect(u2!.claims).toEqual([]);
    expect(
      data.failures.map((f) => [f.shard_id, f.unit, f.kind, f.worker, f.attempt, f.note]),
    ).toEqual([
      [0, 0, 'expire', 'worker-a', false, 'after committing parts'],
      [1, 0, 'fail', 'worker-b', true, 'MODEL: the extraction thread died'],
    ]);
    // Tokens from the manifest for shard 0's parts and from the header for shard 1's.
    expect(u0!.parts.map((p) => p.tokens)).toEqual([p0.tokens, p1.tokens]);
    expect(u1!.parts[0]!.tokens).toBe(3 * 3 + 10 + 11 + 12);
    expect(data.skipped.by_reason).toEqual({ too_long: 2, invalid_grid: 1 });
    expect(data.skipped.examples.map((e) => e.task_index)).toEqual([2, 7, 8]);
    expect(data.layers?.from).toBe('1 of 3 shard manifests, merged');
    expect(data.layers?.rows[0]).toMatchObject({ tensor: 'resid_post.0', rows: 2, hidden: 2 });
    expect(data.layers!.rows[0]!.scaling_factor).toBeCloseTo(Math.SQRT2 / 7.5, 12);
    expect(data.totals).toMatchObject({
      parts: 3,
      claims: 4,
      reclaims: 2,
      expiries: 1,
      failures: 1,
      skipped: 3,
      completed: 1,
      in_use: 1,
      available: 1,
    });
    const workers = Object.fromEntries(data.workers.map((w) => [w.worker, w]));
    expect(workers['worker-a']).toMatchObject({ claims: 1, expiries: 1, parts: 1 });
    expect(workers['worker-b']).toMatchObject({
      claims: 2,
      failures: 1,
      units_completed: 1,
      shards_completed: 1,
    });

    // Drawn where it happened: the expiry on shard 0's row, the reclaims on both rows.
    const html = renderReportHtml(data);
    const row = (k: number): string => timelineUnit(html, k);
    expect(row(0)).toMatch(/class="event event-expire" data-at="\d+" data-worker="worker-a"/);
    expect(row(0)).toMatch(/class="event event-reclaim"[^>]*data-worker="worker-b"/);
    expect(row(0).match(/class="part-tick"/g)).toHaveLength(2);
    expect(row(0)).toContain('class="silent"');
    expect(row(1)).toMatch(/class="event event-fail"[^>]*data-worker="worker-b"/);
    expect(row(1)).toMatch(/class="claim claim-open" data-worker="worker-&lt;c&gt;"/);
    expect(row(2)).not.toContain('class="claim');
    expect(html).toContain('id="skipped-chart"');
    expect(html).toContain('id="layer-norms"');
  } finally {
    await ledger.close();
  }
});

test('a split shard read back from a real split: every unit under its shard with its own claims, parts and failure, each part counted once', async () => {
  const clock = new FakeClock();
  const ledger = SqliteLedger.open(path.join(dir, 'split.sqlite'), { clock });
  const out = new LocalBlobStore(path.join(dir, 'split-activations'));
  const { master } = makeDataset({ datasetId: 'spl', numShards: 2, tasksPerShard: 20 });
  await ledger.registerDataset(master, { datasetUri: dir });
  const written: Array<{ shard: number; unit: number; name: string; tokens: number }> = [];
  const commit = async (
    claim: Claim,
    index: number,
    first: number,
    last: number,
    options: { cutAt?: number; skipped?: SkippedSample[] } = {},
  ) => {
    const p = await commitPart(ledger, out, claim, index, first, last, options);
    written.push({ shard: claim.shard_id, unit: claim.unit ?? 0, name: p.name, tokens: p.tokens });
  };
  try {
    // w1 claims shard 0 (tasks 0-19) and commits tasks 0-1.
    const a = (await ledger.claim('spl', 'w1', { preferredShardId: 0, leaseMs: 60_000 }))!;
    expect([a.shard_id, a.unit ?? 0]).toEqual([0, 0]);
    clock.advance(1000);
    await commit(a, 0, 0, 1);
    // w2 splits it: w1 keeps tasks to 10, w2 holds unit 1 (tasks 11-19).
    clock.advance(1000);
    const s1 = (await ledger.split('spl', 'w2', { leaseMs: 60_000 }))!;
    expect(s1.from).toMatchObject({ shard_id: 0, unit: 0, holder: 'w1', end_task_index: 11 });
    expect(s1.claim).toMatchObject({ shard_id: 0, unit: 1, end_task_index: 20 });
    const b = s1.claim;
    clock.advance(1000);
    await commit(a, 1, 2, 10, { cutAt: 11 });
    await commit(b, 0, 11, 12);
    await ledger.complete(a);
    // w3 splits unit 1 (unit 0 is done): unit 2, tasks 17-19.
    clock.advance(1000);
    const s2 = (await ledger.split('spl', 'w3', { leaseMs: 60_000 }))!;
    expect(s2.from).toMatchObject({ unit: 1, holder: 'w2', end_task_index: 17 });
    expect(s2.claim).toMatchObject({ unit: 2, end_task_index: 20 });
    clock.advance(1000);
    await commit(b, 1, 13, 16, { cutAt: 17 });
    await ledger.complete(b);
    // w3 fails unit 2; after its backoff w1 takes it again and completes the shard.
    await ledger.fail(s2.claim, 'MODEL: out of memory');
    clock.advance(60_000);
    const c = (await ledger.claim('spl', 'w1', { preferredShardId: 0, leaseMs: 60_000 }))!;
    expect(c).toMatchObject({ shard_id: 0, unit: 2, epoch: 2 });
    clock.advance(1000);
    await commit(c, 0, 17, 19, { skipped: [tooLong(18)] });
    const shard0 = await ledger.listShardParts({ dataset_id: 'spl', shard_id: 0 });
    expect(shard0.map((p) => p.unit)).toEqual([0, 0, 1, 1, 2]);
    const tokensOf = new Map(written.map((w) => [w.name, w.tokens]));
    await out.writeAll(
      'shard_000/_MANIFEST.json',
      JSON.stringify({
        parts: shard0.map((p) => ({
          name: p.name,
          tokens: tokensOf.get(p.name),
          samples: p.samples,
          skipped: p.unit === 2 ? 1 : 0,
        })),
      }),
    );
    await ledger.complete(c, {
      parts: shard0.length,
      samples: shard0.reduce((n, p) => n + p.samples, 0),
      bytes: shard0.reduce((n, p) => n + p.bytes, 0),
      uri: out.uriOf('shard_000/_MANIFEST.json'),
    });
    // w2 takes shard 1 and is still at it: a shard never split, beside the split one.
    const d = (await ledger.claim('spl', 'w2', { preferredShardId: 1, leaseMs: 60_000 }))!;
    expect(d.shard_id).toBe(1);
    clock.advance(1000);
    await commit(d, 0, 20, 22);
    clock.advance(500);

    const status = await ledger.status('spl');
    const data = await buildReportData({
      ledger,
      datasetId: 'spl',
      output: out,
      nowMs: clock.nowMs(),
    });
    expect(data.warnings).toEqual([]);
    // Both shards, the split one with its three units under it in task order.
    expect(
      data.shards.map((s) => [
        s.shard_id,
        s.status,
        s.units.map((u) => [u.unit, u.split_from, u.unit_start, u.unit_end, u.status]),
      ]),
    ).toEqual([
      [
        0,
        'completed',
        [
          [0, null, 0, 11, 'completed'],
          [1, 0, 11, 17, 'completed'],
          [2, 1, 17, 20, 'completed'],
        ],
      ],
      [1, 'in_use', [[0, null, 20, 40, 'in_use']]],
    ]);
    const [u0, u1, u2] = data.shards[0]!.units;
    // Each unit with its own parts, claims and events.
    expect(u0!.parts.map((p) => p.name)).toEqual(['part_00000', 'part_00001_to11']);
    expect(u1!.parts.map((p) => p.name)).toEqual(['part_u1_00000', 'part_u1_00001_to17']);
    expect(u2!.parts.map((p) => [p.name, p.worker, p.epoch])).toEqual([['part_u2_00000', 'w1', 2]]);
    expect(u0!.claims.map((h) => [h.worker, h.end])).toEqual([['w1', 'complete']]);
    expect(u1!.claims.map((h) => [h.worker, h.end])).toEqual([['w2', 'complete']]);
    expect(u2!.claims.map((h) => [h.worker, h.epoch, h.end, h.reclaim])).toEqual([
      ['w3', 1, 'fail', false],
      ['w1', 2, 'complete', true],
    ]);
    expect(u0!.events.map((e) => [e.kind, e.worker])).toEqual([
      ['claim', 'w1'],
      ['split', 'w2'],
      ['complete', 'w1'],
    ]);
    expect(u1!.events.map((e) => [e.kind, e.worker])).toEqual([
      ['split', 'w2'],
      ['claim', 'w2'],
      ['split', 'w3'],
      ['complete', 'w2'],
    ]);
    expect(u1!.events[2]!.note).toBe('tasks 17-19 split off to unit 2 by w3');
    // Every part exactly once: the ledger's parts, counts, samples and bytes; the tokens written.
    const reported = data.shards.flatMap((s) => s.units.flatMap((u) => u.parts));
    expect(reported.map((p) => p.name).sort()).toEqual(
      [...shard0, ...(await ledger.listShardParts({ dataset_id: 'spl', shard_id: 1 }))]
        .map((p) => p.name)
        .sort(),
    );
    const tokens = written.reduce((n, w) => n + w.tokens, 0);
    expect(data.totals).toMatchObject({
      units: 4,
      shards: 2,
      splits: 2,
      parts: status.totals.parts_committed,
      samples: status.totals.samples_committed,
      bytes: status.totals.bytes_committed,
      tokens,
      tasks_done: status.totals.tasks_done,
      claims: 5,
      reclaims: 1,
      failures: 1,
      skipped: 1,
      completed: 1,
      in_use: 1,
    });
    expect(data.totals.parts).toBe(6);
    const tokensIn = (shard: number, unit: number): number =>
      written.filter((w) => w.shard === shard && w.unit === unit).reduce((n, w) => n + w.tokens, 0);
    expect(
      data.shards.flatMap((s) =>
        s.units.map((u) => [s.shard_id, u.unit, u.parts.reduce((n, p) => n + (p.tokens ?? 0), 0)]),
      ),
    ).toEqual([
      [0, 0, tokensIn(0, 0)],
      [0, 1, tokensIn(0, 1)],
      [0, 2, tokensIn(0, 2)],
      [1, 0, tokensIn(1, 0)],
    ]);
    // The per-worker table and the throughput count each part once too.
    const workers = Object.fromEntries(data.workers.map((w) => [w.worker, w]));
    expect(workers['w1']).toMatchObject({
      claims: 2,
      parts: 3,
      units_completed: 2,
      shards_completed: 1,
    });
    expect(workers['w2']).toMatchObject({
      claims: 2,
      parts: 3,
      units_completed: 1,
      shards_completed: 0,
    });
    expect(workers['w3']).toMatchObject({ claims: 1, parts: 0, failures: 1 });
    expect(data.workers.reduce((n, w) => n + w.parts, 0)).toBe(data.totals.parts);
    expect(data.workers.reduce((n, w) => n + w.tokens, 0)).toBe(tokens);
    const t = data.throughput;
    expect(t.all.reduce((n, v) => n + (v * t.bucket_ms) / 1000, 0)).toBeCloseTo(tokens, 6);
    // Failures and skipped samples name shard and unit.
    expect(data.failures.map((f) => [f.shard_id, f.unit, f.kind, f.worker, f.note])).toEqual([
      [0, 2, 'fail', 'w3', 'MODEL: out of memory'],
    ]);
    expect(data.skipped.examples.map((e) => [e.shard_id, e.unit, e.part, e.task_index])).toEqual([
      [0, 2, 'part_u2_00000', 18],
    ]);

    // Drawn: the shard's row, then one row per unit with its own ticks; every part ticked once.
    const html = renderReportHtml(data);
    expect(timelineLabels(html)).toEqual([
      'shard 000 · 3 units',
      '000 · unit 0',
      '000 · unit 1 (split from unit 0)',
      '000 · unit 2 (split from unit 1)',
      'shard 001',
    ]);
    const unitG = (shard: number, unit: number): string => timelineUnit(html, shard, unit);
    expect(
      [unitG(0, 0), unitG(0, 1), unitG(0, 2), unitG(1, 0)].map(
        (g) => g.match(/class="part-tick"/g)?.length ?? 0,
      ),
    ).toEqual([2, 2, 1, 1]);
    expect(html.match(/class="part-tick"/g)).toHaveLength(data.totals.parts);
    expect(html.match(/<g class="unit/g)).toHaveLength(4);
    expect(unitG(0, 2)).toMatch(/class="event event-fail"[^>]*data-worker="w3"/);
    expect(unitG(0, 2)).toMatch(/class="event event-reclaim"[^>]*data-worker="w1"/);
    expect(html).toMatch(
      /<tr class="failure failure-fail" data-shard="0" data-unit="2"><td>000 · unit 2 \(split from unit 1\)<\/td>/,
    );
  } finally {
    await ledger.close();
  }
});
