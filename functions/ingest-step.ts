/**
 * `ingestStep`: one step of a fanned-out ingest, from the `shardline-ingest` topic.
 */
import type { CloudEvent } from '@google-cloud/functions-framework';

import type { IngestOutcome } from '../core/ingest/ingest';
import { handleIngestStep } from '../core/ingest/fanout';
import { deps } from './deps';
import { messageDataOf } from './pubsub';

/** The entry point. */
export async function ingestStep(ce: CloudEvent<unknown>): Promise<IngestOutcome> {
  const d = await deps();
  const msg = messageDataOf(ce);
  if (!msg.ok) {
    d.log.error('ingest step dropped', { event_id: ce.id, reason: msg.reason });
    return { kind: 'invalid', reason: msg.reason };
  }
  return handleIngestStep(msg.data, {
    ...d.ingest,
    log: d.log.child({ message_id: msg.messageId }),
  });
}
