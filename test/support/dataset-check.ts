/**
 * Reads a dataset back through a BlobStore and checks every invariant a user relies on:
 * numbers in the metadata agree with the files, chunks respect the size limit, shard counts
 * differ by at most one and cover the tasks in order.
 */
import { crc32c } from '@node-rs/crc32';

import type { BlobStore } from '../../core/blob/store';
import type { MasterMetadata, ShardMetadata } from '../../core/dataset/metadata';
import {
  MasterMetadataSchema,
  ShardMetadataSchema,
  checkShardInvariants,
  decodeJson,
} from '../../core/dataset/metadata';
import { MASTER_METADATA, shardDirName, shardMetadataKey } from '../../core/dataset/paths';
import { crc32cBase64 } from '../../core/checksum';

/** The dataset's tasks in shard and chunk order, each line without its `\n`, plus its metadata. */
export interface ReadBack {
  master: MasterMetadata;
  shards: ShardMetadata[];
  tasks: Buffer[];
  /** Raw bytes of every chunk, keyed `shard_000/chunk_0000.jsonl`. */
  files: Map<string, Buffer>;
}

/** Reads a dataset and asserts its invariants (with jest's expect). */
export async function readAndCheckDataset(
  store: BlobStore,
  chunkSizeMb?: number,
): Promise<ReadBack> {
  const master = decodeJson(
    MasterMetadataSchema,
    (await store.readAll(MASTER_METADATA)).toString(),
    'master',
  );
  const shards: ShardMetadata[] = [];
  const tasks: Buffer[] = [];
  const files = new Map<string, Buffer>();
  const limit = Math.floor((chunkSizeMb ?? master.chunk_size_mb) * 1024 * 1024);
  expect(master.shards.map((s) => s.shard_id)).toEqual(master.shards.map((_, i) => i));
  expect(master.num_shards).toBe(master.shards.length);
  let next = 0;
  for (const entry of master.shards) {
    expect(entry.directory).toBe(shardDirName(entry.shard_id));
    const shard = decodeJson(
      ShardMetadataSchema,
      (await store.readAll(shardMetadataKey(entry.shard_id))).toString(),
      'shard',
    );
    shards.push(shard);
    expect(checkShardInvariants(shard)).toEqual([]);
    expect(shard.first_task_index).toBe(next);
    expect(shard.total_shards).toBe(master.num_shards);
    expect(shard.status).toBe('available');
    expect(entry).toMatchObject({
      total_tasks: shard.total_tasks,
      num_chunks: shard.num_chunks,
      first_task_index: shard.first_task_index,
      total_bytes: shard.total_bytes,
    });
    expect(shard.total_tasks).toBeGreaterThan(0);
    next += shard.total_tasks;
    for (const c of shard.chunks) {
      const key = `${entry.directory}/${c.file}`;
      const bytes = await store.readAll(key);
      files.set(key, bytes);
      expect({ key, bytes: bytes.length, crc32c: crc32cBase64(crc32c(bytes)) }).toEqual({
        key,
        bytes: c.bytes,
        crc32c: c.crc32c,
      });
      expect(c.size_mb).toBeCloseTo(c.bytes / 1048576, 12);
      expect(bytes[bytes.length - 1]).toBe(10);
      const lines = bytes
        .subarray(0, bytes.length - 1)
        .toString('latin1')
        .split('\n');
      expect(lines.length).toBe(c.num_tasks);
      // The size limit holds unless the chunk is a single (larger) task.
      expect({ chunk: key, withinLimit: c.num_tasks === 1 || c.bytes <= limit }).toEqual({
        chunk: key,
        withinLimit: true,
      });
      let s = 0;
      for (let i = 0; i < c.num_tasks; i++) {
        const e = bytes.indexOf(10, s);
        tasks.push(bytes.subarray(s, e));
        s = e + 1;
      }
    }
  }
  expect(next).toBe(master.total_tasks);
  const counts = shards.map((s) => s.total_tasks);
  expect(counts).toHaveLength(master.num_shards);
  expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
  return { master, shards, tasks, files };
}
