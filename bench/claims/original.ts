/**
 * THE BASELINE: a faithful re-creation of the original `shard_manager.py` claim
 * (docs/notes/original-system.md §3.1), for comparison only. It reads `master_metadata.json`, walks
 * the shards in ascending order, reads each `shard_XXX/metadata.json`, and takes the first one
 * whose status is `available` by writing the whole document back with `status: in_use`.
 * Nothing makes read-check-write atomic: no lock, no generation precondition. That is the
 * point of the comparison; never use this to claim anything.
 *
 * One difference, in the baseline's favour: the original's local writes all went through one
 * shared `metadata.json.tmp` (so concurrent writers could also tear each other's files); the
 * BlobStore writes through a unique temporary name and renames, so files are never torn here.
 */
import type { BlobStore } from '../../core/blob/store';
import { MASTER_METADATA } from '../../core/dataset/paths';

interface Doc {
  status?: string;
  assigned_to?: string | null;
  started_at?: string | null;
  shards?: Array<{ shard_id: number; directory: string }>;
}

async function readJson(store: BlobStore, key: string): Promise<Doc | null> {
  try {
    return JSON.parse((await store.readAll(key)).toString('utf8')) as Doc;
  } catch {
    return null; // `_read_json`: any failure prints a warning and returns None
  }
}

/** The original's `claim_shard()`: the shard id this worker believes it claimed, or null. */
export async function originalClaim(
  store: BlobStore,
  workerId: string,
  nowIso: string,
): Promise<number | null> {
  const master = await readJson(store, MASTER_METADATA);
  if (!master?.shards) throw new Error('master_metadata.json missing');
  for (const entry of master.shards) {
    const key = `${entry.directory}/metadata.json`;
    const meta = await readJson(store, key);
    if (!meta || meta.status !== 'available') continue;
    meta.status = 'in_use';
    meta.assigned_to = workerId;
    meta.started_at = nowIso.replace('Z', ''); // naive ISO, as datetime.utcnow().isoformat()
    await store.writeAll(key, JSON.stringify(meta, null, 2));
    return entry.shard_id;
  }
  return null;
}
