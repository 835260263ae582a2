/**
 * Errors with a stable string `code`, so they can be recognised after crossing a process,
 * worker-thread or message boundary (docs/conventions.md#errors). Check by `code`, not by
 * `instanceof` alone.
 */

/** Every code shardline raises. Adding one is a public change: it may appear in logs and JSON. */
export type ErrorCode =
  | 'LEASE_LOST'
  | 'INVALID_ARGUMENT'
  | 'INVALID_INPUT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'DATASET_CONFLICT'
  | 'DATASET_INCOMPLETE'
  | 'FINGERPRINT_MISMATCH'
  | 'PAST_END'
  | 'MANIFEST_REQUIRED'
  | 'NOTHING_AVAILABLE'
  | 'STORAGE'
  | 'CORRUPT'
  | 'LEDGER'
  | 'MODEL'
  | 'INTERRUPTED'
  | 'INTERNAL';

/** The base of every error shardline throws on purpose. */
export class ShardlineError extends Error {
  /** A stable, machine-readable code. */
  readonly code: ErrorCode;
  /** Extra structured facts (a line number, a path), safe to log. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ShardlineError';
    this.code = code;
    this.details = options.details ?? {};
  }
}

/**
 * The claim this worker acted on is no longer its own: the lease expired and another worker
 * claimed the shard (a higher epoch), or the shard was reset. The holder must stop at once
 * and commit nothing more.
 */
export class LeaseLostError extends ShardlineError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('LEASE_LOST', message, { details });
    this.name = 'LeaseLostError';
  }
}

/** A flag, environment variable or config value is invalid; the message names it. */
export class ConfigError extends ShardlineError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INVALID_ARGUMENT', message, { details });
    this.name = 'ConfigError';
  }
}

/**
 * How a failure in a shard's work is treated (docs/decisions.md#failures-transient-permanent-or-not-known):
 *
 * - `transient`: a service is unavailable, throttled or timed out (`isRetryable`). Retried with
 *   backoff by whoever hit it, keeping the lease; no attempt is counted.
 * - `permanent`: the data is wrong in a way no retry changes (`CORRUPT`: a chunk that fails its
 *   checksum, a committed part that is missing; `INVALID_INPUT`: inputs the model cannot run).
 *   The shard fails at once, with the reason.
 * - `unknown`: anything else (a bug, a crashed model thread): an attempt is counted, so a shard
 *   that keeps failing ends `failed` after its budget.
 */
export type FailureKind = 'transient' | 'permanent' | 'unknown';

/** Which `FailureKind` an error is. */
export function failureKind(e: unknown): FailureKind {
  if (isRetryable(e)) return 'transient';
  const code = errorCode(e);
  return code === 'CORRUPT' || code === 'INVALID_INPUT' ? 'permanent' : 'unknown';
}

/** Normalises anything caught into an `Error` (docs/conventions.md#catch-e-unknown). */
export function toError(e: unknown): Error {
  if (e instanceof Error) return e;
  if (typeof e === 'string') return new Error(e);
  try {
    return new Error(JSON.stringify(e));
  } catch {
    return new Error(String(e));
  }
}

/** The `code` of an error, ours or a client library's (gRPC numbers become strings). */
export function errorCode(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  if (typeof code === 'number') return String(code);
  return undefined;
}

/** True when the error is a `LeaseLostError`, here or after crossing a boundary. */
export function isLeaseLost(e: unknown): boolean {
  return errorCode(e) === 'LEASE_LOST';
}

/**
 * True when no retry can fix the error: the input or its settings are wrong (a bad line under
 * `--strict`, invalid metadata, a dataset id taken by other content). Retrying wastes work.
 */
export function isInputError(e: unknown): boolean {
  const code = errorCode(e);
  return code === 'INVALID_INPUT' || code === 'INVALID_ARGUMENT' || code === 'DATASET_CONFLICT';
}

// gRPC status codes that a retry can fix: CANCELLED, UNKNOWN, DEADLINE_EXCEEDED,
// RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE.
const RETRYABLE_GRPC = new Set([1, 2, 4, 8, 10, 13, 14]);
const RETRYABLE_NODE = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);
// SQLite's lock errors (SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED…): another process
// held the file past the busy timeout.
const RETRYABLE_SQLITE = /^SQLITE_(BUSY|LOCKED)/;
const RETRYABLE_HTTP = new Set([408, 429, 500, 502, 503, 504]);

/**
 * The one place that decides whether an error is worth retrying (docs/conventions.md#errors):
 * transient transport and server errors are, and so are lost races in the ledger; our own
 * domain errors never are, except `STORAGE` and `LEDGER` errors whose cause is transient.
 */
export function isRetryable(e: unknown): boolean {
  if (e instanceof ShardlineError) {
    // Lost races (optimistic transactions, claims under contention) go another way next time.
    if (e.code === 'LEDGER' && e.details.contended === true) return true;
    if (e.code === 'STORAGE' || e.code === 'LEDGER') return isRetryable(e.cause);
    return false;
  }
  if (typeof e !== 'object' || e === null) return false;
  const { code, status } = e as { code?: unknown; status?: unknown };
  // Client libraries put gRPC codes (small numbers) or HTTP statuses (>= 100) in `code`.
  if (typeof code === 'number') {
    return code >= 100 ? RETRYABLE_HTTP.has(code) : RETRYABLE_GRPC.has(code);
  }
  if (typeof code === 'string' && (RETRYABLE_NODE.has(code) || RETRYABLE_SQLITE.test(code)))
    return true;
  return typeof status === 'number' && RETRYABLE_HTTP.has(status);
}
