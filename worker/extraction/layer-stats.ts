/**
 * Accumulating per-layer statistics (core/layer-stats.ts) from stored rows as a part is
 * written: float64, from the stored values (after the fp16 rounding, when the part is fp16).
 */
import type { Rows } from './activations';
import type { LayerStats, StatsTarget } from '../../core/layer-stats';
import { mergeInto } from '../../core/layer-stats';
import { f16BitsToNumber } from './fp16';

/** fp16 bit pattern → value, for every pattern (a 256 KiB table built once). */
let F16: Float64Array | null = null;
function f16Table(): Float64Array {
  if (!F16) {
    F16 = new Float64Array(65536);
    for (let b = 0; b < 65536; b++) F16[b] = f16BitsToNumber(b);
  }
  return F16;
}

/**
 * One pass over `rows` rows of `data` (`[rows, hidden]`; fp16 bit patterns decoded through
 * `table` when given): per dimension the sums of `x` and `x²` for `x = value - shift`, into
 * `s1` and `s2`; returns the sum of the rows' L2 norms.
 */
function accumulate(
  data: Rows,
  table: Float64Array | null,
  hidden: number,
  shift: Float64Array,
  s1: Float64Array,
  s2: Float64Array,
): number {
  const rows = data.length / hidden;
  let norms = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * hidden;
    let sq = 0;
    // Two copies of the loop, so the fp16 decode is not a branch inside it.
    if (table) {
      for (let d = 0; d < hidden; d++) {
        const v = table[data[base + d]!]!;
        sq += v * v;
        const x = v - shift[d]!;
        s1[d]! += x;
        s2[d]! += x * x;
      }
    } else {
      for (let d = 0; d < hidden; d++) {
        const v = data[base + d]!;
        sq += v * v;
        const x = v - shift[d]!;
        s1[d]! += x;
        s2[d]! += x * x;
      }
    }
    norms += Math.sqrt(sq);
  }
  return norms;
}

/** A running accumulator for one layer. */
export class StatsAccumulator implements StatsTarget {
  count = 0;
  readonly mean: Float64Array;
  readonly m2: Float64Array;
  normSum = 0;
  private readonly shift: Float64Array;
  private readonly s1: Float64Array;
  private readonly s2: Float64Array;

  constructor(readonly hidden: number) {
    this.mean = new Float64Array(hidden);
    this.m2 = new Float64Array(hidden);
    this.shift = new Float64Array(hidden);
    this.s1 = new Float64Array(hidden);
    this.s2 = new Float64Array(hidden);
  }

  /**
   * Adds the rows of `data` (`[rows, hidden]`; fp16 bit patterns when `f16`). One pass over
   * the batch summing deviations from a shift (the running mean, or the batch's first row for
   * the first batch), which gives the batch's mean and squared deviations exactly as two passes
   * would up to float64 rounding (the shift is near the mean, so `Σx² - (Σx)²/n` cancels
   * little); merged into the running figures with Chan's formula. One pass instead of two
   * took the statistics from 134 to 44 µs of CPU per token of the Qwen2.5-0.5B shape (24
   * layers × 896), the largest cost the worker adds to its engine's (bench/README.md, worker).
   */
  add(data: Rows, f16: boolean): void {
    const H = this.hidden;
    const n = data.length / H;
    if (n === 0) return;
    const table = f16 ? f16Table() : null;
    const shift = this.shift;
    if (this.count > 0) shift.set(this.mean);
    else for (let d = 0; d < H; d++) shift[d] = table ? table[data[d]!]! : data[d]!;
    const s1 = this.s1.fill(0);
    const s2 = this.s2.fill(0);
    const norms = accumulate(data, table, H, shift, s1, s2);
    // s1 → the batch's mean, s2 → its sum of squared deviations.
    for (let d = 0; d < H; d++) {
      const meanOfX = s1[d]! / n;
      s2[d] = Math.max(0, s2[d]! - s1[d]! * meanOfX);
      s1[d] = shift[d]! + meanOfX;
    }
    mergeInto(this, n, s1, s2, norms);
  }
  /** The figures as JSON. */
  toJSON(): LayerStats {
    return {
      count: this.count,
      mean: Array.from(this.mean),
      m2: Array.from(this.m2),
      norm_sum: this.normSum,
    };
  }
}
