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
import { PartWriter } from '../../../worker/extraction/part-writer';
import type { Sample, SkippedSample } from '../../../worker/extraction/samples';
import { FakeClock, T0, makeDataset } from '../../support/ledger-fixtures';
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

/** Writes a real part (tiny activations) with these samples and skipped entries; returns its record. */
async function writePart(
  out: LocalBlobStore,
  shardId: number,
  partIndex: number,
  tasks: number[],
  skipped: SkippedSample[],
): Promise<{ name: string; samples: number; tokens: number; bytes: number }> {
  const writer = new PartWriter({
    shardId,
    partIndex,
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

test('a run read back: an expiry and a reclaim where they happened, a failure with its reason, skipped samples by reason, statistics, a running shard', async () => {
  const clock = new FakeClock();
  const ledger = SqliteLedger.open(path.join(dir, 'ledger.sqlite'), { clock });
  const out = new LocalBlobStore(path.join(dir, 'activations'));
  const { master } = makeDataset({ datasetId: 'rep', numShards: 3, tasksPerShard: 10 });
  await ledger.registerDataset(master, { datasetUri: dir });
  const commit = async (
    claim: Claim,
    index: number,
    first: number,
    last: number,
    skipped: SkippedSample[] = [],
  ) => {
    const tasks = Array.from({ length: last - first + 1 }, (_, i) => first + i).filter(
      (t) => !skipped.some((s) => s.taskIndex === t),
    );
    const p = await writePart(out, claim.shard_id, index, tasks, skipped);
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
  };
  const tooLong = (t: number): SkippedSample => ({
    taskIndex: t,
    taskId: `task${t}`,
    testIndex: 0,
    augmentationIndex: null,
    reason: 'too_long',
    detail: '3000 tokens > max_seq_length 2048',
  });
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
    const [u0, u1, u2] = data.units;
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
    expect(data.failures.map((f) => [f.shard_id, f.kind, f.worker, f.attempt, f.note])).toEqual([
      [0, 'expire', 'worker-a', false, 'after committing parts'],
      [1, 'fail', 'worker-b', true, 'MODEL: the extraction thread died'],
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
    expect(workers['worker-b']).toMatchObject({ claims: 2, failures: 1, shards_completed: 1 });

    // Drawn where it happened: the expiry on shard 0's row, the reclaims on both rows.
    const html = renderReportHtml(data);
    const row = (k: number): string => {
      const m = new RegExp(`<g class="unit[^"]*" data-shard="${k}"[^>]*>(.*?)</g>`).exec(html);
      return m?.[1] ?? '';
    };
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
