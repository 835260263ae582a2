/**
 * Grouping samples into model batches. Sequences are right-padded to the longest in the batch,
 * so a batch costs `size × longest` tokens of compute (attention more: it grows with the
 * square of the length); the limits below bound both memory and wasted padding.
 */
import { ConfigError } from '../../core/errors';

/** Limits of one batch. */
export interface BatchLimits {
  /** Most sequences per batch. Default 4 (docs/notes/onnx.md §6: B 1-4 × S≈512 is the sweet spot). */
  maxBatchSize?: number;
  /** Most padded tokens per batch (`size × longest`). Default 4096. A longer single sequence gets a batch of its own. */
  maxBatchTokens?: number;
}

/** Default `maxBatchSize`. */
export const DEFAULT_MAX_BATCH_SIZE = 4;
/** Default `maxBatchTokens`. */
export const DEFAULT_MAX_BATCH_TOKENS = 4096;

/**
 * Splits `lengths` (token counts, in sample order) into consecutive batches within the limits
 * and returns each batch as `[start, end)` sample indices. Order is kept, so the rows of a part
 * follow the task order.
 */
export function planBatches(
  lengths: readonly number[],
  limits: BatchLimits = {},
): Array<[number, number]> {
  const maxSize = limits.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
  const maxTokens = limits.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
  if (!Number.isSafeInteger(maxSize) || maxSize < 1) {
    throw new ConfigError(`batch_size must be a positive integer, got ${maxSize}`);
  }
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) {
    throw new ConfigError(`batch_tokens must be a positive integer, got ${maxTokens}`);
  }
  const out: Array<[number, number]> = [];
  let start = 0;
  let longest = 0;
  for (let i = 0; i < lengths.length; i++) {
    const len = lengths[i]!;
    const size = i - start;
    const nextLongest = Math.max(longest, len);
    if (size > 0 && (size + 1 > maxSize || (size + 1) * nextLongest > maxTokens)) {
      out.push([start, i]);
      start = i;
      longest = len;
    } else {
      longest = nextLongest;
    }
  }
  if (start < lengths.length) out.push([start, lengths.length]);
  return out;
}
