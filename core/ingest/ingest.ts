/**
 * The upload-triggered ingest: a finalized `incoming/NAME.jsonl[.gz]` becomes a dataset in
 * `datasets/DATASET/`, registered in the ledger and announced to the workers.
 *
 * Small inputs (and gzip ones, which can only be read from the start) are split in the
 * invocation that received the event ("direct"). Larger ones are fanned out over
 * `ingest.step` messages so no step outlives a function's 540 s: byte ranges are scanned in
 * parallel, then each shard is written on its own, continuing in a new step at a chunk
 * boundary when its time budget runs out, then one step finishes the dataset. Both paths
 * produce the same bytes (core/split/write.ts). Every step is idempotent; the ingest record
 * (core/ingest/records.ts) says what is done.
 */
import { createInterface } from 'node:readline';

import type { BlobStore } from '../blob/store';
import type { Clock } from '../clock';
import { isoTime } from '../clock';
import type { MasterMetadata, RejectedLine, ShardMetadata } from '../dataset/metadata';
import {
  MasterMetadataSchema,
  ShardMetadataSchema,
  decodeJson,
  encodeJson,
} from '../dataset/metadata';
import {
  CREATING_MARKER,
  MASTER_METADATA,
  REJECTED_FILE,
  shardMetadataKey,
} from '../dataset/paths';
import { ShardlineError, isRetryable, toError } from '../errors';
import type { Ledger } from '../ledger/ledger';
import type { Logger } from '../log';
import type { IngestStep, Topics } from '../messages';
import { IngestStepSchema, MESSAGE_VERSION, decodeMessage } from '../messages';
import { buildMaster, createDataset, removeDatasetEntries } from '../split/create-dataset';
import { LineNumberList } from '../split/line-numbers';
import type { ShardRange } from '../split/plan';
import { planShards } from '../split/plan';
import type { RangeScan } from '../split/ranges';
import {
  alignedRanges,
  checkpointBefore,
  collect,
  combineScans,
  toRangeScan,
} from '../split/ranges';
import type { ScanCheckpoint } from '../split/scan';
import { scanLines } from '../split/scan';
import { sourceFromStore } from '../split/source';
import { writeShards } from '../split/write';
import type { Publisher } from '../wakeup/publisher';
import type { StorageObject } from './object';
import {
  METADATA_CHUNK_SIZE_MB,
  METADATA_NUM_SHARDS,
  StorageObjectSchema,
  classifyObject,
  datasetIdOf,
  ingestIdOf,
  inputNameProblem,
  inputPlaceOf,
} from './object';
import type { BadLine, IngestRecord, IngestRecords } from './records';

/** Settings of the ingest (from the function's environment; see functions/config.ts). */
export interface IngestConfig {
  /** Inputs are objects under this prefix. Default `incoming/`. */
  incomingPrefix: string;
  /** Datasets go under this prefix of the same bucket. Default `datasets/`. */
  datasetsPrefix: string;
  defaultNumShards: number;
  defaultChunkSizeMb: number;
  /** Time one invocation spends on a step before handing the rest to a new step (ms). */
  stepBudgetMs: number;
  /** Uncompressed inputs up to this size are split in one invocation; larger ones fan out. */
  directMaxBytes: number;
  /** Bytes per scan step of a fanned-out ingest. */
  rangeBytes: number;
  /**
   * Largest `.jsonl.gz` accepted. Gzip can only be read from its start, so it is split in one
   * invocation; a larger one could outlive it (and fail only after its retries).
   */
  gzipMaxBytes: number;
  /** Longest accepted line. */
  maxLineBytes: number;
  /** A running ingest without a heartbeat for this long is taken over. */
  staleMs: number;
  /** Give up (failed) after this many attempts. */
  maxAttempts: number;
  topics: Topics;
}

/** What the ingest needs, from the composition root (functions/deps.ts). */
export interface IngestDeps {
  records: IngestRecords;
  ledger: Ledger;
  publisher: Publisher;
  /** A blob store rooted at `gs://bucket/prefix`. */
  store: (bucket: string, prefix: string) => BlobStore;
  clock: Clock;
  log: Logger;
  config: IngestConfig;
  /** `shardline 0.1.0`. */
  createdBy: string;
}

