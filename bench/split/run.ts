/**
 * bench/split: `shardline create` against GNU split on the same >= 1 GB JSONL, in one run.
 *
 *   npm run build && node dist/bench/split/run.js [--gb 1] [--rounds 3] [--dir bench/out/split]
 *
 * Compared, round-robin so that every tool sees the same machine state:
 *   - shardline create --num_shards 8 --chunk_size_mb 100   (validates every line as a JSON object)
 *   - split -n l/8        (8 line-aligned parts, no validation)
 *   - split -C 100M       (100 MB line-aligned parts, no validation)
 * Reports median throughput (input MB/s), the ratio to `split -n l/8`, and peak RSS (GNU time),
 * twice: as the tools finish (output still in the page cache) and until a `sync` after each run
 * returns (output on disk).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';

import { generateArcTasks } from '../../synthetic/arc-puzzles';

interface Sample {
  seconds: number;
  /** Seconds of the `sync` after the run: until the output is on disk, not only in page cache. */
  syncSeconds: number;
  maxRssKb: number;
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

/** Runs a command under GNU time; returns wall seconds and peak RSS. */
function timed(cmd: string, args: string[], cwd: string): Sample {
  const started = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { cwd, encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const syncStarted = process.hrtime.bigint();
  execFileSync('sync');
  const syncSeconds = Number(process.hrtime.bigint() - syncStarted) / 1e9;
  return { seconds, syncSeconds, maxRssKb: Number(lines[lines.length - 1]) };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function main(): void {
  const dir = path.resolve(arg('dir', 'bench/out/split'));
  const gb = Number(arg('gb', '1'));
  const rounds = Number(arg('rounds', '3'));
  mkdirSync(dir, { recursive: true });
  const input = path.join(dir, 'input.jsonl');
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
    return (
      `| ${t.name} | ${cached.toFixed(0)} | ${(cached / mbps(base, false)).toFixed(2)}x ` +
      `| ${onDisk.toFixed(0)} | ${(onDisk / mbps(base, true)).toFixed(2)}x | ${rss.toFixed(0)} |`
    );
  });
  process.stdout.write(
    [
      `input: ${(size / 1e9).toFixed(2)} GB, ${rounds} rounds each, load average ${Math.min(...load).toFixed(2)}-${Math.max(...load).toFixed(2)}`,
      '',
      '| tool | median MB/s | vs split -n l/8 | median MB/s until on disk (with sync) | vs split -n l/8 | peak RSS MB |',
      '|---|---:|---:|---:|---:|---:|',
      ...rows,
      '',
    ].join('\n'),
  );
}

main();
