/**
 * bench/outputs: what the outputs cost and how fast they are checked, on the demo's data
 * (`shardline demo`'s 300 ARC puzzles and its Qwen2-shaped model, 4 layers, hidden 64).
 *
 *   npm run build && node dist/bench/outputs/run.js [--tasks 300] [--verify_tasks 2000]
 *     [--rounds 3] [--threads 2] [--dir bench/out/outputs]
 *
 * 1. `work --positions all` against `--positions last`, round-robin on fresh copies of one
 *    dataset (one worker): output bytes per task and end-to-end tokens/s (prompt tokens the model
 *    ran over the wall time of the `work` process).
 * 2. `shardline verify` against `cat` of the same part files to /dev/null, alternating, on the
 *    demo's own outputs for `--verify_tasks` puzzles (~1 MB a task): MB/s of each and the ratio; with the files in the page cache ("warm")
 *    and with them dropped from it first ("cold": POSIX_FADV_DONTNEED on these files only,
 *    through python3), and `verify --recompute_stats` warm.
 *
 * Not a test: it asserts nothing; it prints tables and writes them as JSON into `--dir`.
 */
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  cpSync,
  existsSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';

import { crc32c } from '@node-rs/crc32';

import type { DatasetManifest, ShardManifest } from '../../core/rollup/manifests';

