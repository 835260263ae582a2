/**
 * `npm run soak`: the full soak run on the emulators; prints the report and exits non-zero when
 * a check fails. Flags: --tasks 320 --shards 16 --workers 4 --chaos_seconds 150 --kills 12 --max_attempts 10 --predictions_per_task 4.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { formatReport, runSoak } from '../../test/soak/soak';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 ? Number(process.argv[i + 1]) : fallback;
}

// Ctrl-C or a kill: exit through process.exit, so the soak's exit hook stops its workers.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

async function main(): Promise<void> {
  const projectId = process.env.GCLOUD_PROJECT;
  if (!projectId?.startsWith('demo-'))
    throw new Error('run under test/emulators/with-emulators.sh (npm run soak)');
  const report = await runSoak({
    projectId,
    workDir: mkdtempSync(path.join(tmpdir(), 'shardline-soak-')),
    tasks: flag('tasks', 320),
    shards: flag('shards', 16),
    workers: flag('workers', 4),
    chaosMs: flag('chaos_seconds', 150) * 1000,
    minKills: flag('kills', 12),
    leaseSeconds: flag('lease_seconds', 4),
    maxAttempts: flag('max_attempts', 10),
    predictionsPerTask: flag('predictions_per_task', 4),
    seed: flag('seed', 1),
    timeoutMs: 20 * 60_000,
    say: (l) => void process.stderr.write(`soak: ${l}\n`),
  });
  process.stdout.write(`${formatReport(report)}\n`);
  const ok =
    report.duplicateSamples === 0 &&
    report.missingSamples === 0 &&
    report.leasesHeld === 0 &&
    report.shardsCompleted === report.shards &&
    report.datasetManifest &&
    report.kills >= flag('kills', 12);
  process.stdout.write(ok ? 'soak: every check passed\n' : 'soak: A CHECK FAILED\n');
  process.exitCode = ok ? 0 : 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`soak: ${String(e)}\n`);
  process.exitCode = 1;
});
