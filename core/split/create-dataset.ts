/**
 * `create`: turns one JSONL of tasks into a dataset (the seed layout), safely.
 *
 * Order of events, and why:
 *  1. Look at the output first. A finished dataset there is compared with what this run would
 *     make: identical -> nothing is written ("unchanged"); different -> refused. A folder with
 *     a `_CREATING.json` marker but no `master_metadata.json` is a create that died: its files
 *     are removed and the work starts again (unless the marker is fresh: another create is
 *     running). A folder holding anything else is refused; nothing of the user's is deleted.
 *  2. Write the marker, then phase 1 (scan: validate and count, `rejected.jsonl`), phase 2
 *     (copy into chunks, shard metadata), and `master_metadata.json` last. Until the master
 *     exists the dataset is incomplete: never registered, never claimable.
 *  3. Remove the marker.
 */
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';

import { LocalBlobStore } from '../blob/local';
import type { BlobStore } from '../blob/store';
import type { Clock } from '../clock';
import { isoTime } from '../clock';
import type { MasterMetadata, RejectedLine, ShardMetadata } from '../dataset/metadata';
import { MasterMetadataSchema, decodeJson, encodeJson, masterEntryOf } from '../dataset/metadata';
import {
  CREATING_MARKER,
  FORMAT_VERSION,
  MASTER_METADATA,
  REJECTED_FILE,
  isDatasetEntry,
} from '../dataset/paths';
import { ShardlineError, toError } from '../errors';
import type { Logger } from '../log';
import { crc32cBase64 } from '../checksum';
import type { RangeCopier } from './chunk-file';
import { copyByReading } from './chunk-file';
import { addonFor } from './native';
import type { SplitAddon } from './native';
import { scanFileNative } from './native-scan';
import type { ShardRange } from './plan';
import { planShards } from './plan';
import { canScanOnThreads, scanFileParallel, scanThreads } from './parallel-scan';
import { checkpointBefore } from './ranges';
import type { ScanOptions, ScanResult } from './scan';
import { scanLines } from './scan';
import type { SplitSettings } from './settings';
import { DEFAULT_SPLIT_SETTINGS } from './settings';
import type { Source } from './source';
import type { LocalInput, WriteResult, WriteShardsOptions } from './write';
import { writeShards, writeShardsFromFile } from './write';

/** Default longest line (64 MiB): longer lines are rejected rather than held in memory. */
export const DEFAULT_MAX_LINE_BYTES = 64 << 20;
/** A marker not refreshed for this long belongs to a create that died. */
export const MARKER_STALE_MS = 120_000;
const MARKER_REFRESH_MS = 30_000;

/** Progress of a create: which phase, and input bytes done of total. */
export interface CreateProgress {
  phase: 'scan' | 'write';
  bytesDone: number;
  bytesTotal: number;
}

/** Options of `createDataset`. */
export interface CreateDatasetOptions {
  source: Source;
  /** The dataset folder (root of the store). */
  output: BlobStore;
  datasetId: string;
  /** Shards asked for (`--num_shards`). */
  numShards: number;
  /** Chunk size limit in MiB (`--chunk_size_mb`). */
  chunkSizeMb: number;
  /** Stop at the first bad line (`--strict`). */
  strict: boolean;
  maxLineBytes?: number;
  clock: Clock;
  log: Logger;
  /** Written into `created_by` (`shardline 0.1.0`). */
  createdBy: string;
  /** Who is creating, recorded in the marker (host, pid). */
  creator: { host: string; pid: number };
  /** Whether a marker's creator process is still running (local creates can tell). */
  isCreatorAlive?: (marker: CreatingMarker) => boolean | undefined;
  onProgress?: (progress: CreateProgress) => void;
  signal?: AbortSignal;
  /** How to run (line checker, threads); default DEFAULT_SPLIT_SETTINGS. Never changes the result. */
  settings?: SplitSettings;
}

/** What `createDataset` did. */
export interface CreateResult {
  /** `created`: a new dataset; `unchanged`: an identical one was already there. */
  outcome: 'created' | 'unchanged';
  master: MasterMetadata;
  /** Shard metadata (only for `created`). */
  shards: ShardMetadata[];
  /** The first rejected lines (at most 20), for the summary. */
  rejectedSample: RejectedLine[];
  /** Phase 1 counts. */
  scan: Omit<ScanResult, 'rejected' | 'checkpoints'>;
}

