/**
 * The fanned-out ingest (core/ingest/ingest.ts has the map): an uncompressed upload too large
 * for one invocation is scanned in parallel byte ranges, then written shard by shard (each
 * continuing in a new step at a chunk boundary when its time budget runs out), then finished
 * by one step, all driven by `ingest.step` messages; plus the step dispatcher and the redrive
 * of ingests that stalled (a dead-lettered step, a planner that died). The result is
 * byte-identical to the direct path.
 */
import { createInterface } from 'node:readline';

import type { BlobStore } from '../blob/store';
import { isoTime } from '../clock';
import type { RejectedLine, ShardMetadata } from '../dataset/metadata';
import { ShardMetadataSchema, decodeJson, encodeJson } from '../dataset/metadata';
import {
  CREATING_MARKER,
  MASTER_METADATA,
  REJECTED_FILE,
  shardMetadataKey,
} from '../dataset/paths';
import { ShardlineError, isInputError, isRetryable } from '../errors';
import type { Logger } from '../log';
import type { IngestStep } from '../messages';
import { IngestStepSchema, MESSAGE_VERSION, decodeMessage } from '../messages';
import { buildMaster, removeDatasetEntries } from '../split/create-dataset';
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
import { writeShards } from '../split/write';
import type { IngestDeps, IngestOutcome } from './ingest';
import { failIngest, heartbeat, placesOf, registerAndAnnounce } from './ingest';
import type { IngestRecord } from './records';

async function publishStep(deps: IngestDeps, id: string, step: IngestStep['step']): Promise<void> {
  await deps.publisher.publish(deps.config.topics.ingest, {
    type: 'ingest.step',
    version: MESSAGE_VERSION,
    ingest_id: id,
    step,
  });
}

/** Starts a fanned-out ingest, or publishes again the steps of its current phase that are not done. */
export async function startOrRedriveFanout(
  deps: IngestDeps,
  record: IngestRecord,
  log: Logger,
): Promise<void> {
  const id = record.ingest_id;
  if (record.phase === 'scan') {
    let ranges = record.ranges;
    if (ranges.length === 0) {
      const places = placesOf(deps, record);
      const info = await places.input.stat(places.inputKey);
      if (!info || info.generation !== record.generation) {
        throw new ShardlineError(
          'INVALID_INPUT',
          `gs://${record.bucket}/${record.object} generation ${record.generation} is gone (replaced or deleted)`,
        );
      }
      ranges = await alignedRanges(info.size, deps.config.rangeBytes, (s, e) =>
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
      log.info('fanning out the scan', { ranges: ranges.length });
    }
    for (let r = 0; r < ranges.length; r++) {
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
    if (isInputError(e)) return failIngest(deps, record, e, log);
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
      else await startOrRedriveFanout(deps, record, log);
      n++;
    } catch (e: unknown) {
      if (isInputError(e)) await failIngest(deps, record, e, log);
      else log.warn('could not redrive a stalled ingest', { error: e });
    }
  }
  return n;
}
