/**
 * The per-layer statistics accumulated as a part is written (worker/extraction/layer-stats.ts):
 * one pass per batch, summing deviations from a shift. Rows far from zero with a small spread
 * are where a shift-free one-pass formula (`Σv² - (Σv)²/n`) loses every digit of the
 * variance; these figures must still match a two-pass float64 recomputation.
 */
import { Prng } from '../../../core/random';
import { f16BitsToNumber, f32ToF16Bits } from '../../../worker/extraction/fp16';
import { StatsAccumulator } from '../../../worker/extraction/layer-stats';

const H = 16;

/** Mean, squared deviations and norm sum of `rows`, in two passes of float64. */
function twoPass(rows: number[][]): { mean: number[]; m2: number[]; normSum: number } {
  const n = rows.length;
  const mean = Array.from({ length: H }, (_, d) => rows.reduce((a, r) => a + r[d]!, 0) / n);
  const m2 = Array.from({ length: H }, (_, d) =>
    rows.reduce((a, r) => a + (r[d]! - mean[d]!) ** 2, 0),
  );
  const normSum = rows.reduce((a, r) => a + Math.sqrt(r.reduce((b, v) => b + v * v, 0)), 0);
  return { mean, m2, normSum };
}

function expectClose(got: ArrayLike<number>, want: number[], relative: number): void {
  want.forEach((w, d) =>
    expect({ d, error: Math.abs(got[d]! - w) / Math.abs(w) <= relative }).toEqual({
      d,
      error: true,
    }),
  );
}

test('float32 rows around 1000 with a spread of 1e-3, in batches: the variance to 1e-9', () => {
  const rng = Prng.fromKey('layer-stats');
  const batches = [1, 7, 300, 2, 64].map((n) =>
    Float32Array.from({ length: n * H }, (_, i) => 1000 + (i % H) + rng.nextFloat() * 1e-3),
  );
  const acc = new StatsAccumulator(H);
  for (const b of batches) acc.add(b, false);
  const rows = batches.flatMap((b) =>
    Array.from({ length: b.length / H }, (_, r) => Array.from(b.subarray(r * H, (r + 1) * H))),
  );
  const want = twoPass(rows);
  expect(acc.count).toBe(rows.length);
  expectClose(acc.mean, want.mean, 1e-14);
  expectClose(acc.m2, want.m2, 1e-9);
  expect(Math.abs(acc.normSum - want.normSum) / want.normSum).toBeLessThan(1e-14);
});

test('float16 rows are decoded from their bit patterns', () => {
  const rng = Prng.fromKey('layer-stats-f16');
  const values = Array.from({ length: 50 * H }, () => (rng.nextFloat() - 0.5) * 20);
  const bits = Uint16Array.from(values, f32ToF16Bits);
  const acc = new StatsAccumulator(H);
  acc.add(bits.subarray(0, 20 * H), true);
  acc.add(bits.subarray(20 * H), true);
  const rows = Array.from({ length: 50 }, (_, r) =>
    Array.from(bits.subarray(r * H, (r + 1) * H), f16BitsToNumber),
  );
  const want = twoPass(rows);
  expectClose(acc.mean, want.mean, 1e-12);
  expectClose(acc.m2, want.m2, 1e-12);
});
