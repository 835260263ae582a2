/**
 * `reap`: the scheduler tick (`shardline-tick`). Frees shards whose lease expired and rings
 * their doorbells again; drives stalled ingests on (core/reap/tick.ts).
 */
import type { CloudEvent } from '@google-cloud/functions-framework';

import { redriveStalled } from '../core/ingest/fanout';
import type { ReapResult } from '../core/reap/tick';
import { reapTick } from '../core/reap/tick';
import { deps } from './deps';

/** The entry point. The tick's payload is not used. */
export async function reap(ce: CloudEvent<unknown>): Promise<ReapResult> {
  const d = await deps();
  const log = d.log.child({ event_id: ce.id });
  const result = await reapTick({
    ledger: d.ledger,
    publisher: d.publisher,
    topics: d.config.topics,
    clock: d.clock,
    log,
    redriveIngests: async () => {
      const { staleMs, maxAttempts } = d.config.ingest;
      const stalled = await d.ingest.records.takeOverStalled(staleMs, maxAttempts);
      return redriveStalled({ ...d.ingest, log }, stalled);
    },
  });
  if (result.freed + result.failed + result.ingestsRedriven > 0)
    log.notice('reaped', { ...result });
  return result;
}
