/**
 * Runs SQLite claimers as separate OS processes (test/support/ledger-claimer.ts), released at
 * the same moment, to show that the file's locking holds across processes and not only within
 * one (test/support/ts-processes.ts runs them).
 */
import * as path from 'node:path';

import type { Claim } from '../../core/ledger/ledger';
import { runInProcesses } from './ts-processes';

const CLAIMER = path.join(__dirname, 'ledger-claimer.ts');

/** What one claimer process reported. */
export interface ClaimerResult {
  claim: Claim | null;
  /** Claim latency inside the process, ms. */
  ms: number;
}

/**
 * Starts one process per worker id, waits until all have opened the ledger, releases them
 * together and returns their results in worker order. Fails if any process fails.
 */
export function claimInProcesses(options: {
  file: string;
  datasetId: string;
  workerIds: readonly string[];
  nowMs: number;
  leaseMs: number;
  /** Split (`ledger.split`) instead of claiming, with this minimum per side. */
  split?: { minTasks: number };
}): Promise<ClaimerResult[]> {
  return runInProcesses<ClaimerResult>(
    CLAIMER,
    options.workerIds.map((workerId) => ({
      file: options.file,
      datasetId: options.datasetId,
      workerId,
      nowMs: options.nowMs,
      leaseMs: options.leaseMs,
      ...(options.split ? { split: options.split } : {}),
    })),
    (i) => `${options.split ? 'splitter' : 'claimer'} ${options.workerIds[i]}`,
  );
}
