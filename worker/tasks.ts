/**
 * Streams a shard's tasks from its chunk files, starting at any task index, without holding
 * the shard (or a chunk) in memory. Every chunk read in full is checked against the CRC32C in
 * the shard's metadata: a corrupted chunk fails the shard instead of feeding it garbage.
 */
import { crc32c } from '@node-rs/crc32';

import type { BlobStore } from '../core/blob/store';
import { crc32cBase64 } from '../core/checksum';
import type { ShardMetadata } from '../core/dataset/metadata';
import { shardDirName } from '../core/dataset/paths';
import { ShardlineError } from '../core/errors';

/** One task of a shard. */
export interface ShardTask {
  /** Global index in the dataset. */
  taskIndex: number;
  /** The parsed JSON line, or the raw text when the line is not JSON (recorded as skipped). */
  task: unknown;
}

/**
 * Yields the shard's tasks with index >= `fromTask`, in order. Chunks entirely before
 * `fromTask` are not read; the chunk holding it is read from its start (lines before are
 * skipped) so its checksum can still be verified.
 */
export async function* shardTasks(
  store: BlobStore,
  shard: ShardMetadata,
  fromTask: number,
  signal?: AbortSignal,
): AsyncGenerator<ShardTask> {
  const end = shard.first_task_index + shard.total_tasks;
  if (fromTask < shard.first_task_index || fromTask > end) {
    throw new ShardlineError(
      'INTERNAL',
      `task ${fromTask} is outside shard ${shard.shard_id} [${shard.first_task_index}, ${end})`,
    );
  }
  for (const chunk of shard.chunks) {
    if (chunk.first_task_index + chunk.num_tasks <= fromTask) continue;
    const key = `${shardDirName(shard.shard_id)}/${chunk.file}`;
    let crc = 0;
    let bytes = 0;
    let taskIndex = chunk.first_task_index;
    let carry: Buffer | null = null;
    const stream = store.read(key);
    try {
      for await (const piece of stream) {
        signal?.throwIfAborted();
        const buf = piece as Buffer;
        crc = crc32c(buf, crc);
        bytes += buf.length;
        const data: Buffer = carry ? Buffer.concat([carry, buf]) : buf;
        carry = null;
        let s = 0;
        for (let e = data.indexOf(10, s); e !== -1; e = data.indexOf(10, s)) {
          if (taskIndex >= fromTask) yield { taskIndex, task: parseLine(data, s, e) };
          taskIndex++;
          s = e + 1;
        }
        if (s < data.length) carry = Buffer.from(data.subarray(s));
      }
    } finally {
      stream.destroy();
    }
    if (carry && carry.length > 0) throw corrupt(store, key, 'the last line has no newline');
    const sum = crc32cBase64(crc);
    if (bytes !== chunk.bytes || sum !== chunk.crc32c) {
      throw corrupt(
        store,
        key,
        `${bytes} bytes with crc32c ${sum}; the dataset says ${chunk.bytes} bytes, ${chunk.crc32c}`,
      );
    }
    if (taskIndex !== chunk.first_task_index + chunk.num_tasks) {
      throw corrupt(
        store,
        key,
        `${taskIndex - chunk.first_task_index} lines; the dataset says ${chunk.num_tasks}`,
      );
    }
  }
}

function parseLine(data: Buffer, s: number, e: number): unknown {
  const text = data.toString('utf8', s, e);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function corrupt(store: BlobStore, key: string, what: string): ShardlineError {
  return new ShardlineError('CORRUPT', `chunk ${store.uriOf(key)} is corrupt: ${what}`);
}
