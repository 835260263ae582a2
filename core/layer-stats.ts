/**
 * Per-layer statistics of stored activation rows, the figures an SAE trainer normalises with:
 * the row count, the mean vector, the per-dimension sum of squared deviations (the variance is
 * `m2 / count`), and the sum of the rows' L2 norms (the mean norm is `norm_sum / count`, the
 * scaling factor `sqrt(hidden) / mean_norm`). All float64.
 *
 * Figures merge with Chan et al.'s parallel update, so parts make a shard's figures and
 * shards a dataset's. Merging is done in a fixed order (parts by index, shards by id), so the
 * figures a manifest carries do not depend on the order in which shards completed; against a
 * float64 recomputation from every row they agree to float64 rounding (≈1e-12 relative).
 * The rows themselves are accumulated in worker/extraction/layer-stats.ts.
 */

/** The statistics of one layer's rows (plain JSON: what manifests carry). */
export interface LayerStats {
  count: number;
  mean: number[];
  m2: number[];
  norm_sum: number;
}

/** Running figures being merged into (typed arrays, updated in place). */
export interface StatsTarget {
  count: number;
  readonly mean: Float64Array;
  readonly m2: Float64Array;
  normSum: number;
}

/** Merges `count` rows' figures into `target` (Chan et al.'s update). */
export function mergeInto(
  target: StatsTarget,
  count: number,
  mean: ArrayLike<number>,
  m2: ArrayLike<number>,
  normSum: number,
): void {
  if (count === 0) return;
  if (mean.length !== target.mean.length || m2.length !== target.m2.length)
    throw new RangeError(
      `statistics of width ${mean.length} cannot merge into width ${target.mean.length}`,
    );
  const nA = target.count;
  const n = nA + count;
  for (let d = 0; d < target.mean.length; d++) {
    const delta = mean[d]! - target.mean[d]!;
    target.mean[d]! += (delta * count) / n;
    target.m2[d]! += m2[d]! + (delta * delta * nA * count) / n;
  }
  target.count = n;
  target.normSum += normSum;
}

/**
 * Merges per-layer statistics (keyed by tensor name, e.g. `resid_post.12`) in the order given;
 * pass them in a fixed order (part index, shard id) for figures that do not depend on timing.
 */
export function mergeStats(
  all: ReadonlyArray<Readonly<Record<string, LayerStats>> | null | undefined>,
): Record<string, LayerStats> {
  const acc = new Map<string, StatsTarget>();
  for (const stats of all) {
    for (const [name, s] of Object.entries(stats ?? {})) {
      let a = acc.get(name);
      if (!a) {
        const width = s.mean.length;
        a = { count: 0, mean: new Float64Array(width), m2: new Float64Array(width), normSum: 0 };
        acc.set(name, a);
      }
      mergeInto(a, s.count, s.mean, s.m2, s.norm_sum);
    }
  }
  return Object.fromEntries(
    [...acc].map(([name, a]) => [
      name,
      { count: a.count, mean: Array.from(a.mean), m2: Array.from(a.m2), norm_sum: a.normSum },
    ]),
  );
}

/** What an SAE trainer reads off a layer's statistics. */
export interface StatsSummary {
  rows: number;
  /** Mean of the rows' L2 norms. */
  mean_norm: number;
  /** `sqrt(hidden) / mean_norm`: scales rows to an expected squared norm of `hidden`. */
  norm_scaling_factor: number;
  /** Mean over dimensions of the per-dimension variance. */
  mean_variance: number;
  /** L2 norm of the mean vector. */
  mean_vector_norm: number;
}

/** The summary of one layer's statistics. */
export function summarize(s: LayerStats): StatsSummary {
  const H = s.mean.length;
  const meanNorm = s.count > 0 ? s.norm_sum / s.count : 0;
  return {
    rows: s.count,
    mean_norm: meanNorm,
    norm_scaling_factor: meanNorm > 0 ? Math.sqrt(H) / meanNorm : 0,
    mean_variance: s.count > 0 ? s.m2.reduce((a, b) => a + b, 0) / s.count / H : 0,
    mean_vector_norm: Math.sqrt(s.mean.reduce((a, b) => a + b * b, 0)),
  };
}
