/**
 * The plan's interval method (worker/extraction/estimate.ts): exact for a census, and on a
 * skewed population (sizes spread like ARC prompts, a long right tail) the 95 % interval from a
 * seeded random sample holds the true total about 95 % of the time, never far less.
 */
import { seededRandom } from '../../../core/random';
import {
  covers,
  estimateTotal,
  scaleEstimate,
  sumEstimates,
  t975,
  widen,
} from '../../../worker/extraction/estimate';
import { chooseIndices } from '../../../worker/extraction/plan-sample';

/** A log-normal population: median 1000, a long right tail (σ = 0.8, as ARC token counts). */
function population(n: number, seed: number): number[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const u = Math.max(1e-12, rnd());
    const v = rnd();
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return Math.round(1000 * Math.exp(0.8 * z));
  });
}

test('a census is exact: the interval is the total itself', () => {
  const values = [3, 5, 8, 13];
  expect(estimateTotal(values, 4)).toEqual({ value: 29, low: 29, high: 29 });
});

test('t(0.975, df) matches the table and its approximation above 30 degrees of freedom', () => {
  expect(t975(1)).toBeCloseTo(12.706, 3);
  expect(t975(10)).toBeCloseTo(2.228, 3);
  expect(t975(30)).toBeCloseTo(2.042, 3);
  // Exact values: t(0.975, 40) = 2.0211, 60: 2.0003, 120: 1.9799, 1000: 1.9623.
  expect(Math.abs(t975(40) - 2.0211)).toBeLessThan(0.002);
  expect(Math.abs(t975(60) - 2.0003)).toBeLessThan(0.002);
  expect(Math.abs(t975(120) - 1.9799)).toBeLessThan(0.002);
  expect(Math.abs(t975(1000) - 1.9623)).toBeLessThan(0.002);
});

test('the interval never goes below what the sample itself holds, and is unbounded with one value', () => {
  const e = estimateTotal([0, 0, 0, 1000], 1000);
  expect(e.low).toBeGreaterThanOrEqual(1000);
  expect(estimateTotal([7], 10)).toEqual({ value: 70, low: 7, high: Infinity });
});

test('on a skewed population the 95 % interval holds the true total in 91-98.5 % of 400 seeded samples', () => {
  const N = 4000;
  const values = population(N, 42);
  const truth = values.reduce((a, b) => a + b, 0);
  for (const n of [60, 400]) {
    let held = 0;
    let width = 0;
    for (let seed = 0; seed < 400; seed++) {
      const sample = chooseIndices(N, n, seed).map((i) => values[i]!);
      const e = estimateTotal(sample, N);
      if (covers(e, truth)) held++;
      width += (e.high - e.low) / truth;
    }
    const coverage = held / 400;
    expect(coverage).toBeGreaterThanOrEqual(0.91);
    expect(coverage).toBeLessThanOrEqual(0.985);
    // Not vacuous: about ± 2 × CV / √n of the total (CV ≈ 0.95 here): ± 24 % at n = 60, ± 9 % at 400.
    expect(width / 400).toBeLessThan(n === 400 ? 0.2 : 0.55);
  }
});

test('scaling, summing and widening keep the interval around the value', () => {
  const a = { value: 10, low: 8, high: 13 };
  const b = { value: 5, low: 5, high: 6 };
  expect(sumEstimates(a, b)).toEqual({ value: 15, low: 13, high: 19 });
  expect(scaleEstimate(a, 2)).toEqual({ value: 20, low: 16, high: 26 });
  expect(widen(b, 10)).toEqual({ value: 5, low: 0, high: 16 });
});