/** What one event or step did, for logs and tests. */
export type IngestOutcome =
  | { kind: 'invalid'; reason: string }
  | { kind: 'ignored'; reason: string }
  | { kind: 'duplicate'; record: IngestRecord }
  | { kind: 'completed'; record: IngestRecord }
  | { kind: 'failed'; record: IngestRecord; error: string }
  | { kind: 'fanned-out'; record: IngestRecord }
  | { kind: 'step-done'; step: IngestStep['step'] }
  | { kind: 'step-skipped'; step: IngestStep['step']; reason: string };

const HEARTBEAT_MS = 30_000;
const STAGING = '.ingest';

/** Errors that no retry can fix: the input or its settings are wrong. */
function isTerminal(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'INVALID_INPUT' || code === 'INVALID_ARGUMENT' || code === 'DATASET_CONFLICT';
}

function badLineOf(e: unknown): BadLine | null {
  const details = (
    e as {
      details?: { rejected?: RejectedLine[]; line?: number; reason?: string; preview?: string };
    }
  ).details;
  const first = details?.rejected?.[0];
  if (first) return { line: first.line, reason: first.reason, preview: first.preview };
  if (details?.line !== undefined)
    return { line: details.line, reason: details.reason ?? '', preview: details.preview ?? '' };
  return null;
}

/** Reads the split settings from the object's custom metadata, or the defaults. */
function settingsOf(
  obj: StorageObject,
  config: IngestConfig,
): { numShards: number; chunkSizeMb: number } {
  const meta = obj.metadata ?? {};
  const num = (
    key: string,
    fallback: number,
    integer: boolean,
    min: number,
    max: number,
  ): number => {
    const raw = meta[key];
    if (raw === undefined) return fallback;
    const v = Number(raw);
    if (!Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `object metadata ${key}=${JSON.stringify(raw)} must be ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}`,
      );
    }
    return v;
  };
  return {
    numShards: num(METADATA_NUM_SHARDS, config.defaultNumShards, true, 1, 100_000),
    chunkSizeMb: num(METADATA_CHUNK_SIZE_MB, config.defaultChunkSizeMb, false, 0.001, 10_000),
  };
}

