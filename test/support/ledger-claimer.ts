/**
 * One claimer process for the SQLite concurrency tests (spawned by ledger-processes.ts; not a
 * test itself). Opens the ledger, says `ready`, waits for `go` on stdin so that every process
 * acts at the same moment, claims (or, with `split`, splits) once and prints the result as one
 * JSON line.
 *
 * argv[2]: JSON `{ file, datasetId, workerId, nowMs, leaseMs, split? }`.
 */
import { createInterface } from 'node:readline';

import { toError } from '../../core/errors';
import { SqliteLedger } from '../../core/ledger/sqlite';

interface ClaimerArgs {
  file: string;
  datasetId: string;
  workerId: string;
  nowMs: number;
  leaseMs: number;
  /** Split instead of claiming, with this minimum per side. */
  split?: { minTasks: number };
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as ClaimerArgs;
  const ledger = SqliteLedger.open(args.file, { clock: { nowMs: () => args.nowMs } });
  process.stdout.write('ready\n');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === 'go') break;
  }
  lines.close();
  const started = process.hrtime.bigint();
  const claim = args.split
    ? ((
        await ledger.split(args.datasetId, args.workerId, {
          leaseMs: args.leaseMs,
          minTasks: args.split.minTasks,
        })
      )?.claim ?? null)
    : await ledger.claim(args.datasetId, args.workerId, { leaseMs: args.leaseMs });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  await ledger.close();
  process.stdout.write(`${JSON.stringify({ claim, ms })}\n`);
}

main().catch((e: unknown) => {
  process.stdout.write(`${JSON.stringify({ error: toError(e).message })}\n`);
  process.exitCode = 1;
});
