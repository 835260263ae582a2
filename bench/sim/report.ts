/**
 * The simulation's figures as Markdown: runs of one scenario (same fleet size and policy,
 * several replicas) summarised, tables of makespan and of ledger traffic against Firestore's
 * limits (bench/sim/meter.ts `FIRESTORE_LIMITS`), and the block of bench/README.md between the
 * simulation markers replaced by them.
 */
import type { ReadKind } from './meter';
import { FIRESTORE_LIMITS } from './meter';
import type { SimResult } from './sim';

/** The replicas of one (fleet size, policy, preemption rate) summarised. */
export interface Summary {
  workers: number;
  policy: string;
  shards: number;
  replicas: number;
  unitsMean: number;
  makespanHoursMean: number;
  idealHoursMean: number;
  ratioMean: number;
  ratioWorst: number;
  tailHoursMean: number;
  idleWorkerHoursMean: number;
  lostWorkHoursMean: number;
  preemptionsMean: number;
  splitsMean: number;
  /** Runs with a failed unit, or whose committed parts were not every task exactly once. */
  inexactRuns: number;
  writesMean: number;
  readsMean: number;
  /** Reads per run by what they were for. */
  readsByKindMean: Partial<Record<ReadKind, number>>;
  peakWritesPerSecond: number;
  peakOpsPerSecond: number;
  peakDocWrites1s: number;
  peakDocWritesPerSecond60s: number;
  rampRatio: number;
  /** When the highest `rampRatio` happened, minutes after the first operation. */
  rampAtMinutes: number;
  rampRatioWrites: number;
  lostRaces: number;
  claimTransactions: number;
}

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const H = 3_600_000;

/** Summarises the replicas of one scenario. */
export function summarise(runs: readonly SimResult[]): Summary {
  const first = runs[0]!;
  const m = runs.map((r) => r.meter);
  const ratios = runs.map((r) => r.makespanMs / r.idealMs);
  return {
    workers: first.workers,
    policy: first.policy,
    shards: first.shards,
    replicas: runs.length,
    unitsMean: mean(runs.map((r) => r.units)),
    makespanHoursMean: mean(runs.map((r) => r.makespanMs / H)),
    idealHoursMean: mean(runs.map((r) => r.idealMs / H)),
    ratioMean: mean(ratios),
    ratioWorst: Math.max(...ratios),
    tailHoursMean: mean(runs.map((r) => r.tailMs / H)),
    idleWorkerHoursMean: mean(runs.map((r) => r.idleWorkerHours)),
    lostWorkHoursMean: mean(runs.map((r) => r.lostWorkHours)),
    preemptionsMean: mean(runs.map((r) => r.preemptions)),
    splitsMean: mean(runs.map((r) => r.splits)),
    inexactRuns: runs.filter((r) => r.exactness.length > 0).length,
    writesMean: mean(m.map((x) => x.writes)),
    readsMean: mean(m.map((x) => x.reads)),
    readsByKindMean: Object.fromEntries(
      [...new Set(m.flatMap((x) => Object.keys(x.readsByKind) as ReadKind[]))].map((k) => [
        k,
        mean(m.map((x) => x.readsByKind[k] ?? 0)),
      ]),
    ),
    peakWritesPerSecond: Math.max(...m.map((x) => x.peakWritesPerSecond.value)),
    peakOpsPerSecond: Math.max(...m.map((x) => x.peakOpsPerSecond.value)),
    peakDocWrites1s: Math.max(...m.map((x) => x.peakDocWrites1s)),
    peakDocWritesPerSecond60s: Math.max(...m.map((x) => x.peakDocWritesPerSecond60s)),
    rampRatio: Math.max(...m.map((x) => x.rampRatio.value)),
    rampAtMinutes:
      m.reduce((a, b) => (b.rampRatio.value > a.rampRatio.value ? b : a)).rampRatio.atMs / 60_000,
    rampRatioWrites: Math.max(...m.map((x) => x.rampRatioWrites.value)),
    lostRaces: m.reduce((n, x) => n + x.lostRaces, 0),
    claimTransactions: m.reduce((n, x) => n + x.claimTransactions, 0),
  };
}

