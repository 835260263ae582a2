/**
 * Pub/Sub emulator helpers for tests: topics and subscriptions with unique names, and a pull
 * that collects everything published before it, ended by a marker rather than a quiet window.
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

/** The attribute that marks `pullAll`'s own control message; its value is unique per call. */
export const MARKER_ATTRIBUTE = 'shardline-test-marker';

/**
 * Receives and acknowledges every message published to `topic` before the call, and returns
 * them in the order the subscription delivered them (streaming pull, the path workers use
 * too).
 *
 * No quiet window decides when everything has arrived: the call publishes a marker message to
 * the topic (a positive control) and reads until the marker comes back, so a slow delivery
 * makes it wait longer, never miss a message, and "nothing was published" is an empty result
 * that cannot pass by timing. It relies on the emulator delivering a subscription's messages
 * in publish order over one stream (test/integration/support/pubsub.test.ts checks that), and
 * on the publisher under test having finished publishing (the functions await their publishes
 * before answering). Messages that arrive after the marker are not acknowledged: the next pull
 * gets them. Fails if the marker has not arrived after `timeoutMs`.
 */
export async function pullAll(
  projectId: string,
  topic: string,
  subscription: string,
  timeoutMs = 60_000,
): Promise<Pulled[]> {
  const client = new PubSub({ projectId });
  const sub = client.subscription(subscription, {
    flowControl: { maxMessages: 1000 },
    streamingOptions: { maxStreams: 1 },
  });
  const marker = `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const out: Pulled[] = [];
  let done: () => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const arrived = new Promise<void>((resolve, reject) => {
    done = resolve;
    fail = reject;
  });
  let seen = false;
  sub.on('message', (m: Message) => {
    const mark = m.attributes[MARKER_ATTRIBUTE];
    if (seen) {
      m.nack(); // published after the marker: left for the next pull
    } else if (mark === marker) {
      m.ack();
      seen = true;
      done();
    } else if (mark !== undefined) {
      m.ack(); // an earlier call's marker, delivered again
    } else {
      m.ack();
      out.push({
        data: m.data,
        attributes: m.attributes,
        messageId: m.id,
        json: m.data.length > 0 ? (JSON.parse(m.data.toString('utf8')) as unknown) : null,
      });
    }
  });
  sub.on('error', (e: unknown) => fail(toError(e)));
  let timer: NodeJS.Timeout | undefined;
  try {
    await client.topic(topic).publishMessage({
      data: Buffer.alloc(0),
      attributes: { [MARKER_ATTRIBUTE]: marker },
    });
    await Promise.race([
      arrived,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `pullAll: the marker published to ${topic} did not arrive on ${subscription} within ${timeoutMs} ms`,
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    await sub.close();
    await client.close();
  }
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
