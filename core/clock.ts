/**
 * The clock, injected everywhere time matters (leases, heartbeats, timestamps), so tests drive
 * time instead of waiting for it. Only composition roots use `systemClock`.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  nowMs(): number;
}

/** The real clock. Use it in composition roots only (cli, worker/main, functions). */
export const systemClock: Clock = { nowMs: () => Date.now() };

/** ISO-8601 UTC with milliseconds and a `Z`, the one timestamp format shardline writes. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}
