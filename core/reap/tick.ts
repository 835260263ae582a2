/**
 * The reaper's tick (Cloud Scheduler, every minute): shards whose lease expired go back to
 * `available` (their doorbell rings again) or to `failed` after max attempts (a final
 * `shard.failed` event is published). Stalled fanned-out ingests are driven on.
 */
import type { Clock } from '../clock';
import { isoTime } from '../clock';
import type { Ledger } from '../ledger/ledger';
import type { Logger } from '../log';
import type { Topics } from '../messages';
import { MESSAGE_VERSION } from '../messages';
import { ringDoorbells } from '../wakeup/doorbell';
import type { Publisher } from '../wakeup/publisher';

/** What the tick needs. */
export interface ReapDeps {
  ledger: Ledger;
  publisher: Publisher;
  topics: Topics;
  clock: Clock;
  log: Logger;
  /** Drives stalled ingests on; returns how many (optional: not every deployment ingests). */
  redriveIngests?: () => Promise<number>;
}

/** What one tick did. */
export interface ReapResult {
  freed: number;
  failed: number;
  ingestsRedriven: number;
}

/** Runs one tick. */
export async function reapTick(deps: ReapDeps): Promise<ReapResult> {
  const reaped = await deps.ledger.reapExpired(deps.clock.nowMs());
  const uris = new Map<string, string>();
  const uriOf = async (datasetId: string): Promise<string> => {
    let uri = uris.get(datasetId);
    if (uri === undefined) {
      uri = (await deps.ledger.getDataset(datasetId))?.dataset_uri ?? '';
      uris.set(datasetId, uri);
    }
    return uri;
  };
  const freed = [];
  let failed = 0;
  for (const r of reaped) {
    deps.log.warn(
      r.status === 'available'
        ? 'lease expired; shard freed'
        : 'lease expired; shard failed for good',
      {
        dataset_id: r.dataset_id,
        shard_id: r.shard_id,
        worker_id: r.worker_id,
        epoch: r.epoch,
        attempts: r.attempts,
      },
    );
    if (r.status === 'available') {
      freed.push({
        dataset_id: r.dataset_id,
        shard_id: r.shard_id,
        dataset_uri: await uriOf(r.dataset_id),
      });
    } else {
      failed++;
      await deps.publisher.publish(deps.topics.events, {
        type: 'shard.failed',
        version: MESSAGE_VERSION,
        dataset_id: r.dataset_id,
        shard_id: r.shard_id,
        worker_id: r.worker_id,
        epoch: Math.max(1, r.epoch),
        reason: r.last_error,
        attempts: r.attempts,
        final: true,
        failed_at: isoTime(deps.clock.nowMs()),
      });
    }
  }
  await ringDoorbells(deps.publisher, deps.topics.work, deps.clock, freed, 'reap');
  const ingestsRedriven = deps.redriveIngests ? await deps.redriveIngests() : 0;
  return { freed: freed.length, failed, ingestsRedriven };
}