/** The `_CREATING.json` marker. */
export interface CreatingMarker {
  dataset_id: string;
  host: string;
  pid: number;
  started_at: string;
  updated_at: string;
  source: string;
}

/** Validates and runs a create. See the module comment for the order of events. */
export async function createDataset(options: CreateDatasetOptions): Promise<CreateResult> {
  const { output, source, clock, log } = options;
  const chunkLimitBytes = Math.floor(options.chunkSizeMb * 1024 * 1024);
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  if (!(chunkLimitBytes >= 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `chunk_size_mb must be positive, got ${options.chunkSizeMb}`,
    );
  }
  if (!Number.isInteger(options.numShards) || options.numShards < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `num_shards must be a whole number of at least 1, got ${options.numShards}`,
    );
  }

  const settings = options.settings ?? DEFAULT_SPLIT_SETTINGS;
  const existing = await inspectOutput(options);
  const progress = (phase: CreateProgress['phase']) => (bytesDone: number) =>
    options.onProgress?.({ phase, bytesDone, bytesTotal: source.storedBytes });

  if (existing) {
    // Same parameters? Then only the content can differ: scan (read-only) and compare.
    const diffs = parameterDiffs(existing, options);
    if (diffs.length === 0) {
      const rejectedSample: RejectedLine[] = [];
      const scan = await scanSource(source, progress('scan'), settings, log, {
        maxLineBytes,
        strict: options.strict,
        onRejected: (r) => void (rejectedSample.length < 20 && rejectedSample.push(r)),
        signal: options.signal,
      });
      if (
        scan.bytes === existing.source.bytes &&
        crc32cBase64(scan.crc32c) === existing.source.crc32c
      ) {
        log.info('an identical dataset is already there; nothing written', {
          dataset_id: existing.dataset_id,
        });
        const { rejected: _rejected, checkpoints: _checkpoints, ...counts } = scan;
        return { outcome: 'unchanged', master: existing, shards: [], rejectedSample, scan: counts };
      }
      diffs.push(
        `the input's content differs (crc32c ${crc32cBase64(scan.crc32c)}, ${scan.bytes} bytes; the dataset was made from crc32c ${existing.source.crc32c}, ${existing.source.bytes} bytes)`,
      );
    }
    throw new ShardlineError(
      'DATASET_CONFLICT',
      `${output.root} already holds dataset "${existing.dataset_id}" (created ${existing.created_at} from ${existing.source.uri}), which differs: ${diffs.join('; ')}. ` +
        'shardline never overwrites a dataset: choose another --output_dir, or delete that one first.',
    );
  }

  const startedAt = isoTime(clock.nowMs());
  const marker = (): CreatingMarker => ({
    dataset_id: options.datasetId,
    host: options.creator.host,
    pid: options.creator.pid,
    started_at: startedAt,
    updated_at: isoTime(clock.nowMs()),
    source: source.uri,
  });
  await output.writeAll(CREATING_MARKER, encodeJson(marker()), { contentType: 'application/json' });
  let lastRefresh = clock.nowMs();
  const refresh = async (): Promise<void> => {
    if (clock.nowMs() - lastRefresh < MARKER_REFRESH_MS) return;
    lastRefresh = clock.nowMs();
    await output.writeAll(CREATING_MARKER, encodeJson(marker()), {
      contentType: 'application/json',
    });
  };

  try {
    // Phase 1: validate, count, record rejections.
    const rejectedSample: RejectedLine[] = [];
    const rejectedWriter = output.writer(REJECTED_FILE, { contentType: 'application/x-ndjson' });
    let rejectedCount = 0;
    let scan: ScanResult;
    // A local input copied by range must not change between the phases (checked at the end).
    const copyFrom = source.localPath && output instanceof LocalBlobStore ? source.localPath : null;
    const inputVersion = copyFrom ? await fileVersion(copyFrom) : '';
    try {
      scan = await scanSource(source, progress('scan'), settings, log, {
        recordSegments: copyFrom !== null,
        maxLineBytes,
        strict: options.strict,
        onRejected: async (r) => {
          if (rejectedSample.length < 20) rejectedSample.push(r);
          rejectedCount++;
          await rejectedWriter.write(Buffer.from(`${JSON.stringify(r)}\n`));
          await refresh();
        },
        signal: options.signal,
      });
    } catch (e: unknown) {
      await rejectedWriter.abort();
      throw e;
    }
    if (rejectedCount > 0) await rejectedWriter.close();
    else await rejectedWriter.abort();
    log.info('scanned the input', {
      lines: scan.lines,
      tasks: scan.tasks,
      blank_lines: scan.blankLines,
      rejected_lines: scan.rejectedLines,
      bytes: scan.bytes,
    });
    if (scan.tasks === 0) {
      const first = rejectedSample[0];
      throw new ShardlineError(
        'INVALID_INPUT',
        scan.lines === 0
          ? `${source.uri} is empty: no task to shard`
          : `${source.uri} holds no valid task (${scan.lines} line${scan.lines === 1 ? '' : 's'}: ${scan.blankLines} blank, ${scan.rejectedLines} rejected` +
              (first ? `; first rejected: line ${first.line}: ${first.reason})` : ')'),
        { details: { rejected: rejectedSample.slice(0, 5) } },
      );
    }

    // Phase 2: copy.
    const plan = planShards(scan.tasks, options.numShards);
    const writeOptions: WriteShardsOptions = {
      store: output,
      datasetId: options.datasetId,
      plan,
      rejected: scan.rejected,
      chunkLimitBytes,
      maxLineBytes,
      signal: options.signal,
      onShard: (s) =>
        log.debug('shard written', {
          shard_id: s.shard_id,
          tasks: s.total_tasks,
          chunks: s.num_chunks,
        }),
    };
    let shards: ShardMetadata[];
    let rangeBytes = 0;
    if (copyFrom && scan.segments) {
      const addon = addonFor(settings.engine);
      const threads = threadsFor(scan.bytes, settings);
      const plain = scan.segments.reduce((n, g) => n + (g.plain ? g.bytes : 0), 0);
      log.debug('phase 2: copying by range', {
        copy: addon ? 'copy_file_range' : 'read/write',
        threads,
        plain_bytes: plain,
      });
      ({ shards, rangeBytes } = await writeLocal(
        { path: copyFrom, segments: scan.segments, lines: scan.lines },
        addon,
        threads,
        { ...writeOptions, onProgress: progress('write') },
      ));
      if ((await fileVersion(copyFrom)) !== inputVersion) {
        throw new ShardlineError(
          'INVALID_INPUT',
          `${source.uri} changed while the dataset was being written; run create again`,
        );
      }
    } else {
      log.debug('phase 2: copying from a stream');
      ({ shards } = await writeShards(source.open(progress('write')), writeOptions));
    }
    log.debug('wrote the shards', { shards: shards.length, bytes_copied_by_range: rangeBytes });
    await refresh();

    const master = buildMaster({
      datasetId: options.datasetId,
      chunkSizeMb: options.chunkSizeMb,
      requestedShards: options.numShards,
      shards,
      scan,
      source,
      createdAt: isoTime(clock.nowMs()),
      createdBy: options.createdBy,
    });
    await output.writeAll(MASTER_METADATA, encodeJson(master), { contentType: 'application/json' });
    await output.delete(CREATING_MARKER);
    const { rejected: _rejected, checkpoints: _checkpoints, ...counts } = scan;
    return { outcome: 'created', master, shards, rejectedSample, scan: counts };
  } catch (e: unknown) {
    // Leave the folder as it was: remove what this run wrote (a crash leaves the marker,
    // and the next run cleans up instead).
    await removeDatasetEntries(output).catch((cleanupError: unknown) =>
      log.warn('could not remove the partial dataset; the next create will', {
        error: cleanupError,
      }),
    );
    throw e;
  }
}

