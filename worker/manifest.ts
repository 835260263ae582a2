/**
 * The shard's `_MANIFEST.json`: its committed parts, their files, counts and checksums, written
 * last. Built from the ledger's committed parts (the truth about what belongs to the output)
 * after checking that every part's files exist with the recorded sizes, so a shard is never
 * completed over missing or half-written outputs.
 */
import type { BlobStore } from '../core/blob/store';
import { encodeJson } from '../core/dataset/metadata';
import { shardDirName } from '../core/dataset/paths';
import { ShardlineError } from '../core/errors';
import type { PartRecord } from '../core/ledger/ledger';
import { MANIFEST_FILE } from '../core/rollup/progress';
import { collect } from '../core/split/ranges';

/** The manifest's format version. */
export const SHARD_MANIFEST_VERSION = 1;

/** One part in the manifest. */
export interface ManifestPart {
  part_index: number;
  name: string;
  /** File names relative to the shard's folder, with CRC32C (Cloud Storage's base64 form). */
  files: Record<string, { bytes: number; crc32c: string }>;
  first_task_index: number;
  last_task_index: number;
  samples: number;
  tokens: number;
  skipped: number;
  worker_id: string;
  epoch: number;
  committed_at: string;
}

/** `shard_XXX/_MANIFEST.json`. */
export interface ShardManifest {
  format: 'shardline.shard-manifest';
  format_version: typeof SHARD_MANIFEST_VERSION;
  dataset_id: string;
  shard_id: number;
  first_task_index: number;
  total_tasks: number;
  /** The claim that completed the shard. */
  worker_id: string;
  epoch: number;
  parts: ManifestPart[];
  samples: number;
  tokens: number;
  /** Samples (or whole tasks) skipped, with reasons in each part's metadata. */
  skipped: number;
  bytes: number;
}

/** The key of a shard's manifest in the output store. */
export function shardManifestKey(shardId: number, prefix = ''): string {
  return `${prefix ? `${prefix}/` : ''}${shardDirName(shardId)}/${MANIFEST_FILE}`;
}

/** The first bytes of a safetensors file: its header's `__metadata__`. */
async function partMetadata(store: BlobStore, key: string): Promise<Record<string, string>> {
  const head = await collect(store.read(key, { start: 0, end: 8 }));
  const length = Number(head.readBigUInt64LE(0));
  if (!Number.isSafeInteger(length) || length > 100 << 20)
    throw new ShardlineError('STORAGE', `${store.uriOf(key)} has no valid safetensors header`);
  const header = JSON.parse(
    (await collect(store.read(key, { start: 8, end: 8 + length }))).toString('utf8'),
  ) as { __metadata__?: Record<string, string> };
  return header.__metadata__ ?? {};
}

/**
 * Builds the manifest from the committed parts, verifying each part's two files in `store`
 * (present, recorded size, sample count in the header). Fails with `STORAGE` otherwise.
 */
export async function buildShardManifest(
  store: BlobStore,
  args: {
    datasetId: string;
    shardId: number;
    firstTaskIndex: number;
    totalTasks: number;
    workerId: string;
    epoch: number;
    parts: readonly PartRecord[];
    prefix?: string;
  },
): Promise<ShardManifest> {
  const dir = `${args.prefix ? `${args.prefix}/` : ''}${shardDirName(args.shardId)}`;
  const parts: ManifestPart[] = [];
  for (const p of args.parts) {
    const files: ManifestPart['files'] = {};
    let bytes = 0;
    for (const [file, crc] of Object.entries(p.checksums)) {
      const info = await store.stat(`${dir}/${file}`);
      if (!info)
        throw new ShardlineError(
          'CORRUPT',
          `committed part ${p.name} is missing ${store.uriOf(`${dir}/${file}`)}`,
        );
      if (info.crc32c !== undefined && info.crc32c !== crc) {
        throw new ShardlineError(
          'CORRUPT',
          `${store.uriOf(`${dir}/${file}`)} has crc32c ${info.crc32c}, the ledger recorded ${crc}`,
        );
      }
      files[file] = { bytes: info.size, crc32c: crc };
      bytes += info.size;
    }
    if (bytes !== p.bytes)
      throw new ShardlineError(
        'CORRUPT',
        `part ${p.name} files hold ${bytes} bytes, the ledger recorded ${p.bytes}`,
      );
    const meta = await partMetadata(store, `${dir}/${p.name}.safetensors`);
    const samples = Number(meta.n_samples);
    if (samples !== p.samples)
      throw new ShardlineError(
        'CORRUPT',
        `part ${p.name} holds ${meta.n_samples} samples, the ledger recorded ${p.samples}`,
      );
    parts.push({
      part_index: p.part_index,
      name: p.name,
      files,
      first_task_index: p.first_task_index,
      last_task_index: p.last_task_index,
      samples,
      tokens: Number(meta.n_tokens),
      skipped: (JSON.parse(meta.skipped ?? '[]') as unknown[]).length,
      worker_id: p.worker_id,
      epoch: p.epoch,
      committed_at: p.committed_at,
    });
  }
  const sum = (k: 'samples' | 'tokens' | 'skipped'): number => parts.reduce((n, p) => n + p[k], 0);
  return {
    format: 'shardline.shard-manifest',
    format_version: SHARD_MANIFEST_VERSION,
    dataset_id: args.datasetId,
    shard_id: args.shardId,
    first_task_index: args.firstTaskIndex,
    total_tasks: args.totalTasks,
    worker_id: args.workerId,
    epoch: args.epoch,
    parts,
    samples: sum('samples'),
    tokens: sum('tokens'),
    skipped: sum('skipped'),
    bytes: parts.reduce((n, p) => n + Object.values(p.files).reduce((m, f) => m + f.bytes, 0), 0),
  };
}

/** Serialises a manifest (deterministic: same parts, same bytes). */
export function encodeManifest(m: ShardManifest): string {
  return encodeJson(m);
}
