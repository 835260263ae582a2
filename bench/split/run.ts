/**
 * bench/split: `shardline create` against GNU split and cp on the same JSONL, in one run.
 *
 *   npm run build && node dist/bench/split/run.js [--gb 1] [--rounds 3] [--dir bench/out/split]
 *
 * Compared, round-robin so that every tool sees the same machine state:
 *   - shardline create --num_shards 8 --chunk_size_mb 100   (validates every line as a JSON object)
 *   - split -n l/8        (8 line-aligned parts, no validation)
 *   - split -C 100M       (100 MB line-aligned parts, no validation)
 *   - cp                  (one copy of the file: the floor for writing the bytes once)
 * Reports median throughput (input MB/s), the ratio to `split -n l/8`, peak RSS and CPU time
 * (GNU time), twice: as the tools finish (output still in the page cache) and until a `sync`
 * after each run returns (output on disk). For create it also reports where its time went (medians of the
 * phases its --verbose log marks): start-up, phase 1 (scan), phase 2 (copy), and the rest.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { loadavg, totalmem } from 'node:os';
import * as path from 'node:path';

import { generateArcTasks } from '../../synthetic/arc-puzzles';

interface Sample {
  seconds: number;
  /** Seconds of the `sync` after the run: until the output is on disk, not only in page cache. */
  syncSeconds: number;
  maxRssKb: number;
  /** CPU seconds, user + system (GNU time): what the run costs whatever else the machine runs. */
  cpuSeconds: number;
  /** create only: milliseconds from its start to each step its log marks. */
  marks?: Record<string, number>;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

/** Writes ARC-style tasks until the file holds `bytes` bytes (seeded, so reruns are identical). */
function generateInput(file: string, bytes: number): void {
  if (existsSync(file) && statSync(file).size >= bytes) return;
  process.stderr.write(`generating ${(bytes / 1e9).toFixed(2)} GB of ARC-style tasks in ${file}\n`);
  const fd = openSync(file, 'w');
  let written = 0;
  for (let seed = 1; written < bytes; seed++) {
    const batch = generateArcTasks(2000, seed, 20).map((t, i) =>
      JSON.stringify({ ...t, task_id: `t${seed}_${i}` }),
    );
    const buf = Buffer.from(batch.join('\n') + '\n');
    writeSync(fd, buf);
    written += buf.length;
  }
  closeSync(fd);
}

/** The steps of create's --verbose log, by message, in milliseconds after `startedMs`. */
function marksOf(stderr: string, startedMs: number): Record<string, number> {
  const marks: Record<string, number> = {};
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { message?: string; time?: string };
      if (entry.message && entry.time) marks[entry.message] = Date.parse(entry.time) - startedMs;
    } catch {
      // not a log line
    }
  }
  return marks;
}

