/**
 * Streams a shard's tasks from its chunk files, starting at any task index, without holding
 * the shard in memory. Every chunk is checked against the CRC32C in the shard's metadata
 * before its tasks are handed out: a corrupted chunk fails the shard (`CORRUPT`) instead of
 * feeding it garbage.
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
 * Yields the shard's tasks with index >= `fromTask`, in order, and below `until()` when given
 * (a work unit's end, which a split may move down while the tasks are read). Chunks entirely
 * outside that range are not read; a chunk holding part of it is read whole (its checksum
 * covers it all).
 */
export async function* shardTasks(
  store: BlobStore,
  shard: ShardMetadata,
  fromTask: number,
  signal?: AbortSignal,
  until?: () => number,
): AsyncGenerator<ShardTask> {
  const end = shard.first_task_index + shard.total_tasks;
  if (fromTask < shard.first_task_index || fromTask > end) {
    throw new ShardlineError(
      'INTERNAL',
      `task ${fromTask} is outside shard ${shard.shard_id} [${shard.first_task_index}, ${end})`,
    );
  }
  const stop = (): number => Math.min(end, until?.() ?? end);
  for (const chunk of shard.chunks) {
    if (chunk.first_task_index + chunk.num_tasks <= fromTask) continue;
    if (chunk.first_task_index >= stop()) return;
    const key = `${shardDirName(shard.shard_id)}/${chunk.file}`;
    // The whole chunk is checked before any of its tasks is handed out: a task of a corrupted
    // chunk must never reach a committed part. A chunk up to `VERIFY_IN_MEMORY_BYTES` is read
    // once and kept; a larger one is read twice (checked, then parsed), never held.
    const held = await verifyChunk(store, key, chunk, signal);
    let taskIndex = chunk.first_task_index;
    let carry: Buffer | null = null;
    const pieces: AsyncIterable<Buffer> | Iterable<Buffer> = held ? [held] : store.read(key);
    try {
      for await (const piece of pieces) {
        signal?.throwIfAborted();
        const buf = piece;
        const data: Buffer = carry ? Buffer.concat([carry, buf]) : buf;
        carry = null;
        let s = 0;
        for (let e = data.indexOf(10, s); e !== -1; e = data.indexOf(10, s)) {
          if (taskIndex >= stop()) return;
          if (taskIndex >= fromTask) yield { taskIndex, task: parseLine(data, s, e) };
          taskIndex++;
          s = e + 1;
        }
        if (s < data.length) carry = Buffer.from(data.subarray(s));
      }
    } finally {
      if (!held) (pieces as { destroy?: () => void }).destroy?.();
    }
    if (taskIndex !== chunk.first_task_index + chunk.num_tasks)
      throw corrupt(store, key, `its tasks changed while it was read`);
  }
}

/** Chunks up to this size are kept in memory after their check (read once); 64 MiB. */
export const VERIFY_IN_MEMORY_BYTES = 64 << 20;

/**
 * Reads a chunk to its end and checks its bytes, CRC32C and line count against the dataset's
 * metadata; returns its bytes when small enough to keep, else null (read it again to parse).
 */
async function verifyChunk(
  store: BlobStore,
  key: string,
  chunk: ShardMetadata['chunks'][number],
  signal?: AbortSignal,
): Promise<Buffer | null> {
  const keep = chunk.bytes <= VERIFY_IN_MEMORY_BYTES;
  const kept: Buffer[] = [];
  let crc = 0;
  let bytes = 0;
  let lines = 0;
  let last = 10;
  const stream = store.read(key);
  try {
    for await (const piece of stream) {
      signal?.throwIfAborted();
      const buf = piece as Buffer;
      crc = crc32c(buf, crc);
      bytes += buf.length;
      for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) lines++;
      if (buf.length > 0) last = buf[buf.length - 1]!;
      if (keep) kept.push(buf);
    }
  } finally {
    stream.destroy();
  }
  if (bytes > 0 && last !== 10) throw corrupt(store, key, 'the last line has no newline');
  const sum = crc32cBase64(crc);
  if (bytes !== chunk.bytes || sum !== chunk.crc32c)
    throw corrupt(
      store,
      key,
      `${bytes} bytes with crc32c ${sum}; the dataset says ${chunk.bytes} bytes, ${chunk.crc32c}`,
    );
  if (lines !== chunk.num_tasks)
    throw corrupt(store, key, `${lines} lines; the dataset says ${chunk.num_tasks}`);
  return keep ? Buffer.concat(kept) : null;
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
