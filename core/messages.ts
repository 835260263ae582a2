/**
 * Message contracts: every Pub/Sub message shardline publishes or receives, with a decode
 * function for each inbound edge (docs/conventions.md#message-shapes-in-one-module).
 *
 * A message's data is one JSON object with a `type` and a `version`; its attributes repeat
 * `type`, `dataset_id` and `shard_id` so subscriptions can filter and people can read them in
 * the console. Decoding never throws for bad input: it returns an error to log, so a malformed
 * message is acknowledged (or dead-lettered) instead of being retried forever.
 */
import { z } from 'zod';

/** Topic names, overridable per deployment (see infra/). */
export const DEFAULT_TOPICS = {
  /** Doorbells: `shard.available`. Workers pull it. */
  work: 'shardline-work',
  /** Outcomes: `shard.completed`, `shard.failed`. The `progress` function reads it. */
  events: 'shardline-events',
  /** Cloud Scheduler's tick for the `reap` function. */
  tick: 'shardline-tick',
  /** Steps of a large ingest, fanned out over invocations of `ingestStep`. */
  ingest: 'shardline-ingest',
} as const;

/** Topic names in use. */
export type Topics = { readonly [K in keyof typeof DEFAULT_TOPICS]: string };

/** The version of the message formats below. */
export const MESSAGE_VERSION = 1;

const base = { version: z.literal(MESSAGE_VERSION) };
const datasetId = z.string().min(1).max(63);
const shardId = z.number().int().nonnegative();
const isoTime = z.string().min(1);

/** A doorbell: shard `shard_id` of dataset `dataset_id` can be claimed. A hint, never a lease. */
export const ShardAvailableSchema = z.object({
  type: z.literal('shard.available'),
  ...base,
  dataset_id: datasetId,
  shard_id: shardId,
  /** Where the dataset lives (`gs://bucket/datasets/ID`). */
  dataset_uri: z.string().min(1),
  /** Why the bell rang. */
  reason: z.enum(['ingest', 'reap', 'release', 'retry', 'reset']),
  published_at: isoTime,
});
/** A doorbell. */
export type ShardAvailable = z.infer<typeof ShardAvailableSchema>;

/** A shard was completed by its holder. */
export const ShardCompletedSchema = z.object({
  type: z.literal('shard.completed'),
  ...base,
  dataset_id: datasetId,
  shard_id: shardId,
  worker_id: z.string().min(1),
  epoch: z.number().int().positive(),
  /** The shard's `_MANIFEST.json`. */
  manifest_uri: z.string().min(1),
  parts: z.number().int().nonnegative(),
  samples: z.number().int().nonnegative(),
  completed_at: isoTime,
});
/** A shard was completed. */
export type ShardCompleted = z.infer<typeof ShardCompletedSchema>;

/** A holder failed a shard (it goes back to `available`, or to `failed` when `final`). */
export const ShardFailedSchema = z.object({
  type: z.literal('shard.failed'),
  ...base,
  dataset_id: datasetId,
  shard_id: shardId,
  worker_id: z.string().min(1),
  epoch: z.number().int().positive(),
  reason: z.string(),
  attempts: z.number().int().nonnegative(),
  /** True when max attempts was reached: the shard is `failed`. */
  final: z.boolean(),
  failed_at: isoTime,
});
/** A shard failed. */
export type ShardFailed = z.infer<typeof ShardFailedSchema>;

/** One step of a fanned-out ingest (see core/ingest/). */
export const IngestStepSchema = z.object({
  type: z.literal('ingest.step'),
  ...base,
  ingest_id: z.string().min(1),
  step: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('scan'), range: z.number().int().nonnegative() }),
    z.object({ kind: z.literal('write'), shard: z.number().int().nonnegative() }),
    z.object({ kind: z.literal('finalize') }),
  ]),
});
/** One step of a fanned-out ingest. */
export type IngestStep = z.infer<typeof IngestStepSchema>;

/** Everything shardline publishes. */
export type Message = ShardAvailable | ShardCompleted | ShardFailed | IngestStep;

/** Messages on the events topic. */
export const EventMessageSchema = z.discriminatedUnion('type', [
  ShardCompletedSchema,
  ShardFailedSchema,
]);
/** Messages on the events topic. */
export type EventMessage = z.infer<typeof EventMessageSchema>;

/** The result of decoding an inbound message. */
export type Decoded<T> = { ok: true; message: T } | { ok: false; error: string };

/**
 * Decodes message data (bytes or already-parsed JSON) against a schema. Never throws.
 */
export function decodeMessage<T>(schema: z.ZodType<T>, data: unknown): Decoded<T> {
  let value: unknown = data;
  if (data instanceof Uint8Array || typeof data === 'string') {
    const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
    try {
      value = JSON.parse(text);
    } catch {
      return { ok: false, error: `message data is not JSON (${text.length} bytes)` };
    }
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return { ok: true, message: parsed.data };
  const issue = parsed.error.issues[0];
  const at = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
  return { ok: false, error: `invalid message${at}: ${issue?.message ?? 'unknown problem'}` };
}

/** The data and attributes to publish for a message. */
export function encodeMessage(message: Message): {
  data: Buffer;
  attributes: Record<string, string>;
} {
  const attributes: Record<string, string> = { type: message.type };
  if ('dataset_id' in message) attributes.dataset_id = message.dataset_id;
  if ('shard_id' in message) attributes.shard_id = String(message.shard_id);
  return { data: Buffer.from(JSON.stringify(message)), attributes };
}
