/**
 * Totals estimated from a seeded simple random sample of tasks, with a 95 % interval: what
 * `shardline plan` states about samples, tokens and bytes.
 *
 * The method (the textbook expansion estimator of a total under sampling without replacement):
 * with n of N tasks measured, mean ȳ and sample standard deviation s of a per-task quantity,
 * the total is N·ȳ and its standard error N·s/√n·√(1 − n/N) (the finite-population
 * correction, 0 when every task was measured). The interval is ± t(0.975, n − 1) standard
 * errors, never below what the sample itself holds (the quantities are counts and sizes: the
 * tasks not measured add nothing negative). How often such an interval holds the truth on a
 * skewed population is checked in test/unit/extraction/estimate.test.ts.
 */

/** A total and its interval (for a census, all three are equal). */
export interface Estimate {
  /** The point estimate. */
  value: number;
  /** Lower end of the 95 % interval. */
  low: number;
  /** Upper end of the 95 % interval. */
  high: number;
}

/** t(0.975, df) for df = 1…30. */
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145,
  2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048,
  2.045, 2.042,
];

/**
 * The 97.5 % quantile of Student's t with `df` degrees of freedom: the table for df ≤ 30, then
 * 1.96 + 2.4/df (within 0.002 of the exact value for every df above 30).
 */
export function t975(df: number): number {
  if (!(df >= 1)) return Infinity;
  const d = Math.floor(df);
  return d <= 30 ? T975[d - 1]! : 1.96 + 2.4 / d;
}

/**
 * The total over `populationSize` units of a quantity measured on `values`, a simple random
 * sample of them drawn without replacement. With one value out of several units there is no
 * spread to measure: the interval is unbounded above.
 */
export function estimateTotal(values: readonly number[], populationSize: number): Estimate {
  const n = values.length;
  if (n === 0) return { value: 0, low: 0, high: populationSize > 0 ? Infinity : 0 };
  const sum = values.reduce((a, b) => a + b, 0);
  const mean = sum / n;
  const value = populationSize * mean;
  if (n >= populationSize) return { value: sum, low: sum, high: sum };
  if (n === 1) return { value, low: sum, high: Infinity };
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1);
  const se = populationSize * Math.sqrt(variance / n) * Math.sqrt(1 - n / populationSize);
  const half = t975(n - 1) * se;
  return { value, low: Math.max(sum, value - half), high: value + half };
}

/** `e` times a non-negative factor. */
export function scaleEstimate(e: Estimate, factor: number): Estimate {
  return { value: e.value * factor, low: e.low * factor, high: e.high * factor };
}

/** The sum of estimates, their intervals added end to end (conservative when they are dependent). */
export function sumEstimates(...parts: readonly Estimate[]): Estimate {
  return parts.reduce(
    (a, b) => ({ value: a.value + b.value, low: a.low + b.low, high: a.high + b.high }),
    { value: 0, low: 0, high: 0 },
  );
}

/** `e` widened by `margin` on both sides (a bound on a modelling error), never below 0. */
export function widen(e: Estimate, margin: number): Estimate {
  return { value: e.value, low: Math.max(0, e.low - margin), high: e.high + margin };
}

/** Whether `x` lies inside the interval of `e` (ends included). */
export function covers(e: Estimate, x: number): boolean {
  return x >= e.low && x <= e.high;
}
