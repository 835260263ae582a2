/**
 * Keeps a claim's lease alive: a heartbeat every third of the lease, on the main thread
 * (inference runs on a worker thread and never blocks it). When the ledger says the claim is
 * no longer ours (`LEASE_LOST`), or when renewal kept failing until the lease ran out, the
 * keeper fires `lost`: the holder must stop at once and commit nothing more.
 */
import type { Clock } from '../core/clock';
import { isLeaseLost, toError } from '../core/errors';
import type { Claim, Ledger } from '../core/ledger/ledger';
import type { Logger } from '../core/log';

/** Timers, injectable so tests can drive them. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The process's timers. */
export const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Renews one claim until stopped or lost. */
export class LeaseKeeper {
  private current: Claim;
  private timer: unknown;
  private stopped = false;
  private readonly controller = new AbortController();
  private failures = 0;

  /**
   * @param leaseMs the lease length; renewed every `leaseMs / 3`
   */
  constructor(
    private readonly ledger: Ledger,
    claim: Claim,
    private readonly leaseMs: number,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly timers: Timers = realTimers,
  ) {
    this.current = claim;
    this.schedule(leaseMs / 3);
  }

  /** The claim with its latest lease. */
  get claim(): Claim {
    return this.current;
  }

  /** Aborted when the lease is lost; `reason` says why. */
  get lost(): AbortSignal {
    return this.controller.signal;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = this.timers.setTimeout(() => void this.beat(), Math.max(10, ms));
  }

  private async beat(): Promise<void> {
    if (this.stopped) return;
    // A renewal that hangs (a frozen or unreachable ledger that never answers) is as good as a
    // failed one: if it is still pending when the lease runs out, stop, as for failures.
    const leftMs = Date.parse(this.current.lease_expires_at) - this.clock.nowMs();
    const watchdog = this.timers.setTimeout(
      () =>
        this.lose(
          `the lease ran out while its renewal was still waiting for the ledger (${Math.round(leftMs / 1000)} s)`,
        ),
      Math.max(10, leftMs),
    );
    try {
      const renewed = await this.ledger.heartbeat(this.current, { leaseMs: this.leaseMs });
      this.timers.clearTimeout(watchdog);
      if (this.stopped) return;
      this.current = renewed;
      this.failures = 0;
      this.schedule(this.leaseMs / 3);
    } catch (e: unknown) {
      this.timers.clearTimeout(watchdog);
      if (this.stopped) return;
      if (isLeaseLost(e)) {
        this.lose(`the lease was taken: ${toError(e).message}`);
        return;
      }
      this.failures++;
      const leftMs = Date.parse(this.current.lease_expires_at) - this.clock.nowMs();
      if (leftMs <= 0) {
        // Someone may already hold the shard: stop rather than risk working as a zombie.
        this.lose(
          `could not renew the lease before it expired (${this.failures} failed heartbeats; last: ${toError(e).message})`,
        );
        return;
      }
      this.log.warn('heartbeat failed; retrying', {
        error: e,
        lease_left_ms: leftMs,
        failures: this.failures,
      });
      // Retry soon, with jitter, but never wait past the lease's end.
      this.schedule(
        Math.min(leftMs / 2, 1000 * 2 ** Math.min(this.failures, 5) * (0.5 + Math.random() / 2)),
      );
    }
  }

  private lose(reason: string): void {
    if (this.controller.signal.aborted) return;
    this.stopped = true;
    this.log.error('lease lost; stopping this shard', { reason, ...this.current });
    this.controller.abort(new Error(reason));
  }

  /** Stops renewing (the shard is finished, failed or released). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
  }
}
