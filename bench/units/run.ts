/**
 * The work-unit bench (bench/README.md, "units"): a real run on this machine of what splitting
 * is for. Three worker processes (`shardline work`, the built CLI, a generated Qwen2-shaped
 * model) on three shards of uneven length (one `--long` times the others), the holder of the
 * long shard SIGKILLed once it has committed a share of it, and the survivors left to finish:
 * once with `--split off` (THE PEER: static shards, the seed's model) and once with splitting,
 * in one run, on fresh copies of one dataset. Reports each wall time and their ratio, with the
 * machine's load.
 *
 *   npm run bench:units     (or: npm run build && node dist/bench/units/run.js)
 *     [--tasks 40] [--long 6] [--kill_at 0.25] [--lease_seconds 10] [--keep]
 *
 * Local only (SQLite ledger, local folders); nothing is sent anywhere. A composition root: it
 * reads the command line and spawns real processes.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import * as path from 'node:path';

import { systemClock } from '../../core/clock';
import { LOCAL_LEDGER_FILE } from '../../core/dataset/paths';
import { SqliteLedger } from '../../core/ledger/sqlite';
import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { DEMO_QWEN2, generateQwen2Model } from '../../synthetic/qwen2';
import { writeUnevenDataset } from '../../test/support/worker-fixtures';

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 ? Number(process.argv[i + 1]) : fallback;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Outcome {
  label: string;
  wallMs: number;
  /** When the long shard's holder was killed, ms from the start. */
  killedAtMs: number;
  /** Units the long shard ended with. */
  units: number;
  samples: number;
}

/** One run: three workers, the long shard's holder killed at `killAt` of it, the rest finish. */
async function runOnce(
  label: string,
  datasetDir: string,
  model: string,
  logs: string,
  o: { split: boolean; killAt: number; leaseSeconds: number; longShard: number },
): Promise<Outcome> {
  const workers = new Map<string, ChildProcess>();
  const start = (id: string): void => {
    const log = openSync(path.join(logs, `${label}-${id}.log`), 'w');
    const child = spawn(
      process.execPath,
      [
        CLI,
        'work',
        '--sharded_dataset_dir',
        datasetDir,
        '--model_path',
        model,
        '--worker_id',
        id,
        '--split',
        o.split ? 'on' : 'off',
        '--follow',
        '--poll_seconds',
        '1',
        '--lease_seconds',
        String(o.leaseSeconds),
        '--predictions_per_task',
        '4',
        '--part_size_mb',
        '1',
        '--threads',
        '1',
        '--log_format',
        'json',
      ],
      {
        stdio: ['ignore', log, log],
        env: { ...process.env, SHARDLINE_PREEMPTION_NOTICES: 'off' },
      },
    );
    closeSync(log);
    workers.set(id, child);
  };
  const ledger = SqliteLedger.open(path.join(datasetDir, LOCAL_LEDGER_FILE), {
    clock: systemClock,
  });
  const t0 = Date.now();
  let killedAtMs = -1;
  try {
    for (const id of ['w0', 'w1', 'w2']) start(id);
    const manifest = path.join(datasetDir, 'activations', '_MANIFEST.json');
    for (;;) {
      if (existsSync(manifest)) break;
      if (killedAtMs < 0) {
        const status = await ledger.status('uneven').catch(() => null);
        const long = status?.shards[o.longShard];
        const unit0 = long?.units[0];
        if (unit0?.status === 'in_use' && unit0.tasks_done >= o.killAt * long!.total_tasks) {
          workers.get(unit0.assigned_to ?? '')?.kill('SIGKILL');
          killedAtMs = Date.now() - t0;
          process.stderr.write(
            `${label}: killed ${unit0.assigned_to} at ${(killedAtMs / 1000).toFixed(1)} s, ${unit0.tasks_done}/${long!.total_tasks} tasks of the long shard committed\n`,
          );
        }
      }
      if (Date.now() - t0 > 3_600_000)
        throw new Error(`${label}: no dataset manifest after an hour`);
      await sleep(200);
    }
    const wallMs = Date.now() - t0;
    const status = await ledger.status('uneven');
    return {
      label,
      wallMs,
      killedAtMs,
      units: status.shards[o.longShard]!.units.length,
      samples: status.totals.samples_committed,
    };
  } finally {
    for (const w of workers.values())
      if (w.exitCode === null && w.signalCode === null) w.kill('SIGTERM');
    await Promise.all(
      [...workers.values()].map(
        (w) =>
          new Promise<void>((r) =>
            w.exitCode !== null || w.signalCode !== null ? r() : w.on('exit', () => r()),
          ),
      ),
    );
    await ledger.close();
  }
}

async function main(): Promise<void> {
  const tasks = flag('tasks', 40);
  const long = flag('long', 6);
  const killAt = flag('kill_at', 0.25);
  const leaseSeconds = flag('lease_seconds', 10);
  // Run from the repository root: scratch files under bench/out/ (gitignored).
  const out = path.resolve('bench', 'out');
  mkdirSync(out, { recursive: true });
  const work = mkdtempSync(path.join(out, 'units-'));
  try {
    const uptime = (): string => execFileSync('uptime', { encoding: 'utf8' }).trim();
    const loadBefore = uptime();
    const modelDir = path.join(work, 'model');
    generateQwen2Model({
      dir: modelDir,
      shape: DEMO_QWEN2,
      seed: 3,
      lmHead: false,
      externalData: true,
    });
    const model = path.join(modelDir, 'model.onnx');
    // Shards 0 and 1 hold `tasks` tasks each; shard 2, `long` times as many.
    const counts = [tasks, tasks, tasks * long];
    const lines = generateArcTasks(
      counts.reduce((a, b) => a + b, 0),
      5,
      8,
    ).map((t) => JSON.stringify(t));
    const pristine = path.join(work, 'pristine');
    writeUnevenDataset(pristine, 'uneven', lines, counts, 8);
    const logs = path.join(work, 'logs');
    mkdirSync(logs);
    const results: Outcome[] = [];
    for (const [label, split] of [
      ['split-off', false],
      ['split-on', true],
    ] as const) {
      const dir = path.join(work, label);
      cpSync(pristine, dir, { recursive: true });
      results.push(
        await runOnce(label, dir, model, logs, { split, killAt, leaseSeconds, longShard: 2 }),
      );
    }
    const loadAfter = uptime();
    const [off, on] = results as [Outcome, Outcome];
    const lines2 = [
      `3 workers, shards of ${counts.join(' / ')} tasks (4 prompts each), lease ${leaseSeconds} s; the long shard's holder SIGKILLed at ${Math.round(killAt * 100)} % of it, not restarted`,
      '',
      '| run | wall time | killed at | long shard ended in units | samples |',
      '|---|---:|---:|---:|---:|',
      ...results.map(
        (r) =>
          `| ${r.label === 'split-off' ? 'THE PEER: `--split off` (static shards)' : '`--split on` (default)'} | ${(r.wallMs / 1000).toFixed(1)} s | ${(r.killedAtMs / 1000).toFixed(1)} s | ${r.units} | ${r.samples} |`,
      ),
      '',
      `splitting / static: ${(on.wallMs / off.wallMs).toFixed(2)}× the wall time (${(off.wallMs / on.wallMs).toFixed(2)}× faster)`,
      `load before: ${loadBefore}`,
      `load after:  ${loadAfter}`,
    ];
    process.stdout.write(`${lines2.join('\n')}\n`);
    if (on.samples !== off.samples)
      throw new Error('the two runs stored different numbers of samples');
  } finally {
    if (!process.argv.includes('--keep')) rmSync(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
