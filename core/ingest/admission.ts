/**
 * The ingest's admission and its direct path (core/ingest/ingest.ts has the map): a
 * `google.cloud.storage.object.v1.finalized` event is decoded and checked (an input under the
 * incoming prefix, with valid settings), its idempotency record is begun (a duplicate event
 * does nothing; a stalled ingest is taken over), and then the upload is either split here
 * (direct) or handed to the fan-out (core/ingest/fanout.ts).
 */
import type { MasterMetadata } from '../dataset/metadata';
import { parseNumberSetting } from '../config';
import { ShardlineError, isInputError, toError } from '../errors';
import type { Logger } from '../log';
import { createDataset } from '../split/create-dataset';
import { sourceFromStore } from '../split/source';
import { startOrRedriveFanout } from './fanout';
import type { IngestConfig, IngestDeps, IngestOutcome } from './ingest';
import { dataBucketOf, failIngest, heartbeat, placesOf, registerAndAnnounce } from './ingest';
import type { StorageObject } from './object';
import {
  METADATA_CHUNK_SIZE_MB,
  METADATA_MAX_ATTEMPTS,
  METADATA_NUM_SHARDS,
  StorageObjectSchema,
  classifyObject,
  datasetIdOf,
  ingestIdOf,
  inputNameProblem,
} from './object';
import type { IngestRecord } from './records';

/** Reads the split settings from the object's custom metadata, or the defaults. */
function settingsOf(
  obj: StorageObject,
  config: IngestConfig,
): { numShards: number; chunkSizeMb: number; maxAttempts: number } {
  const meta = obj.metadata ?? {};
  const num = (key: string, fallback: number, rule: Parameters<typeof parseNumberSetting>[2]) => {
    const raw = meta[key];
    return raw === undefined
      ? fallback
      : parseNumberSetting(raw, `object metadata ${key}=${JSON.stringify(raw)}`, rule);
  };
  return {
    numShards: num(METADATA_NUM_SHARDS, config.defaultNumShards, {
      min: 1,
      max: 100_000,
      integer: true,
    }),
    chunkSizeMb: num(METADATA_CHUNK_SIZE_MB, config.defaultChunkSizeMb, {
      min: 0.001,
      max: 10_000,
    }),
    maxAttempts: num(METADATA_MAX_ATTEMPTS, config.defaultMaxAttempts, {
      min: 1,
      max: 100,
      integer: true,
    }),
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
    // Storage triggers cannot filter by prefix: in a single-bucket deployment (no data
    // bucket) every chunk and part written to the bucket lands here too. Those are expected;
    // only surprises are worth an INFO line.
    const ours = obj.name.startsWith(deps.config.datasetsPrefix);
    log[ours ? 'debug' : 'info']('object ignored', { reason: verdict.reason });
    return { kind: 'ignored', reason: verdict.reason };
  }
  let settings: ReturnType<typeof settingsOf> | undefined;
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
      max_attempts: settings?.maxAttempts ?? deps.config.defaultMaxAttempts,
      mode: gzip || obj.size <= deps.config.directMaxBytes ? 'direct' : 'fanout',
      name: (version) => {
        const datasetId = datasetIdOf(obj, version);
        return {
          dataset_id: datasetId,
          dataset_uri: `gs://${dataBucketOf(deps.config, obj.bucket)}/${deps.config.datasetsPrefix.replace(/\/+$/, '')}/${datasetId}`,
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
      await startOrRedriveFanout(deps, record, log);
      return { kind: 'fanned-out', record };
    }
    if (record.phase !== 'split') return await registerAndAnnounce(deps, record, undefined, log);
    const master = await splitDirect(deps, record, log);
    return await registerAndAnnounce(deps, { ...record, phase: 'register' }, master, log);
  } catch (e: unknown) {
    if (isInputError(e)) return failIngest(deps, record, e, log);
    await deps.records
      .update(record.ingest_id, { error: toError(e).message })
      .catch(() => undefined);
    throw e;
  } finally {
    stop();
  }
}

/** The direct path: the whole split in this invocation; then the record is at `register`. */
async function splitDirect(
  deps: IngestDeps,
  record: IngestRecord,
  log: Logger,
): Promise<MasterMetadata> {
  const places = placesOf(deps, record);
  const info = await places.input.stat(places.inputKey);
  if (info?.generation !== record.generation) {
    throw new ShardlineError(
      'INVALID_INPUT',
      `gs://${record.bucket}/${record.object} was replaced (generation ${info?.generation ?? '?'}, expected ${record.generation}); the newer upload has its own ingest`,
    );
  }
  const source = await sourceFromStore(places.input, places.inputKey);
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
  return result.master;
}
