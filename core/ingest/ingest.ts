/**
 * The upload-triggered ingest: a finalized `incoming/NAME.jsonl[.gz]` becomes a dataset in
 * `datasets/DATASET/`, registered in the ledger and announced to the workers
 * (docs/architecture.md#the-cloud-flow). Three modules, cut along the ingest's seams:
 *
 * - core/ingest/admission.ts: the event's admission (is it an input, which settings, the
 *   idempotency record) and the direct path: small inputs (and gzip ones, which can only be
 *   read from the start) are split in the invocation that received the event;
 * - core/ingest/fanout.ts: larger inputs fanned out over `ingest.step` messages so no step
 *   outlives a function's 540 s (byte ranges scanned in parallel, then each shard written on
 *   its own, continuing at a chunk boundary when its time budget runs out, then one step
 *   finishes the dataset), the step dispatcher, and the redrive of stalled ingests;
 * - this module: what both share: settings, dependencies, outcomes, where things live, and
 *   the last phases (register, announce) and failure.
 *
 * Both paths produce the same bytes (core/split/write.ts). Every step is idempotent; the ingest
 * record (core/ingest/records.ts) says what is done.
 */
import { parseLocation } from '../blob/location';
import type { BlobStore } from '../blob/store';
import type { Clock } from '../clock';
import { isoTime } from '../clock';
import type { MasterMetadata, RejectedLine } from '../dataset/metadata';
import { MasterMetadataSchema, decodeJson } from '../dataset/metadata';
import { MASTER_METADATA } from '../dataset/paths';
import { toError } from '../errors';
import type { Ledger } from '../ledger/ledger';
import type { Logger } from '../log';
import type { IngestStep, Topics } from '../messages';
import { MESSAGE_VERSION } from '../messages';
import type { Publisher } from '../wakeup/publisher';
import { inputPlaceOf } from './object';
import type { BadLine, IngestRecord, IngestRecords } from './records';

/** Settings of the ingest (from the function's environment; see functions/config.ts). */
export interface IngestConfig {
  /** Inputs are objects under this prefix. Default `incoming/`. */
  incomingPrefix: string;
  /** Datasets go under this prefix of the data bucket. Default `datasets/`. */
  datasetsPrefix: string;
  /**
   * The bucket datasets (and a fanned-out ingest's staging area) are written to, apart from
   * the uploads bucket whose trigger wakes the ingest
   * (docs/decisions.md#an-uploads-bucket-apart-from-the-data-bucket). Undefined: the
   * upload's own bucket (a single-bucket deployment).
   */
  dataBucket?: string;
  defaultNumShards: number;
  defaultChunkSizeMb: number;
  /**
   * The shards' attempt budget (`max_attempts`) when the upload does not set
   * `shardline-max-attempts`. Not `maxAttempts` below, which is the ingest's own.
   */
  defaultMaxAttempts: number;
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
  /** The ingest record's own budget: give up (failed) after this many takeovers of a stalled run. */
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
/** Where a fanned-out ingest keeps its scratch files, under the datasets prefix. */
export const STAGING = '.ingest';

/** The rejected line worth showing with a failure, from an error's details. */
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

/** Keeps the record's heartbeat fresh while long work runs. */
export function heartbeat(deps: IngestDeps, id: string): () => void {
  const timer = setInterval(() => {
    deps.records
      .update(id, {})
      .catch((e: unknown) => deps.log.warn('ingest heartbeat failed', { ingest_id: id, error: e }));
  }, HEARTBEAT_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** Where an ingest's input, dataset and staging area live. */
export interface IngestPlaces {
  /** The input's folder, and its key there. */
  input: BlobStore;
  inputKey: string;
  /** `datasets/DATASET_ID`. */
  dataset: BlobStore;
  /** Scratch files of a fanned-out ingest. */
  staging: BlobStore;
}

/** The bucket a new upload's dataset goes to: the data bucket, else the upload's own. */
export function dataBucketOf(config: IngestConfig, uploadBucket: string): string {
  return config.dataBucket ?? uploadBucket;
}

/**
 * Where the input, the dataset and the staging area of an ingest live. The dataset's bucket is
 * the one its record named when the ingest began (`dataset_uri`), so an ingest under way keeps
 * writing where it started even if the data bucket setting changes meanwhile.
 */
export function placesOf(deps: IngestDeps, record: IngestRecord): IngestPlaces {
  const datasets = deps.config.datasetsPrefix.replace(/\/+$/, '');
  const target = parseLocation(record.dataset_uri, '/');
  const bucket = target.kind === 'gcs' ? target.bucket : record.bucket;
  const input = inputPlaceOf(record.object);
  return {
    input: deps.store(record.bucket, input.prefix),
    inputKey: input.key,
    dataset: deps.store(bucket, `${datasets}/${record.dataset_id}`),
    staging: deps.store(bucket, `${datasets}/${STAGING}/${record.ingest_id}`),
  };
}

/** Records the ingest as failed for good (a bad input or settings), with its first bad line. */
export async function failIngest(
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

/**
 * The last phases: registers the dataset in the ledger (idempotent), then rings one doorbell
 * per shard, then completes the record. Resumes at the phase the record is at.
 */
export async function registerAndAnnounce(
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
  let phase = record.phase;
  if (phase === 'register') {
    await deps.ledger.registerDataset(master, {
      datasetUri: record.dataset_uri,
      ...(record.max_attempts === undefined ? {} : { maxAttempts: record.max_attempts }),
    });
    await deps.records.update(record.ingest_id, { phase: 'announce' });
    phase = 'announce';
  }
  if (phase === 'announce') {
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
