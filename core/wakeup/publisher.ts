/**
 * The publishing half of the `Wakeup` port: doorbells, outcome events and ingest steps go out
 * through it. The Pub/Sub implementation sits beside one that publishes nothing (one machine,
 * no Pub/Sub: local workers poll the SQLite ledger instead).
 */
import type { PubSub, Topic } from '@google-cloud/pubsub';

import type { Message } from '../messages';
import { encodeMessage } from '../messages';

/** Publishes shardline messages to topics by name. */
export interface Publisher {
  /** Publishes one message; resolves with the message id once the service accepted it. */
  publish(topic: string, message: Message): Promise<string>;
  /** Flushes and releases what the publisher holds. */
  close(): Promise<void>;
}

/** Pub/Sub publisher; the client comes from the composition root. */
export class PubSubPublisher implements Publisher {
  private readonly topics = new Map<string, Topic>();

  constructor(private readonly client: PubSub) {}

  publish(topic: string, message: Message): Promise<string> {
    let t = this.topics.get(topic);
    if (!t) {
      // Small batches: doorbells should ring at once, not wait to fill a batch.
      t = this.client.topic(topic, { batching: { maxMessages: 100, maxMilliseconds: 10 } });
      this.topics.set(topic, t);
    }
    const { data, attributes } = encodeMessage(message);
    return t.publishMessage({ data, attributes });
  }

  async close(): Promise<void> {
    await Promise.all([...this.topics.values()].map((t) => t.flush()));
  }
}

/** Publishes nothing (local runs: workers poll the ledger). */
export const nullPublisher: Publisher = {
  publish: () => Promise.resolve(''),
  close: () => Promise.resolve(),
};
