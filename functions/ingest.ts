/**
 * `ingest`: a `google.cloud.storage.object.v1.finalized` event for `incoming/NAME.jsonl[.gz]`
 * becomes a dataset (core/ingest/ingest.ts). Deployed with retry on failure: it throws only
 * when a retry can help.
 */
import type { CloudEvent } from '@google-cloud/functions-framework';

import { handleObjectFinalized } from '../core/ingest/admission';
import type { IngestOutcome } from '../core/ingest/ingest';
import { deps } from './deps';

/** The CloudEvent type this function handles. */
export const FINALIZED = 'google.cloud.storage.object.v1.finalized';

/** The entry point. */
export async function ingest(ce: CloudEvent<unknown>): Promise<IngestOutcome> {
  const d = await deps();
  if (ce.type !== FINALIZED) {
    const reason = ce.type
      ? `unexpected event type ${ce.type}`
      : 'an event without a type (not a CloudEvent?)';
    d.log.warn('event ignored', { event_id: ce.id, reason });
    return { kind: 'invalid', reason };
  }
  return handleObjectFinalized(ce.data, ce.id ?? '', d.ingest);
}
