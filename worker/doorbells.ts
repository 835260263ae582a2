/**
 * The worker's half of the `Wakeup` port: waiting for a doorbell (`shard.available`) on a
 * Pub/Sub subscription. A doorbell is a hint, never a lease: the worker claims in the ledger
 * (the message's shard first) and then acknowledges the message at once.
 *
 * The subscription is open only while the worker waits, with flow control of one message, and
 * closed as soon as a message arrives: a busy worker holds no doorbells (unacknowledged
 * messages go back to the others), and the client's lease extension covers the short time
 * between receiving a message and acknowledging it.
 */
import type { Message, PubSub, Subscription } from '@google-cloud/pubsub';

import { toError } from '../core/errors';
import type { Logger } from '../core/log';
import type { ShardAvailable } from '../core/messages';
import { ShardAvailableSchema, decodeMessage } from '../core/messages';

/** A received doorbell; call `done` once the claim attempt is over. */
export interface ReceivedDoorbell {
  bell: ShardAvailable;
  done(): void;
}

/** Something that can wait for doorbells (Pub/Sub here; tests may fake it). */
export interface DoorbellSource {
  /** The next doorbell, or null after `timeoutMs` or when `signal` fires. */
  wait(timeoutMs: number, signal: AbortSignal): Promise<ReceivedDoorbell | null>;
  close(): Promise<void>;
}

/** Doorbells from a Pub/Sub subscription. */
export class PubSubDoorbells implements DoorbellSource {
  constructor(
    private readonly pubsub: PubSub,
    private readonly subscription: string,
    private readonly log: Logger,
  ) {}

  async wait(timeoutMs: number, signal: AbortSignal): Promise<ReceivedDoorbell | null> {
    if (signal.aborted) return null;
    const sub: Subscription = this.pubsub.subscription(this.subscription, {
      flowControl: { maxMessages: 1, allowExcessMessages: false },
    });
    const close = async (): Promise<void> => {
      // Closing hands back whatever else the stream had buffered, so other workers get it.
      await sub
        .close()
        .catch((e: unknown) => this.log.warn('closing the subscription failed', { error: e }));
    };
    let onAbort: (() => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    const received = await new Promise<ReceivedDoorbell | null>((resolve, reject) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
      onAbort = () => resolve(null);
      signal.addEventListener('abort', onAbort, { once: true });
      sub.on('error', (e: unknown) => reject(toError(e)));
      sub.on('message', (m: Message) => {
        const decoded = decodeMessage(ShardAvailableSchema, m.data);
        if (!decoded.ok) {
          // Never retried forever: a malformed doorbell is acknowledged and logged.
          this.log.error('malformed doorbell dropped', { reason: decoded.error, message_id: m.id });
          m.ack();
          return;
        }
        // Held (flow control: one message) until the claim attempt is over, then acknowledged.
        let finished = false;
        resolve({
          bell: decoded.message,
          done: () => {
            if (finished) return;
            finished = true;
            m.ack();
            void close();
          },
        });
      });
    }).finally(() => {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    });
    if (!received) await close();
    return received;
  }

  async close(): Promise<void> {
    await this.pubsub.close();
  }
}
