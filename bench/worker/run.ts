/**
 * bench/worker: the whole worker (`shardline work`: chunks, prompts, tokenizer, the pipelined
 * extraction, part writes and commits, the manifest) against its bare engine (the same
 * batches fed to `ExtractionEngine` back to back, nothing else), in one run, on realistic ARC
 * prompts (synthetic puzzles with grids up to 20 cells a side: 440-2,040 tokens).
 *
 *   npm run build && node dist/bench/worker/run.js [--shape 0.5b|demo] [--tasks 20]
 *     [--rounds 1] [--threads 2] [--batch_size 4] [--part_size_mb 256] [--out bench/out/worker]
 *     [--model_dir bench/out/extract]
 *
 * Each measurement is a child process of its own (so its peak RSS is its own): `engine` then
 * `worker`, and with `--rounds 2` again in the other order. Both count real tokens (no
 * padding) from the moment the model is loaded to the last result (engine) or the shard's
 * completion (worker, so the last part's write and commit are inside). Goals (issue 13, item
 * 6): worker tokens/s ≥ 0.99 × engine tokens/s; worker peak RSS ≤ engine peak RSS + two part
 * sizes. Not a test: it prints a table and writes `results.json` into `--out`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';

import { runCli } from '../../cli/main';
import type { ExtractedBatch } from '../../worker/extraction/activations';
import type { BatchLimits } from '../../worker/extraction/batch';
import { planBatches } from '../../worker/extraction/batch';
import { ExtractionEngine } from '../../worker/extraction/engine';
import { loadPromptTemplate } from '../../worker/extraction/prompt-template';
import type { Sample } from '../../worker/extraction/samples';
import { buildSamples, resolveSampleOptions } from '../../worker/extraction/samples';
import { loadTokenizer } from '../../worker/extraction/tokenizer';
import { generateArcTasks } from '../../synthetic/arc-puzzles';
import type { Qwen2Shape } from '../../synthetic/qwen2';
import { DEMO_QWEN2, QWEN25_05B, generateQwen2Model, qwen2Config } from '../../synthetic/qwen2';

/** Model shapes: the Qwen2.5-0.5B shape, or the demo's (a quick sanity run). */
const SHAPES: Record<string, Qwen2Shape> = {
  '0.5b': QWEN25_05B,
  demo: DEMO_QWEN2,
};

/** The puzzles' largest grid side: prompts of 440-2,040 tokens (mean ≈1,300). */
const MAX_GRID_SIDE = 20;
const PUZZLE_SEED = 13;
const MAX_SEQ_LENGTH = 2048;

