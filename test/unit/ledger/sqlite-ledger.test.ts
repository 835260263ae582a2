import * as path from 'node:path';

import { SqliteLedger } from '../../../core/ledger/sqlite';
import { ledgerContract } from '../../support/ledger-contract';
import { claimInProcesses } from '../../support/ledger-processes';
import { makeTempDir } from '../../support/tmp';

ledgerContract(
  'SQLite',
  () => {
    const { dir, cleanup } = makeTempDir('ledger');
    const file = path.join(dir, 'ledger.sqlite');
    return Promise.resolve({
      open: (clock) => Promise.resolve(SqliteLedger.open(file, { clock })),
      concurrentClaims: async (datasetId, workerIds, nowMs, leaseMs) =>
        (await claimInProcesses({ file, datasetId, workerIds, nowMs, leaseMs })).map(
          (r) => r.claim,
        ),
      concurrentSplits: async (datasetId, workerIds, nowMs, leaseMs, minTasks) =>
        (
          await claimInProcesses({
            file,
            datasetId,
            workerIds,
            nowMs,
            leaseMs,
            split: { minTasks },
          })
        ).map((r) => r.claim),
      cleanup: () => Promise.resolve(cleanup()),
    });
  },
  // 32 node processes start on a shared 2-core machine: seconds, not milliseconds.
  { concurrencyTimeoutMs: 180_000 },
);
