/**
 * Names inside a dataset, kept byte-compatible with the seed layout:
 * `master_metadata.json`, `shard_000/metadata.json`, `shard_000/chunk_0000.jsonl`.
 */

/** The dataset's top-level metadata, written last: its presence marks the dataset complete. */
export const MASTER_METADATA = 'master_metadata.json';
/** Lines that were not a JSON object, with line number and reason. */
export const REJECTED_FILE = 'rejected.jsonl';
/** Written first and removed last by `create`; a dataset folder holding it is being created. */
export const CREATING_MARKER = '_CREATING.json';
/** A shard's metadata file name inside its folder. */
export const SHARD_METADATA = 'metadata.json';
/** The local SQLite ledger file beside a local dataset. */
export const LOCAL_LEDGER_FILE = 'ledger.sqlite';
/** The default output folder inside a dataset (`work` without `--output_dir`). */
export const ACTIVATIONS_DIR = 'activations';
/** The version of the dataset format this code writes and reads. */
export const FORMAT_VERSION = 1;

/** `shard_000` for shard 0 (three digits, more when there are over 1000 shards). */
export function shardDirName(shardId: number): string {
  return `shard_${String(shardId).padStart(3, '0')}`;
}

/** `chunk_0000.jsonl` for chunk 0 of a shard. */
export function chunkFileName(chunkId: number): string {
  return `chunk_${String(chunkId).padStart(4, '0')}.jsonl`;
}

/** `shard_000/metadata.json`. */
export function shardMetadataKey(shardId: number): string {
  return `${shardDirName(shardId)}/${SHARD_METADATA}`;
}

/** `shard_000/chunk_0000.jsonl`. */
export function chunkKey(shardId: number, chunkId: number): string {
  return `${shardDirName(shardId)}/${chunkFileName(chunkId)}`;
}

/** True for names `create` writes at the top of a dataset folder (used to clean up a partial one). */
export function isDatasetEntry(name: string): boolean {
  return (
    name === MASTER_METADATA ||
    name === REJECTED_FILE ||
    name === CREATING_MARKER ||
    /^shard_\d{3,}$/.test(name)
  );
}

/** Shard ids are printed with three digits in folder names and messages. */
export function formatShardId(shardId: number): string {
  return String(shardId).padStart(3, '0');
}
