/**
 * `shardline plan`, then the real run, on the demo's data and the demo's model shape: what the
 * run wrote (its manifests' samples, tokens, parts, skipped samples and bytes) lies inside what
 * the plan stated, whether the plan measured every task or a seeded sample of them, and the
 * plan of the input file before `create` says what the plan of the dataset says. Time is not
 * asserted here (it is wall-clock): bench/plan measures it against real runs.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

import { covers } from '../../../worker/extraction/estimate';
import type { PlanReport } from '../../../worker/extraction/plan';
import { demoDataset, demoModel, runOutput } from '../../support/demo-run';
import { makeTempDir } from '../../support/tmp';
import { CLI, spawnWorker } from '../../support/worker-fixtures';

const { dir, cleanup } = makeTempDir('plan-accuracy');
afterAll(cleanup);

/** The run's settings, given to plan and to work alike: some prompts are shortened, some dropped. */
const SETTINGS = [
  '--predictions_per_task',
  '4',
  '--max_seq_length',
  '400',
  '--part_size_mb',
  '0.3',
  '--layers',
  '1-3',
];

function plan(args: string[]): PlanReport {
  const r = spawnSync(process.execPath, [CLI, 'plan', ...args, '--json', '--log_format', 'json'], {
    encoding: 'utf8',
    cwd: dir,
  });
  if (r.status !== 0) throw new Error(`plan exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as PlanReport;
}

test('plan, then the real run: samples, tokens, parts and skipped as planned, bytes inside the interval, sampled or not', async () => {
  const model = demoModel(path.join(dir, 'model'));
  const ds = demoDataset(dir, 'acc', 60, 3);
  const common = ['--model_path', model, ...SETTINGS];
  const census = plan(['--dataset_dir', ds, ...common]);
  const sampled = plan([
    '--dataset_dir',
    ds,
    ...common,
    '--sample_tasks',
    '20',
    '--sample_seed',
    '3',
  ]);
  const before = plan([
    '--input_file',
    path.join(dir, 'acc.jsonl'),
    '--num_shards',
    '3',
    ...common,
  ]);
  const timed = plan([
    '--dataset_dir',
    ds,
    ...common,
    '--calibrate',
    '--calibrate_seconds',
    '0.5',
    '--threads',
    '1',
    '--workers',
    '2',
  ]);
  expect(census.sample).toMatchObject({ census: true, tasks: 60 });
  expect(sampled.sample).toMatchObject({ census: false, tasks: 20 });
  expect(census.model).toMatchObject({ num_layers: 4, hidden_size: 64, shape_from: 'config.json' });
  expect(census.settings.layers).toEqual([1, 2, 3]);
  // The input file before create plans the same run as the dataset after it.
  const counts = (p: PlanReport): Omit<PlanReport['estimates'], 'build_ms_per_task'> => {
    const { build_ms_per_task: _timing, ...rest } = p.estimates;
    return rest;
  };
  expect(counts(before)).toEqual(counts(census));
  // A calibration measured a rate and turned it into times.
  expect(timed.time).toMatchObject({ source: 'calibrate', workers: 2 });
  expect(timed.time!.tokens_per_second).toBeGreaterThan(0);
  expect(timed.time!.wall_seconds.value).toBeGreaterThan(0);
  expect(timed.time!.wall_seconds.value).toBeLessThan(timed.time!.machine_seconds.value + 60);

  const workers = ['p1', 'p2'].map((w) =>
    spawnWorker(
      ['--sharded_dataset_dir', ds, '--model_path', model, ...SETTINGS, '--worker_id', w],
      process.env,
      dir,
    ),
  );
  expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0]);
  const actual = runOutput(path.join(ds, 'activations'));
  const e = census.estimates;
  process.stderr.write(
    `plan accuracy: actual ${JSON.stringify(actual)}; census bytes ${JSON.stringify(e.output_bytes)}; sampled tokens ${JSON.stringify(sampled.estimates.tokens)}, bytes ${JSON.stringify(sampled.estimates.output_bytes)}\n`,
  );
  // Every task measured: the counts are exact, the bytes within the stated bound.
  expect(e.samples.value).toBe(actual.samples);
  expect(e.tokens.value).toBe(actual.tokens);
  expect(e.parts.value).toBe(actual.parts);
  expect(e.dropped_for_length.value).toBe(actual.skipped);
  expect(actual.skipped).toBeGreaterThan(0);
  expect(e.shortened_for_length.value).toBeGreaterThan(0);
  expect(covers(e.output_bytes, actual.bytes)).toBe(true);
  expect((e.output_bytes.high - e.output_bytes.low) / actual.bytes).toBeLessThan(0.005);
  // A third of the tasks, sampled: the truth inside the 95 % intervals.
  const s = sampled.estimates;
  expect(covers(s.samples, actual.samples)).toBe(true);
  expect(covers(s.tokens, actual.tokens)).toBe(true);
  expect(covers(s.output_bytes, actual.bytes)).toBe(true);
  expect(covers(s.parts, actual.parts)).toBe(true);
});
