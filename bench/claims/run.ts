/**
 * The claims bench (bench/claims/README.md): N concurrent claimers on N shards, in one run,
 * against our Firestore ledger (emulator), our SQLite ledger (one process per claimer), and
 * THE BASELINE, the original's read-check-write of metadata.json (original.ts), on a local
 * folder (one process per claimer) and on Cloud Storage (the emulator). Reports claims granted,
 * shards claimed twice, claim latency percentiles and total time, with the machine's load.
 *
 *   npm run build
 *   SHARDLINE_EMULATOR_PORT_OFFSET=100 bash test/emulators/with-emulators.sh \
 *     node dist/bench/claims/run.js [--claimers 64] [--shards 64] [--repeat 1] [--only a,b]
 *
 * Without the emulators (no FIRESTORE_EMULATOR_HOST / STORAGE_EMULATOR_HOST) the Firestore and
 * Cloud Storage scenarios are skipped. This file is a composition root: it reads the
 * environment and makes real clients.
 */
import { Firestore } from '@google-cloud/firestore';
import { Storage } from '@google-cloud/storage';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { GcsBlobStore } from '../../core/blob/gcs';
import { LocalBlobStore } from '../../core/blob/local';
import type { BlobStore } from '../../core/blob/store';
import { systemClock } from '../../core/clock';
import { shardMetadataKey } from '../../core/dataset/paths';
import { toError } from '../../core/errors';
import { FirestoreLedger } from '../../core/ledger/firestore';
import { SqliteLedger } from '../../core/ledger/sqlite';
import { benchDataset, writeBenchDataset } from './dataset';
import { originalClaim } from './original';

/** One claimer's outcome. */
interface Outcome {
  shard: number | null;
  startMs: number;
  endMs: number;
  error?: string;
}

/** One row of the results table. */
interface Row {
  scenario: string;
  claimers: number;
  shards: number;
  granted: number;
  /** Different shards among the granted claims. */
  distinct: number;
  /** Shards that more than one claimer believed it held. */
  claimedTwice: number;
  nothing: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  totalMs: number;
  /** Shards `in_use` in the store or ledger afterwards (the baseline loses overwritten claims). */
  inUseAfter: number;
  /** The first few error messages. */
  errorSamples: string[];
}

const SCENARIOS = ['firestore', 'sqlite', 'baseline-local', 'baseline-gcs'] as const;
type Scenario = (typeof SCENARIOS)[number];
const LABEL: Record<Scenario, string> = {
  firestore: 'shardline Firestore ledger (emulator)',
  sqlite: 'shardline SQLite ledger (1 process per claimer)',
  'baseline-local': 'BASELINE: original read-check-write, local files (1 process per claimer)',
  'baseline-gcs': 'BASELINE: original read-check-write, Cloud Storage (emulator)',
};

const nowMs = (): number => performance.timeOrigin + performance.now();

function flag(argv: readonly string[], name: string, fallback: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function summarise(scenario: string, shards: number, outcomes: Outcome[], inUseAfter: number): Row {
  const ok = outcomes.filter((o) => o.error === undefined);
  const granted = ok.filter((o) => o.shard !== null).map((o) => o.shard!);
  const perShard = new Map<number, number>();
  for (const s of granted) perShard.set(s, (perShard.get(s) ?? 0) + 1);
  const latencies = ok.map((o) => o.endMs - o.startMs).sort((a, b) => a - b);
  return {
    scenario,
    claimers: outcomes.length,
    shards,
    granted: granted.length,
    distinct: perShard.size,
    claimedTwice: [...perShard.values()].filter((n) => n > 1).length,
    nothing: ok.length - granted.length,
    errors: outcomes.length - ok.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    totalMs:
      ok.length === 0
        ? 0
        : Math.max(...ok.map((o) => o.endMs)) - Math.min(...ok.map((o) => o.startMs)),
    inUseAfter,
    errorSamples: [
      ...new Set(outcomes.flatMap((o) => (o.error === undefined ? [] : [o.error]))),
    ].slice(0, 3),
  };
}

/** Runs one child process per worker, released together; see child.ts. */
async function inProcesses(
  mode: 'sqlite' | 'baseline-local',
  target: string,
  datasetId: string,
  n: number,
): Promise<Outcome[]> {
  const children = Array.from({ length: n }, (_, i) => {
    const child = spawn(
      process.execPath,
      [
        path.join(__dirname, 'child.js'),
        JSON.stringify({ mode, path: target, datasetId, workerId: `bench-${i}` }),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8');
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: string) => {
        out += d;
        if (out.startsWith('ready\n')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`claimer ${i} exited ${code} before ready`)));
    });
    const done = new Promise<Outcome>((resolve) => {
      child.on('exit', () => {
        try {
          resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as Outcome);
        } catch {
          resolve({ shard: null, startMs: 0, endMs: 0, error: `bad output: ${out}` });
        }
      });
    });
    return { child, ready, done };
  });
  await Promise.all(children.map((c) => c.ready));
  for (const c of children) c.child.stdin.end('go\n');
  return Promise.all(children.map((c) => c.done));
}

async function timed(fn: () => Promise<number | null>): Promise<Outcome> {
  const startMs = nowMs();
  try {
    const shard = await fn();
    return { shard, startMs, endMs: nowMs() };
  } catch (e: unknown) {
    return { shard: null, startMs, endMs: nowMs(), error: toError(e).message };
  }
}

async function countInUse(store: BlobStore, shards: number): Promise<number> {
  let n = 0;
  for (let k = 0; k < shards; k++) {
    const doc = JSON.parse((await store.readAll(shardMetadataKey(k))).toString('utf8')) as {
      status: string;
    };
    if (doc.status === 'in_use') n++;
  }
  return n;
}

