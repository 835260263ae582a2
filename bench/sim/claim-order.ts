/**
 * The order a simulated worker tries claim candidates in: the same order as
 * core/ledger/candidates.ts `candidateOrder` (preferred first, the rest sorted and shuffled by a
 * generator seeded with the worker id and round), computed on a typed array. A claimer at
 * 1,000 workers and 16,000 shards shuffles up to 16,000 candidates per claim, 16,000 times;
 * `candidateOrder`'s general path (a Set, an array sort, the `avoid` split) takes ~8 ms there on
 * this machine, this one ~0.3 ms. The simulated workers avoid no shard (none fails), so the two
 * agree; test/unit/bench/sim.test.ts checks that they do.
 */
import { fnv1a32 } from '../../core/ledger/candidates';
import { seededRandom } from '../../core/random';

/**
 * `candidateOrder(ids, workerId, preferred, round)` (with no shards to avoid) as an Int32Array.
 * `ids` must be unique.
 */
export function claimOrder(
  ids: ArrayLike<number>,
  workerId: string,
  preferred?: number,
  round = 0,
): Int32Array {
  let hasPreferred = false;
  const rest = new Int32Array(ids.length);
  let n = 0;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id === preferred) hasPreferred = true;
    else rest[n++] = id;
  }
  const sorted = rest.subarray(0, n).sort();
  const random = seededRandom(fnv1a32(`${workerId}#${round}`));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = sorted[i]!;
    sorted[i] = sorted[j]!;
    sorted[j] = t;
  }
  if (!hasPreferred || preferred === undefined) return sorted;
  const out = new Int32Array(n + 1);
  out[0] = preferred;
  out.set(sorted, 1);
  return out;
}
