/**
 * The shard's `_MANIFEST.json`: its committed parts, their files, counts and checksums, the
 * run's fingerprint and the shard's per-layer statistics, written last. Built from the
 * ledger's committed parts (the truth about what belongs to the output) after checking that
 * every part's files exist with the recorded sizes and the one fingerprint, so a shard is
 * never completed over missing, half-written or foreign outputs.
 */
import type { BlobStore } from '../core/blob/store';
import { shardDirName } from '../core/dataset/paths';
import { ShardlineError } from '../core/errors';
import type { LayerStats } from '../core/layer-stats';
import { mergeStats } from '../core/layer-stats';
import type { PartRecord } from '../core/ledger/ledger';
import { parseSafetensorsHeader } from '../core/safetensors';
import type { SafetensorsFile } from '../core/safetensors';
import { SHARD_MANIFEST_VERSION } from '../core/rollup/manifests';
import type { ManifestPart, ShardManifest } from '../core/rollup/manifests';
import { collect } from '../core/split/ranges';

/** A part's safetensors header (tensors, offsets, metadata); only the header is read. */
export async function partHeader(store: BlobStore, key: string): Promise<SafetensorsFile> {
  const head = await collect(store.read(key, { start: 0, end: 8 }));
  const length = head.length === 8 ? Number(head.readBigUInt64LE(0)) : -1;
  if (!Number.isSafeInteger(length) || length < 2 || length > 100 << 20)
    throw new ShardlineError('CORRUPT', `${store.uriOf(key)} has no valid safetensors header`);
  const bytes = await collect(store.read(key, { start: 0, end: 8 + length }));
  try {
    return parseSafetensorsHeader(bytes);
  } catch (e: unknown) {
    throw new ShardlineError('CORRUPT', `${store.uriOf(key)}: ${(e as Error).message}`);
  }
}

/** The `__metadata__` of a part's safetensors file (its header only is read). */
export async function partMetadata(store: BlobStore, key: string): Promise<Record<string, string>> {
  return (await partHeader(store, key)).metadata;
}

/**
 * A part's per-layer statistics (the `stats.resid_post.L.*` tensors, which lie together before
 * the activations: one ranged read), keyed `resid_post.L`.
 */
export async function partStats(
  store: BlobStore,
  key: string,
  header: SafetensorsFile,
): Promise<Record<string, LayerStats>> {
  const entries = [...header.tensors].filter(([name]) => name.startsWith('stats.'));
  if (entries.length === 0) return {};
  const begin = Math.min(...entries.map(([, t]) => t.data_offsets[0]));
  const end = Math.max(...entries.map(([, t]) => t.data_offsets[1]));
  const bytes = await collect(
    store.read(key, { start: header.dataStart + begin, end: header.dataStart + end }),
  );
  if (bytes.length !== end - begin)
    throw new ShardlineError('CORRUPT', `${store.uriOf(key)} ends inside its statistics`);
  const f64 = (name: string): number[] => {
    const t = header.tensors.get(name);
    if (t?.dtype !== 'F64')
      throw new ShardlineError('CORRUPT', `${store.uriOf(key)} has no F64 tensor ${name}`);
    const out: number[] = [];
    for (let at = t.data_offsets[0]; at < t.data_offsets[1]; at += 8)
      out.push(bytes.readDoubleLE(at - begin));
    return out;
  };
  const stats: Record<string, LayerStats> = {};
  for (const [name] of entries) {
    const m = /^stats\.(.+)\.mean$/.exec(name);
    if (!m) continue;
    const layer = m[1]!;
    const [count = 0, normSum = 0] = f64(`stats.${layer}.count_norm`);
    stats[layer] = {
      count,
      mean: f64(name),
      m2: f64(`stats.${layer}.m2`),
      norm_sum: normSum,
    };
  }
  return stats;
}

/**
 * Builds the manifest from the committed parts (of every work unit, in task order: the
 * ledger's `listShardParts`), verifying each part's two files in `store` (present, recorded
 * size, sample count in the header) and that the parts cover the shard's tasks end to end, in
 * order. Fails with `CORRUPT` otherwise.
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
  // Every task once, in order: each part starts where the one before it ended.
  let at = { task: args.firstTaskIndex, sample: 0 };
  for (const p of args.parts) {
    if (p.first_task_index !== at.task || p.first_sample !== at.sample)
      throw new ShardlineError(
        'CORRUPT',
        `shard ${args.shardId}: part ${p.name} starts at task ${p.first_task_index} sample ${p.first_sample}, the parts before it end at task ${at.task} sample ${at.sample}`,
      );
    at = { task: p.next_task_index, sample: p.next_sample };
  }
  if (at.task !== args.firstTaskIndex + args.totalTasks || at.sample !== 0)
    throw new ShardlineError(
      'CORRUPT',
      `shard ${args.shardId}: its committed parts end at task ${at.task} sample ${at.sample}, not at its end (task ${args.firstTaskIndex + args.totalTasks})`,
    );
  const parts: ManifestPart[] = [];
  const partStatsList: Array<Record<string, LayerStats>> = [];
  let first: Record<string, string> | null = null;
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
    const key = `${dir}/${p.name}.safetensors`;
    const header = await partHeader(store, key);
    const meta = header.metadata;
    first ??= meta;
    if (meta.fingerprint !== first.fingerprint)
      throw new ShardlineError(
        'CORRUPT',
        `part ${p.name} was written by another run (fingerprint ${meta.fingerprint ?? 'none'}, ` +
          `the shard's first part has ${first.fingerprint ?? 'none'})`,
      );
    partStatsList.push(await partStats(store, key, header));
    const samples = Number(meta.n_samples);
    if (samples !== p.samples)
      throw new ShardlineError(
        'CORRUPT',
        `part ${p.name} holds ${meta.n_samples} samples, the ledger recorded ${p.samples}`,
      );
    parts.push({
      ...(p.unit ? { unit: p.unit } : {}),
      part_index: p.part_index,
      name: p.name,
      files,
      first_task_index: p.first_task_index,
      last_task_index: p.last_task_index,
      samples,
      tokens: Number(meta.n_tokens),
      rows: Number(meta.n_rows ?? meta.n_tokens),
      skipped: (JSON.parse(meta.skipped ?? '[]') as unknown[]).length,
      worker_id: p.worker_id,
      epoch: p.epoch,
      committed_at: p.committed_at,
    });
  }
  const sum = (k: 'samples' | 'tokens' | 'rows' | 'skipped'): number =>
    parts.reduce((n, p) => n + p[k], 0);
  const run = first ?? {};
  return {
    format: 'shardline.shard-manifest',
    format_version: SHARD_MANIFEST_VERSION,
    dataset_id: args.datasetId,
    shard_id: args.shardId,
    first_task_index: args.firstTaskIndex,
    total_tasks: args.totalTasks,
    worker_id: args.workerId,
    epoch: args.epoch,
    fingerprint: run.fingerprint ?? '',
    model: run.model ?? '',
    layers: JSON.parse(run.layers ?? '[]') as number[],
    dtype: run.dtype ?? '',
    positions: run.positions ?? '',
    hidden_size: Number(run.hidden_size ?? 0),
    parts,
    samples: sum('samples'),
    tokens: sum('tokens'),
    rows: sum('rows'),
    skipped: sum('skipped'),
    bytes: parts.reduce((n, p) => n + Object.values(p.files).reduce((m, f) => m + f.bytes, 0), 0),
    stats: mergeStats(partStatsList),
  };
}