/** Threads for a phase over `bytes` of input: the setting, else one per core from 64 MiB up. */
function threadsFor(bytes: number, settings: SplitSettings): number {
  if (settings.threads !== undefined) return settings.threads;
  return bytes < 64 << 20 ? 1 : Math.max(1, Math.min(8, availableParallelism()));
}

/**
 * Phase 1 over a source: a local file with the native validator on the thread pool
 * (native-scan.ts), else on worker threads for a large local file (parallel-scan.ts), else
 * on this thread. All give the same result.
 */
async function scanSource(
  source: Source,
  onProgress: (bytes: number) => void,
  settings: SplitSettings,
  log: Logger,
  options: ScanOptions,
): Promise<ScanResult> {
  const addon = addonFor(settings.engine);
  const engine = addon ? 'native' : 'js';
  const validator = addon ? `native ${addon.validator}` : 'js';
  if (source.localPath && addon) {
    const threads = threadsFor(source.storedBytes, settings);
    log.debug('phase 1: scanning in blocks', { validator, threads });
    const blockBytes = settings.blockBytes;
    return scanFileNative(source.localPath, {
      ...options,
      onProgress,
      addon,
      threads,
      ...(blockBytes ? { blockBytes } : {}),
    });
  }
  const threads = source.localPath ? scanThreads(source.storedBytes, settings.threads) : 1;
  log.debug('phase 1: scanning a stream', { validator, threads });
  if (source.localPath && threads > 1 && canScanOnThreads()) {
    const scan = await scanFileParallel(source.localPath, source.storedBytes, threads, {
      ...options,
      engine,
      onProgress,
    });
    if (scan) return scan;
  }
  return scanLines(source.open(onProgress), { ...options, engine });
}

