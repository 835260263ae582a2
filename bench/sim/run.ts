/**
 * `npm run bench:sim`: the simulation at scale (bench/README.md#simulation). For 8, 64 and
 * 1,000 workers, runs each policy (static assignment, splitting, oversharding 4× and 16×) on
 * the same fleet histories, prints the makespan and ledger-traffic tables, writes the
 * completion plot (bench/sim/completion.svg) and, with `--readme`, the tables into
 * bench/README.md.
 *
 *   node dist/bench/sim/run.js [--workers 8,64,1000] [--replicas 20,10,2] [--seed 1]
 *     [--rate 0.041667] [--sensitivity 0,0.25] [--readme] [--svg bench/sim/completion.svg]
 *     [--out bench/out/sim]
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';

import { DEFAULT_SIM, TASKS_PER_WORKER } from './model';
import type { Policy } from './policy';
import { STATIC_POLICY, overshardingPolicy } from './policy';
import { splitPolicy } from './split-policy';
import type { Summary } from './report';
import {
  makespanTable,
  num,
  readsTable,
  replaceBlock,
  sensitivityTable,
  summarise,
  trafficTable,
} from './report';
import type { SimResult } from './sim';
import { simulate } from './sim';
import type { Panel } from './svg';
import { completionSvg } from './svg';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const list = (s: string): number[] => s.split(',').filter(Boolean).map(Number);

/** The policies compared, in table order. */
function policies(): Policy[] {
  return [STATIC_POLICY, splitPolicy(), overshardingPolicy(4), overshardingPolicy(16)];
}

interface Scenario {
  rate: number;
  summaries: Summary[];
  /** The first replica of each (workers, policy), for the plot. */
  firsts: SimResult[];
  /** Slowest single simulation of the largest fleet: ms of wall time, and its policy. */
  slowestMs: number;
  slowestPolicy: string;
}

function runRate(
  rate: number,
  fleets: number[],
  replicas: number[],
  seed: number,
  say: (line: string) => void,
): Scenario {
  const out: Scenario = { rate, summaries: [], firsts: [], slowestMs: 0, slowestPolicy: '' };
  fleets.forEach((workers, i) => {
    for (const policy of policies()) {
      const runs: SimResult[] = [];
      for (let replica = 0; replica < (replicas[i] ?? 1); replica++) {
        const started = performance.now();
        const r = simulate(
          {
            ...DEFAULT_SIM,
            workers,
            totalTasks: workers * TASKS_PER_WORKER,
            preemptionsPerVmHour: rate,
            seed,
            replica,
          },
          policy,
        );
        const wallMs = performance.now() - started;
        if (workers === Math.max(...fleets) && wallMs > out.slowestMs)
          Object.assign(out, { slowestMs: wallMs, slowestPolicy: policy.name });
        if (r.exactness.length > 0)
          say(
            `  ${policy.name}, ${workers} workers, replica ${replica}: ${r.exactness.slice(0, 3).join('; ')}`,
          );
        runs.push({ ...r, committed: [] }); // the parts were checked; the summary needs none
      }
      const s = summarise(runs);
      say(
        `rate ${num(rate, 4)}/VM-h, ${workers} workers, ${policy.name}: ${num(s.ratioMean, 3)}× ideal (worst ${num(s.ratioWorst, 3)}×), ${runs.length} runs`,
      );
      out.summaries.push(s);
      out.firsts.push(runs[0]!);
    }
  });
  return out;
}

function main(): void {
  const fleets = list(arg('workers', '8,64,1000'));
  const replicas = list(arg('replicas', '20,10,2'));
  const seed = Number(arg('seed', '1'));
  const rate = Number(arg('rate', String(DEFAULT_SIM.preemptionsPerVmHour)));
  const sensitivity = list(arg('sensitivity', '0,0.25'));
  const svgPath = path.resolve(arg('svg', 'bench/sim/completion.svg'));
  const outDir = path.resolve(arg('out', 'bench/out/sim'));
  const say = (line: string): void => void process.stderr.write(`${line}\n`);
  const load = loadavg()[0]!;
  const started = performance.now();

  const primary = runRate(rate, fleets, replicas, seed, say);
  const others = sensitivity.map((r) =>
    runRate(
      r,
      fleets,
      replicas.map((n) => Math.max(1, Math.ceil(n / 2))),
      seed,
      say,
    ),
  );
  const wallS = (performance.now() - started) / 1000;

  const panels: Panel[] = fleets.map((workers) => {
    const firsts = primary.firsts.filter((r) => r.workers === workers);
    return {
      title: `${num(workers)} workers`,
      idealMs: firsts[0]!.idealMs,
      series: firsts.map((r) => ({ name: r.policy, points: r.curve })),
    };
  });
  mkdirSync(path.dirname(svgPath), { recursive: true });
  writeFileSync(
    svgPath,
    completionSvg(
      `Tasks committed over time, spot preemptions ${num(rate, 4)} per VM-hour (replica 0, seed ${seed})`,
      panels,
    ),
  );

  const rateLabel = (r: number): string =>
    r === 0 ? 'no preemptions' : `${num(r, 4)} preemptions/VM-h (1 per ${num(1 / r, 0)} h)`;
  const block = [
    `Run: ${new Date().toISOString().slice(0, 10)}, seed ${seed}, replicas per fleet size ${fleets.map((w, i) => `${num(w)}: ${replicas[i] ?? 1}`).join(', ')} (half as many in the sensitivity runs); load average ${num(load, 1)} at the start on this 2-core machine; all runs together ${num(wallS, 0)} s, the slowest single simulation of ${num(Math.max(...fleets))} workers (${primary.slowestPolicy}) ${num(primary.slowestMs / 1000, 1)} s.`,
    '',
    `**Makespan**, ${rateLabel(rate)}:`,
    '',
    makespanTable(primary.summaries),
    '',
    `**Ledger traffic** (same runs; ⚠ marks a figure past the limit it is compared with):`,
    '',
    trafficTable(primary.summaries),
    '',
    `**Where the reads go** (mean per run, ${num(Math.max(...fleets))} workers):`,
    '',
    readsTable(primary.summaries.filter((s) => s.workers === Math.max(...fleets))),
    '',
    `**Makespan ÷ ideal against the preemption rate**, mean (worst):`,
    '',
    sensitivityTable([
      ...others
        .filter((o) => o.rate < rate)
        .map((o) => ({ label: rateLabel(o.rate), rows: o.summaries })),
      { label: rateLabel(rate), rows: primary.summaries },
      ...others
        .filter((o) => o.rate > rate)
        .map((o) => ({ label: rateLabel(o.rate), rows: o.summaries })),
    ]),
  ].join('\n');
  process.stdout.write(`${block}\n`);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    path.join(outDir, 'results.json'),
    JSON.stringify({ seed, rate, fleets, replicas, main: primary.summaries, others }, null, 2),
  );
  if (process.argv.includes('--readme')) {
    const readme = path.resolve('bench/README.md');
    writeFileSync(readme, replaceBlock(readFileSync(readme, 'utf8'), block));
    say(`wrote the tables into ${readme}`);
  }
  say(`wrote ${svgPath}`);
}

main();