const CLI = path.resolve(__dirname, '../../cli/main.js');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Runs `cmd args`, stdout to /dev/null unless captured; returns wall seconds (and stdout). */
function timed(
  cmd: string,
  args: string[],
  options: { capture?: boolean; okCodes?: number[] } = {},
): { seconds: number; stdout: string } {
  const devnull = openSync('/dev/null', 'w');
  const started = process.hrtime.bigint();
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', options.capture ? 'pipe' : devnull, 'pipe'],
    env: { ...process.env, SHARDLINE_LOG_FORMAT: 'json' },
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  closeSync(devnull);
  if (!(options.okCodes ?? [0]).includes(r.status ?? -1))
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.slice(-2000)}`);
  return { seconds, stdout: r.stdout ?? '' };
}

function shardline(...args: string[]): { seconds: number; stdout: string } {
  return timed(process.execPath, [CLI, ...args], { capture: true });
}

/** Drops `files` from the page cache (only these files), through python3's posix_fadvise. */
function dropFromCache(files: readonly string[]): boolean {
  const r = spawnSync(
    'python3',
    [
      '-c',
      'import os, sys\nfor f in sys.argv[1:]:\n    fd = os.open(f, os.O_RDONLY)\n    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n    os.close(fd)',
      ...files,
    ],
    { encoding: 'utf8' },
  );
  return r.status === 0;
}

interface Extraction {
  positions: string;
  seconds: number;
  tasks: number;
  samples: number;
  tokens: number;
  rows: number;
  bytes: number;
}

function main(): void {
  const dir = path.resolve(arg('dir', 'bench/out/outputs'));
  const tasks = Number(arg('tasks', '300'));
  const rounds = Number(arg('rounds', '3'));
  const threads = arg('threads', '2');
  const verifyTasks = Number(arg('verify_tasks', '2000'));
  const load = [loadavg()[0]!];
  const say = (line: string): void => void process.stderr.write(`${line}\n`);

  // The demo's data: its puzzles and its model (and outputs), made by the demo itself.
  const demoOf = (n: number): string => {
    const demo = path.join(dir, `demo-${n}`);
    if (!existsSync(path.join(demo, 'dataset', 'activations', '_MANIFEST.json'))) {
      say(`running shardline demo --tasks ${n} for its data`);
      shardline('demo', '--dir', demo, '--tasks', String(n), '--workers', '2', '--fresh');
    }
    return demo;
  };
  const demo = demoOf(tasks);
  const input = path.join(demo, 'arc_tasks.jsonl');
  const model = path.join(demo, 'model', 'model.onnx');
  const created = path.join(dir, 'created');
  rmSync(created, { recursive: true, force: true });
  shardline(
    'create',
    '--input_file',
    input,
    '--output_dir',
    created,
    '--num_shards',
    '6',
    '--chunk_size_mb',
    '0.02',
  );

  const work = (positions: string, name: string, extra: string[] = []): number => {
    const out = path.join(dir, name);
    rmSync(out, { recursive: true, force: true });
    cpSync(created, out, { recursive: true });
    const { seconds } = shardline(
      'work',
      '--sharded_dataset_dir',
      out,
      '--model_path',
      model,
      '--model_name',
      'demo-qwen2-random',
      '--predictions_per_task',
      '4',
      '--part_size_mb',
      '8',
      '--threads',
      threads,
      '--positions',
      positions,
      ...extra,
    );
    return seconds;
  };
  const measure = (positions: string): Extraction => {
    const seconds = work(positions, `run-${positions}`);
    const m = JSON.parse(
      readFileSync(path.join(dir, `run-${positions}`, 'activations', '_MANIFEST.json'), 'utf8'),
    ) as DatasetManifest;
    return {
      positions,
      seconds,
      tasks: m.total_tasks,
      samples: m.samples,
      tokens: m.tokens,
      rows: m.rows,
      bytes: m.bytes,
    };
  };

  // Warm-up: the first run prepares (and caches) the model's graph.
  work('all', 'warmup', ['--max_shards', '1']);
  const extractions: Extraction[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const positions of r % 2 === 0 ? ['all', 'last'] : ['last', 'all']) {
      const e = measure(positions);
      extractions.push(e);
      load.push(loadavg()[0]!);
      say(
        `round ${r + 1}: --positions ${positions}: ${e.seconds.toFixed(1)} s, ${(e.tokens / e.seconds).toFixed(0)} tokens/s, ${(e.bytes / e.tasks / 1e3).toFixed(1)} KB/task`,
      );
    }
  }

  // verify against cat, on the demo's outputs for --verify_tasks tasks (a few GB: enough for
  // the process start and the JIT's warm-up not to dominate).
  const verifyDataset = path.join(demoOf(verifyTasks), 'dataset');
  const outputs = path.join(verifyDataset, 'activations');
  const dataset = JSON.parse(
    readFileSync(path.join(outputs, '_MANIFEST.json'), 'utf8'),
  ) as DatasetManifest;
  const files = dataset.shards.flatMap((s) => {
    const shard = JSON.parse(readFileSync(path.join(outputs, s.manifest), 'utf8')) as ShardManifest;
    return shard.parts.flatMap((p) =>
      Object.keys(p.files).map((f) => path.join(outputs, path.dirname(s.manifest), f)),
    );
  });
  const bytes = dataset.bytes;
  const verifyArgs = ['verify', '--dataset_dir', verifyDataset, '--json'];
  const canDrop = dropFromCache(files);
  /** A reader's wall seconds, and for verify the rate of its own reads (from its report). */
  type Timing = { seconds: number; ownMbps: number | null };
  const cat = (): Timing => ({ seconds: timed('cat', files).seconds, ownMbps: null });
  const verify = (...extra: string[]): Timing => {
    const run = shardline(...verifyArgs, ...extra);
    const report = JSON.parse(run.stdout) as { problems: unknown[]; mb_per_s: number };
    if (report.problems.length > 0) throw new Error(`verify found problems: ${run.stdout}`);
    return { seconds: run.seconds, ownMbps: report.mb_per_s };
  };
  const readers: Array<{ name: string; cold: boolean; run: () => Timing }> = [
    { name: 'cat > /dev/null', cold: false, run: cat },
    { name: 'shardline verify', cold: false, run: () => verify() },
    {
      name: 'shardline verify --recompute_stats',
      cold: false,
      run: () => verify('--recompute_stats'),
    },
    ...(canDrop
      ? [
          { name: 'cat > /dev/null', cold: true, run: cat },
          { name: 'shardline verify', cold: true, run: () => verify() },
        ]
      : []),
  ];
  const times = new Map<string, Timing[]>();
  const keyOf = (r: { name: string; cold: boolean }): string =>
    `${r.name}|${r.cold ? 'cold' : 'warm'}`;
  timed('cat', files); // into the page cache
  for (let r = 0; r < rounds; r++) {
    for (const reader of r % 2 === 0 ? readers : [...readers].reverse()) {
      if (reader.cold) dropFromCache(files);
      else timed('cat', files);
      const t = reader.run();
      times.set(keyOf(reader), [...(times.get(keyOf(reader)) ?? []), t]);
      load.push(loadavg()[0]!);
      say(
        `round ${r + 1}: ${reader.name} (${reader.cold ? 'cold' : 'warm'}): ${t.seconds.toFixed(2)} s, ${(bytes / t.seconds / 1e6).toFixed(0)} MB/s`,
      );
    }
  }
  // What bounds verify on one core: the CRC32C it computes over every byte, alone, in memory.
  const block = readFileSync(files.find((f) => f.endsWith('.safetensors'))!);
  const crcRates = Array.from({ length: 5 }, () => {
    const started = process.hrtime.bigint();
    crc32c(block);
    return block.length / (Number(process.hrtime.bigint() - started) / 1e9) / 1e6;
  });

  const byPositions = (p: string): Extraction[] => extractions.filter((e) => e.positions === p);
  const all = byPositions('all');
  const last = byPositions('last');
  const tps = (es: Extraction[]): number => median(es.map((e) => e.tokens / e.seconds));
  const perTask = (es: Extraction[]): number => es[0]!.bytes / es[0]!.tasks;
  const mbps = (name: string, cold: boolean): number | null => {
    const t = times.get(`${name}|${cold ? 'cold' : 'warm'}`);
    return t ? bytes / median(t.map((x) => x.seconds)) / 1e6 : null;
  };
  const own = (name: string, cold: boolean): string => {
    const t = times.get(`${name}|${cold ? 'cold' : 'warm'}`)?.map((x) => x.ownMbps);
    return t?.every((x) => x !== null) ? median(t).toFixed(0) : '-';
  };
  const ratio = (cold: boolean): string => {
    const v = mbps('shardline verify', cold);
    const c = mbps('cat > /dev/null', cold);
    return v !== null && c !== null ? `${(v / c).toFixed(2)}×` : '-';
  };
  const lines = [
    `demo data: ${all[0]!.tasks} tasks, ${all[0]!.samples} samples, ${all[0]!.tokens} prompt tokens; 4 layers × hidden 64, fp16; one worker, --threads ${threads}; ${rounds} rounds; load average ${Math.min(...load).toFixed(2)}-${Math.max(...load).toFixed(2)}`,
    '',
    '| --positions | rows stored | output bytes | bytes per task | end-to-end tokens/s (median) |',
    '|---|---:|---:|---:|---:|',
    ...[all, last].map(
      (es) =>
        `| ${es[0]!.positions} | ${es[0]!.rows} | ${(es[0]!.bytes / 1e6).toFixed(1)} MB | ${(perTask(es) / 1e3).toFixed(1)} KB | ${tps(es).toFixed(0)} |`,
    ),
    '',
    `last / all: ${(perTask(last) / perTask(all)).toFixed(4)}× the bytes, ${(tps(last) / tps(all)).toFixed(2)}× the tokens/s`,
    '',
    `verify on the demo's outputs for ${dataset.total_tasks} tasks (--positions all): ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB (median of ${rounds})`,
    '',
    "| reader | page cache | MB/s (wall, with process start) | MB/s (verify's own report: its reads) |",
    '|---|---|---:|---:|',
    ...readers.map(
      (r) =>
        `| ${r.name} | ${r.cold ? 'cold' : 'warm'} | ${mbps(r.name, r.cold)!.toFixed(0)} | ${own(r.name, r.cold)} |`,
    ),
    '',
    `verify / cat: ${ratio(false)} warm, ${ratio(true)} cold; CRC32C alone (@node-rs/crc32, one core, in memory): ${median(crcRates).toFixed(0)} MB/s`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  writeFileSync(
    path.join(dir, 'results.json'),
    JSON.stringify(
      { extractions, times: Object.fromEntries(times), crcRates, bytes, load },
      null,
      2,
    ),
  );
}

main();
