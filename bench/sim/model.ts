/**
 * What the simulation simulates: the workload, the fleet (speeds, spot preemptions, restarts)
 * and the ledger's timing settings, with the defaults bench/README.md#simulation explains.
 * Every random draw comes from a `Prng` keyed by the seed and what it is for, so the same VM
 * slot has the same speeds, preemption times and restart delays under every policy: policies
 * are compared on the same fleet history (common random numbers), not on different luck.
 */
import { DEFAULT_LEASE_MS, DEFAULT_MAX_ATTEMPTS } from '../../core/ledger/ledger';
import { Prng } from '../../core/random';
import { DEFAULT_RESERVE_AHEAD_MS } from '../../worker/shard-job';

/** One simulated job: the workload, the fleet and the ledger's settings. */
export interface SimConfig {
  /** VM slots (workers at once, when none is down). */
  workers: number;
  /** Shards the dataset is created with. */
  shards: number;
  /** Tasks in the dataset; shard k holds tasks [floor(k·T/S), floor((k+1)·T/S)) as `create` cuts them. */
  totalTasks: number;
  /** Ms one task takes on a worker of speed 1 in a shard of cost 1. */
  taskMs: number;
  /** Tasks per output part (the worker cuts a part by size; here by count). */
  partTasks: number;
  /** Sigma of the lognormal worker speed (mean 1); a replacement VM draws a new speed. */
  speedSigma: number;
  /**
   * Sigma of the lognormal cost per task (mean 1), drawn per block of 1/(16·workers) of the
   * tasks: some stretches of the input hold longer prompts. A shard's cost is its blocks' mean.
   */
  shardCostSigma: number;
  /** Lease length (`--lease_seconds`); the holder renews every third of it. */
  leaseMs: number;
  /**
   * Work a holder reserves ahead, in time (`--reserve_seconds`), at most half a lease: the
   * tail of its unit no split can take.
   */
  reserveAheadMs: number;
  /** Idle wait for a doorbell before looking again (`--poll_seconds`). */
  pollMs: number;
  /** The reaper's tick (Cloud Scheduler, every minute). */
  reapEveryMs: number;
  /** From a doorbell's publish to the worker that receives it (Pub/Sub delivery). */
  doorbellDelayMs: number;
  /** First boots spread uniformly over this long (a fleet does not start in one millisecond). */
  startSpreadMs: number;
  /** Spot preemptions per VM-hour (a Poisson process per VM); 0 for none. */
  preemptionsPerVmHour: number;
  /** Median of the lognormal delay until a preempted slot's replacement worker claims again. */
  restartMedianMs: number;
  /** Sigma of that delay. */
  restartSigma: number;
  /** The dataset's max attempts (a holder lost alone before its first part counts one). */
  maxAttempts: number;
  /**
   * How stale the claim query's answer is when the claim transaction reads a candidate: shards
   * claimed by others within this window still look available and cost a lost race.
   */
  queryLagMs: number;
  /** First-life speeds by slot, replacing the drawn ones (tests: one slow worker). */
  slotSpeeds?: readonly number[];
  /** The seed; with `replica`, keys every random stream. */
  seed: number;
  /** Which repetition of a scenario (a different fleet history under the same seed). */
  replica: number;
}

/** The defaults (bench/README.md#simulation says why each). */
export const DEFAULT_SIM: Omit<SimConfig, 'workers' | 'shards' | 'totalTasks'> = {
  taskMs: 2_000,
  partTasks: 150,
  speedSigma: 0.1,
  shardCostSigma: 0.2,
  leaseMs: DEFAULT_LEASE_MS,
  reserveAheadMs: DEFAULT_RESERVE_AHEAD_MS,
  pollMs: 30_000,
  reapEveryMs: 60_000,
  doorbellDelayMs: 1_000,
  startSpreadMs: 60_000,
  preemptionsPerVmHour: 1 / 24,
  restartMedianMs: 5 * 60_000,
  restartSigma: 0.5,
  maxAttempts: DEFAULT_MAX_ATTEMPTS,
  queryLagMs: 100,
  seed: 1,
  replica: 0,
};

