/**
 * Pub/Sub emulator helpers for tests: topics and subscriptions with unique names, and a
 * synchronous pull that collects what was published.
 */
import type { Message } from '@google-cloud/pubsub';
import { PubSub } from '@google-cloud/pubsub';

import { toError } from '../../core/errors';

/** A topic with one subscription, created fresh. */
export async function topicWithSubscription(
  pubsub: PubSub,
  name: string,
): Promise<{ topic: string; subscription: string }> {
  const [topic] = await pubsub.createTopic(name);
  await topic.createSubscription(`${name}-sub`, { ackDeadlineSeconds: 60 });
  return { topic: name, subscription: `${name}-sub` };
}

/** One pulled message. */
export interface Pulled {
  data: Buffer;
  attributes: Record<string, string>;
  messageId: string;
  json: unknown;
}

/**
 * Receives and acknowledges every message available on the subscription: listens until no
 * new message came for `quietMs` (streaming pull, the path workers use too).
 */
export async function pullAll(
  projectId: string,
  subscription: string,
  quietMs = 800,
): Promise<Pulled[]> {
  const client = new PubSub({ projectId });
  const sub = client.subscription(subscription, { flowControl: { maxMessages: 1000 } });
  const out: Pulled[] = [];
  let last = Date.now();
  sub.on('message', (m: Message) => {
    last = Date.now();
    out.push({
      data: m.data,
      attributes: m.attributes,
      messageId: m.id,
      json: m.data.length > 0 ? (JSON.parse(m.data.toString('utf8')) as unknown) : null,
    });
    m.ack();
  });
  let error: unknown;
  sub.on('error', (e: unknown) => (error = e));
  try {
    while (Date.now() - last < quietMs && error === undefined)
      await new Promise((r) => setTimeout(r, 50));
  } finally {
    await sub.close();
    await client.close();
  }
  if (error !== undefined) throw toError(error);
  return out;
}

/** The body of a structured-mode CloudEvent POST for a Pub/Sub message (what Eventarc sends). */
export function pubsubCloudEvent(
  projectId: string,
  topic: string,
  data: Buffer | string,
  id: string,
): Record<string, unknown> {
  return {
    specversion: '1.0',
    type: 'google.cloud.pubsub.topic.v1.messagePublished',
    source: `//pubsub.googleapis.com/projects/${projectId}/topics/${topic}`,
    id,
    time: new Date().toISOString(),
    datacontenttype: 'application/json',
    data: {
      message: {
        data: Buffer.from(data).toString('base64'),
        messageId: id,
        publishTime: new Date().toISOString(),
      },
      subscription: `projects/${projectId}/subscriptions/${topic}-eventarc`,
    },
  };
}

/** The body of a structured-mode CloudEvent POST for a finalized Cloud Storage object. */
export function finalizedCloudEvent(
  object: {
    bucket: string;
    name: string;
    generation: string;
    size: number;
    metadata?: Record<string, string>;
  },
  id: string,
): Record<string, unknown> {
  return {
    specversion: '1.0',
    type: 'google.cloud.storage.object.v1.finalized',
    source: `//storage.googleapis.com/projects/_/buckets/${object.bucket}`,
    subject: `objects/${object.name}`,
    id,
    time: new Date().toISOString(),
    datacontenttype: 'application/json',
    data: {
      kind: 'storage#object',
      bucket: object.bucket,
      name: object.name,
      generation: object.generation,
      size: String(object.size),
      contentType: 'application/x-ndjson',
      ...(object.metadata ? { metadata: object.metadata } : {}),
    },
  };
}