/** Keeps the record's heartbeat fresh while long work runs. */
function heartbeat(deps: IngestDeps, id: string): () => void {
  const timer = setInterval(() => {
    deps.records
      .update(id, {})
      .catch((e: unknown) => deps.log.warn('ingest heartbeat failed', { ingest_id: id, error: e }));
  }, HEARTBEAT_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** Where the input, the dataset and the staging area of an ingest live. */
function placesOf(deps: IngestDeps, record: IngestRecord) {
  const datasetPrefix = `${deps.config.datasetsPrefix.replace(/\/+$/, '')}/${record.dataset_id}`;
  const input = inputPlaceOf(record.object);
  return {
    input: deps.store(record.bucket, input.prefix),
    inputKey: input.key,
    dataset: deps.store(record.bucket, datasetPrefix),
    staging: deps.store(
      record.bucket,
      `${deps.config.datasetsPrefix.replace(/\/+$/, '')}/${STAGING}/${record.ingest_id}`,
    ),
  };
}

/**
 * Handles one `google.cloud.storage.object.v1.finalized` event. Throws only when a retry can
 * help (the platform then redelivers the event); a bad input is recorded as failed instead.
 */
export async function handleObjectFinalized(
  data: unknown,
  eventId: string,
  deps: IngestDeps,
): Promise<IngestOutcome> {
  const parsed = StorageObjectSchema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const reason = `not a storage object event${issue ? ` (${issue.path.join('.') || 'data'}: ${issue.message})` : ''}`;
    deps.log.warn('event ignored', { event_id: eventId, reason });
    return { kind: 'invalid', reason };
  }
  const obj = parsed.data;
  const log = deps.log.child({
    event_id: eventId,
    bucket: obj.bucket,
    object: obj.name,
    generation: obj.generation,
  });
  const verdict = classifyObject(obj, deps.config.incomingPrefix);
  if (!verdict.accept) {
    // Storage triggers cannot filter by prefix: every chunk and part written to the bucket
    // lands here too. Those are expected; only surprises are worth an INFO line.
    const ours = obj.name.startsWith(deps.config.datasetsPrefix);
    log[ours ? 'debug' : 'info']('object ignored', { reason: verdict.reason });
    return { kind: 'ignored', reason: verdict.reason };
  }
  let settings: { numShards: number; chunkSizeMb: number } | undefined;
  let settingsError: unknown;
  try {
    settings = settingsOf(obj, deps.config);
  } catch (e: unknown) {
    settingsError = e;
  }
  const gzip = /\.gz$/i.test(obj.name);
  const begun = await deps.records.begin(
    {
      ingest_id: ingestIdOf(obj),
      bucket: obj.bucket,
      object: obj.name,
      generation: obj.generation,
      size: obj.size,
      event_id: eventId,
      num_shards: settings?.numShards ?? deps.config.defaultNumShards,
      chunk_size_mb: settings?.chunkSizeMb ?? deps.config.defaultChunkSizeMb,
      mode: gzip || obj.size <= deps.config.directMaxBytes ? 'direct' : 'fanout',
      name: (version) => {
        const datasetId = datasetIdOf(obj, version);
        return {
          dataset_id: datasetId,
          dataset_uri: `gs://${obj.bucket}/${deps.config.datasetsPrefix.replace(/\/+$/, '')}/${datasetId}`,
        };
      },
    },
    deps.config.staleMs,
    deps.config.maxAttempts,
  );
  const record = begun.record;
  const rlog = log.child({ ingest_id: record.ingest_id, dataset_id: record.dataset_id });
  if (begun.kind === 'finished') {
    rlog.info('duplicate event: this upload was already ingested', { state: record.state });
    return { kind: 'duplicate', record };
  }
  if (begun.kind === 'busy') {
    if (record.mode === 'fanout' && record.ranges.length > 0) {
      rlog.info('duplicate event: the fanned-out ingest is under way', { phase: record.phase });
      return { kind: 'duplicate', record };
    }
    // The first delivery may have died; ask the platform to deliver again later.
    throw new ShardlineError(
      'INTERRUPTED',
      `ingest ${record.ingest_id} is in progress elsewhere; retry later`,
    );
  }
  if (begun.kind === 'takeover')
    rlog.warn('taking over a stalled ingest', { attempts: record.attempts, phase: record.phase });
  if (settingsError !== undefined) return failIngest(deps, record, settingsError, rlog);
  if (gzip && record.size > deps.config.gzipMaxBytes) {
    const mb = (n: number): string => `${Math.round(n / (1 << 20))} MiB`;
    return failIngest(
      deps,
      record,
      new ShardlineError(
        'INVALID_INPUT',
        `gs://${record.bucket}/${record.object} is a ${mb(record.size)} gzip file; compressed uploads are split in one function invocation and are limited to ${mb(deps.config.gzipMaxBytes)}. ` +
          'Upload it uncompressed (it is then split in parallel), or run `shardline create` on a machine.',
      ),
      rlog,
    );
  }
  const nameProblem = inputNameProblem(obj.name);
  if (nameProblem !== null)
    return failIngest(deps, record, new ShardlineError('INVALID_INPUT', nameProblem), rlog);
  rlog.info('ingest started', {
    mode: record.mode,
    size: record.size,
    num_shards: record.num_shards,
  });
  return runIngest(deps, record, rlog);
}

/** Runs (or resumes) an ingest from the phase its record is at. */
async function runIngest(
  deps: IngestDeps,
  record: IngestRecord,
  log: Logger,
): Promise<IngestOutcome> {
  const stop = heartbeat(deps, record.ingest_id);
  try {
    if (
      record.mode === 'fanout' &&
      (record.phase === 'scan' || record.phase === 'write' || record.phase === 'finalize')
    ) {
      await redrive(deps, record, log);
      return { kind: 'fanned-out', record };
    }
    let master: MasterMetadata | undefined;
    if (record.phase === 'split') master = await splitDirect(deps, record, log);
    return await registerAndAnnounce(deps, record, master, log);
  } catch (e: unknown) {
    if (isTerminal(e)) return failIngest(deps, record, e, log);
    await deps.records
      .update(record.ingest_id, { error: toError(e).message })
      .catch(() => undefined);
    throw e;
  } finally {
    stop();
  }
}

async function failIngest(
  deps: IngestDeps,
  record: IngestRecord,
  e: unknown,
  log: Logger,
): Promise<IngestOutcome> {
  const error = toError(e).message;
  const badLine = badLineOf(e);
  await deps.records.fail(record.ingest_id, error, badLine);
  log.error('ingest failed', { error, bad_line: badLine });
  return {
    kind: 'failed',
    record: { ...record, state: 'failed', error, bad_line: badLine },
    error,
  };
}

async function splitDirect(
  deps: IngestDeps,
  record: IngestRecord,
  log: Logger,
): Promise<MasterMetadata> {
  const places = placesOf(deps, record);
  const source = await sourceFromStore(places.input, places.inputKey);
  if (source.generation !== record.generation) {
    throw new ShardlineError(
      'INVALID_INPUT',
      `gs://${record.bucket}/${record.object} was replaced (generation ${source.generation ?? '?'}, expected ${record.generation}); the newer upload has its own ingest`,
    );
  }
  const result = await createDataset({
    source,
    output: places.dataset,
    datasetId: record.dataset_id,
    numShards: record.num_shards,
    chunkSizeMb: record.chunk_size_mb,
    strict: false,
    maxLineBytes: deps.config.maxLineBytes,
    clock: deps.clock,
    log,
    createdBy: deps.createdBy,
    creator: { host: 'cloud-function', pid: 0 },
  });
  await deps.records.update(record.ingest_id, { phase: 'register' });
  record.phase = 'register';
  return result.master;
}

async function registerAndAnnounce(
  deps: IngestDeps,
  record: IngestRecord,
  known: MasterMetadata | undefined,
  log: Logger,
): Promise<IngestOutcome> {
  const places = placesOf(deps, record);
  const master =
    known ??
    decodeJson(
      MasterMetadataSchema,
      (await places.dataset.readAll(MASTER_METADATA)).toString('utf8'),
      places.dataset.uriOf(MASTER_METADATA),
    );
  if (record.phase === 'register') {
    await deps.ledger.registerDataset(master, { datasetUri: record.dataset_uri });
    await deps.records.update(record.ingest_id, { phase: 'announce' });
    record.phase = 'announce';
  }
  if (record.phase === 'announce') {
    const now = isoTime(deps.clock.nowMs());
    await Promise.all(
      master.shards.map((s) =>
        deps.publisher.publish(deps.config.topics.work, {
          type: 'shard.available',
          version: MESSAGE_VERSION,
          dataset_id: master.dataset_id,
          shard_id: s.shard_id,
          dataset_uri: record.dataset_uri,
          reason: 'ingest',
          published_at: now,
        }),
      ),
    );
  }
  const stats = {
    total_tasks: master.total_tasks,
    num_shards: master.num_shards,
    input_lines: master.input_lines,
    blank_lines: master.blank_lines,
    rejected_lines: master.rejected_lines,
    bytes: master.source.bytes,
  };
  await deps.records.complete(record.ingest_id, stats);
  log.notice('dataset ready: registered and announced', { ...stats });
  return { kind: 'completed', record: { ...record, state: 'completed', phase: 'done', stats } };
}

// ---------------------------------------------------------------- fanned-out ingest

async function publishStep(deps: IngestDeps, id: string, step: IngestStep['step']): Promise<void> {
  await deps.publisher.publish(deps.config.topics.ingest, {
    type: 'ingest.step',
    version: MESSAGE_VERSION,
    ingest_id: id,
    step,
  });
}

/** Starts a fanned-out ingest, or publishes again the steps of its current phase that are not done. */
async function redrive(deps: IngestDeps, record: IngestRecord, log: Logger): Promise<void> {
  const id = record.ingest_id;
  if (record.phase === 'scan') {
    if (record.ranges.length === 0) {
      const places = placesOf(deps, record);
      const info = await places.input.stat(places.inputKey);
      if (!info || info.generation !== record.generation) {
        throw new ShardlineError(
          'INVALID_INPUT',
          `gs://${record.bucket}/${record.object} generation ${record.generation} is gone (replaced or deleted)`,
        );
      }
      const ranges = await alignedRanges(info.size, deps.config.rangeBytes, (s, e) =>
        collect(places.input.read(places.inputKey, { start: s, end: e })),
      );
      const now = isoTime(deps.clock.nowMs());
      await places.dataset.writeAll(
        CREATING_MARKER,
        encodeJson({
          dataset_id: record.dataset_id,
          host: 'cloud-function',
          pid: 0,
          started_at: record.started_at,
          updated_at: now,
          source: `gs://${record.bucket}/${record.object}`,
          ingest_id: id,
        }),
        { contentType: 'application/json' },
      );
      await deps.records.update(id, { ranges });
      record.ranges = ranges;
      log.info('fanning out the scan', { ranges: ranges.length });
    }
    for (let r = 0; r < record.ranges.length; r++) {
      if (!(await deps.records.isStepDone(id, 'ranges', r)))
        await publishStep(deps, id, { kind: 'scan', range: r });
    }
  } else if (record.phase === 'write') {
    if (record.shards === 0) {
      await planWrites(deps, record, log);
      return;
    }
    for (let k = 0; k < record.shards; k++) {
      if (!(await deps.records.isStepDone(id, 'shards', k)))
        await publishStep(deps, id, { kind: 'write', shard: k });
    }
  } else if (record.phase === 'finalize') {
    await publishStep(deps, id, { kind: 'finalize' });
  }
}

/** What the scan phase leaves for the write steps (`plan.json` in the staging area). */
interface WritePlan {
  plan: ShardRange[];
  rejected: number[];
  checkpoints: ScanCheckpoint[];
  lineOffsets: number[];
  tasks: number;
  lines: number;
  blankLines: number;
  rejectedLines: number;
  bytes: number;
  crc32c: number;
}

const scanKey = (r: number): string => `scan_${String(r).padStart(5, '0')}.json`;
const rejectedKey = (r: number): string => `rejected_${String(r).padStart(5, '0')}.jsonl`;
const PLAN_KEY = 'plan.json';

async function scanStep(
  deps: IngestDeps,
  record: IngestRecord,
  r: number,
  log: Logger,
): Promise<void> {
  const places = placesOf(deps, record);
  const span = record.ranges[r];
  if (!span) throw new ShardlineError('INTERNAL', `ingest ${record.ingest_id} has no range ${r}`);
  const rejectedWriter = places.staging.writer(rejectedKey(r), {
    contentType: 'application/x-ndjson',
  });
  let rejectedCount = 0;
  try {
    const scan = await scanLines(places.input.read(places.inputKey, span), {
      maxLineBytes: deps.config.maxLineBytes,
      strict: false,
      startOffset: span.start,
      onRejected: async (rej) => {
        rejectedCount++;
        await rejectedWriter.write(Buffer.from(`${JSON.stringify(rej)}\n`));
      },
    });
    if (scan.bytes !== span.end - span.start) {
      throw new ShardlineError(
        'STORAGE',
        `range ${r} read ${scan.bytes} bytes, expected ${span.end - span.start}`,
      );
    }
    if (rejectedCount > 0) await rejectedWriter.close();
    else await rejectedWriter.abort();
    await places.staging.writeAll(scanKey(r), JSON.stringify(toRangeScan(span, scan)), {
      contentType: 'application/json',
    });
  } catch (e: unknown) {
    await rejectedWriter.abort();
    throw e;
  }
  log.info('range scanned', { range: r, of: record.ranges.length });
  if (await deps.records.rangeDone(record.ingest_id, r))
    await planWrites(deps, { ...record, phase: 'write' }, log);
}

async function planWrites(deps: IngestDeps, record: IngestRecord, log: Logger): Promise<void> {
  const places = placesOf(deps, record);
  const scans: RangeScan[] = [];
  for (let r = 0; r < record.ranges.length; r++) {
    scans.push(
      JSON.parse((await places.staging.readAll(scanKey(r))).toString('utf8')) as RangeScan,
    );
  }
  const whole = combineScans(scans);
  if (whole.tasks === 0) {
    let first: RejectedLine | undefined;
    for (let r = 0; r < scans.length && !first; r++) {
      if (scans[r]!.rejectedLines === 0) continue;
      const text = (await places.staging.readAll(rejectedKey(r))).toString('utf8');
      const rec = JSON.parse(text.slice(0, text.indexOf('\n'))) as RejectedLine;
      first = { ...rec, line: rec.line + whole.lineOffsets[r]! };
    }
    const error =
      whole.lines === 0
        ? `gs://${record.bucket}/${record.object} is empty: no task to shard`
        : `gs://${record.bucket}/${record.object} holds no valid task (${whole.lines} line${whole.lines === 1 ? '' : 's'}: ${whole.blankLines} blank, ${whole.rejectedLines} rejected)`;
    await removeDatasetEntries(places.dataset);
    await removeAll(places.staging);
    await failIngest(
      deps,
      record,
      new ShardlineError('INVALID_INPUT', error, { details: { rejected: first ? [first] : [] } }),
      log,
    );
    return;
  }
  const plan = planShards(whole.tasks, record.num_shards);
  const rejected: number[] = [];
  for (let i = 0; i < whole.rejected.length; i++) rejected.push(whole.rejected.at(i)!);
  const writePlan: WritePlan = {
    plan,
    rejected,
    checkpoints: whole.checkpoints,
    lineOffsets: whole.lineOffsets,
    tasks: whole.tasks,
    lines: whole.lines,
    blankLines: whole.blankLines,
    rejectedLines: whole.rejectedLines,
    bytes: whole.bytes,
    crc32c: whole.crc32c,
  };
  await places.staging.writeAll(PLAN_KEY, JSON.stringify(writePlan), {
    contentType: 'application/json',
  });
  await deps.records.update(record.ingest_id, { shards: plan.length });
  log.info('scan complete; fanning out the shard writes', {
    tasks: whole.tasks,
    shards: plan.length,
  });
  for (let k = 0; k < plan.length; k++)
    await publishStep(deps, record.ingest_id, { kind: 'write', shard: k });
}

async function writeStep(
  deps: IngestDeps,
  record: IngestRecord,
  k: number,
  log: Logger,
): Promise<void> {
  const places = placesOf(deps, record);
  const wp = JSON.parse((await places.staging.readAll(PLAN_KEY)).toString('utf8')) as WritePlan;
  const range = wp.plan[k];
  if (!range) throw new ShardlineError('INTERNAL', `ingest ${record.ingest_id} has no shard ${k}`);
  const cursor = await deps.records.getCursor(record.ingest_id, k);
  const c = checkpointBefore(wp.checkpoints, range.firstTask);
  const start = cursor ? cursor.position : { offset: c.offset, line: c.lines, task: c.tasks };
  const rejected = new LineNumberList();
  for (const line of wp.rejected) rejected.push(line);
  const result = await writeShards(places.input.read(places.inputKey, { start: start.offset }), {
    store: places.dataset,
    datasetId: record.dataset_id,
    plan: wp.plan,
    from: k,
    to: k + 1,
    start,
    ...(cursor ? { resume: { planIndex: cursor.planIndex, chunks: cursor.chunks } } : {}),
    deadline: { atMs: deps.clock.nowMs() + deps.config.stepBudgetMs, clock: deps.clock },
    rejected,
    chunkLimitBytes: Math.floor(record.chunk_size_mb * 1024 * 1024),
    maxLineBytes: deps.config.maxLineBytes,
  });
  if (result.cursor) {
    await deps.records.saveCursor(record.ingest_id, k, result.cursor);
    log.info('shard write continues in a new step', {
      shard_id: k,
      chunks_done: result.cursor.chunks.length,
    });
    await publishStep(deps, record.ingest_id, { kind: 'write', shard: k });
    return;
  }
  log.info('shard written', { shard_id: k });
  if (await deps.records.shardDone(record.ingest_id, k))
    await publishStep(deps, record.ingest_id, { kind: 'finalize' });
}

async function finalizeStep(
  deps: IngestDeps,
  record: IngestRecord,
  log: Logger,
): Promise<IngestOutcome> {
  const places = placesOf(deps, record);
  const wp = JSON.parse((await places.staging.readAll(PLAN_KEY)).toString('utf8')) as WritePlan;
  // rejected.jsonl: the ranges' rejections in order, with line numbers made global.
  if (wp.rejectedLines > 0) {
    const w = places.dataset.writer(REJECTED_FILE, { contentType: 'application/x-ndjson' });
    try {
      for (let r = 0; r < record.ranges.length; r++) {
        const info = await places.staging.stat(rejectedKey(r));
        if (!info) continue;
        const lines = createInterface({
          input: places.staging.read(rejectedKey(r)),
          crlfDelay: Infinity,
        });
        for await (const line of lines) {
          if (line === '') continue;
          const rec = JSON.parse(line) as RejectedLine;
          await w.write(
            Buffer.from(`${JSON.stringify({ ...rec, line: rec.line + wp.lineOffsets[r]! })}\n`),
          );
        }
      }
      await w.close();
    } catch (e: unknown) {
      await w.abort();
      throw e;
    }
  }
  const shards: ShardMetadata[] = [];
  for (const range of wp.plan) {
    const key = shardMetadataKey(range.shardId);
    shards.push(
      decodeJson(
        ShardMetadataSchema,
        (await places.dataset.readAll(key)).toString('utf8'),
        places.dataset.uriOf(key),
      ),
    );
  }
  const master = buildMaster({
    datasetId: record.dataset_id,
    chunkSizeMb: record.chunk_size_mb,
    requestedShards: record.num_shards,
    shards,
    scan: wp,
    source: {
      uri: `gs://${record.bucket}/${record.object}`,
      generation: record.generation,
      gzip: false,
    },
    createdAt: isoTime(deps.clock.nowMs()),
    createdBy: deps.createdBy,
  });
  await places.dataset.writeAll(MASTER_METADATA, encodeJson(master), {
    contentType: 'application/json',
  });
  await places.dataset.delete(CREATING_MARKER);
  await removeAll(places.staging);
  await deps.records.update(record.ingest_id, { phase: 'register' });
  log.info('dataset written', { shards: master.num_shards, tasks: master.total_tasks });
  return registerAndAnnounce(deps, { ...record, phase: 'register' }, master, log);
}

async function removeAll(store: BlobStore): Promise<void> {
  const keys: string[] = [];
  for await (const info of store.list('')) keys.push(info.key);
  for (const key of keys) await store.delete(key);
}

/**
 * Handles one `ingest.step` message. Steps that no longer apply (done, or the ingest moved on)
 * are skipped; a malformed message is logged and dropped. Throws only when a retry can help.
 */
export async function handleIngestStep(data: unknown, deps: IngestDeps): Promise<IngestOutcome> {
  const decoded = decodeMessage(IngestStepSchema, data);
  if (!decoded.ok) {
    deps.log.error('ingest step dropped', { reason: decoded.error });
    return { kind: 'invalid', reason: decoded.error };
  }
  const { ingest_id: id, step } = decoded.message;
  const record = await deps.records.get(id);
  const skip = (reason: string): IngestOutcome => {
    deps.log.info('ingest step skipped', { ingest_id: id, step, reason });
    return { kind: 'step-skipped', step, reason };
  };
  if (!record) return skip('no such ingest');
  if (record.state !== 'running') return skip(`the ingest is ${record.state}`);
  const log = deps.log.child({ ingest_id: id, dataset_id: record.dataset_id, step: step.kind });
  const stop = heartbeat(deps, id);
  try {
    switch (step.kind) {
      case 'scan':
        if (record.phase !== 'scan') return skip(`the ingest is at ${record.phase}`);
        if (await deps.records.isStepDone(id, 'ranges', step.range))
          return skip('range already scanned');
        await scanStep(deps, record, step.range, log);
        return { kind: 'step-done', step };
      case 'write':
        if (record.phase !== 'write') return skip(`the ingest is at ${record.phase}`);
        if (await deps.records.isStepDone(id, 'shards', step.shard))
          return skip('shard already written');
        await writeStep(deps, record, step.shard, log);
        return { kind: 'step-done', step };
      case 'finalize':
        if (record.phase !== 'finalize') return skip(`the ingest is at ${record.phase}`);
        return await finalizeStep(deps, record, log);
    }
  } catch (e: unknown) {
    if (isTerminal(e)) return failIngest(deps, record, e, log);
    if (!isRetryable(e))
      log.error('ingest step failed; Pub/Sub will deliver it again', { error: e });
    throw e;
  } finally {
    stop();
  }
}

/**
 * Picks up fanned-out ingests that stalled (a step message dead-lettered, a planner that died):
 * takes each over and publishes its missing steps again. Called by the `reap` tick.
 */
export async function redriveStalled(deps: IngestDeps, records: IngestRecord[]): Promise<number> {
  let n = 0;
  for (const record of records) {
    if (record.state !== 'running' || record.mode !== 'fanout') continue;
    const log = deps.log.child({ ingest_id: record.ingest_id, dataset_id: record.dataset_id });
    try {
      if (record.phase === 'register' || record.phase === 'announce')
        await registerAndAnnounce(deps, record, undefined, log);
      else await redrive(deps, record, log);
      n++;
    } catch (e: unknown) {
      if (isTerminal(e)) await failIngest(deps, record, e, log);
      else log.warn('could not redrive a stalled ingest', { error: e });
    }
  }
  return n;
}
