/**
 * The `progress` function's logic: on each `shard.completed` event, look at the dataset in the
 * ledger (a read; no counter document is written per event, so there is no hot document), and
 * when every shard is completed write the dataset's `_MANIFEST.json` beside the shards' outputs.
 *
 * The manifest's content is derived only from the ledger and the shard manifests, read in
 * shard order (its time is the last shard's completion, not "now"; its statistics are merged
 * in shard order, whatever order the shards completed in), and it is written only if absent:
 * duplicate or late events change nothing.
 */
import type { BlobStore } from '../blob/store';
import type { Ledger, LedgerStatus } from '../ledger/ledger';
import type { Logger } from '../log';
import { EventMessageSchema, decodeMessage } from '../messages';
import { encodeJson } from '../dataset/metadata';
import { shardDirName } from '../dataset/paths';
import { ShardlineError } from '../errors';
import { mergeStats } from '../layer-stats';
import { DATASET_MANIFEST_VERSION, MANIFEST_FILE } from './manifests';
import type { DatasetManifest, ShardManifest } from './manifests';

/** What `onShardEvent` did. */
export type ProgressOutcome =
  | { kind: 'invalid'; reason: string }
  | { kind: 'noted'; event: string }
  | { kind: 'in-progress'; completed: number; shards: number }
  | { kind: 'dataset-completed'; manifestUri: string }
  | { kind: 'already-completed'; manifestUri: string };

/** What the roll-up needs. */
export interface ProgressDeps {
  ledger: Ledger;
  /** A store rooted at a `gs://` (or local) folder URI. */
  storeAt: (uri: string) => BlobStore;
  log: Logger;
}

/** The folder holding `shard_XXX/_MANIFEST.json`, from one shard manifest's URI. */
export function outputRootOf(shardManifestUri: string): string {
  const m = /^(.*)\/shard_\d{3,}\/_MANIFEST\.json$/.exec(shardManifestUri);
  if (!m?.[1]) throw new Error(`not a shard manifest URI: ${shardManifestUri}`);
  return m[1];
}

/** The dataset manifest of a fully completed dataset, from the ledger and its shard manifests. */
export function datasetManifestOf(
  status: LedgerStatus,
  outputRoot: string,
  shardManifests: readonly ShardManifest[],
): DatasetManifest {
  const byId = new Map(shardManifests.map((m) => [m.shard_id, m]));
  const shards = status.shards.map((s) => {
    const uri = s.manifest?.uri ?? `${outputRoot}/${shardDirName(s.shard_id)}/${MANIFEST_FILE}`;
    const m = byId.get(s.shard_id);
    return {
      shard_id: s.shard_id,
      manifest: uri.startsWith(`${outputRoot}/`) ? uri.slice(outputRoot.length + 1) : uri,
      parts: s.manifest?.parts ?? s.parts_committed,
      samples: s.manifest?.samples ?? s.samples_committed,
      rows: m?.rows ?? 0,
      bytes: s.manifest?.bytes ?? s.bytes_committed,
      worker_id: s.assigned_to,
      completed_at: s.completed_at,
    };
  });
  const sum = (k: 'parts' | 'samples' | 'rows' | 'bytes'): number =>
    shards.reduce((n, s) => n + s[k], 0);
  const ordered = [...shardManifests].sort((a, b) => a.shard_id - b.shard_id);
  const fingerprints = new Set(ordered.map((m) => m.fingerprint));
  const run = ordered[0];
  return {
    format: 'shardline.dataset-manifest',
    format_version: DATASET_MANIFEST_VERSION,
    dataset_id: status.dataset.dataset_id,
    dataset_uri: status.dataset.dataset_uri,
    completed_at:
      shards
        .map((s) => s.completed_at ?? '')
        .sort()
        .at(-1) ?? '',
    num_shards: shards.length,
    total_tasks: status.dataset.total_tasks,
    fingerprint: fingerprints.size === 1 ? (run?.fingerprint ?? '') : '',
    model: run?.model ?? '',
    layers: run?.layers ?? [],
    dtype: run?.dtype ?? '',
    positions: run?.positions ?? '',
    hidden_size: run?.hidden_size ?? 0,
    parts: sum('parts'),
    samples: sum('samples'),
    tokens: ordered.reduce((n, m) => n + m.tokens, 0),
    rows: sum('rows'),
    bytes: sum('bytes'),
    stats: mergeStats(ordered.map((m) => m.stats)),
    shards,
  };
}

