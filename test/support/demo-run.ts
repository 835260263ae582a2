/**
 * A demo-sized run for the plan and report tests: the demo's puzzles and the demo's model shape
 * (Qwen's real vocabulary and tokenizer, 4 layers, hidden 64), a local dataset made by the built
 * CLI's `create`, and the numbers a finished run's manifests state.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { DEMO_QWEN2, generateQwen2Model } from '../../synthetic/qwen2';
import type { ShardManifest } from '../../core/rollup/manifests';
import { CLI, createArgs } from './worker-fixtures';

/** Writes the demo-shaped model into `dir`; returns the model file. */
export function demoModel(dir: string): string {
  generateQwen2Model({ dir, shape: DEMO_QWEN2, seed: 1, lmHead: true, externalData: true });
  return path.join(dir, 'model.onnx');
}

/**
 * Writes `tasks` demo puzzles (as `shardline demo` makes them) to `dir/NAME.jsonl` and splits
 * them with the built CLI into `dir/NAME` (`shards` shards, 20 KB chunks); returns the dataset.
 */
export function demoDataset(dir: string, name: string, tasks: number, shards: number): string {
  const input = path.join(dir, `${name}.jsonl`);
  writeFileSync(
    input,
    generateArcTasks(tasks, 1, 6)
      .map((t) => `${JSON.stringify(t)}\n`)
      .join(''),
  );
  const out = path.join(dir, name);
  const r = spawnSync(
    process.execPath,
    [CLI, ...createArgs(input, out, shards, '--chunk_size_mb', '0.02', '--log_format', 'json')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`create failed: ${r.stderr}`);
  return out;
}

/** What a finished run wrote, from its manifests. */
export interface RunOutput {
  samples: number;
  tokens: number;
  parts: number;
  /** Bytes of every part's files (the dataset manifest's `bytes`). */
  bytes: number;
  skipped: number;
}

/** Reads the dataset manifest under `activations` and every shard manifest it lists. */
export function runOutput(activations: string): RunOutput {
  const m = JSON.parse(readFileSync(path.join(activations, '_MANIFEST.json'), 'utf8')) as {
    samples: number;
    bytes: number;
    shards: Array<{ manifest: string }>;
  };
  const shards = m.shards.map(
    (s) => JSON.parse(readFileSync(path.join(activations, s.manifest), 'utf8')) as ShardManifest,
  );
  return {
    samples: m.samples,
    bytes: m.bytes,
    tokens: shards.reduce((n, s) => n + s.tokens, 0),
    parts: shards.reduce((n, s) => n + s.parts.length, 0),
    skipped: shards.reduce((n, s) => n + s.skipped, 0),
  };
}
