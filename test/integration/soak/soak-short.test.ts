/**
 * The short chaos soak, in every `npm test`: 16 shards, 4 worker processes with splitting on
 * (the default; a short `--reserve_seconds`, so idle workers split shards' tails in a run this
 * short), and a fault schedule fixed by the seed and triggered by progress
 * (test/soak/schedule.ts), so a fast machine and a slow one meet the same faults: workers
 * SIGKILLed after their first part and before it (a split unit's holder as well as a shard's),
 * SIGTERMs, redelivered doorbells, replayed ingest events, and splits by a worker that dies at
 * once (its new unit must be taken over). Every kind must have happened, and then: every shard
 * completed, every expected sample exactly once, no lease held, no shard failed. How many
 * units idle workers split off themselves depends on timing and is reported, not asserted.
 * SHARDLINE_SOAK_SPEED makes the workers' work per task smaller (3) or larger (1/3); `npm run
 * soak` runs the long form (bench/README.md).
 */
import { chaosSchedule } from '../../soak/schedule';
import { formatReport, runSoak, soakProblems } from '../../soak/soak';
import { emulatorEnv } from '../../support/emulators';
import { makeTempDir } from '../../support/tmp';

/** Work per task: 3 augmented prompts at speed 1, fewer when faster, more when slower. */
const speed = Number(process.env.SHARDLINE_SOAK_SPEED ?? '1');
const predictions = Math.max(1, Math.round(3 / (Number.isFinite(speed) && speed > 0 ? speed : 1)));
/** The soak's own budget; jest's is larger, so a stuck run still ends with its report. */
const BUDGET_MS = 240_000;

test(
  'chaos by schedule: every fault kind happens, nothing is lost, nothing is duplicated',
  async () => {
    const { projectId } = emulatorEnv();
    const { dir, cleanup } = makeTempDir('soak');
    try {
      const tasks = 160;
      const report = await runSoak({
        projectId,
        workDir: dir,
        tasks,
        shards: 16,
        workers: 4,
        leaseSeconds: 4,
        maxAttempts: 10,
        predictionsPerTask: predictions,
        seed: 7,
        schedule: chaosSchedule(
          7,
          { killsMid: 4, killsEarly: 3, sigterms: 2, doorbells: 3, ingestReplays: 2, splits: 2 },
          tasks / 2,
          16,
        ),
        proxies: false,
        reserveSeconds: 0.5,
        timeoutMs: BUDGET_MS,
        say: () => undefined,
      });
      process.stderr.write(`short soak (speed ${speed}):\n${formatReport(report)}\n`);
      expect(soakProblems(report)).toEqual([]);
      // Every kind of fault happened, as scheduled.
      expect({
        killsMid: report.killsMid,
        killsEarly: report.killsEarly,
        sigterms: report.sigterms,
        doorbells: report.doorbellsRedelivered,
        ingestReplays: report.ingestReplays,
        splits: report.faultSplits,
      }).toEqual({
        killsMid: 4,
        killsEarly: 3,
        sigterms: 2,
        doorbells: 3,
        ingestReplays: 2,
        splits: 2,
      });
      expect(report.shardsSplit).toBeGreaterThanOrEqual(1);
      expect(report.duplicateIngestsSuppressed).toBe(2);
      expect(report.resumedParts).toBeGreaterThan(0);
      expect(report.reclaims).toBeGreaterThanOrEqual(report.killsMid + report.killsEarly);
      expect(report.samplesExpected).toBe(tasks * predictions);
      expect(report.maxAttempts).toBe(10);
    } finally {
      cleanup();
    }
  },
  BUDGET_MS + 60_000,
);
