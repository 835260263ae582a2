import { Firestore } from '@google-cloud/firestore';

import type { Claim } from '../../../core/ledger/ledger';
import { FirestoreLedger } from '../../../core/ledger/firestore';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { ledgerContract } from '../../support/ledger-contract';
import { FakeClock, makeDataset } from '../../support/ledger-fixtures';

const { projectId } = emulatorEnv();
const db = new Firestore({ projectId });
afterAll(() => db.terminate());

ledgerContract(
  'Firestore (emulator)',
  () => {
    const root = uniqueName('ledger');
    return Promise.resolve({
      open: (clock) => Promise.resolve(new FirestoreLedger(db, { clock, root })),
      // Each claimer gets its own client (its own channel), as separate workers would.
      concurrentClaims: async (datasetId, workerIds, nowMs, leaseMs) => {
        const clients = workerIds.map(() => new Firestore({ projectId }));
        try {
          return await Promise.all(
            workerIds.map((workerId, i): Promise<Claim | null> =>
              new FirestoreLedger(clients[i]!, { clock: { nowMs: () => nowMs }, root }).claim(
                datasetId,
                workerId,
                { leaseMs },
              ),
            ),
          );
        } finally {
          await Promise.all(clients.map((c) => c.terminate()));
        }
      },
      concurrentSplits: async (datasetId, workerIds, nowMs, leaseMs, minTasks) => {
        const clients = workerIds.map(() => new Firestore({ projectId }));
        try {
          return await Promise.all(
            workerIds.map(
              async (workerId, i): Promise<Claim | null> =>
                (
                  await new FirestoreLedger(clients[i]!, {
                    clock: { nowMs: () => nowMs },
                    root,
                  }).split(datasetId, workerId, { leaseMs, minTasks })
                )?.claim ?? null,
            ),
          );
        } finally {
          await Promise.all(clients.map((c) => c.terminate()));
        }
      },
      cleanup: () => db.recursiveDelete(db.collection(root)),
    });
  },
  // Lock conflicts on the emulator resolve in 2 s steps (docs/notes/emulators.md §1).
  { concurrencyTimeoutMs: 180_000 },
);

describe('Firestore specifics', () => {
  test('a dataset of more shards than one transaction may write registers in batches, idempotently', async () => {
    const root = uniqueName('ledger-big');
    const clock = new FakeClock();
    const ledger = new FirestoreLedger(db, { clock, root });
    try {
      const { master } = makeDataset({
        datasetId: 'big',
        numShards: 450,
        tasksPerShard: 2,
        chunksPerShard: 1,
      });
      expect((await ledger.registerDataset(master, { datasetUri: '/big' })).created).toBe(true);
      expect((await ledger.registerDataset(master, { datasetUri: '/big' })).created).toBe(false);
      const status = await ledger.status('big');
      expect(status.totals).toMatchObject({ shards: 450, available: 450, total_tasks: 900 });
      expect((await ledger.claim('big', 'w', { preferredShardId: 449 }))?.shard_id).toBe(449);
    } finally {
      await db.recursiveDelete(db.collection(root));
    }
  });
});
