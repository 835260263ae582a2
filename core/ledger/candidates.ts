/**
 * Which shards a claimer tries, in which order (docs/conventions.md#spread-contention): the
 * preferred shard first, then the others in an order seeded by the worker id, so concurrent
 * claimers start at different shards instead of all racing for the lowest one (the original's
 * ascending scan made double claims likely). Deterministic: the same worker and round always
 * give the same order, which keeps tests reproducible without injecting randomness here.
 */
import { seededRandom } from '../random';

/** FNV-1a, 32 bits: a small, well-spread hash of a string. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * The order in which `workerId` tries `shardIds`: `preferred` first when listed, then the rest
 * shuffled by a generator seeded with the worker id and `round` (a claimer that re-reads the
 * candidates passes a new round and gets a fresh order), the ones in `avoid` last.
 */
export function candidateOrder(
  shardIds: readonly number[],
  workerId: string,
  preferred?: number,
  round = 0,
  avoid: readonly number[] = [],
): number[] {
  const rest = [...new Set(shardIds)].filter((id) => id !== preferred).sort((a, b) => a - b);
  const random = seededRandom(fnv1a32(`${workerId}#${round}`));
  for (let i = rest.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [rest[i], rest[j]] = [rest[j]!, rest[i]!];
  }
  // Shards to avoid keep their shuffled order, after the others.
  const last = new Set(avoid);
  const ordered = [...rest.filter((id) => !last.has(id)), ...rest.filter((id) => last.has(id))];
  return preferred !== undefined && shardIds.includes(preferred)
    ? [preferred, ...ordered]
    : ordered;
}
