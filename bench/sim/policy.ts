/**
 * How a simulated job is run: how many shards the dataset is cut into, and what a worker does
 * when it finds nothing to claim. Static assignment (one shard per worker, the seed's promise)
 * and oversharding (4× and 16× as many shards as workers) wait for work; the split policy
 * splits the largest remainder (bench/sim/split-policy.ts).
 */
import type { Granted, SimLedger } from './ledger';

/** What an idle worker can see and do. */
export interface IdleContext {
  ledger: SimLedger;
  workerId: string;
  nowMs: number;
}

/** A way to run the job. */
export interface Policy {
  /** Its name in tables and the plot. */
  readonly name: string;
  /** Shards per worker the dataset is created with. */
  readonly shardsPerWorker: number;
  /**
   * Called when a worker finds nothing claimable: a claim it obtained another way (a split's
   * new unit), or null to wait for a doorbell or the next poll as the worker loop does.
   */
  onIdle(ctx: IdleContext): Granted | null;
}

/** One shard per worker; an idle worker waits (what shardline does without splitting). */
export const STATIC_POLICY: Policy = {
  name: 'static',
  shardsPerWorker: 1,
  onIdle: () => null,
};

/** `factor` shards per worker, claimed as workers free up; an idle worker waits. */
export function overshardingPolicy(factor: number): Policy {
  return { name: `oversharding ${factor}×`, shardsPerWorker: factor, onIdle: () => null };
}
