/**
 * What the ingest function is told: a Cloud Storage object was finalized. Decoding, the
 * checks that decide whether shardline handles it, and the names derived from it.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

import { checkKey } from '../blob/store';
import { slugDatasetId } from '../dataset/id';

/** The fields of a `google.cloud.storage.object.v1.finalized` event's data that we use. */
export const StorageObjectSchema = z.object({
  bucket: z.string().min(3).max(222),
  name: z.string().min(1).max(1024),
  generation: z
    .union([z.string().regex(/^\d+$/), z.number().int().nonnegative()])
    .transform(String),
  size: z.union([z.string().regex(/^\d+$/), z.number().int().nonnegative()]).transform(Number),
  contentType: z.string().optional(),
  /** Custom metadata (`x-goog-meta-*` at upload). */
  metadata: z.record(z.string(), z.string()).optional(),
});
/** A finalized object. */
export type StorageObject = z.infer<typeof StorageObjectSchema>;

/** Custom-metadata keys a user may set at upload to choose the split's settings. */
export const METADATA_NUM_SHARDS = 'shardline-num-shards';
/** Custom-metadata key for the chunk size in MiB. */
export const METADATA_CHUNK_SIZE_MB = 'shardline-chunk-size-mb';
/** Custom-metadata key for the shards' attempt budget (`max_attempts` in the ledger). */
export const METADATA_MAX_ATTEMPTS = 'shardline-max-attempts';

/** Whether an object is an input, and why not. */
export type ObjectVerdict = { accept: true } | { accept: false; reason: string };

/** Inputs live under `incomingPrefix` and end in `.jsonl` or `.jsonl.gz`. */
export function classifyObject(obj: StorageObject, incomingPrefix: string): ObjectVerdict {
  if (!obj.name.startsWith(incomingPrefix)) {
    return { accept: false, reason: `outside the ${incomingPrefix} prefix` };
  }
  if (obj.name.endsWith('/')) return { accept: false, reason: 'a folder placeholder, not a file' };
  if (!/\.jsonl(\.gz)?$/i.test(obj.name)) {
    return { accept: false, reason: 'not a .jsonl or .jsonl.gz file' };
  }
  return { accept: true };
}

/**
 * Where an input object is read from: a store rooted at its folder, and its file name as the
 * key. Object names are not paths: `incoming/../x.jsonl` and `incoming//x.jsonl` each name one
 * object, which a store rooted at the bucket would refuse as a key. Rooting the store at the
 * folder reads exactly that object (the prefix is joined, never resolved); the file name must
 * still be a valid key (no backslash or control character: `inputNameProblem`).
 */
export function inputPlaceOf(name: string): { prefix: string; key: string } {
  const slash = name.lastIndexOf('/');
  return { prefix: slash === -1 ? '' : name.slice(0, slash), key: name.slice(slash + 1) };
}

/** Why an accepted object's name cannot be read, or null when it can. */
export function inputNameProblem(name: string): string | null {
  try {
    checkKey(inputPlaceOf(name).key);
    return null;
  } catch {
    return `the file name of ${JSON.stringify(name)} has a backslash or a control character, which shardline does not read; rename the object`;
  }
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** The idempotency key of one upload: (bucket, object, generation). */
export function ingestIdOf(obj: Pick<StorageObject, 'bucket' | 'name' | 'generation'>): string {
  return sha256(`${obj.bucket}\n${obj.name}\n${obj.generation}`).slice(0, 32);
}

/** The key of an object name, across its generations (for version numbers). */
export function objectKeyOf(obj: Pick<StorageObject, 'bucket' | 'name'>): string {
  return sha256(`${obj.bucket}\n${obj.name}`).slice(0, 32);
}

/**
 * The dataset id of an upload: the file name, made safe and cut to 40 characters, a hash of
 * the full object name (so `a/b.jsonl` and `a-b.jsonl` differ), and `-vN` from the second
 * upload under the same name on. Never longer than 63 characters, never a path.
 */
export function datasetIdOf(obj: Pick<StorageObject, 'bucket' | 'name'>, version: number): string {
  const file = obj.name.slice(obj.name.lastIndexOf('/') + 1);
  let decoded = file;
  try {
    decoded = decodeURIComponent(file);
  } catch {
    // not percent-encoded
  }
  const base = slugDatasetId(decoded, 40);
  const hash = objectKeyOf(obj).slice(0, 8);
  return `${base}-${hash}${version > 1 ? `-v${version}` : ''}`;
}