interface Args {
  shape: string;
  tasks: number;
  rounds: number;
  threads: number;
  batchSize: number;
  maxBatchTokens: number;
  partSizeMb: number;
  out: string;
  modelDir: string | null;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    shape: '0.5b',
    tasks: 20,
    rounds: 1,
    threads: 2,
    batchSize: 4,
    maxBatchTokens: 4096,
    partSizeMb: 256,
    out: path.resolve('bench/out/worker'),
    modelDir: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const num = (): number => {
      const v = Number(value());
      if (!(v > 0)) throw new Error(`${flag} must be a positive number`);
      return v;
    };
    switch (flag) {
      case '--shape':
        args.shape = value();
        if (!SHAPES[args.shape])
          throw new Error(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);
        break;
      case '--tasks':
        args.tasks = num();
        break;
      case '--rounds':
        args.rounds = num();
        break;
      case '--threads':
        args.threads = num();
        break;
      case '--batch_size':
        args.batchSize = num();
        break;
      case '--max_batch_tokens':
        args.maxBatchTokens = num();
        break;
      case '--part_size_mb':
        args.partSizeMb = num();
        break;
      case '--out':
        args.out = path.resolve(value());
        break;
      case '--model_dir':
        args.modelDir = path.resolve(value());
        break;
      default:
        throw new Error(`unknown flag ${flag}`);
    }
  }
  return args;
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);
const load = (): string =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** The model of `shape` in `dir` (generated once; bench/extract's 0.5B model is reused). */
function ensureModel(dir: string, shape: Qwen2Shape): string {
  const modelPath = path.join(dir, 'model.onnx');
  const configPath = path.join(dir, 'config.json');
  if (existsSync(modelPath) && existsSync(configPath)) {
    const have = JSON.stringify(JSON.parse(readFileSync(configPath, 'utf8')));
    if (have === JSON.stringify(qwen2Config(shape, true))) return modelPath;
  }
  log(`generating the model into ${dir}...`);
  generateQwen2Model({ dir, shape, externalData: true, lmHead: true, seed: 0 });
  return modelPath;
}

/** What one measurement child reports. */
interface Measurement {
  mode: 'engine' | 'worker';
  /** Real tokens run through the model. */
  tokens: number;
  /** From the model loaded to the last result (engine) or the shard's completion (worker). */
  seconds: number;
  tokPerS: number;
  /** CPU seconds of the whole process (every thread) over the same window. */
  cpuSeconds: number;
  /** Tokens per CPU second: what the rate would be with the machine to itself. */
  tokPerCpuS: number;
  /** `process.resourceUsage().maxRSS`, in MiB. */
  peakRssMib: number;
  batches?: number;
  parts?: number;
  partBytes?: number;
}

/** Settings shared by both children (passed as JSON). */
interface ChildSettings {
  mode: 'engine' | 'worker';
  model: string;
  tasksFile: string;
  dataset: string;
  threads: number;
  batch: Required<BatchLimits>;
  partSizeMb: number;
}

/** The worker's default prompt settings, one sample per task. */
function sampleOptions() {
  return resolveSampleOptions({
    template: loadPromptTemplate(undefined),
    predictionsPerTask: 1,
    augment: true,
    seed: 0,
    maxSeqLength: MAX_SEQ_LENGTH,
    findAnswerStart: false,
  });
}

/**
 * The bare engine: every sample built first, then the batches the worker's pipeline forms
 * (worker/part-pipeline.ts `dispatch`: a batch is planned once `batch_size` samples wait,
 * task by task), run with two in flight, results dropped.
 */
async function measureEngine(s: ChildSettings): Promise<Measurement> {
  const tokenizer = loadTokenizer({});
  const options = sampleOptions();
  const lines = readFileSync(s.tasksFile, 'utf8').trim().split('\n');
  const batches: Sample[][] = [];
  let pending: Sample[] = [];
  const dispatch = (all: boolean): void => {
    while (pending.length >= s.batch.maxBatchSize || (all && pending.length > 0)) {
      const plan = planBatches(
        pending.map((p) => p.tokenIds.length),
        s.batch,
      );
      const [, end] = plan[0]!;
      if (!all && plan.length === 1 && end === pending.length && end < s.batch.maxBatchSize) break;
      batches.push(pending.slice(0, end));
      pending = pending.slice(end);
    }
  };
  lines.forEach((line, taskIndex) => {
    pending.push(...buildSamples(JSON.parse(line), taskIndex, options, tokenizer).samples);
    dispatch(false);
  });
  dispatch(true);
  const engine = await ExtractionEngine.open({
    modelPath: s.model,
    dtype: 'float16',
    intraOpNumThreads: s.threads,
    executionProviders: ['cpu'],
  });
  try {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const inflight: Array<Promise<ExtractedBatch>> = [];
    let tokens = 0;
    for (const b of batches) {
      inflight.push(engine.extract(b.map((x) => x.tokenIds)));
      tokens += b.reduce((n, x) => n + x.tokenIds.length, 0);
      while (inflight.length >= 2) await inflight.shift();
    }
    await Promise.all(inflight);
    const seconds = (performance.now() - t0) / 1000;
    const cpuSeconds = cpuSecondsSince(cpu0);
    return {
      mode: 'engine',
      tokens,
      seconds,
      tokPerS: tokens / seconds,
      cpuSeconds,
      tokPerCpuS: tokens / cpuSeconds,
      peakRssMib: process.resourceUsage().maxRSS / 1024,
      batches: batches.length,
    };
  } finally {
    await engine.close();
  }
}

/** CPU seconds (user + system, all threads) of this process since `from`. */
function cpuSecondsSince(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return (d.user + d.system) / 1e6;
}

/** Log records as JSON lines; the CPU time when each message was first seen. */
class Lines extends Writable {
  readonly records: Array<Record<string, unknown>> = [];
  readonly cpuAt = new Map<string, NodeJS.CpuUsage>();
  private partial = '';
  isTTY = false;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    const lines = (this.partial + chunk.toString()).split('\n');
    this.partial = lines.pop() ?? '';
    for (const l of lines) {
      try {
        const record = JSON.parse(l) as Record<string, unknown>;
        this.records.push(record);
        const message = String(record.message);
        if (!this.cpuAt.has(message)) this.cpuAt.set(message, process.cpuUsage());
      } catch {
        // not a log record
      }
    }
    cb();
  }
}