async function scenario(
  which: Scenario,
  claimers: number,
  shards: number,
  work: string,
  env: NodeJS.ProcessEnv,
): Promise<Row | null> {
  const datasetId = `bench-${which}-${randomBytes(3).toString('hex')}`;
  const dataset = benchDataset(datasetId, shards);
  const projectId = env.GCLOUD_PROJECT ?? 'demo-shardline';
  switch (which) {
    case 'sqlite': {
      const dir = path.join(work, datasetId);
      mkdirSync(dir, { recursive: true });
      const file = path.join(dir, 'ledger.sqlite');
      const ledger = SqliteLedger.open(file, { clock: systemClock });
      await ledger.registerDataset(dataset.master, { datasetUri: dir });
      const outcomes = await inProcesses('sqlite', file, datasetId, claimers);
      const status = await ledger.status(datasetId);
      await ledger.close();
      return summarise(LABEL[which], shards, outcomes, status.totals.in_use);
    }
    case 'baseline-local': {
      const dir = path.join(work, datasetId);
      const store = new LocalBlobStore(dir);
      await writeBenchDataset(store, dataset);
      const outcomes = await inProcesses('baseline-local', dir, datasetId, claimers);
      return summarise(LABEL[which], shards, outcomes, await countInUse(store, shards));
    }
    case 'firestore': {
      if (!env.FIRESTORE_EMULATOR_HOST) return null;
      const root = `bench-${randomBytes(4).toString('hex')}`;
      const admin = new Firestore({ projectId });
      const ledger = new FirestoreLedger(admin, { clock: systemClock, root });
      await ledger.registerDataset(dataset.master, { datasetUri: `bench://${datasetId}` });
      // One client per claimer, as separate workers; connections opened before the start.
      const clients = Array.from({ length: claimers }, () => new Firestore({ projectId }));
      const ledgers = clients.map((c) => new FirestoreLedger(c, { clock: systemClock, root }));
      await Promise.all(ledgers.map((l) => l.getDataset(datasetId)));
      const outcomes = await Promise.all(
        ledgers.map((l, i) =>
          timed(
            async () =>
              (await l.claim(datasetId, `bench-${i}`, { leaseMs: 600_000 }))?.shard_id ?? null,
          ),
        ),
      );
      const status = await ledger.status(datasetId);
      await Promise.all([...clients, admin].map((c) => c.terminate()));
      return summarise(LABEL[which], shards, outcomes, status.totals.in_use);
    }
    case 'baseline-gcs': {
      if (!env.STORAGE_EMULATOR_HOST) return null;
      const prefix = `bench/${datasetId}`;
      const store = new GcsBlobStore(new Storage({ projectId }), 'shardline-bench', prefix);
      await writeBenchDataset(store, dataset);
      const stores = Array.from(
        { length: claimers },
        () => new GcsBlobStore(new Storage({ projectId }), 'shardline-bench', prefix),
      );
      await Promise.all(stores.map((s) => s.stat('master_metadata.json')));
      const outcomes = await Promise.all(
        stores.map((s, i) => timed(() => originalClaim(s, `bench-${i}`, new Date().toISOString()))),
      );
      return summarise(LABEL[which], shards, outcomes, await countInUse(store, shards));
    }
  }
}

function uptimeLine(): string {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return `load average: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(', ')}`;
  }
}

function table(rows: Row[]): string {
  const head =
    '| scenario | claimers | shards | claims granted | distinct shards | shards claimed twice or more | nothing available | errors | p50 ms | p99 ms | total ms | in_use after |';
  const sep = '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
  const lines = rows.map(
    (r) =>
      `| ${r.scenario} | ${r.claimers} | ${r.shards} | ${r.granted} | ${r.distinct} | ${r.claimedTwice} | ${r.nothing} | ${r.errors} | ` +
      `${r.p50Ms.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ${r.totalMs.toFixed(0)} | ${r.inUseAfter} |`,
  );
  return [head, sep, ...lines].join('\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const claimers = Number(flag(argv, 'claimers', '64'));
  const shards = Number(flag(argv, 'shards', '64'));
  const repeat = Number(flag(argv, 'repeat', '1'));
  const only = flag(argv, 'only', SCENARIOS.join(',')).split(',') as Scenario[];
  const work = mkdtempSync(path.join(os.tmpdir(), 'shardline-bench-claims-'));
  const before = uptimeLine();
  const rows: Row[] = [];
  try {
    for (let r = 0; r < repeat; r++) {
      for (const which of only) {
        if (!SCENARIOS.includes(which)) throw new Error(`unknown scenario ${which}`);
        const row = await scenario(which, claimers, shards, work, process.env);
        if (row) rows.push(row);
        else process.stderr.write(`skipped ${which}: its emulator is not running\n`);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const after = uptimeLine();
  const report = [
    `claims bench: ${claimers} concurrent claimers on ${shards} shards, ${new Date().toISOString()}`,
    `machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), node ${process.version}`,
    `uptime before: ${before}`,
    `uptime after:  ${after}`,
    '',
    table(rows),
    '',
    ...rows.flatMap((r) => r.errorSamples.map((e) => `error in ${r.scenario}: ${e}`)),
  ].join('\n');
  process.stdout.write(report);
  const outDir = path.resolve('bench', 'out'); // run from the repository root
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    path.join(outDir, `claims-${Date.now()}.json`),
    `${JSON.stringify({ claimers, shards, before, after, rows }, null, 2)}\n`,
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`${toError(e).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
