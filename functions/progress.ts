/**
 * `progress`: `shard.completed` / `shard.failed` events (`shardline-events`). Writes the
 * dataset manifest when every shard is done (core/rollup/progress.ts).
 */
import type { CloudEvent } from '@google-cloud/functions-framework';

import type { ProgressOutcome } from '../core/rollup/progress';
import { onShardEvent } from '../core/rollup/progress';
import { deps } from './deps';
import { messageDataOf } from './pubsub';

/** The entry point. */
export async function progress(ce: CloudEvent<unknown>): Promise<ProgressOutcome> {
  const d = await deps();
  const msg = messageDataOf(ce);
  if (!msg.ok) {
    d.log.error('event dropped', { event_id: ce.id, reason: msg.reason });
    return { kind: 'invalid', reason: msg.reason };
  }
  return onShardEvent(msg.data, {
    ledger: d.ledger,
    storeAt: d.storeAt,
    log: d.log.child({ message_id: msg.messageId }),
  });
}
