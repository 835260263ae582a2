/**
 * A short calibration of the real model on this machine (`shardline plan --calibrate`): a few
 * model batches of real prompts through the extraction engine, batched as a worker batches
 * them, timed after one untimed batch. The rate is real (non-padding) tokens per second of
 * model time, the figure a worker's throughput is bounded by.
 */
import type { BatchLimits } from './batch';
import { planBatches } from './batch';
import type { Extractor } from './engine';

/** What a calibration measured. */
export interface Calibration {
  /** Real tokens per second over the timed batches. */
  tokensPerSecond: number;
  /** Timed batches. */
  batches: number;
  /** Real tokens in the timed batches. */
  tokens: number;
  /** Milliseconds the timed batches took. */
  elapsedMs: number;
}

/** Options of `calibrate`. */
export interface CalibrateOptions {
  /** Batch limits, as the worker's (`--batch_size`, `--max_batch_tokens`). */
  limits: BatchLimits;
  /** Keep timing until this much time has passed (ms) and at least 3 batches ran. */
  budgetMs: number;
  /** A monotonic clock in ms (`performance.now`). */
  now: () => number;
  /** Stops between batches. */
  signal?: AbortSignal;
}

/**
 * Runs `sequences` (token ids of real prompts, in the order a worker would meet them) through
 * `extractor` in batches, cycling through them if they run out before the budget: one batch
 * untimed, then batches until `budgetMs` has passed and at least 3 were timed.
 */
export async function calibrate(
  extractor: Pick<Extractor, 'extract'>,
  sequences: ReadonlyArray<ArrayLike<number>>,
  options: CalibrateOptions,
): Promise<Calibration> {
  if (sequences.length === 0) throw new Error('calibrate: no prompts to run');
  const batches = planBatches(
    sequences.map((s) => s.length),
    options.limits,
  );
  const run = async (k: number): Promise<number> => {
    const [start, end] = batches[k % batches.length]!;
    const batch = sequences.slice(start, end);
    await extractor.extract(batch);
    return batch.reduce((n, s) => n + s.length, 0);
  };
  await run(0);
  let timed = 0;
  let tokens = 0;
  const t0 = options.now();
  while (timed < 3 || options.now() - t0 < options.budgetMs) {
    options.signal?.throwIfAborted();
    tokens += await run(1 + timed);
    timed++;
  }
  const elapsedMs = options.now() - t0;
  return { tokensPerSecond: (tokens / elapsedMs) * 1000, batches: timed, tokens, elapsedMs };
}