/** A number for a table: `digits` decimals, thousands separated, ∞ for Infinity. */
export function num(x: number, digits = 0): string {
  if (!Number.isFinite(x)) return '∞';
  return x.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A compact count: 1.2 k, 3.4 M. */
export function count(x: number): string {
  if (x >= 1e9) return `${num(x / 1e9, 1)} G`;
  if (x >= 1e6) return `${num(x / 1e6, 1)} M`;
  if (x >= 1e4) return `${num(x / 1e3, 0)} k`;
  return num(x);
}

const flag = (over: boolean, text: string): string => (over ? `**${text}** ⚠` : text);

/** The makespan table: one row per scenario. */
export function makespanTable(rows: readonly Summary[]): string {
  const lines = [
    '| workers | policy | shards → units | makespan h | ÷ ideal, mean (worst) | tail 90→100 % h | idle worker-h | work lost h | preemptions | every task once |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${num(r.workers)} | ${r.policy} | ${num(r.shards)} → ${num(r.unitsMean)} | ${num(r.makespanHoursMean, 2)} | **${num(r.ratioMean, 2)}×** (${num(r.ratioWorst, 2)}×) | ${num(r.tailHoursMean, 2)} | ${num(r.idleWorkerHoursMean, 1)} | ${num(r.lostWorkHoursMean, 2)} | ${num(r.preemptionsMean, 1)} | ${r.inexactRuns === 0 ? `yes (${r.replicas}/${r.replicas})` : `**no: ${r.inexactRuns} of ${r.replicas} runs**`} |`,
    );
  }
  return lines.join('\n');
}

/** The ledger traffic table, each figure flagged (⚠) where it passes a Firestore limit. */
export function trafficTable(rows: readonly Summary[]): string {
  const L = FIRESTORE_LIMITS;
  const lines = [
    '| workers | policy | writes | reads | peak writes/s, dataset | most writes to one doc in 1 s | one doc, sustained writes/s (60 s) | 500/50/5: peak ops ÷ allowed, at minute (writes alone) | claim races lost / claim transactions |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${num(r.workers)} | ${r.policy} | ${count(r.writesMean)} | ${count(r.readsMean)} | ${flag(r.peakWritesPerSecond > L.sequentialIndexWritesPerSecond, num(r.peakWritesPerSecond))} | ${num(r.peakDocWrites1s)} | ${flag(r.peakDocWritesPerSecond60s > L.docWritesPerSecond, num(r.peakDocWritesPerSecond60s, 3))} | ${flag(r.rampRatio > 1, `${num(r.rampRatio, 2)}`)}, ${num(r.rampAtMinutes, 0)} (${flag(r.rampRatioWrites > 1, num(r.rampRatioWrites, 3))}) | ${num(r.lostRaces)} / ${count(r.claimTransactions)} |`,
    );
  }
  return lines.join('\n');
}

/** Where the reads go: per policy, the reads of each kind (mean per run). */
export function readsTable(rows: readonly Summary[]): string {
  const kinds: Array<[string, ReadKind[]]> = [
    ['claim queries and transactions', ['claim-query', 'claim-tx']],
    ['roll-ups after completions (status)', ['status']],
    ['split queries and transactions', ['split-query', 'split-tx']],
    ['lost-together queries (expiry)', ['peers']],
    ['holder verbs and reaper', ['holder-tx', 'reap-query']],
  ];
  const lines = [
    `| workers | policy | ${kinds.map(([k]) => k).join(' | ')} |`,
    `|---:|---|${kinds.map(() => '---:').join('|')}|`,
  ];
  for (const r of rows) {
    const cells = kinds.map(([, ks]) =>
      count(ks.reduce((n, k) => n + (r.readsByKindMean[k] ?? 0), 0)),
    );
    lines.push(`| ${num(r.workers)} | ${r.policy} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** The sensitivity table: makespan ÷ ideal per preemption rate. */
export function sensitivityTable(
  rates: ReadonlyArray<{ label: string; rows: readonly Summary[] }>,
): string {
  const head = `| workers | policy | ${rates.map((r) => r.label).join(' | ')} |`;
  const sep = `|---:|---|${rates.map(() => '---:').join('|')}|`;
  const lines = [head, sep];
  const base = rates[0]?.rows ?? [];
  base.forEach((row, i) => {
    const cells = rates.map((r) => {
      const s = r.rows[i]!;
      return `${num(s.ratioMean, 2)}× (${num(s.ratioWorst, 2)}×)`;
    });
    lines.push(`| ${num(row.workers)} | ${row.policy} | ${cells.join(' | ')} |`);
  });
  return lines.join('\n');
}

/** The markers around the generated block in bench/README.md. */
export const BEGIN = '<!-- sim:begin (written by npm run bench:sim -- --readme) -->';
export const END = '<!-- sim:end -->';

/** `readme` with the block between the markers replaced by `block`; throws when they are missing. */
export function replaceBlock(readme: string, block: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a === -1 || b === -1 || b < a)
    throw new Error(`bench/README.md has no "${BEGIN}" … "${END}" block to replace`);
  return `${readme.slice(0, a + BEGIN.length)}\n${block.trim()}\n${readme.slice(b)}`;
}
