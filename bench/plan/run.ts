/**
 * bench/plan: how close `shardline plan --calibrate` comes to the run it plans, in one run on
 * this machine: the plan of a dataset, then the real run of the same dataset with the same
 * flags and the same number of worker processes, side by side. Tokens and bytes are checked
 * in the tests (test/integration/cli/plan-accuracy.test.ts); what only a bench can measure is
 * time: the plan's predicted wall time against the measured one, as a ratio.
 *
 *   npm run build && node dist/bench/plan/run.js [--tasks 300] [--workers 1,2] [--threads 1]
 *     [--big] [--big_tasks 12] [--out bench/out/plan]
 *
 * Cases: the demo (its 300 puzzles, its 4-layer hidden-64 model, 6 shards, 4 prompts per
 * puzzle), where prompt building and I/O weigh as much as the model; and with `--big` a
 * Qwen2.5-0.5B-shaped model (24 layers, hidden 896; generated once, 2.5 GB, into --out) on a
 * few puzzles, where the model dominates. Wall time is from spawning the workers to the last
 * one's exit (process start, tokenizer and model load included). Not a test: it asserts
 * nothing; it prints a table and writes it as JSON into --out.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import * as path from 'node:path';

import { generateArcTasks } from '../../synthetic/arc-puzzles';
import type { Qwen2Shape } from '../../synthetic/qwen2';
import { DEMO_QWEN2, QWEN25_05B, generateQwen2Model, qwen2Config } from '../../synthetic/qwen2';
import type { PlanReport } from '../../worker/extraction/plan';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
const say = (line: string): void => void process.stderr.write(`${line}\n`);
const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** The model of a case, generated once (reused when its config.json matches). */
function ensureModel(dir: string, shape: Qwen2Shape): string {
  const file = path.join(dir, 'model.onnx');
  const config = path.join(dir, 'config.json');
  const want = JSON.stringify(qwen2Config(shape, true));
  if (existsSync(file) && existsSync(config)) {
    if (JSON.stringify(JSON.parse(readFileSync(config, 'utf8'))) === want) return file;
  }
  say(`generating the model into ${dir}...`);
  rmSync(dir, { recursive: true, force: true });
  generateQwen2Model({ dir, shape, seed: 1, lmHead: true, externalData: true });
  return file;
}

