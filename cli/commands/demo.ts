/**
 * `shardline demo` (what `npm start` runs): the whole pipeline on one machine with embedded
 * defaults. Generates sample ARC puzzles and a small Qwen2-shaped model (random weights, the
 * real Qwen tokenizer), creates a sharded dataset in a local folder, starts several worker
 * processes on the SQLite ledger, shows live per-shard progress, and ends with the status
 * table, where the outputs are, and the Python that reads them.
 *
 * Re-runnable: a finished demo is started again from a clean dataset (the model is reused); an
 * interrupted one is resumed where its workers stopped.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';

import { LocalBlobStore } from '../../core/blob/local';
import { formatLocation } from '../../core/blob/location';
import { ACTIVATIONS_DIR, LOCAL_LEDGER_FILE, MASTER_METADATA } from '../../core/dataset/paths';
import { SqliteLedger } from '../../core/ledger/sqlite';
import { silentLogger } from '../../core/log';
import { MANIFEST_FILE } from '../../core/rollup/manifests';
import { createDataset } from '../../core/split/create-dataset';
import { sourceFromStore } from '../../core/split/source';
import { SHARDLINE_VERSION } from '../../core/version';
import { DEMO_QWEN2, generateQwen2Model } from '../../synthetic/qwen2';
import type { ParsedArgs } from '../args';
import type { Command, CommandContext } from '../command';
import { COMMON_FLAGS } from '../command';
import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { EXIT } from '../exit-codes';
import { formatBytes, formatDuration } from '../format';
import { watchStatus } from '../live-status';
import { renderStatus } from '../status-view';

/** The demo dataset's id (a local SQLite ledger holds one dataset). */
const DEMO_DATASET_ID = 'demo';
/** Small chunks (20 KB), so that even the demo's shards have several. */
const DEMO_CHUNK_SIZE_MB = 0.02;

/**
 * The demo model: Qwen's real 151,936-token vocabulary, tiny everywhere else (random weights
 * drawn from `DEMO_MODEL_SEED`, with an LM head).
 */
export const DEMO_MODEL = DEMO_QWEN2;

/** The seed of the demo model's weights. */
export const DEMO_MODEL_SEED = 1;