/** Runs a command under GNU time; returns wall seconds, peak RSS and CPU time. */
function timed(cmd: string, args: string[], cwd: string): Sample {
  const startedMs = Date.now();
  const started = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M %U %S', cmd, ...args], {
    cwd,
    encoding: 'utf8',
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const [rssKb, user, system] = lines[lines.length - 1]!.split(' ').map(Number);
  const syncStarted = process.hrtime.bigint();
  execFileSync('sync');
  const syncSeconds = Number(process.hrtime.bigint() - syncStarted) / 1e9;
  return {
    seconds,
    syncSeconds,
    maxRssKb: rssKb!,
    cpuSeconds: user! + system!,
    marks: marksOf(r.stderr, startedMs),
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Where create's time went: medians over the rounds of the gaps between its log marks. */
function breakdown(samples: Sample[]): string {
  const steps: Array<[string, (m: Record<string, number>, total: number) => number | undefined]> = [
    [
      'start-up (node, modules, arguments, output checks)',
      (m) => m['phase 1: scanning in blocks'] ?? m['phase 1: scanning a stream'],
    ],
    [
      'phase 1: read, validate, count, checksum',
      (m) =>
        diff(
          m['scanned the input'],
          m['phase 1: scanning in blocks'] ?? m['phase 1: scanning a stream'],
        ),
    ],
    [
      'plan',
      (m) =>
        diff(
          m['phase 2: copying by range'] ?? m['phase 2: copying from a stream'],
          m['scanned the input'],
        ),
    ],
    [
      'phase 2: write the chunks and shard metadata',
      (m) =>
        diff(
          m['wrote the shards'],
          m['phase 2: copying by range'] ?? m['phase 2: copying from a stream'],
        ),
    ],
    [
      'master metadata, ledger registration, exit',
      (m, total) => diff(total, m['wrote the shards']),
    ],
  ];
  const rows = steps.map(([name, of]) => {
    const values = samples
      .map((s) => of(s.marks ?? {}, s.seconds * 1000))
      .filter((v): v is number => v !== undefined);
    return `| ${name} | ${values.length ? median(values).toFixed(0) : '?'} |`;
  });
  return ['| create, step | median ms |', '|---|---:|', ...rows].join('\n');
}

function diff(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a - b;
}

function main(): void {
  const dir = path.resolve(arg('dir', 'bench/out/split'));
  const gb = Number(arg('gb', '1'));
  const rounds = Number(arg('rounds', '3'));
  mkdirSync(dir, { recursive: true });
  const input = path.join(dir, gb === 1 ? 'input.jsonl' : `input-${gb}gb.jsonl`);
  generateInput(input, gb * 1e9);
  const size = statSync(input).size;
  const cli = path.resolve(__dirname, '../../cli/main.js');
  const tools: Array<{ name: string; run: (out: string) => Sample }> = [
    {
      name: 'shardline create (8 shards, 100 MB chunks)',
      run: (out) =>
        timed(
          process.execPath,
          [
            cli,
            'create',
            '--input_file',
            input,
            '--output_dir',
            out,
            '--num_shards',
            '8',
            '--chunk_size_mb',
            '100',
            '--log_format',
            'json',
            '--verbose',
          ],
          dir,
        ),
    },
    {
      name: 'split -n l/8',
      run: (out) => (mkdirSync(out), timed('split', ['-n', 'l/8', input, `${out}/part_`], dir)),
    },
    {
      name: 'split -C 100M',
      run: (out) => (mkdirSync(out), timed('split', ['-C', '100M', input, `${out}/part_`], dir)),
    },
    {
      name: 'cp',
      run: (out) => (mkdirSync(out), timed('cp', [input, `${out}/copy.jsonl`], dir)),
    },
  ];
  const results = new Map<string, Sample[]>(tools.map((t) => [t.name, []]));
  const load = [loadavg()[0]!];
  for (let r = 0; r < rounds; r++) {
    for (const tool of tools) {
      const out = path.join(dir, 'out');
      rmSync(out, { recursive: true, force: true });
      execFileSync('sync');
      const s = tool.run(out);
      results.get(tool.name)!.push(s);
      process.stderr.write(
        `round ${r + 1}: ${tool.name}: ${s.seconds.toFixed(2)} s, ${(s.maxRssKb / 1024).toFixed(0)} MB RSS\n`,
      );
      load.push(loadavg()[0]!);
    }
  }
  rmSync(path.join(dir, 'out'), { recursive: true, force: true });
  const mbps = (samples: Sample[], withSync: boolean): number =>
    median(samples.map((x) => size / (x.seconds + (withSync ? x.syncSeconds : 0)))) / 1e6;
  const base = results.get('split -n l/8')!;
  const rows = tools.map((t) => {
    const samples = results.get(t.name)!;
    const cached = mbps(samples, false);
    const onDisk = mbps(samples, true);
    const rss = Math.max(...samples.map((x) => x.maxRssKb)) / 1024;
    const cpu = median(samples.map((x) => x.cpuSeconds));
    return (
      `| ${t.name} | ${cached.toFixed(0)} | ${(cached / mbps(base, false)).toFixed(2)}x ` +
      `| ${onDisk.toFixed(0)} | ${(onDisk / mbps(base, true)).toFixed(2)}x | ${rss.toFixed(0)} ` +
      `| ${cpu.toFixed(2)} |`
    );
  });
  const ramGiB = totalmem() / 2 ** 30;
  // Input and outputs both stay cached when they fit beside each other in memory.
  const cached = 2 * size < totalmem() * 0.8;
  process.stdout.write(
    [
      `input: ${(size / 1e9).toFixed(2)} GB, ${rounds} rounds each, load average ${Math.min(...load).toFixed(2)}-${Math.max(...load).toFixed(2)}; ` +
        `${ramGiB.toFixed(0)} GiB RAM: input and output ${cached ? 'fit' : 'do not fit'} in the page cache`,
      '',
      '| tool | median MB/s | vs split -n l/8 | median MB/s until on disk (with sync) | vs split -n l/8 | peak RSS MB | median CPU s (user+sys) |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
      breakdown(results.get(tools[0]!.name)!),
      '',
    ].join('\n'),
  );
}

main();
