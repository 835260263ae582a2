/**
 * Fixtures for worker tests: a small Qwen2-shaped model with the real Qwen vocabulary, sample
 * ARC datasets, worker processes of the built CLI, and a reader that collects every sample of
 * a dataset's outputs from its shard manifests.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';

import type { BlobStore } from '../../core/blob/store';
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

/** `shardline create` arguments for `input` into `output` with `shards` shards, then `extra`. */
export function createArgs(
  input: string,
  output: string,
  shards: number,
  ...extra: string[]
): string[] {
  return [
    'create',
    '--input_file',
    input,
    '--output_dir',
    output,
    '--num_shards',
    String(shards),
    ...extra,
  ];
}

/** `n` sample ARC tasks as JSONL text (small grids: short prompts, fast tests). */
export function arcJsonl(n: number, seed = 1): string {
  return `${generateArcTasks(n, seed, 4)
    .map((t) => JSON.stringify(t))
    .join('\n')}\n`;
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
    { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] },
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

/** Every sample id in the dataset's outputs, from the shard manifests and their parts' indexes. */
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
