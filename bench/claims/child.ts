/**
 * One claimer process of the claims bench (spawned by run.ts): opens its ledger or store,
 * says `ready`, waits for `go` on stdin, claims once, prints `{ shard, startMs, endMs }`.
 * argv[2]: JSON `{ mode: 'sqlite' | 'baseline-local', path, datasetId, workerId }`.
 */
import { createInterface } from 'node:readline';

import { LocalBlobStore } from '../../core/blob/local';
import { systemClock } from '../../core/clock';
import { toError } from '../../core/errors';
import { SqliteLedger } from '../../core/ledger/sqlite';
import { originalClaim } from './original';

interface ChildArgs {
  mode: 'sqlite' | 'baseline-local';
  path: string;
  datasetId: string;
  workerId: string;
}

const nowMs = (): number => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as ChildArgs;
  const ledger =
    args.mode === 'sqlite' ? SqliteLedger.open(args.path, { clock: systemClock }) : null;
  const store = new LocalBlobStore(args.path);
  process.stdout.write('ready\n');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) if (line.trim() === 'go') break;
  lines.close();
  const startMs = nowMs();
  const shard = ledger
    ? ((await ledger.claim(args.datasetId, args.workerId, { leaseMs: 600_000 }))?.shard_id ?? null)
    : await originalClaim(store, args.workerId, new Date().toISOString());
  const endMs = nowMs();
  await ledger?.close();
  process.stdout.write(`${JSON.stringify({ shard, startMs, endMs })}\n`);
}

main().catch((e: unknown) => {
  process.stdout.write(`${JSON.stringify({ error: toError(e).message })}\n`);
  process.exitCode = 1;
});