/** Reads every shard's manifest from `output`, in shard order (a few at a time). */
async function readShardManifests(
  output: BlobStore,
  status: LedgerStatus,
): Promise<ShardManifest[]> {
  const ids = status.shards.map((s) => s.shard_id).sort((a, b) => a - b);
  const out: ShardManifest[] = new Array<ShardManifest>(ids.length);
  let next = 0;
  const reader = async (): Promise<void> => {
    while (next < ids.length) {
      const k = next++;
      const key = `${shardDirName(ids[k]!)}/${MANIFEST_FILE}`;
      const bytes = await output.readAll(key).catch((e: unknown) => {
        throw new ShardlineError('CORRUPT', `cannot read ${output.uriOf(key)}`, { cause: e });
      });
      out[k] = JSON.parse(bytes.toString('utf8')) as ShardManifest;
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, ids.length) }, reader));
  return out;
}

/** Handles one message of the events topic. Never throws for a bad message. */
export async function onShardEvent(data: unknown, deps: ProgressDeps): Promise<ProgressOutcome> {
  const decoded = decodeMessage(EventMessageSchema, data);
  if (!decoded.ok) {
    deps.log.error('event dropped', { reason: decoded.error });
    return { kind: 'invalid', reason: decoded.error };
  }
  const event = decoded.message;
  const log = deps.log.child({
    dataset_id: event.dataset_id,
    shard_id: event.shard_id,
    worker_id: event.worker_id,
  });
  if (event.type === 'shard.failed') {
    log[event.final ? 'error' : 'warn'](
      event.final ? 'shard failed for good' : 'shard failed; it will be retried',
      {
        reason: event.reason,
        attempts: event.attempts,
      },
    );
    return { kind: 'noted', event: event.type };
  }
  const root = outputRootOf(event.manifest_uri);
  return rollUpDataset(deps.ledger, event.dataset_id, deps.storeAt(root), log);
}

/** What `rollUpDataset` found. */
export type RollUpOutcome = Extract<
  ProgressOutcome,
  { kind: 'in-progress' | 'dataset-completed' | 'already-completed' }
>;

/**
 * Writes the dataset manifest into `output` (the folder of `shard_XXX/`) when every shard is
 * completed; otherwise does nothing. Write-once and derived only from the ledger, so every
 * caller may try it: the `progress` function on each completion event, and workers after they
 * complete a shard or find nothing left to claim (which covers a completion event lost with a
 * worker killed right after completing).
 */
export async function rollUpDataset(
  ledger: Ledger,
  datasetId: string,
  output: BlobStore,
  log: Logger,
): Promise<RollUpOutcome> {
  const status = await ledger.status(datasetId);
  const { completed, shards } = status.totals;
  if (completed < shards) {
    log.info('shard completed', { completed, shards });
    return { kind: 'in-progress', completed, shards };
  }
  const manifestUri = output.uriOf(MANIFEST_FILE);
  if (await output.stat(MANIFEST_FILE)) {
    log.debug('dataset already completed; nothing to do', { manifest: manifestUri });
    return { kind: 'already-completed', manifestUri };
  }
  const root = manifestUri.slice(0, -MANIFEST_FILE.length - 1);
  const shardManifests = await readShardManifests(output, status);
  const manifest = datasetManifestOf(status, root, shardManifests);
  if (!manifest.fingerprint)
    log.error('the shards were written by different runs; run `shardline verify`', {
      fingerprints: [...new Set(shardManifests.map((m) => m.fingerprint))],
    });
  try {
    await output.writeAll(MANIFEST_FILE, encodeJson(manifest), {
      contentType: 'application/json',
      createOnly: true,
    });
  } catch (e: unknown) {
    if ((e as { code?: unknown }).code === 'ALREADY_EXISTS')
      return { kind: 'already-completed', manifestUri };
    throw e;
  }
  log.notice('dataset completed: every shard done', {
    manifest: manifestUri,
    samples: manifest.samples,
    parts: manifest.parts,
  });
  return { kind: 'dataset-completed', manifestUri };
}
