/**
 * Timers a test drives by hand (worker/lease.ts's `Timers`), over the same fake clock the
 * ledger reads: nothing fires until the test says so, and firing a timer first moves the clock
 * to the moment it was due. Lets a test walk a lease keeper through its heartbeats without
 * waiting for, or racing against, real time.
 */
import type { Timers } from '../../worker/lease';
import type { FakeClock } from './ledger-fixtures';

/** Lets every promise chain started so far run to its next wait on I/O or a timer. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A `Timers` whose timers fire only through `fireNext`. */
export class FakeTimers implements Timers {
  private nextId = 1;
  private readonly pending = new Map<number, { dueMs: number; fn: () => void }>();

  constructor(private readonly clock: FakeClock) {}

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.pending.set(id, { dueMs: this.clock.nowMs() + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  /** Timers set and not yet fired or cleared. */
  get count(): number {
    return this.pending.size;
  }

  /**
   * Fires the timer due first (the earliest set, on a tie): moves the clock forward to its due
   * time (never back), runs it, and lets what it started settle. Returns the clock's time when
   * it fired, or null when no timer is pending.
   */
  async fireNext(): Promise<number | null> {
    let first: [number, { dueMs: number; fn: () => void }] | undefined;
    for (const entry of this.pending) if (!first || entry[1].dueMs < first[1].dueMs) first = entry;
    if (!first) return null;
    const [id, { dueMs, fn }] = first;
    this.pending.delete(id);
    const ahead = dueMs - this.clock.nowMs();
    if (ahead > 0) this.clock.advance(ahead);
    fn();
    await settle();
    return this.clock.nowMs();
  }
}
