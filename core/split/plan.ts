/**
 * How tasks are distributed over shards: contiguous ranges, counts differing by at most one,
 * nothing dropped. Shard k holds tasks `[floor(k*N/S), floor((k+1)*N/S))`.
 *
 * With fewer tasks than requested shards (N < S) there would be empty shards, which a worker
 * could claim and "complete" having done nothing. shardline makes N shards of one task each
 * instead and records the requested count in `requested_num_shards`.
 */
import { ShardlineError } from '../errors';

/** One shard's task range. */
export interface ShardRange {
  shardId: number;
  /** Global index of the first task. */
  firstTask: number;
  /** Number of tasks (at least 1). */
  tasks: number;
}

/** The number of shards actually made for `tasks` tasks when `requested` were asked for. */
export function effectiveShardCount(tasks: number, requested: number): number {
  return Math.min(tasks, requested);
}

/** Splits `tasks` tasks into contiguous ranges over `min(tasks, requested)` shards. */
export function planShards(tasks: number, requested: number): ShardRange[] {
  if (!Number.isInteger(requested) || requested < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `num_shards must be a whole number of at least 1, got ${requested}`,
    );
  }
  if (tasks < 1) throw new ShardlineError('INVALID_INPUT', 'the input holds no valid task');
  const s = effectiveShardCount(tasks, requested);
  const ranges: ShardRange[] = [];
  for (let k = 0; k < s; k++) {
    const first = Math.floor((k * tasks) / s);
    const next = Math.floor(((k + 1) * tasks) / s);
    ranges.push({ shardId: k, firstTask: first, tasks: next - first });
  }
  return ranges;
}
