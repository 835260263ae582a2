/**
 * The tasks `shardline plan` measures: every task when there are few, else a seeded simple
 * random sample of them, read from a dataset (only the chunks that hold a chosen task, each
 * checked against its CRC32C as a worker would) or from the JSONL `create` would split (one
 * streaming pass, lines validated as `create` validates them, a reservoir of the sample).
 */
import type { BlobStore } from '../../core/blob/store';
import { ShardMetadataSchema, decodeJson, readMasterMetadata } from '../../core/dataset/metadata';
import { shardMetadataKey } from '../../core/dataset/paths';
import { ShardlineError } from '../../core/errors';
import { Prng } from '../../core/random';
import { classifyLine } from '../../core/split/classify';
import { lineBlocks } from '../../core/split/line-blocks';
import { planShards } from '../../core/split/plan';
import { BOM } from '../../core/split/scan';
import type { Source } from '../../core/split/source';
import { shardTasks } from '../tasks';

/** One task of the sample. */
export interface SampledTask {
  /** Its global index (its position among the valid tasks). */
  taskIndex: number;
  /** The parsed JSON line (or the raw text, which the prompt builder skips with a reason). */
  task: unknown;
}

/** A shard's task range. */
export interface ShardSpan {
  shardId: number;
  firstTaskIndex: number;
  totalTasks: number;
}

/** What `shardline plan` measures. */
export interface TaskSample {
  /** Tasks in the dataset (or that `create` would count in the input). */
  totalTasks: number;
  /** The shards, as they are (a dataset) or as `create --num_shards` would make them. */
  shards: ShardSpan[];
  /** The sampled tasks in index order. */
  tasks: SampledTask[];
  /** True when every task is in `tasks`. */
  census: boolean;
}

/** `n` distinct indices of `[0, total)`, chosen uniformly by a generator keyed by `seed`; ascending. */
export function chooseIndices(total: number, n: number, seed: number): number[] {
  const k = Math.min(n, total);
  if (k === total) return Array.from({ length: total }, (_, i) => i);
  // Floyd's algorithm: k draws, each subset of size k equally likely.
  const rng = Prng.fromKey('shardline-plan-sample', seed);
  const chosen = new Set<number>();
  for (let j = total - k; j < total; j++) {
    const t = rng.nextInt(j + 1);
    chosen.add(chosen.has(t) ? j : t);
  }
  return [...chosen].sort((a, b) => a - b);
}

/**
 * The sample from a dataset (`master_metadata.json` and its shards in `store`): `sampleTasks`
 * of its tasks (all of them when it has no more). Fails with `NOT_FOUND` when the folder is not
 * a dataset, `CORRUPT` when a chunk read fails its checksum.
 */
export async function sampleDataset(
  store: BlobStore,
  sampleTasks: number,
  seed: number,
  signal?: AbortSignal,
): Promise<TaskSample> {
  const master = await readMasterMetadata(store);
  const chosen = chooseIndices(master.total_tasks, sampleTasks, seed);
  const wanted = new Set(chosen);
  const tasks: SampledTask[] = [];
  const shards = master.shards.map((s) => ({
    shardId: s.shard_id,
    firstTaskIndex: s.first_task_index,
    totalTasks: s.total_tasks,
  }));
  const has = (first: number, count: number): boolean => {
    // The first chosen index at or after `first` (chosen is ascending).
    let lo = 0;
    let hi = chosen.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (chosen[mid]! < first) lo = mid + 1;
      else hi = mid;
    }
    return lo < chosen.length && chosen[lo]! < first + count;
  };
  for (const s of shards) {
    if (!has(s.firstTaskIndex, s.totalTasks)) continue;
    const key = shardMetadataKey(s.shardId);
    const meta = decodeJson(
      ShardMetadataSchema,
      (await store.readAll(key)).toString('utf8'),
      store.uriOf(key),
    );
    for (const chunk of meta.chunks) {
      if (!has(chunk.first_task_index, chunk.num_tasks)) continue;
      // The chunk alone, as a one-chunk shard: read whole and checked, nothing else read.
      const one = {
        ...meta,
        chunks: [chunk],
        first_task_index: chunk.first_task_index,
        total_tasks: chunk.num_tasks,
      };
      for await (const t of shardTasks(store, one, chunk.first_task_index, signal))
        if (wanted.has(t.taskIndex)) tasks.push(t);
    }
  }
  return {
    totalTasks: master.total_tasks,
    shards,
    tasks,
    census: tasks.length === master.total_tasks,
  };
}

/**
 * The sample from the JSONL `create` would split into `numShards` shards: one streaming pass
 * that counts the valid tasks as `create` does (a line is a task when it is one JSON object;
 * blank and rejected lines are not) and keeps a seeded reservoir of `sampleTasks` of them.
 * Fails with `INVALID_INPUT` when the input holds no valid task.
 */
export async function sampleInputFile(
  source: Source,
  options: { sampleTasks: number; seed: number; numShards: number; maxLineBytes: number },
  signal?: AbortSignal,
): Promise<TaskSample> {
  const rng = Prng.fromKey('shardline-plan-sample', options.seed);
  const reservoir: Array<{ taskIndex: number; line: Buffer }> = [];
  const size = options.sampleTasks;
  let count = 0;
  let first = true;
  for await (const block of lineBlocks(source.open(), { maxLineBytes: options.maxLineBytes })) {
    signal?.throwIfAborted();
    if (block.kind === 'oversized') continue; // rejected by create
    const buf = block.buf;
    let s = 0;
    if (first) {
      first = false;
      if (buf.subarray(0, 3).equals(BOM)) s = 3;
    }
    while (s < buf.length) {
      let e = buf.indexOf(10, s);
      if (e === -1) e = buf.length;
      if (classifyLine(buf, s, e, options.maxLineBytes, false) === 'task') {
        // Algorithm R: the k-th task replaces a random slot with probability size / (k + 1).
        const slot = count < size ? count : rng.nextInt(count + 1);
        if (slot < size)
          reservoir[slot] = { taskIndex: count, line: Buffer.from(buf.subarray(s, e)) };
        count++;
      }
      s = e + 1;
    }
  }
  if (count === 0) throw new ShardlineError('INVALID_INPUT', `${source.uri} holds no valid task`);
  const tasks = reservoir
    .sort((a, b) => a.taskIndex - b.taskIndex)
    .map(({ taskIndex, line }) => ({
      taskIndex,
      task: JSON.parse(line.toString('utf8')) as unknown,
    }));
  return {
    totalTasks: count,
    shards: planShards(count, options.numShards).map((r) => ({
      shardId: r.shardId,
      firstTaskIndex: r.firstTask,
      totalTasks: r.tasks,
    })),
    tasks,
    census: tasks.length === count,
  };
}
