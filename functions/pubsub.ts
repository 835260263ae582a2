/**
 * The Pub/Sub envelope of a CloudEvent (`google.cloud.pubsub.topic.v1.messagePublished`):
 * the message's data arrives base64-encoded in `data.message.data`.
 */
import type { CloudEvent } from '@google-cloud/functions-framework';

/** The published message's data bytes, or an error saying why there are none. */
export function messageDataOf(
  ce: CloudEvent<unknown>,
): { ok: true; data: Buffer; messageId: string } | { ok: false; reason: string } {
  const message = (ce.data as { message?: { data?: unknown; messageId?: unknown } } | undefined)
    ?.message;
  if (!message || typeof message !== 'object')
    return { ok: false, reason: 'not a Pub/Sub message event (no data.message)' };
  const messageId = typeof message.messageId === 'string' ? message.messageId : (ce.id ?? '');
  if (message.data === undefined) return { ok: true, data: Buffer.alloc(0), messageId };
  if (typeof message.data !== 'string')
    return { ok: false, reason: 'data.message.data is not base64 text' };
  return { ok: true, data: Buffer.from(message.data, 'base64'), messageId };
}