function cli(args: string[], cwd: string): string {
  const r = spawnSync(process.execPath, [CLI, ...args, '--log_format', 'json'], {
    cwd,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`shardline ${args[0]} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

interface Row {
  case: string;
  workers: number;
  tokensPlanned: number;
  tokensActual: number;
  bytesPlanned: [number, number];
  bytesActual: number;
  tokensPerSecond: number;
  wallPlanned: number;
  wallActual: number;
  ratio: number;
  load: string;
}

/** Runs `workers` worker processes to the end; resolves with the wall seconds. */
async function runWorkers(args: string[], workers: number, cwd: string): Promise<number> {
  const t0 = performance.now();
  const codes = await Promise.all(
    Array.from(
      { length: workers },
      (_, i) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(
            process.execPath,
            [CLI, 'work', ...args, '--worker_id', `bench-${i}`, '--log_format', 'json'],
            { cwd, stdio: 'ignore' },
          );
          child.on('exit', (code) => resolve(code));
        }),
    ),
  );
  if (codes.some((c) => c !== 0)) throw new Error(`workers exited ${codes.join(', ')}`);
  return (performance.now() - t0) / 1000;
}

async function benchCase(
  name: string,
  out: string,
  opts: { shape: Qwen2Shape; tasks: number; shards: number; predictions: number; threads: number },
  workerCounts: number[],
): Promise<Row[]> {
  const dir = path.join(out, name);
  mkdirSync(dir, { recursive: true });
  const model = ensureModel(path.join(dir, 'model'), opts.shape);
  const input = path.join(dir, 'tasks.jsonl');
  writeFileSync(
    input,
    generateArcTasks(opts.tasks, 1, 6)
      .map((t) => `${JSON.stringify(t)}\n`)
      .join(''),
  );
  const flags = [
    '--model_path',
    model,
    '--predictions_per_task',
    String(opts.predictions),
    '--part_size_mb',
    '8',
    '--threads',
    String(opts.threads),
  ];
  const rows: Row[] = [];
  for (const w of workerCounts) {
    const ds = path.join(dir, `dataset-${w}`);
    rmSync(ds, { recursive: true, force: true });
    cli(
      [
        'create',
        '--input_file',
        input,
        '--output_dir',
        ds,
        '--num_shards',
        String(opts.shards),
        '--chunk_size_mb',
        '0.02',
      ],
      dir,
    );
    say(`${name}, ${w} worker(s): plan --calibrate (load ${load()})`);
    const plan = JSON.parse(
      cli(
        [
          'plan',
          '--dataset_dir',
          ds,
          ...flags,
          '--calibrate',
          '--calibrate_seconds',
          '10',
          '--workers',
          String(w),
          '--json',
        ],
        dir,
      ),
    ) as PlanReport;
    say(`${name}, ${w} worker(s): the real run (load ${load()})`);
    const wall = await runWorkers(['--sharded_dataset_dir', ds, ...flags], w, dir);
    const manifest = JSON.parse(
      readFileSync(path.join(ds, 'activations', '_MANIFEST.json'), 'utf8'),
    ) as {
      bytes: number;
      shards: Array<{ manifest: string }>;
    };
    const tokens = manifest.shards.reduce(
      (n, s) =>
        n +
        (
          JSON.parse(readFileSync(path.join(ds, 'activations', s.manifest), 'utf8')) as {
            tokens: number;
          }
        ).tokens,
      0,
    );
    rows.push({
      case: name,
      workers: w,
      tokensPlanned: plan.estimates.tokens.value,
      tokensActual: tokens,
      bytesPlanned: [plan.estimates.output_bytes.low, plan.estimates.output_bytes.high],
      bytesActual: manifest.bytes,
      tokensPerSecond: plan.time!.tokens_per_second,
      wallPlanned: plan.time!.wall_seconds.value,
      wallActual: wall,
      ratio: wall / plan.time!.wall_seconds.value,
      load: load(),
    });
    say(`  planned ${plan.time!.wall_seconds.value.toFixed(1)} s, measured ${wall.toFixed(1)} s`);
  }
  return rows;
}

async function main(): Promise<void> {
  const out = path.resolve(arg('out', 'bench/out/plan'));
  const threads = Number(arg('threads', '1'));
  const workers = arg('workers', '1,2').split(',').map(Number);
  say(`bench/plan: ${cpus().length} CPUs, load ${load()}`);
  const rows = await benchCase(
    'demo',
    out,
    {
      shape: DEMO_QWEN2,
      tasks: Number(arg('tasks', '300')),
      shards: 6,
      predictions: 4,
      threads,
    },
    workers,
  );
  if (process.argv.includes('--big'))
    rows.push(
      ...(await benchCase(
        'qwen2.5-0.5b-shape',
        out,
        {
          shape: QWEN25_05B,
          tasks: Number(arg('big_tasks', '12')),
          shards: 2,
          predictions: 2,
          threads: 2,
        },
        [1],
      )),
    );
  const lines = [
    '| case | workers | tokens planned / actual | bytes interval / actual | tok/s per worker (calibrated) | wall planned | wall measured | measured / planned | load after |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...rows.map(
      (r) =>
        `| ${r.case} | ${r.workers} | ${r.tokensPlanned} / ${r.tokensActual} | ${(r.bytesPlanned[0] / 1e6).toFixed(3)}–${(r.bytesPlanned[1] / 1e6).toFixed(3)} MB / ${(r.bytesActual / 1e6).toFixed(3)} MB | ${Math.round(r.tokensPerSecond)} | ${r.wallPlanned.toFixed(1)} s | ${r.wallActual.toFixed(1)} s | **${r.ratio.toFixed(2)}×** | ${r.load} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  writeFileSync(path.join(out, 'results.json'), JSON.stringify(rows, null, 2));
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