/** Size and modification time of a local file, to tell whether it changed. */
async function fileVersion(file: string): Promise<string> {
  const s = await stat(file, { bigint: true });
  return `${s.size}@${s.mtimeNs}`;
}

/**
 * Phase 2 of a local create: `threads` shard ranges written at once from the local input,
 * plain segments copied by range (write.ts, writeShardsFromFile). The first failure stops the
 * others.
 */
async function writeLocal(
  input: Omit<LocalInput, 'copy'>,
  addon: SplitAddon | null,
  threads: number,
  options: WriteShardsOptions,
): Promise<{ shards: ShardMetadata[]; rangeBytes: number }> {
  const { plan } = options;
  const jobs = Math.max(1, Math.min(threads, plan.length));
  const stop = new AbortController();
  const outer = options.signal;
  const forward = (): void => stop.abort(outer?.reason);
  outer?.addEventListener('abort', forward, { once: true });
  const done = new Array<number>(jobs).fill(0);
  const copier = (): RangeCopier => (addon ? addon.copyFileRange.bind(addon) : copyByReading());
  try {
    const results = await Promise.allSettled(
      Array.from({ length: jobs }, async (_, j) => {
        const from = Math.floor((j * plan.length) / jobs);
        const to = Math.floor(((j + 1) * plan.length) / jobs);
        const first = (plan[from] as ShardRange).firstTask;
        const c = checkpointBefore(input.segments, first);
        try {
          return await writeShardsFromFile(
            { ...input, copy: copier() },
            {
              ...options,
              from,
              to,
              start: { offset: c.offset, line: c.lines, task: c.tasks },
              signal: stop.signal,
              onProgress: (bytes) => {
                done[j] = bytes;
                options.onProgress?.(done.reduce((a, b) => a + b, 0));
              },
            },
          );
        } catch (e: unknown) {
          stop.abort(e);
          throw e;
        }
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw toError(outer?.aborted ? outer.reason : stop.signal.reason);
    const written = results.map((r) => (r as PromiseFulfilledResult<WriteResult>).value);
    return {
      shards: written.flatMap((w) => w.shards),
      rangeBytes: written.reduce((n, w) => n + w.rangeBytes, 0),
    };
  } finally {
    outer?.removeEventListener('abort', forward);
  }
}

/** What `master_metadata.json` says about a finished split; shared by every path that makes one. */
export function buildMaster(args: {
  datasetId: string;
  chunkSizeMb: number;
  requestedShards: number;
  shards: readonly ShardMetadata[];
  scan: Pick<ScanResult, 'tasks' | 'lines' | 'blankLines' | 'rejectedLines' | 'bytes' | 'crc32c'>;
  source: Pick<Source, 'uri' | 'generation' | 'gzip'>;
  createdAt: string;
  createdBy: string;
}): MasterMetadata {
  return {
    total_tasks: args.scan.tasks,
    num_shards: args.shards.length,
    chunk_size_mb: args.chunkSizeMb,
    shards: args.shards.map(masterEntryOf),
    format_version: FORMAT_VERSION,
    dataset_id: args.datasetId,
    created_at: args.createdAt,
    created_by: args.createdBy,
    source: {
      uri: args.source.uri,
      generation: args.source.generation,
      bytes: args.scan.bytes,
      crc32c: crc32cBase64(args.scan.crc32c),
      gzip: args.source.gzip,
    },
    requested_num_shards: args.requestedShards,
    input_lines: args.scan.lines,
    blank_lines: args.scan.blankLines,
    rejected_lines: args.scan.rejectedLines,
  };
}

function parameterDiffs(existing: MasterMetadata, options: CreateDatasetOptions): string[] {
  const diffs: string[] = [];
  if (existing.requested_num_shards !== options.numShards) {
    diffs.push(
      `it has --num_shards ${existing.requested_num_shards}, this run ${options.numShards}`,
    );
  }
  if (existing.chunk_size_mb !== options.chunkSizeMb) {
    diffs.push(`it has --chunk_size_mb ${existing.chunk_size_mb}, this run ${options.chunkSizeMb}`);
  }
  if (existing.dataset_id !== options.datasetId) {
    diffs.push(`its dataset id is "${existing.dataset_id}", this run's "${options.datasetId}"`);
  }
  return diffs;
}

/**
 * Reads a finished dataset at the output (or null when there is none) and clears the
 * leftovers of a create that died. Refuses folders that hold anything else.
 */
async function inspectOutput(options: CreateDatasetOptions): Promise<MasterMetadata | null> {
  const { output, clock } = options;
  const masterText = await output.readAll(MASTER_METADATA).catch((e: unknown) => {
    if ((e as { code?: unknown }).code === 'NOT_FOUND') return null;
    throw e;
  });
  if (masterText !== null) {
    return decodeJson(
      MasterMetadataSchema,
      masterText.toString('utf8'),
      output.uriOf(MASTER_METADATA),
    );
  }
  const foreign: string[] = [];
  let hasMarker = false;
  for await (const info of output.list('')) {
    const top = info.key.split('/')[0]!;
    if (top === CREATING_MARKER) hasMarker = true;
    else if (!isDatasetEntry(top)) foreign.push(info.key);
    if (foreign.length >= 5) break;
  }
  if (foreign.length > 0) {
    throw new ShardlineError(
      'DATASET_CONFLICT',
      `${output.root} is not empty and holds no shardline dataset (found ${foreign.map((k) => JSON.stringify(k)).join(', ')}); choose an empty or new --output_dir`,
    );
  }
  if (hasMarker) {
    const text = await output.readAll(CREATING_MARKER).catch(() => null);
    let marker: CreatingMarker | null = null;
    try {
      marker = text ? (JSON.parse(text.toString('utf8')) as CreatingMarker) : null;
    } catch {
      marker = null;
    }
    const alive = marker ? options.isCreatorAlive?.(marker) : undefined;
    const fresh = marker ? clock.nowMs() - Date.parse(marker.updated_at) < MARKER_STALE_MS : false;
    if (marker && (alive === true || (alive === undefined && fresh))) {
      throw new ShardlineError(
        'DATASET_CONFLICT',
        `another create is writing ${output.root} (host ${marker.host}, pid ${marker.pid}, started ${marker.started_at}); wait for it, or stop it`,
      );
    }
    options.log.warn('removing the remains of an unfinished create', {
      started_at: marker?.started_at,
      host: marker?.host,
    });
  }
  await removeDatasetEntries(output);
  return null;
}

/** Deletes everything `create` writes at the top of a dataset folder. */
export async function removeDatasetEntries(output: BlobStore): Promise<void> {
  const keys: string[] = [];
  for await (const info of output.list('')) {
    if (isDatasetEntry(info.key.split('/')[0]!)) keys.push(info.key);
  }
  // The marker goes last, so a crash during cleanup still leaves an incomplete dataset.
  keys.sort((a, b) => Number(a === CREATING_MARKER) - Number(b === CREATING_MARKER));
  for (const key of keys) await output.delete(key);
}
