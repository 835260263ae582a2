/**
 * `shardline plan`: what a run will cost before it starts: samples, tokens, prompts dropped or
 * shortened for length, stored rows, output bytes, machine and wall time, and costs, each
 * with a 95 % interval, from the real prompt builder and tokenizer on a seeded sample of the
 * tasks (worker/extraction/plan.ts).
 */
import { performance } from 'node:perf_hooks';

import { ConfigError } from '../../core/errors';
import { planRun } from '../../worker/extraction/plan';
import type { PlanConfig } from '../../worker/extraction/plan';
import type { ParsedArgs } from '../args';
import type { Command, CommandContext } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { EXTRACTION_FLAGS, extractionSettings } from '../extraction-flags';
import { renderPlan } from '../plan-view';
import { NUM_SHARDS_FLAG } from '../wiring';

function configOf(args: ParsedArgs): PlanConfig {
  const opt = <T>(name: string, v: T | undefined): Partial<Record<string, T>> =>
    v === undefined ? {} : { [name]: v };
  if (args.given.has('num_shards') && !args.given.has('input_file'))
    throw new ConfigError('--num_shards is for --input_file (a dataset has its shards)');
  return {
    ...opt('datasetDir', args.optStr('dataset_dir')),
    ...opt('inputFile', args.optStr('input_file')),
    numShards: args.num('num_shards'),
    maxLineBytes: Math.floor(args.num('max_line_mb') * 1024 * 1024),
    ...opt('modelPath', args.optStr('model_path')),
    ...opt('hiddenSize', args.optNum('hidden_size')),
    ...opt('numLayers', args.optNum('num_layers')),
    ...extractionSettings(args),
    sampleTasks: args.num('sample_tasks'),
    sampleSeed: args.num('sample_seed'),
    calibrate: args.bool('calibrate'),
    calibrateMs: args.num('calibrate_seconds') * 1000,
    ...opt('tokensPerSecond', args.optNum('tokens_per_second')),
    workers: args.num('workers'),
    ...opt('pricePerGibMonth', args.optNum('price_per_gb_month')),
    ...opt('pricePerWorkerHour', args.optNum('price_per_worker_hour')),
  };
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const config = configOf(args);
  let shown = 0;
  const report = await planRun(config, {
    cwd: ctx.cwd,
    openStore: (loc) => ctx.cloud.openStore(loc),
    log: ctx.log,
    now: () => performance.now(),
    signal: ctx.signal,
    onProgress: (done, total) => {
      if (!ctx.stderr.isTTY) return;
      const pct = Math.floor((100 * done) / total);
      if (pct === shown && done < total) return;
      shown = pct;
      ctx.stderr.write(`\rmeasuring tasks: ${done}/${total}${done === total ? '\n' : ''}`);
    },
  });
  ctx.stdout.write(args.bool('json') ? `${JSON.stringify(report, null, 2)}\n` : renderPlan(report));
  return EXIT.OK;
}

/** The `plan` command. */
export const planCommand: Command = {
  name: 'plan',
  summary:
    'estimate a run before it starts: samples, tokens, output bytes, machine and wall time, cost',
  usage:
    '(--dataset_dir DIR | --input_file FILE) (--model_path MODEL | --hidden_size H --num_layers L) [work flags]',
  description: [
    'Builds the prompts of the tasks with the real prompt builder and tokenizer (every task when there',
    'are at most --sample_tasks, else a seeded random sample of that many), sizes their output with the',
    'real part writer, and scales the sample to the dataset with a 95 % interval (± t × the standard',
    'error of the sample mean, times the number of tasks, with the finite-population correction): samples,',
    'tokens, prompts dropped or shortened for length, stored rows, parts and output bytes. Give the same',
    'flags the run will get (--layers, --positions, --dtype, --max_seq_length, --predictions_per_task,',
    '--seed, ...). Time needs a rate: --calibrate runs the model here for --calibrate_seconds (tokens/s of',
    'one worker with --threads), or --tokens_per_second gives one you measured (e.g. from a report of an',
    'earlier run). Costs follow from --price_per_gb_month and --price_per_worker_hour.',
  ].join('\n'),
  flags: [
    {
      name: 'dataset_dir',
      type: 'string',
      placeholder: 'DIR',
      description: 'a dataset made by create: a local folder or gs://BUCKET/PREFIX',
    },
    {
      name: 'input_file',
      type: 'string',
      placeholder: 'PATH',
      description: 'or the JSONL (or .jsonl.gz) before create, local or gs://',
    },
    { ...NUM_SHARDS_FLAG, description: 'with --input_file: the shards create would make' },
    {
      name: 'max_line_mb',
      type: 'number',
      default: 64,
      min: 0.001,
      placeholder: 'MB',
      description: 'with --input_file: longer lines are rejected, as create rejects them',
    },
    {
      name: 'model_path',
      type: 'string',
      placeholder: 'PATH',
      env: 'SHARDLINE_MODEL_PATH',
      description:
        'the ONNX model (or its folder): layers and hidden size from its config.json or graph',
    },
    {
      name: 'hidden_size',
      type: 'int',
      min: 1,
      placeholder: 'H',
      description: 'without --model_path: the residual stream width (Qwen2.5-0.5B: 896)',
    },
    {
      name: 'num_layers',
      type: 'int',
      min: 1,
      placeholder: 'L',
      description: 'without --model_path: the decoder layers (Qwen2.5-0.5B: 24)',
    },
    ...Object.values(EXTRACTION_FLAGS),
    {
      name: 'sample_tasks',
      type: 'int',
      default: 1000,
      min: 2,
      placeholder: 'N',
      description: 'measure every task when there are at most N, else a random sample of N',
    },
    {
      name: 'sample_seed',
      type: 'int',
      default: 0,
      placeholder: 'N',
      description: 'seed of the sample (the same seed, the same tasks)',
    },
    {
      name: 'calibrate',
      type: 'boolean',
      description: 'run the model here on sampled prompts to measure tokens/s per worker',
    },
    {
      name: 'calibrate_seconds',
      type: 'number',
      default: 20,
      min: 0.1,
      max: 3600,
      placeholder: 'S',
      description: 'how long the calibration runs the model (at least 3 batches)',
    },
    {
      name: 'tokens_per_second',
      type: 'number',
      min: 0.000001,
      placeholder: 'N',
      description: "a worker's measured rate, everything included (instead of --calibrate)",
    },
    {
      name: 'workers',
      type: 'int',
      default: 1,
      min: 1,
      max: 1_000_000,
      placeholder: 'N',
      description: 'workers running at once, for the wall time',
    },
    {
      name: 'price_per_gb_month',
      type: 'number',
      min: 0,
      placeholder: 'USD',
      description: 'storage price per GiB-month (Cloud Storage bills GiB), for the storage cost',
    },
    {
      name: 'price_per_worker_hour',
      type: 'number',
      min: 0,
      placeholder: 'USD',
      description: 'price of one worker machine per hour, for the compute cost',
    },
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline plan --dataset_dir sharded_dataset --model_path models/qwen2.5-0.5b/onnx/model.onnx --layers 10-23 --calibrate --workers 8',
    'shardline plan --input_file tasks.jsonl --num_shards 64 --hidden_size 896 --num_layers 24 --positions last --tokens_per_second 150 --workers 64 --price_per_gb_month 0.02',
    'shardline plan --dataset_dir gs://bucket/datasets/arc --model_path model/ --json',
  ],
  run,
};
