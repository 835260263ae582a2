/**
 * Fixtures for ledger tests: a clock tests drive by hand, master metadata for N shards, and a
 * small local dataset in the seed layout (written directly, so these tests do not depend on
 * the splitter).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import type { Clock } from '../../core/clock';
import type { ChunkInfo, MasterMetadata, ShardMetadata } from '../../core/dataset/metadata';
import { encodeJson, masterEntryOf } from '../../core/dataset/metadata';
import {
  FORMAT_VERSION,
  MASTER_METADATA,
  chunkFileName,
  chunkKey,
  shardMetadataKey,
} from '../../core/dataset/paths';

/** 2026-01-01T00:00:00Z: where fake clocks start. */
export const T0 = Date.UTC(2026, 0, 1);

/** A clock that moves only when told. */
export class FakeClock implements Clock {
  constructor(private ms = T0) {}
  nowMs(): number {
    return this.ms;
  }
  /** Moves time forward by `ms`. */
  advance(ms: number): void {
    this.ms += ms;
  }
}

/** Options of `makeDataset`. */
export interface DatasetSpec {
  datasetId: string;
  numShards: number;
  /** Tasks per shard; default 10. */
  tasksPerShard?: number;
  /** Chunks per shard; default 2. */
  chunksPerShard?: number;
  /** Changes the source, so the same id describes a different dataset. */
  sourceUri?: string;
}

/** The master and shard metadata of a dataset, consistent with each other. */
export function makeDataset(spec: DatasetSpec): {
  master: MasterMetadata;
  shards: ShardMetadata[];
} {
  const tasks = spec.tasksPerShard ?? 10;
  const nChunks = spec.chunksPerShard ?? 2;
  const shards: ShardMetadata[] = [];
  for (let k = 0; k < spec.numShards; k++) {
    const first = k * tasks;
    const chunks: ChunkInfo[] = [];
    let next = first;
    for (let c = 0; c < nChunks; c++) {
      const n = Math.floor(((c + 1) * tasks) / nChunks) - Math.floor((c * tasks) / nChunks);
      const bytes = n * 20;
      chunks.push({
        chunk_id: c,
        file: chunkFileName(c),
        num_tasks: n,
        size_mb: bytes / 1048576,
        bytes,
        crc32c: 'AAAAAA==',
        first_task_index: next,
      });
      next += n;
    }
    shards.push({
      shard_id: k,
      total_shards: spec.numShards,
      status: 'available',
      total_tasks: tasks,
      num_chunks: nChunks,
      chunks,
      assigned_to: null,
      started_at: null,
      completed_at: null,
      format_version: FORMAT_VERSION,
      dataset_id: spec.datasetId,
      first_task_index: first,
      total_bytes: chunks.reduce((a, c) => a + c.bytes, 0),
    });
  }
  const master: MasterMetadata = {
    total_tasks: tasks * spec.numShards,
    num_shards: spec.numShards,
    chunk_size_mb: 100,
    shards: shards.map(masterEntryOf),
    format_version: FORMAT_VERSION,
    dataset_id: spec.datasetId,
    created_at: new Date(T0).toISOString(),
    created_by: 'shardline test fixture',
    source: {
      uri: spec.sourceUri ?? `/fixtures/${spec.datasetId}.jsonl`,
      generation: null,
      bytes: tasks * spec.numShards * 20,
      crc32c: 'AAAAAA==',
      gzip: false,
    },
    requested_num_shards: spec.numShards,
    input_lines: tasks * spec.numShards,
    blank_lines: 0,
    rejected_lines: 0,
  };
  return { master, shards };
}

/** Writes a dataset in the seed layout under `dir` (master, shard metadata, small chunks). */
export function writeLocalDataset(dir: string, spec: DatasetSpec): MasterMetadata {
  const { master, shards } = makeDataset(spec);
  for (const shard of shards) {
    mkdirSync(path.join(dir, path.dirname(shardMetadataKey(shard.shard_id))), { recursive: true });
    writeFileSync(path.join(dir, shardMetadataKey(shard.shard_id)), encodeJson(shard));
    for (const chunk of shard.chunks) {
      const lines = Array.from(
        { length: chunk.num_tasks },
        (_, i) => `${JSON.stringify({ text: `t${chunk.first_task_index + i}` })}\n`,
      );
      writeFileSync(path.join(dir, chunkKey(shard.shard_id, chunk.chunk_id)), lines.join(''));
    }
  }
  writeFileSync(path.join(dir, MASTER_METADATA), encodeJson(master));
  return master;
}