function ensureModel(dir: string, say: (s: string) => void): string {
  const file = path.join(dir, 'model.onnx');
  const stamp = path.join(dir, 'shardline-demo.json');
  const want = JSON.stringify({ shape: DEMO_MODEL, seed: DEMO_MODEL_SEED });
  if (existsSync(file) && existsSync(stamp) && readFileSync(stamp, 'utf8') === want) {
    say(`   reusing ${file}`);
    return file;
  }
  rmSync(dir, { recursive: true, force: true });
  generateQwen2Model({
    dir,
    shape: DEMO_MODEL,
    seed: DEMO_MODEL_SEED,
    lmHead: true,
    externalData: true,
  });
  writeFileSync(stamp, want);
  return file;
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const root = path.resolve(ctx.cwd, args.str('dir'));
  const datasetDir = path.join(root, 'dataset');
  const started = ctx.clock.nowMs();
  const say = (line: string): void => void ctx.stdout.write(`${line}\n`);

  // A finished demo starts again from scratch; an interrupted one resumes.
  const finished = existsSync(path.join(datasetDir, ACTIVATIONS_DIR, MANIFEST_FILE));
  if (args.bool('fresh') || finished) rmSync(datasetDir, { recursive: true, force: true });
  else if (existsSync(path.join(datasetDir, MASTER_METADATA)))
    say('(resuming the previous, unfinished demo run; --fresh starts over)');
  mkdirSync(root, { recursive: true });

  const numTasks = args.num('tasks');
  const tasks = generateArcTasks(numTasks, args.num('seed'), 6);
  const input = path.join(root, 'arc_tasks.jsonl');
  writeFileSync(input, tasks.map((t) => JSON.stringify(t)).join('\n') + '\n');
  say(
    `1. Generated ${tasks.length} ARC puzzles (mirror, rotate, gravity, recolour...) -> ${input}`,
  );

  say(
    `2. Generated a small Qwen2-shaped ONNX model (random weights, ${DEMO_MODEL.numLayers} layers, hidden ${DEMO_MODEL.hiddenSize}; the real Qwen tokenizer)`,
  );
  const model = ensureModel(path.join(root, 'model'), say);

  const numShards = args.num('num_shards');
  say(
    `3. shardline create --input_file ${path.relative(ctx.cwd, input)} --output_dir ${path.relative(ctx.cwd, datasetDir)} --num_shards ${numShards}`,
  );
  // The same domain steps `shardline create` runs: split, then register in the ledger.
  const { master } = await createDataset({
    source: await sourceFromStore(new LocalBlobStore(root), path.basename(input)),
    output: new LocalBlobStore(datasetDir),
    datasetId: DEMO_DATASET_ID,
    numShards,
    chunkSizeMb: DEMO_CHUNK_SIZE_MB,
    strict: false,
    clock: ctx.clock,
    log: silentLogger,
    createdBy: `shardline ${SHARDLINE_VERSION}`,
    creator: { host: hostname(), pid: process.pid },
    signal: ctx.signal,
  });
  const ledger = SqliteLedger.open(path.join(datasetDir, LOCAL_LEDGER_FILE), { clock: ctx.clock });
  try {
    await ledger.registerDataset(master, {
      datasetUri: formatLocation({ kind: 'local', path: datasetDir }),
    });
  } catch (e: unknown) {
    await ledger.close();
    throw e;
  }

  const workers = args.num('workers');
  const logs = path.join(root, 'logs');
  mkdirSync(logs, { recursive: true });
  const workArgs = [
    'work',
    '--sharded_dataset_dir',
    datasetDir,
    '--model_path',
    model,
    '--model_name',
    'demo-qwen2-random',
    '--predictions_per_task',
    String(args.num('predictions_per_task')),
    '--part_size_mb',
    '8',
    '--threads',
    '1',
    '--log_format',
    'json',
  ];
  say(
    `4. Starting ${workers} workers in parallel: shardline ${workArgs.slice(0, 5).join(' ')} ... (logs in ${path.relative(ctx.cwd, logs)}/)`,
  );
  const cli = path.resolve(__dirname, '..', 'main.js');
  const children = Array.from({ length: workers }, (_, i) => {
    const log = openSync(path.join(logs, `worker-${i + 1}.log`), 'w');
    const child = spawn(
      process.execPath,
      [cli, ...workArgs, '--worker_id', `demo-worker-${i + 1}`],
      { stdio: ['ignore', log, log], env: { ...ctx.env } },
    );
    // Ctrl-C reaches the children from the terminal too: they release their shards and exit.
    return new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
  });

  let exited = false;
  const allExited = Promise.all(children).then((codes) => {
    exited = true;
    return codes;
  });
  try {
    await watchStatus(ledger, DEMO_DATASET_ID, {
      out: ctx.stdout,
      clock: ctx.clock,
      intervalMs: 500,
      signal: ctx.signal,
      until: () => exited,
    });
    const codes = await allExited;
    const status = await ledger.status(DEMO_DATASET_ID);
    say('');
    say('5. Status (shardline status --dataset_dir ' + path.relative(ctx.cwd, datasetDir) + '):');
    ctx.stdout.write(
      renderStatus(
        status,
        `sqlite ${path.relative(ctx.cwd, path.join(datasetDir, LOCAL_LEDGER_FILE))}`,
      ),
    );
    if (codes.some((c) => c !== 0) || status.totals.completed !== status.totals.shards) {
      say(
        `Some workers did not finish cleanly (exit codes ${codes.join(', ')}); see ${logs}. Run \`npm start\` again to resume.`,
      );
      return EXIT.FAILURE;
    }
    const out = new LocalBlobStore(path.join(datasetDir, ACTIVATIONS_DIR));
    let bytes = 0;
    let parts = 0;
    for await (const f of out.list('')) {
      bytes += f.size;
      if (f.key.endsWith('.safetensors')) parts++;
    }
    const firstPart = path.join(datasetDir, ACTIVATIONS_DIR, 'shard_000', 'part_00000.safetensors');
    const rel = path.relative(ctx.cwd, firstPart);
    say(
      `6. Outputs: ${path.relative(ctx.cwd, out.root)}/ (${parts} parts, ${formatBytes(bytes)}; every shard's _MANIFEST.json and the dataset's _MANIFEST.json)`,
    );
    say(
      `   ${status.totals.samples_committed} samples from ${status.totals.total_tasks} tasks, layers 0-${DEMO_MODEL.numLayers - 1} of the residual stream, in ${formatDuration(ctx.clock.nowMs() - started)}.`,
    );
    say('');
    say('   Read a part in Python (numpy only):');
    say(
      `     import sys; sys.path.insert(0, "${path.relative(ctx.cwd, path.resolve(__dirname, '..', '..', '..', 'examples')) || 'examples'}"); from read_activations import load_part`,
    );
    say(`     part = load_part("${rel}")`);
    say(
      `     print(part.sample(0, layer=${DEMO_MODEL.numLayers - 1}).shape, part.index[0]["task_id"], part.index[0]["augmentation"])`,
    );
    return EXIT.OK;
  } finally {
    await ledger.close();
  }
}

/** The `demo` command. */
export const demoCommand: Command = {
  name: 'demo',
  summary:
    'run the whole pipeline on this machine on generated data: create, parallel workers, outputs (npm start)',
  usage: '[--dir DIR] [--tasks N] [--workers N] [--fresh]',
  description: [
    'Generates sample ARC puzzles and a small Qwen2-shaped ONNX model (random weights, the real Qwen',
    'tokenizer), shards the puzzles into a local dataset, runs several `shardline work` processes in',
    'parallel on the SQLite ledger with a live progress view, and prints the status table, where the',
    'outputs are and how to read them from Python. A finished demo is run again from a clean dataset;',
    'an interrupted one resumes.',
  ].join('\n'),
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
      name: 'workers',
      type: 'int',
      default: 3,
      min: 1,
      max: 64,
      placeholder: 'N',
      description: 'worker processes to run in parallel',
    },
    {
      name: 'predictions_per_task',
      type: 'int',
      default: 4,
      min: 1,
      max: 64,
      placeholder: 'N',
      description: 'augmented prompts per puzzle',
    },
    {
      name: 'seed',
      type: 'int',
      default: 1,
      placeholder: 'N',
      description: 'seed of the sample puzzles',
    },
    {
      name: 'fresh',
      type: 'boolean',
      description: 'start over even if the last run was interrupted',
    },
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: ['shardline demo', 'shardline demo --tasks 1000 --workers 2 --fresh'],
  run,
};
