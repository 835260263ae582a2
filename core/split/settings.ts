/**
 * How a split runs (not what it makes: every setting gives the same dataset), parsed once from
 * the environment by the composition root (the CLI) and passed down.
 */
import { ShardlineError } from '../errors';
import type { SplitEngine } from './native';

/** Settings of a split. */
export interface SplitSettings {
  /** The line checker: `auto` (native when built, else JavaScript), `native` or `js`. */
  engine: SplitEngine;
  /**
   * Threads for each phase of a local split (blocks checked at once, chunks copied at once);
   * undefined: one per core for inputs of at least 64 MiB, else 1.
   */
  threads: number | undefined;
  /** Bytes per block of a native scan (default 2 MiB; smaller in tests, to get many blocks). */
  blockBytes?: number;
}

/** The defaults: the native checker when it is there, threads by core count. */
export const DEFAULT_SPLIT_SETTINGS: SplitSettings = { engine: 'auto', threads: undefined };

/**
 * `SHARDLINE_SPLIT_ENGINE` (auto | native | js, default auto) and `SHARDLINE_SCAN_THREADS`
 * (0 to 64; 0 and 1 mean one thread).
 */
export function splitSettingsFromEnv(
  env: Readonly<Record<string, string | undefined>>,
): SplitSettings {
  const engine = env.SHARDLINE_SPLIT_ENGINE?.trim() || 'auto';
  if (engine !== 'auto' && engine !== 'native' && engine !== 'js') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `SHARDLINE_SPLIT_ENGINE must be auto, native or js, got "${engine}"`,
    );
  }
  const forced = env.SHARDLINE_SCAN_THREADS;
  let threads: number | undefined;
  if (forced !== undefined && forced !== '') {
    const n = Number(forced);
    if (!Number.isInteger(n) || n < 0 || n > 64) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `SHARDLINE_SCAN_THREADS must be a whole number from 0 to 64, got "${forced}"`,
      );
    }
    threads = Math.max(1, n);
  }
  return { engine, threads };
}
