/**
 * Fixtures for worker tests: a small Qwen2-shaped model with the real Qwen vocabulary, sample
 * ARC datasets, worker processes of the built CLI, and a reader that collects every sample of
 * a dataset's outputs from its shard manifests.
 */
import { crc32c } from '@node-rs/crc32';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import type { BlobStore } from '../../core/blob/store';
import { crc32cBase64 } from '../../core/checksum';
import type { ChunkInfo, MasterMetadata, ShardMetadata } from '../../core/dataset/metadata';
import { encodeJson, masterEntryOf } from '../../core/dataset/metadata';
import {
  FORMAT_VERSION,
  MASTER_METADATA,
  chunkFileName,
  chunkKey,
  shardMetadataKey,
} from '../../core/dataset/paths';
import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { generateQwen2Model } from '../../synthetic/qwen2';
import type { ShardManifest } from '../../core/rollup/manifests';

const ROOT = path.resolve(__dirname, '..', '..');
/** The built CLI (integration tests run after `npm run build`). */
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

/** A tiny model (2 layers, hidden 32) over Qwen's 151,936-token vocabulary. */
export function makeModel(dir: string, seed = 11): string {
  generateQwen2Model({
    dir,
    shape: {
      vocabSize: 151936,
      hiddenSize: 32,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      intermediateSize: 64,
    },
    seed,
    lmHead: false,
    externalData: true,
  });
  return path.join(dir, 'model.onnx');
}

/** `n` sample ARC tasks as JSONL text (small grids: short prompts, fast tests). */
export function arcJsonl(n: number, seed = 1): string {
  return `${generateArcTasks(n, seed, 4)
    .map((t) => JSON.stringify(t))
    .join('\n')}\n`;
}

/**
 * Writes a dataset whose shards hold `counts[k]` of `lines` each, in order (`create` makes
 * shards of equal task counts; a test of uneven shards needs this), `tasksPerChunk` tasks to a
 * chunk, with real sizes and CRC32C. Returns the master metadata.
 */
export function writeUnevenDataset(
  dir: string,
  datasetId: string,
  lines: readonly string[],
  counts: readonly number[],
  tasksPerChunk: number,
): MasterMetadata {
  if (counts.reduce((a, b) => a + b, 0) !== lines.length)
    throw new Error(`the shards' counts must add up to the ${lines.length} lines`);
  const shards: ShardMetadata[] = [];
  let next = 0;
  counts.forEach((count, k) => {
    mkdirSync(path.join(dir, path.dirname(shardMetadataKey(k))), { recursive: true });
    const chunks: ChunkInfo[] = [];
    for (let c = 0; c * tasksPerChunk < count; c++) {
      const first = next + c * tasksPerChunk;
      const n = Math.min(tasksPerChunk, count - c * tasksPerChunk);
      const bytes = Buffer.from(
        lines
          .slice(first, first + n)
          .map((l) => `${l}\n`)
          .join(''),
      );
      writeFileSync(path.join(dir, chunkKey(k, c)), bytes);
      chunks.push({
        chunk_id: c,
        file: chunkFileName(c),
        num_tasks: n,
        size_mb: bytes.length / 1048576,
        bytes: bytes.length,
        crc32c: crc32cBase64(crc32c(bytes)),
        first_task_index: first,
      });
    }
    const shard: ShardMetadata = {
      shard_id: k,
      total_shards: counts.length,
      status: 'available',
      total_tasks: count,
      num_chunks: chunks.length,
      chunks,
      assigned_to: null,
      started_at: null,
      completed_at: null,
      format_version: FORMAT_VERSION,
      dataset_id: datasetId,
      first_task_index: next,
      total_bytes: chunks.reduce((a, c) => a + c.bytes, 0),
    };
    writeFileSync(path.join(dir, shardMetadataKey(k)), encodeJson(shard));
    shards.push(shard);
    next += count;
  });
  const master: MasterMetadata = {
    total_tasks: lines.length,
    num_shards: counts.length,
    chunk_size_mb: 1,
    shards: shards.map(masterEntryOf),
    format_version: FORMAT_VERSION,
    dataset_id: datasetId,
    created_at: new Date(0).toISOString(),
    created_by: 'shardline test fixture',
    source: {
      uri: `/fixtures/${datasetId}.jsonl`,
      generation: null,
      bytes: lines.reduce((a, l) => a + Buffer.byteLength(l) + 1, 0),
      crc32c: 'AAAAAA==',
      gzip: false,
    },
    requested_num_shards: counts.length,
    input_lines: lines.length,
    blank_lines: 0,
    rejected_lines: 0,
  };
  writeFileSync(path.join(dir, MASTER_METADATA), encodeJson(master));
  return master;
}

/** A running worker process. */
export interface WorkerProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
}

/** Starts `shardline work ARGS` as its own process. */
export function spawnWorker(args: string[], env: NodeJS.ProcessEnv, cwd: string): WorkerProcess {
  const child = spawn(
    process.execPath,
    [CLI, 'work', '--log_format', 'json', '--threads', '1', ...args],
    // No test watches a metadata server unless it says so (a CI host may be a Compute Engine VM).
    {
      cwd,
      env: { SHARDLINE_PREEMPTION_NOTICES: 'off', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Waits until `check` is true (polling), or fails after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 60_000,
): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Every sample id in the dataset's outputs, from the shard manifests and their parts' indexes
 * (a split shard's manifest lists every unit's parts, in task order).
 */
export async function collectSamples(
  output: BlobStore,
  numShards: number,
): Promise<{ ids: string[]; manifests: ShardManifest[] }> {
  const ids: string[] = [];
  const manifests: ShardManifest[] = [];
  for (let k = 0; k < numShards; k++) {
    const dir = `shard_${String(k).padStart(3, '0')}`;
    const manifest = JSON.parse(
      (await output.readAll(`${dir}/_MANIFEST.json`)).toString(),
    ) as ShardManifest;
    manifests.push(manifest);
    for (const part of manifest.parts) {
      const index = (await output.readAll(`${dir}/${part.name}.index.jsonl`)).toString();
      for (const line of index.trim().split('\n'))
        if (line) ids.push((JSON.parse(line) as { sample_id: string }).sample_id);
    }
  }
  return { ids, manifests };
}

/** The sample ids a fully processed dataset of `tasks` one-test ARC tasks must hold. */
export function expectedSampleIds(tasks: number, predictionsPerTask: number): string[] {
  const ids: string[] = [];
  for (let t = 0; t < tasks; t++)
    for (let a = 0; a < predictionsPerTask; a++) ids.push(`${t}.0.${a}`);
  return ids.sort();
}
