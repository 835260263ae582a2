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

/** A running accumulator for one layer. */
export class StatsAccumulator implements StatsTarget {
  count = 0;
  readonly mean: Float64Array;
  readonly m2: Float64Array;
  normSum = 0;
  private readonly batchSum: Float64Array;
  private readonly row: Float64Array;

  constructor(readonly hidden: number) {
    this.mean = new Float64Array(hidden);
    this.m2 = new Float64Array(hidden);
    this.batchSum = new Float64Array(hidden);
    this.row = new Float64Array(hidden);
  }

  /**
   * Adds the rows of `data` (`[rows, hidden]`; fp16 bit patterns when `f16`). Two passes over
   * the batch (its mean, then its squared deviations) merged into the running figures with
   * Chan's formula: numerically as good as Welford, with tight loops.
   */
  add(data: Rows, f16: boolean): void {
    const H = this.hidden;
    const n = data.length / H;
    if (n === 0) return;
    const table = f16 ? f16Table() : null;
    const row = this.row;
    const decode = (r: number): void => {
      const base = r * H;
      if (table) for (let d = 0; d < H; d++) row[d] = table[data[base + d]!]!;
      else for (let d = 0; d < H; d++) row[d] = data[base + d]!;
    };
    const sum = this.batchSum.fill(0);
    let norms = 0;
    for (let r = 0; r < n; r++) {
      decode(r);
      let sq = 0;
      for (let d = 0; d < H; d++) {
        const v = row[d]!;
        sum[d]! += v;
        sq += v * v;
      }
      norms += Math.sqrt(sq);
    }
    const bMean = Float64Array.from(sum, (v) => v / n);
    const bM2 = this.batchSum.fill(0);
    for (let r = 0; r < n; r++) {
      decode(r);
      for (let d = 0; d < H; d++) {
        const dev = row[d]! - bMean[d]!;
        bM2[d]! += dev * dev;
      }
    }
    mergeInto(this, n, bMean, bM2, norms);
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
