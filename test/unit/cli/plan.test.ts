/**
 * `shardline plan` as a user meets it without a model on the machine: the shape given by
 * flags, an input file before `create`, the table and `--json`, and clear usage errors.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { generateArcTasks } from '../../../synthetic/arc-puzzles';
import type { PlanReport } from '../../../worker/extraction/plan';
import { cli } from '../../support/cli';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('plan-cli');
afterAll(cleanup);
const input = path.join(dir, 'tasks.jsonl');
writeFileSync(
  input,
  generateArcTasks(40, 2, 5)
    .map((t) => `${JSON.stringify(t)}\n`)
    .join(''),
);
const shape = ['--hidden_size', '896', '--num_layers', '24'];

test('an input file with a shape from flags: every task measured, the table and the JSON agree', async () => {
  const args = [
    'plan',
    '--input_file',
    input,
    ...shape,
    '--num_shards',
    '4',
    '--predictions_per_task',
    '2',
  ];
  const json = await cli(
    [
      ...args,
      '--json',
      '--tokens_per_second',
      '100',
      '--workers',
      '2',
      '--price_per_gb_month',
      '0.02',
    ],
    { cwd: dir },
  );
  expect(json.code).toBe(0);
  const plan = JSON.parse(json.stdout) as PlanReport;
  expect(plan.source).toMatchObject({ kind: 'input_file', tasks: 40, shards: 4 });
  expect(plan.sample).toMatchObject({ tasks: 40, census: true });
  expect(plan.estimates.samples).toEqual({ value: 80, low: 80, high: 80 });
  expect(plan.model).toMatchObject({
    hidden_size: 896,
    num_layers: 24,
    shape_from: 'flags',
    bytes_per_row: 24 * 896 * 2,
  });
  // Bytes are mostly rows × layers × hidden × 2 (fp16).
  const rows = plan.estimates.stored_rows.value;
  expect(plan.estimates.output_bytes.value).toBeGreaterThan(rows * 24 * 896 * 2);
  expect(plan.estimates.output_bytes.value).toBeLessThan(rows * 24 * 896 * 2 * 1.01);
  // 100 tokens/s per worker, 4 equal-ish shards over 2 workers: about half the machine time.
  const t = plan.time!;
  expect(t.machine_seconds.value).toBeCloseTo(plan.estimates.tokens.value / 100, 6);
  expect(t.wall_seconds.value).toBeGreaterThanOrEqual(t.machine_seconds.value / 2);
  expect(t.wall_seconds.value).toBeLessThan(t.machine_seconds.value * 0.6);
  expect(plan.cost!.storage_per_month!.value).toBeCloseTo(
    (plan.estimates.output_bytes.value / 2 ** 30) * 0.02,
    9,
  );

  const table = await cli(args, { cwd: dir });
  expect(table.code).toBe(0);
  expect(table.stdout).toContain('Measured every task');
  expect(table.stdout).toMatch(/prompt tokens +[\d,]+ +exact/);
  expect(table.stdout).toContain('Time: not estimated');
});

test('a sample when there are more tasks than --sample_tasks: intervals around the estimates', async () => {
  const run = await cli(
    ['plan', '--input_file', input, ...shape, '--sample_tasks', '10', '--json'],
    { cwd: dir },
  );
  expect(run.code).toBe(0);
  const plan = JSON.parse(run.stdout) as PlanReport;
  expect(plan.sample).toMatchObject({ tasks: 10, census: false });
  const tok = plan.estimates.tokens;
  expect(tok.low).toBeLessThan(tok.value);
  expect(tok.high).toBeGreaterThan(tok.value);
  expect(plan.sample.method).toContain('t(0.975, n−1)');
});

test.each([
  [
    ['--input_file', input, '--dataset_dir', dir, ...shape],
    'give one of --dataset_dir or --input_file',
  ],
  [['--input_file', input], 'give --model_path'],
  [['--input_file', input, ...shape, '--calibrate'], '--calibrate needs --model_path'],
  [['--input_file', input, ...shape, '--layers', '30'], 'layer 30 does not exist'],
  [['--input_file', input, ...shape, '--positions', 'middle'], '--positions must be'],
  [['--dataset_dir', dir, ...shape, '--num_shards', '3'], '--num_shards is for --input_file'],
])('bad usage exits 2 and says why: %j', async (args, message) => {
  const run = await cli(['plan', ...args], { cwd: dir });
  expect(run.code).toBe(2);
  expect(run.stderr).toContain(message);
});

test('a folder that is not a dataset exits 7', async () => {
  const run = await cli(['plan', '--dataset_dir', dir, ...shape], { cwd: dir });
  expect(run.code).toBe(7);
  expect(run.stderr).toContain('not a shardline dataset');
});