/** The whole worker: `shardline work` on the one-shard dataset, in this process. */
async function measureWorker(s: ChildSettings): Promise<Measurement> {
  const stderr = new Lines();
  const stdout = new Lines();
  const code = await runCli(
    [
      'work',
      '--sharded_dataset_dir',
      s.dataset,
      '--model_path',
      s.model,
      '--threads',
      String(s.threads),
      '--batch_size',
      String(s.batch.maxBatchSize),
      '--max_batch_tokens',
      String(s.batch.maxBatchTokens),
      '--predictions_per_task',
      '1',
      '--max_seq_length',
      String(MAX_SEQ_LENGTH),
      '--part_size_mb',
      String(s.partSizeMb),
      '--log_format',
      'json',
    ],
    { stdout, stderr, cwd: process.cwd(), env: { ...process.env } },
  );
  const at = (message: string): number => {
    const r = stderr.records.find((x) => x.message === message);
    if (!r) throw new Error(`the worker (exit ${code}) logged no "${message}"`);
    return Date.parse(String(r.time));
  };
  const parts = stderr.records.filter((r) => r.message === 'part committed');
  const tokens = parts.reduce((n, r) => n + Number(r.tokens), 0);
  const seconds = (at('shard completed') - at('extraction model loaded')) / 1000;
  const cpu = (m: string): number => {
    const c = stderr.cpuAt.get(m)!;
    return (c.user + c.system) / 1e6;
  };
  const cpuSeconds = cpu('shard completed') - cpu('extraction model loaded');
  return {
    mode: 'worker',
    tokens,
    seconds,
    tokPerS: tokens / seconds,
    cpuSeconds,
    tokPerCpuS: tokens / cpuSeconds,
    peakRssMib: process.resourceUsage().maxRSS / 1024,
    parts: parts.length,
    partBytes: parts.reduce((n, r) => n + Number(r.bytes), 0),
  };
}