/** Tasks per worker in the reported scenarios: 4 hours of work each at speed 1 (7,200 × 2 s). */
export const TASKS_PER_WORKER = 7_200;

/** A standard normal draw (Box-Muller; one of the pair is dropped, for simplicity). */
export function normal(rng: Prng): number {
  const u = 1 - rng.nextFloat(); // (0, 1]: log is finite
  const v = rng.nextFloat();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A lognormal draw with mean 1 (sigma 0 gives exactly 1). */
export function lognormalMean1(rng: Prng, sigma: number): number {
  return sigma === 0 ? 1 : Math.exp(sigma * normal(rng) - (sigma * sigma) / 2);
}

/** An exponential draw with the given mean (Infinity for an infinite mean). */
export function exponential(rng: Prng, mean: number): number {
  if (!Number.isFinite(mean)) return Infinity;
  return -Math.log(1 - rng.nextFloat()) * mean;
}

/** One life of a VM slot: up (claiming) from `upMs`, preempted at `downMs`, at speed `speed`. */
export interface Incarnation {
  index: number;
  upMs: number;
  downMs: number;
  speed: number;
}

/**
 * The lives of one VM slot, drawn lazily in order from the slot's own stream: the first boots
 * within `startSpreadMs`; each lives an exponential time (rate `preemptionsPerVmHour`); its
 * replacement claims again a lognormal restart delay later (VM re-created, image pulled, model
 * loaded) with a fresh speed.
 */
export class SlotHistory {
  private readonly rng: Prng;
  private readonly lives: Incarnation[] = [];

  constructor(
    private readonly config: SimConfig,
    readonly slot: number,
  ) {
    this.rng = Prng.fromKey('sim-slot', config.seed, config.replica, config.workers, slot);
  }

  /** The slot's `i`-th life (0-based). */
  life(i: number): Incarnation {
    while (this.lives.length <= i) {
      const prev = this.lives.at(-1);
      const c = this.config;
      const upMs =
        prev === undefined
          ? Math.floor(this.rng.nextFloat() * c.startSpreadMs)
          : prev.downMs +
            Math.round(c.restartMedianMs * Math.exp(c.restartSigma * normal(this.rng)));
      const drawn = lognormalMean1(this.rng, c.speedSigma);
      const speed = (prev === undefined ? c.slotSpeeds?.[this.slot] : undefined) ?? drawn;
      const lifetime = exponential(
        this.rng,
        c.preemptionsPerVmHour > 0 ? 3_600_000 / c.preemptionsPerVmHour : Infinity,
      );
      this.lives.push({
        index: this.lives.length,
        upMs,
        downMs: upMs + Math.max(1, Math.round(lifetime)),
        speed,
      });
    }
    return this.lives[i]!;
  }
}

/** Each shard's cost per task (mean 1), drawn from the dataset's own stream. */
export function shardCosts(config: SimConfig): Float64Array {
  const rng = Prng.fromKey('sim-shard-cost', config.seed, config.replica, config.totalTasks);
  // Costs belong to the tasks, not to the sharding: the same tasks cost the same whether cut in
  // 8 shards or 128. Draw one cost per block of the finest sharding simulated (16 × workers)
  // and give each shard the mean over its blocks.
  const blocks = Math.max(config.shards, config.workers * 16);
  const block = new Float64Array(blocks);
  for (let b = 0; b < blocks; b++) block[b] = lognormalMean1(rng, config.shardCostSigma);
  const costs = new Float64Array(config.shards);
  for (let k = 0; k < config.shards; k++) {
    const from = Math.floor((k * blocks) / config.shards);
    const to = Math.floor(((k + 1) * blocks) / config.shards);
    let sum = 0;
    for (let b = from; b < to; b++) sum += block[b]!;
    costs[k] = sum / Math.max(1, to - from);
  }
  return costs;
}

/** The first task of shard `k` of `shards` over `totalTasks` (as `shardline create` cuts). */
export function shardStart(k: number, shards: number, totalTasks: number): number {
  return Math.floor((k * totalTasks) / shards);
}
