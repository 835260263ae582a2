/**
 * The split policy: one shard per worker, and a worker that finds nothing to claim splits the
 * held unit with the most tasks to give (the ledger's `split`: shard-state.ts
 * `splitCandidates`, `splitPoint`, `applySplit`) and works on the new unit; when nothing is
 * worth splitting it waits like the others.
 */
import type { Policy } from './policy';

/** Options of the split policy. */
export interface SplitPolicyOptions {
  /** Fewest tasks each side of a split keeps (`SplitOptions.minTasks`); default the ledger's. */
  minTasks?: number;
}

/** Static assignment plus splitting by idle workers; named by its `minTasks` when one is given. */
export function splitPolicy(options: SplitPolicyOptions = {}): Policy {
  return {
    name: options.minTasks === undefined ? 'split' : `split, sides ≥ ${options.minTasks} tasks`,
    shardsPerWorker: 1,
    onIdle: (ctx) => ctx.ledger.split(ctx.workerId, ctx.nowMs, options.minTasks),
  };
}
