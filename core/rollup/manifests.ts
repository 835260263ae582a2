/**
 * The two manifest formats: `shard_XXX/_MANIFEST.json`, written by the worker that completes a
 * shard (worker/manifest.ts), and the dataset's `_MANIFEST.json` beside them, written once
 * every shard is completed (core/rollup/progress.ts). docs/architecture.md, "Outputs".
 */
import { encodeJson } from '../dataset/metadata';
import { shardDirName } from '../dataset/paths';
import type { LayerStats } from '../layer-stats';

/** The dataset manifest's file name (the shards' are `shard_XXX/_MANIFEST.json`). */
export const MANIFEST_FILE = '_MANIFEST.json';

/**
 * What both manifests say about the run that wrote the parts. In the dataset manifest,
 * `fingerprint` is '' when the shards disagree (`shardline verify` says which).
 */
export interface RunFacts {
  /** The run fingerprint every part carries (see `runFingerprint` in the part writer). */
  fingerprint: string;
  /** The model as the worker named it. */
  model: string;
  layers: number[];
  dtype: string;
  /** `all`, `last`, `answer` or a list (`work --positions`). */
  positions: string;
  hidden_size: number;
}

/** The dataset manifest's format version. */
export const DATASET_MANIFEST_VERSION = 2;

/** `OUTPUT/_MANIFEST.json`: the dataset's outputs, complete. */
export interface DatasetManifest extends RunFacts {
  format: 'shardline.dataset-manifest';
  format_version: typeof DATASET_MANIFEST_VERSION;
  dataset_id: string;
  dataset_uri: string;
  /** When the last shard completed. */
  completed_at: string;
  num_shards: number;
  total_tasks: number;
  parts: number;
  samples: number;
  tokens: number;
  rows: number;
  bytes: number;
  /** Per-layer statistics of every stored row, merged over the shards in shard order. */
  stats: Record<string, LayerStats>;
  shards: Array<{
    shard_id: number;
    /** The shard manifest, relative to this file. */
    manifest: string;
    parts: number;
    samples: number;
    rows: number;
    bytes: number;
    worker_id: string | null;
    completed_at: string | null;
  }>;
}

/** The shard manifest's format version. */
export const SHARD_MANIFEST_VERSION = 2;

/** One part in a shard manifest (the parts of every work unit, in task order). */
export interface ManifestPart {
  /** The work unit that wrote it; absent for unit 0 (a shard never split lists no other). */
  unit?: number;
  /** Its index within its unit. */
  part_index: number;
  name: string;
  /** File names relative to the shard's folder, with CRC32C (Cloud Storage's base64 form). */
  files: Record<string, { bytes: number; crc32c: string }>;
  first_task_index: number;
  last_task_index: number;
  samples: number;
  tokens: number;
  /** Rows stored (fewer than tokens with `--positions`). */
  rows: number;
  skipped: number;
  worker_id: string;
  epoch: number;
  committed_at: string;
}

/** `shard_XXX/_MANIFEST.json`. */
export interface ShardManifest extends RunFacts {
  format: 'shardline.shard-manifest';
  format_version: typeof SHARD_MANIFEST_VERSION;
  dataset_id: string;
  shard_id: number;
  first_task_index: number;
  total_tasks: number;
  /** The claim that completed the shard (the last of its work units to complete). */
  worker_id: string;
  epoch: number;
  parts: ManifestPart[];
  samples: number;
  tokens: number;
  rows: number;
  /** Samples (or whole tasks) skipped, with reasons in each part's metadata. */
  skipped: number;
  bytes: number;
  /** Per-layer statistics of every stored row, merged over the parts in order. */
  stats: Record<string, LayerStats>;
}

/** The key of a shard's manifest in the output store. */
export function shardManifestKey(shardId: number, prefix = ''): string {
  return `${prefix ? `${prefix}/` : ''}${shardDirName(shardId)}/${MANIFEST_FILE}`;
}

/** Serialises a manifest (deterministic: same parts, same bytes). */
export function encodeManifest(m: ShardManifest | DatasetManifest): string {
  return encodeJson(m);
}
