/**
 * Ringing doorbells: one `shard.available` message per shard that can be claimed.
 */
import type { Clock } from '../clock';
import { isoTime } from '../clock';
import type { ShardAvailable } from '../messages';
import { MESSAGE_VERSION } from '../messages';
import type { Publisher } from './publisher';

/** Publishes a doorbell for each shard; resolves when all were accepted. */
export async function ringDoorbells(
  publisher: Publisher,
  topic: string,
  clock: Clock,
  shards: ReadonlyArray<{ dataset_id: string; shard_id: number; dataset_uri: string }>,
  reason: ShardAvailable['reason'],
): Promise<void> {
  const at = isoTime(clock.nowMs());
  await Promise.all(
    shards.map((s) =>
      publisher.publish(topic, {
        type: 'shard.available',
        version: MESSAGE_VERSION,
        dataset_id: s.dataset_id,
        shard_id: s.shard_id,
        dataset_uri: s.dataset_uri,
        reason,
        published_at: at,
      }),
    ),
  );
}