/** Runs one measurement in a child process of this script. */
function measure(settings: ChildSettings): Measurement {
  const r = spawnSync(process.execPath, [__filename, '--child', JSON.stringify(settings)], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`the ${settings.mode} child failed (${r.status})`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Measurement;
}

async function main(): Promise<void> {
  const childAt = process.argv.indexOf('--child');
  if (childAt >= 0) {
    const s = JSON.parse(process.argv[childAt + 1]!) as ChildSettings;
    const m = s.mode === 'engine' ? await measureEngine(s) : await measureWorker(s);
    process.stdout.write(`${JSON.stringify(m)}\n`);
    return;
  }
  const args = parseArgs(process.argv.slice(2));
  const shape = SHAPES[args.shape]!;
  mkdirSync(args.out, { recursive: true });
  const modelDir =
    args.modelDir ??
    (args.shape === '0.5b'
      ? path.resolve(args.out, '..', 'extract')
      : path.join(args.out, `model-${args.shape}`));
  const model = ensureModel(modelDir, shape);
  const cpu =
    (readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [])[1] ?? '?';
  log(`bench/worker: ${os.cpus().length} CPUs (${cpu}), threads ${args.threads}, load ${load()}`);

  const tasksFile = path.join(args.out, 'tasks.jsonl');
  writeFileSync(
    tasksFile,
    generateArcTasks(args.tasks, PUZZLE_SEED, MAX_GRID_SIDE)
      .map((t) => JSON.stringify(t))
      .join('\n') + '\n',
  );
  const settings = (mode: 'engine' | 'worker', dataset: string): ChildSettings => ({
    mode,
    model,
    tasksFile,
    dataset,
    threads: args.threads,
    batch: { maxBatchSize: args.batchSize, maxBatchTokens: args.maxBatchTokens },
    partSizeMb: args.partSizeMb,
  });

  const results: Array<Measurement & { round: number; loadBefore: string; loadAfter: string }> = [];
  for (let round = 1; round <= args.rounds; round++) {
    const order: Array<'engine' | 'worker'> =
      round % 2 === 1 ? ['engine', 'worker'] : ['worker', 'engine'];
    for (const mode of order) {
      const dataset = path.join(args.out, `dataset-${round}`);
      if (mode === 'worker') {
        rmSync(dataset, { recursive: true, force: true });
        const made = spawnSync(
          process.execPath,
          [
            path.resolve(__dirname, '..', '..', 'cli', 'main.js'),
            'create',
            '--input_file',
            tasksFile,
            '--output_dir',
            dataset,
            '--num_shards',
            '1',
          ],
          { encoding: 'utf8' },
        );
        if (made.status !== 0) throw new Error(`create failed: ${made.stderr}`);
      }
      const loadBefore = load();
      log(`round ${round}: ${mode} (load ${loadBefore})...`);
      const m = measure(settings(mode, dataset));
      const loadAfter = load();
      log(
        `  ${m.tokens} tokens in ${m.seconds.toFixed(1)} s: ${m.tokPerS.toFixed(1)} tok/s, peak RSS ${m.peakRssMib.toFixed(0)} MiB (load ${loadAfter})`,
      );
      results.push({ ...m, round, loadBefore, loadAfter });
      if (mode === 'worker') rmSync(dataset, { recursive: true, force: true });
    }
  }

  const lines = [
    `machine: ${os.cpus().length} CPUs, ${cpu}; threads ${args.threads}`,
    `model: ${args.shape} shape (${shape.numLayers} layers, hidden ${shape.hiddenSize}), all layers stored as float16; batch_size ${args.batchSize}, max_batch_tokens ${args.maxBatchTokens}, part_size_mb ${args.partSizeMb}`,
    `tasks: ${args.tasks} synthetic ARC puzzles (grids up to ${MAX_GRID_SIDE} a side), one sample each`,
    '',
    '| round | mode | tokens | seconds | tokens/s | CPU s | tokens/CPU s | peak RSS MiB | load before → after |',
    '|---|---|---:|---:|---:|---:|---:|---:|---|',
    ...results.map(
      (r) =>
        `| ${r.round} | ${r.mode} | ${r.tokens} | ${r.seconds.toFixed(1)} | ${r.tokPerS.toFixed(1)} | ${r.cpuSeconds.toFixed(1)} | ${r.tokPerCpuS.toFixed(1)} | ${r.peakRssMib.toFixed(0)} | ${r.loadBefore} → ${r.loadAfter} |`,
    ),
    '',
  ];
  for (let round = 1; round <= args.rounds; round++) {
    const e = results.find((r) => r.round === round && r.mode === 'engine')!;
    const w = results.find((r) => r.round === round && r.mode === 'worker')!;
    lines.push(
      `round ${round}: worker / engine tokens/s = ${(w.tokPerS / e.tokPerS).toFixed(3)}× (goal ≥ 0.99×), per CPU second ${(w.tokPerCpuS / e.tokPerCpuS).toFixed(3)}×; ` +
        `peak RSS worker - engine = ${(w.peakRssMib - e.peakRssMib).toFixed(0)} MiB (goal ≤ two parts, ${2 * args.partSizeMb} MiB); ` +
        `${w.parts} parts, ${((w.partBytes ?? 0) / 2 ** 20).toFixed(0)} MiB written`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  writeFileSync(path.join(args.out, 'results.json'), JSON.stringify({ args, results }, null, 2));
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
