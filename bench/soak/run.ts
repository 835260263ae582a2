/**
 * `npm run soak`: the long soak runs on the emulators; prints each report and exits non-zero
 * when a check fails. By default both runs: the chaos soak (workers killed before and after
 * their first part, SIGTERMs, redelivered doorbells, replayed ingests, units split by a worker
 * that dies at once) and the outage soak
 * (each emulator frozen 60 s, connections reset and dropped for 2 minutes, Storage answering
 * 503 past its client's retries). `--chaos` or `--outages` runs one. Other flags:
 * --tasks (320 chaos, 3000 outages) --shards 16 --workers 4 --max_attempts (10 chaos, 3 outages) --seed 1
 * --predictions_per_task 3 --lease_seconds 4.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { chaosSchedule, outageSchedule } from '../../test/soak/schedule';
import { formatReport, runSoak, soakProblems } from '../../test/soak/soak';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 ? Number(process.argv[i + 1]) : fallback;
}

// Ctrl-C or a kill: exit through process.exit, so the soak's exit hook stops its workers and
// thaws any frozen emulator.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

async function main(): Promise<void> {
  const projectId = process.env.GCLOUD_PROJECT;
  if (!projectId?.startsWith('demo-'))
    throw new Error('run under test/emulators/with-emulators.sh (npm run soak)');
  const only = ['chaos', 'outages'].filter((k) => process.argv.includes(`--${k}`));
  const runs = only.length > 0 ? only : ['chaos', 'outages'];
  const tasksFlag = flag('tasks', 0);
  const shards = flag('shards', 16);
  const seed = flag('seed', 1);
  let failed = false;
  for (const kind of runs) {
    // The outage run needs work left for its last fault: work goes on during most faults.
    const tasks = tasksFlag || (kind === 'chaos' ? 320 : 3000);
    const say = (l: string): void => void process.stderr.write(`soak (${kind}): ${l}\n`);
    const report = await runSoak({
      projectId,
      workDir: mkdtempSync(path.join(tmpdir(), 'shardline-soak-')),
      tasks,
      shards,
      workers: flag('workers', 4),
      leaseSeconds: flag('lease_seconds', 4),
      maxAttempts: flag('max_attempts', kind === 'chaos' ? 10 : 3),
      predictionsPerTask: flag('predictions_per_task', 3),
      seed,
      schedule:
        kind === 'chaos'
          ? chaosSchedule(
              seed,
              {
                killsMid: 12,
                killsEarly: 8,
                sigterms: 6,
                doorbells: 10,
                ingestReplays: 5,
                splits: 4,
              },
              Math.floor((tasks * 2) / 3),
              shards,
            )
          : outageSchedule('long', 8),
      proxies: kind === 'outages',
      // However fast the machine, the outage run keeps work going for every fault.
      ...(kind === 'outages' ? { holdBackShards: 8 } : {}),
      // The outage run keeps the product's client retries: its 503 outage outlasts them.
      timeoutMs: 40 * 60_000,
      say,
    });
    process.stdout.write(`## ${kind}\n\n${formatReport(report)}\n\n`);
    const problems = soakProblems(report);
    if (kind === 'outages' && report.attemptsCounted > 0)
      problems.push(`${report.attemptsCounted} attempts counted during outages`);
    for (const p of problems) process.stdout.write(`soak (${kind}): CHECK FAILED: ${p}\n`);
    failed ||= problems.length > 0;
  }
  process.stdout.write(failed ? 'soak: A CHECK FAILED\n' : 'soak: every check passed\n');
  process.exitCode = failed ? 1 : 0;
}

main().catch((e: unknown) => {
  process.stderr.write(`soak: ${String(e)}\n`);
  process.exitCode = 1;
});
