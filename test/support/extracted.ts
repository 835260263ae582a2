/**
 * Datasets with real outputs, made in-process (the CLI's `create`, then `work` with a seeded
 * Qwen2-shaped model on the SQLite ledger), for tests that read or check outputs.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { cli } from './cli';
import type { CliRun } from './cli';

/** ~60 KB per sample with the tiny model (2 layers × 32 fp16 + 8 bytes a row, ~450 rows): 2-3 samples a part. */
export const SMALL_PARTS_MB = '0.15';

/**
 * Task lines of every kind a dataset meets: ARC tasks (several test inputs), a text task, and
 * one that is not a task (skipped, with its reason in a part's metadata).
 */
export function mixedTaskLines(): string[] {
  return [
    ...generateArcTasks(6, 5, 4).map((t) => JSON.stringify(t)),
    JSON.stringify({ task_id: 'prose-1', text: 'Every task once, every byte checked.' }),
    JSON.stringify({ task_id: 'broken', train: 'not a list', test: [] }),
    ...generateArcTasks(2, 9, 4).map((t) => JSON.stringify(t)),
  ];
}

/** `shardline create` of `lines` into `root/name` with `numShards` shards; returns the folder. */
export async function createDataset(
  root: string,
  name: string,
  lines: readonly string[],
  numShards = 2,
): Promise<string> {
  const input = path.join(root, `${name}.jsonl`);
  writeFileSync(input, `${lines.join('\n')}\n`);
  const dir = path.join(root, name);
  const made = await cli(
    ['create', '--input_file', input, '--output_dir', dir, '--num_shards', String(numShards)],
    { cwd: root },
  );
  if (made.code !== 0) throw new Error(`create failed (${made.code}): ${made.stderr}`);
  return dir;
}

/** `shardline work` over `dir` with `model`: 2 augmentations, one thread, small parts, then `extra`. */
export function extract(
  root: string,
  dir: string,
  model: string,
  ...extra: string[]
): Promise<CliRun> {
  return cli(
    [
      'work',
      '--sharded_dataset_dir',
      dir,
      '--model_path',
      model,
      '--model_name',
      'synthetic',
      '--predictions_per_task',
      '2',
      '--threads',
      '1',
      '--part_size_mb',
      SMALL_PARTS_MB,
      ...extra,
    ],
    { cwd: root },
  );
}
