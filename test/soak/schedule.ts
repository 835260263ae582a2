/**
 * The soak's fault schedule: a list of faults fixed by the seed before the run starts, each
 * triggered by the dataset's progress (committed parts), never by the clock. A fast machine and
 * a slow one meet the same faults in the same order, and every kind the schedule names happens
 * (the soak reports any it could not place, and its tests fail on them).
 */
import { seededRandom } from '../../core/random';

/** The services the outage faults act on. */
export type Service = 'firestore' | 'pubsub' | 'storage';

/** One fault. */
export type FaultAction =
  /** SIGKILL the holder of a shard that has committed parts and has work left (resume follows). */
  | { kind: 'kill-mid' }
  /** SIGKILL a holder before its claim's first part (an attempt, unless others die with it). */
  | { kind: 'kill-early' }
  /** SIGTERM a holder (it releases its shard: no attempt). */
  | { kind: 'sigterm' }
  /**
   * Split a held unit as an idle worker would, then never work on the new unit (a splitter that
   * dies at once): its lease must run out and another worker take the unit over.
   */
  | { kind: 'split' }
  /** Publish a `shard.available` again for a shard (at-least-once delivery). */
  | { kind: 'doorbell'; shard: number }
  /** Deliver the upload's finalized event again. */
  | { kind: 'ingest-replay' }
  /** SIGSTOP a service's emulator for `ms`, then SIGCONT (no state is lost). */
  | { kind: 'freeze'; service: Service; ms: number }
  /** For `ms`, the proxy between the workers and a service resets a share of connections. */
  | { kind: 'resets'; service: Service; share: number; ms: number }
  /** For `ms`, the proxy black-holes a share of new connections. */
  | { kind: 'drops'; service: Service; share: number; ms: number }
  /** For `ms`, every chunk through the proxy waits `delayMs`. */
  | { kind: 'delays'; service: Service; delayMs: number; ms: number }
  /** For `ms`, Storage answers every request 503 (longer than the client's own retries). */
  | { kind: 'unavailable'; service: 'storage'; ms: number };

/** A fault and the progress that triggers it. */
export interface FaultStep {
  /**
   * Fires once the dataset has at least this many committed parts; with `sincePrevious`,
   * this many more than when the previous service fault was over.
   */
  afterParts: number;
  sincePrevious?: boolean;
  action: FaultAction;
}

/** How many of each chaos fault to schedule. */
export interface ChaosCounts {
  killsMid: number;
  killsEarly: number;
  sigterms: number;
  doorbells: number;
  ingestReplays: number;
  /** `split` faults (default 0). */
  splits?: number;
}

/**
 * The chaos faults (process deaths, shutdowns, redelivered messages), shuffled by `seed` and
 * spread over the first `spreadParts` committed parts (keep it well under the dataset's
 * parts, so every fault finds work to act on).
 */
export function chaosSchedule(
  seed: number,
  counts: ChaosCounts,
  spreadParts: number,
  shards: number,
): FaultStep[] {
  const random = seededRandom(seed);
  const actions: FaultAction[] = [
    ...Array.from({ length: counts.killsMid }, (): FaultAction => ({ kind: 'kill-mid' })),
    ...Array.from({ length: counts.killsEarly }, (): FaultAction => ({ kind: 'kill-early' })),
    ...Array.from({ length: counts.sigterms }, (): FaultAction => ({ kind: 'sigterm' })),
    ...Array.from({ length: counts.doorbells }, (): FaultAction => ({
      kind: 'doorbell',
      shard: Math.floor(random() * shards),
    })),
    ...Array.from({ length: counts.ingestReplays }, (): FaultAction => ({ kind: 'ingest-replay' })),
    ...Array.from({ length: counts.splits ?? 0 }, (): FaultAction => ({ kind: 'split' })),
  ];
  for (let i = actions.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [actions[i], actions[j]] = [actions[j]!, actions[i]!];
  }
  // Evenly spaced triggers from the first part on.
  return actions.map((action, i) => ({
    afterParts: 1 + Math.floor((i * spreadParts) / Math.max(1, actions.length)),
    action,
  }));
}

/**
 * The service faults of the outage soak, in a fixed order, each `gapParts` committed parts
 * after the previous one was over. `short` is the form in `npm test` (seconds: faults during
 * which work goes on are kept short, so the dataset outlasts the schedule); `long` is the
 * issue's measure in `npm run soak` (each emulator frozen 60 s, 20 % of Storage connections
 * reset for 2 minutes, Storage answering 503 for 90 s: past its client's 5 retries, which ride
 * through about 31-36 s).
 */
export function outageSchedule(form: 'short' | 'long', gapParts: number): FaultStep[] {
  const long = form === 'long';
  const actions: FaultAction[] = [
    { kind: 'freeze', service: 'firestore', ms: long ? 60_000 : 8_000 },
    { kind: 'freeze', service: 'storage', ms: long ? 60_000 : 8_000 },
    { kind: 'freeze', service: 'pubsub', ms: long ? 60_000 : 5_000 },
    { kind: 'resets', service: 'storage', share: 0.2, ms: long ? 120_000 : 5_000 },
    { kind: 'resets', service: 'firestore', share: 0.2, ms: long ? 30_000 : 5_000 },
    { kind: 'drops', service: 'storage', share: 0.2, ms: long ? 30_000 : 5_000 },
    { kind: 'delays', service: 'firestore', delayMs: 200, ms: long ? 30_000 : 5_000 },
    { kind: 'unavailable', service: 'storage', ms: long ? 90_000 : 10_000 },
  ];
  return actions.map((action, i) => ({
    afterParts: i === 0 ? 1 : gapParts,
    sincePrevious: i > 0,
    action,
  }));
}

/** A fault's name in the report. */
export function faultName(a: FaultAction): string {
  switch (a.kind) {
    case 'freeze':
      return `${a.service} frozen ${Math.round(a.ms / 1000)} s`;
    case 'resets':
      return `${Math.round(a.share * 100)} % of ${a.service} connections reset for ${Math.round(a.ms / 1000)} s`;
    case 'drops':
      return `${Math.round(a.share * 100)} % of ${a.service} connections dropped for ${Math.round(a.ms / 1000)} s`;
    case 'delays':
      return `${a.service} delayed ${a.delayMs} ms per chunk for ${Math.round(a.ms / 1000)} s`;
    case 'unavailable':
      return `${a.service} answering 503 for ${Math.round(a.ms / 1000)} s`;
    case 'doorbell':
      return `doorbell of shard ${a.shard} redelivered`;
    case 'split':
      return 'split by a worker that dies at once';
    default:
      return a.kind;
  }
}
