/**
 * The short outage soak, in every `npm test`: the services themselves fail while 4 workers
 * extract 16 shards of a gs:// dataset on the Firestore ledger. Each emulator is frozen in turn
 * (SIGSTOP, then SIGCONT: no state lost), and a proxy between the workers and the emulators
 * resets, drops and delays connections and makes Storage answer 503 for longer than its
 * client's retries (cut to one retry here, to keep the run short). The workers must ride
 * through all of it: every shard completed, nothing lost or duplicated, no shard failed, and
 * no attempt counted for an outage. `npm run soak -- --outages` runs the long form.
 */
import { outageSchedule } from '../../soak/schedule';
import { formatReport, runSoak, soakProblems } from '../../soak/soak';
import { emulatorEnv } from '../../support/emulators';
import { makeTempDir } from '../../support/tmp';

const BUDGET_MS = 300_000;

test(
  'frozen emulators, reset, dropped and delayed connections, Storage answering 503: workers ride through',
  async () => {
    const { projectId } = emulatorEnv();
    const { dir, cleanup } = makeTempDir('outage-soak');
    try {
      const report = await runSoak({
        projectId,
        workDir: dir,
        tasks: 1000,
        shards: 16,
        workers: 4,
        leaseSeconds: 4,
        maxAttempts: 3,
        predictionsPerTask: 2,
        seed: 11,
        schedule: outageSchedule('short', 6),
        proxies: true,
        // However fast the machine, work is left for every fault.
        holdBackShards: 8,
        storageRetries: 1,
        timeoutMs: BUDGET_MS,
        say: () => undefined,
      });
      process.stderr.write(`short outage soak:\n${formatReport(report)}\n`);
      expect(soakProblems(report)).toEqual([]);
      const services = report.faults.filter((f) => f.recoveredAtMs !== null);
      expect(services.map((f) => f.kind)).toEqual([
        'freeze',
        'freeze',
        'freeze',
        'resets',
        'resets',
        'drops',
        'delays',
        'unavailable',
      ]);
      // No outage cost an attempt (the budget is the default 3: a single one would show).
      expect(report.attemptsCounted).toBe(0);
      // Outages longer than the clients' own retries reached the workers, which retried.
      expect(report.workerRetries).toBeGreaterThan(0);
      for (const f of services)
        expect({ fault: f.name, resumed: f.resumeMs !== null }).toEqual({
          fault: f.name,
          resumed: true,
        });
    } finally {
      cleanup();
    }
  },
  BUDGET_MS + 60_000,
);
