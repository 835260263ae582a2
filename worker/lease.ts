/**
 * Keeps a claim's lease alive: a heartbeat every third of the lease, on the main thread
 * (inference runs on a worker thread and never blocks it). When the ledger says the claim is
 * no longer ours (`LEASE_LOST`), or when renewal kept failing until the lease ran out, the
 * keeper fires `lost`: the holder must stop at once and commit nothing more.
 *
 * It also keeps the holder's reservation (docs/decisions.md#work-units-split-the-tail): the
 * holder reads a task only once `reserve` says it is reserved, and every heartbeat carries the
 * reservation the holder wants next (`reserveAhead`), so a split never takes a task the holder
 * has in hand. Each answer tells the unit's end (`end`), which a split may have moved down.
 */
import type { Clock } from '../core/clock';
import { ShardlineError, isLeaseLost, toError } from '../core/errors';
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
  private endTask: number;
  /** Tasks below it are reserved for this holder (confirmed by the ledger). */
  private reservedTo = Number.NEGATIVE_INFINITY;
  /** The reservation the holder wants next, sent with every heartbeat; none when unset. */
  reserveAhead: (() => number) | undefined;

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
    this.endTask = claim.end_task_index ?? Number.POSITIVE_INFINITY;
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

  /** The unit's end (exclusive) as the ledger last said: only ever moves down. */
  get end(): number {
    return this.endTask;
  }

  /** Notes the unit's end read elsewhere (the unit's record). */
  noteEnd(end: number): void {
    this.endTask = Math.min(this.endTask, end);
  }

  /** Takes a heartbeat's answer: the lease, the end, and what `reserveTo` reserved. */
  private take(renewed: Claim, reserveTo: number | undefined): void {
    this.current = renewed;
    this.failures = 0;
    if (renewed.end_task_index !== undefined) this.noteEnd(renewed.end_task_index);
    if (reserveTo !== undefined)
      this.reservedTo = Math.max(this.reservedTo, Math.min(reserveTo, this.endTask));
    this.wake();
  }

  private readonly waiters: Array<() => void> = [];

  /** Wakes whoever waits for the next renewal (or the loss, or the stop). */
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Resolves once `task` is reserved for this holder, asking the ledger (a heartbeat reserving
   * up to `task + ahead`) when it is not yet; `task` may then lie at or past `end` (a split took
   * it), which the caller checks. When that heartbeat fails, it waits for the keeper's own
   * renewals (retried with backoff, each reserving what `reserveAhead` wants); it rejects with
   * `LEASE_LOST` once the lease is lost, runs out, or the keeper stops.
   */
  async reserve(task: number, ahead: number): Promise<void> {
    while (task >= this.reservedTo && task < this.endTask) {
      if (this.controller.signal.aborted || this.stopped)
        throw new ShardlineError('LEASE_LOST', 'the lease keeper stopped');
      const reserveTo = task + Math.max(1, ahead);
      try {
        this.take(
          await this.ledger.heartbeat(this.current, { leaseMs: this.leaseMs, reserveTo }),
          reserveTo,
        );
      } catch (e: unknown) {
        if (isLeaseLost(e)) {
          this.lose(`the lease was taken: ${toError(e).message}`);
          throw e;
        }
        this.failures++;
        this.log.warn('reserving tasks failed; waiting for the next renewal', {
          error: e,
          failures: this.failures,
        });
        await new Promise<void>((resolve) => this.waiters.push(resolve));
      }
    }
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
      const wanted = this.reserveAhead?.();
      const reserveTo =
        wanted !== undefined && wanted > this.reservedTo && Number.isFinite(wanted)
          ? wanted
          : undefined;
      const renewed = await this.ledger.heartbeat(this.current, {
        leaseMs: this.leaseMs,
        ...(reserveTo === undefined ? {} : { reserveTo }),
      });
      this.timers.clearTimeout(watchdog);
      if (this.stopped) return;
      this.take(renewed, reserveTo);
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
    this.wake();
  }

  /** Stops renewing (the shard is finished, failed or released). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.wake();
  }
}
