/**
 * `shardline demo` (what `npm start` runs): the pipeline on one machine with embedded
 * defaults, on generated sample data.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import type { ParsedArgs } from '../args';
import type { Command, CommandContext } from '../command';
import { COMMON_FLAGS } from '../command';
import { generateArcTasks } from '../demo/arc-puzzles';
import { EXIT } from '../exit-codes';
import { runCli } from '../main';

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const root = path.resolve(ctx.cwd, args.str('dir'));
  if (args.bool('fresh') && existsSync(root)) rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const say = (line: string): void => void ctx.stdout.write(`${line}\n`);

  const tasks = generateArcTasks(args.num('tasks'), args.num('seed'));
  const input = path.join(root, 'arc_tasks.jsonl');
  writeFileSync(input, tasks.map((t) => JSON.stringify(t)).join('\n') + '\n');
  say(`1. Generated ${tasks.length} sample ARC puzzles in ${input}`);

  const datasetDir = path.join(root, 'dataset');
  say(
    `2. shardline create --input_file ${input} --output_dir ${datasetDir} --num_shards ${args.num('num_shards')}`,
  );
  const io = {
    stdout: ctx.stdout,
    stderr: ctx.stderr,
    env: ctx.env,
    cwd: ctx.cwd,
    signal: ctx.signal,
  };
  const created = await runCli(
    [
      'create',
      '--input_file',
      input,
      '--output_dir',
      datasetDir,
      '--num_shards',
      String(args.num('num_shards')),
      '--chunk_size_mb',
      '0.01',
    ],
    io,
  );
  return created === EXIT.OK ? EXIT.OK : created;
}

/** The `demo` command. */
export const demoCommand: Command = {
  name: 'demo',
  summary: 'run the pipeline end to end on this machine, on generated sample data (npm start)',
  usage: '[--dir DIR] [--tasks N] [--fresh]',
  description: 'Generates sample ARC puzzles and shards them into a local dataset.',
  flags: [
    {
      name: 'dir',
      type: 'string',
      default: '.shardline-demo',
      placeholder: 'DIR',
      description: 'working folder of the demo',
    },
    {
      name: 'tasks',
      type: 'int',
      default: 300,
      min: 1,
      max: 100_000,
      placeholder: 'N',
      description: 'sample tasks to generate',
    },
    {
      name: 'num_shards',
      type: 'int',
      default: 6,
      min: 1,
      max: 1000,
      placeholder: 'N',
      description: 'shards to make',
    },
    {
      name: 'seed',
      type: 'int',
      default: 1,
      placeholder: 'N',
      description: 'seed of the sample puzzles',
    },
    { name: 'fresh', type: 'boolean', description: 'delete the demo folder first and start clean' },
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: ['shardline demo', 'shardline demo --tasks 1000 --fresh'],
  run,
};
