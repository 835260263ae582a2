/**
 * Processing one claimed shard: stream its tasks from where the last committed part ended,
 * turn them into samples, run the model, write parts and commit each (fenced by the claim's
 * epoch), then write the manifest and complete. Any step may find the lease lost: then the
 * job stops at once and writes nothing more to the ledger.
 *
 * Parts are cut at task boundaries once a part holds `partSizeBytes` of activations. The rule
 * depends only on the tasks since the part started, so a worker that resumes a shard makes
 * the same parts (same names, same bytes) as the one before it would have: a part written but
 * not committed is simply overwritten.
 */
import type { BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import { isoTime } from '../core/clock';
import { ShardMetadataSchema, decodeJson } from '../core/dataset/metadata';
import { shardMetadataKey } from '../core/dataset/paths';
import { ShardlineError, errorCode, failureKind, isLeaseLost, toError } from '../core/errors';
import type { Claim, Ledger } from '../core/ledger/ledger';
import { endOf } from '../core/ledger/verbs';
import type { Logger } from '../core/log';
import { MESSAGE_VERSION } from '../core/messages';
import { ringDoorbells } from '../core/wakeup/doorbell';
import type { Publisher } from '../core/wakeup/publisher';
import type { BatchLimits } from './extraction/batch';
import type { Extractor } from './extraction/engine';
import type { PositionSpec } from './extraction/positions';
import type { SampleOptions } from './extraction/samples';
import { buildSamples } from './extraction/samples';
import type { PromptTokenizer } from './extraction/tokenizer';
import type { Timers } from './lease';
import { LeaseKeeper, realTimers } from './lease';
import { encodeManifest, shardManifestKey } from '../core/rollup/manifests';
import { buildShardManifest } from './manifest';
import { PartPipeline } from './part-pipeline';
import { shardTasks } from './tasks';

/** Pub/Sub, when the worker runs with it. */
export interface JobMessaging {
  publisher: Publisher;
  /** Topic of `shard.completed` / `shard.failed`. */
  eventsTopic: string;
  /** Topic of doorbells (a released or retried shard rings again). */
  workTopic: string;
}

/** Progress of a shard, for the progress bar and logs. */
export interface ShardProgress {
  shardId: number;
  /** Tasks processed in this run / tasks left when it started. */
  tasksDone: number;
  tasksToDo: number;
  samples: number;
  tokens: number;
  partsCommitted: number;
}

/** What a shard job needs. */
export interface ShardJobDeps {
  ledger: Ledger;
  /** The dataset's folder. */
  dataset: BlobStore;
  /** Where parts and the manifest go. */
  output: BlobStore;
  /** The dataset's location, for doorbells. */
  datasetUri: string;
  extractor: Extractor;
  tokenizer: PromptTokenizer;
  sampleOptions: SampleOptions;
  /** Run-level part metadata (model, tokenizer, options; see runMetadata). */
  runMetadata: Record<string, string>;
  /** Which token positions are stored (`--positions`). */
  positions: PositionSpec;
  /** The run's fingerprint (`runFingerprint` of the run metadata), carried by every part. */
  fingerprint: string;
  clock: Clock;
  log: Logger;
  messaging?: JobMessaging;
  timers?: Timers;
  /** Jitter of the retry backoff, in [0, 1); default Math.random. */
  random?: () => number;
  /** Fires on shutdown: finish the batch in hand, release the lease, return. */
  stop: AbortSignal;
  /**
   * Fires on a preemption notice (worker/preemption.ts): read no further, cut the part in hand
   * where reading stopped and commit it, then release the unit (no attempt counted). The caller
   * bounds how long that may take (its grace period).
   */
  drain?: AbortSignal;
  onProgress?: (p: ShardProgress) => void;
}

/** Tunables. */
export interface ShardJobSettings {
  leaseMs: number;
  /** Cut a part once it holds this many bytes of activations. */
  partSizeBytes: number;
  batch: BatchLimits & { maxBatchSize: number };
  /**
   * How long the job keeps retrying through a transient failure (a service unavailable,
   * throttled or timed out) before it gives the shard back (released: no attempt counted).
   * Default `DEFAULT_OUTAGE_BUDGET_MS`.
   */
  outageBudgetMs?: number;
  /** Backoff between those retries: full jitter from `baseMs`, doubling to `capMs`. */
  retry?: { baseMs: number; capMs: number };
  /**
   * How much work, in time, the holder reserves ahead of what it reads (at most half a lease):
   * the tail of its unit no split can take. Default `DEFAULT_RESERVE_AHEAD_MS`.
   */
  reserveAheadMs?: number;
}

/** How long a job rides through an outage before releasing its shard: 30 minutes. */
export const DEFAULT_OUTAGE_BUDGET_MS = 30 * 60_000;
/** Backoff between retries through an outage: 1 s doubling to 60 s (with jitter). */
export const DEFAULT_RETRY = { baseMs: 1_000, capMs: 60_000 } as const;

/** How a job ended. */
export type ShardOutcome =
  /**
   * The claim's unit is completed; `shardCompleted` when it was the shard's last (this worker
   * wrote the shard's manifest, at `manifestUri`). Parts and samples: the shard's when it
   * completed, else the unit's.
   */
  | {
      kind: 'completed';
      claim: Claim;
      shardCompleted: boolean;
      parts: number;
      samples: number;
      manifestUri: string | null;
    }
  /** Another worker holds the shard now (or it was reset); nothing more was written. */
  | { kind: 'lost'; claim: Claim; reason: string }
  /** Shutdown: the lease was released without an attempt penalty. */
  | { kind: 'stopped'; claim: Claim }
  /**
   * An outage outlasted `outageBudgetMs`: the shard was released (no attempt counted) for a
   * worker to take up once the services are back.
   */
  | { kind: 'released'; claim: Claim; reason: string }
  /**
   * The shard's committed parts were extracted with other settings (another run fingerprint):
   * released without an attempt, and the worker stops serving the dataset.
   */
  | { kind: 'refused'; claim: Claim; reason: string }
  /**
   * The claim was failed with the reason: attempts + 1 (`unknown` failures), or failed for good
   * at once (`permanent` ones); `final` when the shard is now `failed`.
   */
  | { kind: 'failed'; claim: Claim; reason: string; final: boolean };

/** An outage that outlasted the job's budget. */
class OutageTooLong extends Error {
  constructor(
    readonly last: unknown,
    readonly outageMs: number,
  ) {
    super(`services unavailable for ${Math.round(outageMs / 1000)} s: ${toError(last).message}`);
  }
}

class Stop extends Error {}

/** Processes one claimed shard, or work unit of one, to completion (or until lost, stopped or failed). */
export async function processShard(
  claim: Claim,
  deps: ShardJobDeps,
  settings: ShardJobSettings,
): Promise<ShardOutcome> {
  const log = deps.log.child({
    dataset_id: claim.dataset_id,
    shard_id: claim.shard_id,
    ...(claim.unit ? { unit: claim.unit } : {}),
    worker_id: claim.worker_id,
    epoch: claim.epoch,
  });
  const keeper = new LeaseKeeper(
    deps.ledger,
    claim,
    settings.leaseMs,
    deps.clock,
    log,
    deps.timers,
  );
  const check = (): void => {
    if (keeper.lost.aborted)
      throw keeper.lost.reason instanceof Error
        ? new ShardlineError('LEASE_LOST', keeper.lost.reason.message)
        : new ShardlineError('LEASE_LOST', 'lease lost');
    if (deps.stop.aborted) throw new Stop();
  };
  const retry = settings.retry ?? DEFAULT_RETRY;
  const budgetMs = settings.outageBudgetMs ?? DEFAULT_OUTAGE_BUDGET_MS;
  const timers = deps.timers ?? realTimers;
  const random = deps.random ?? Math.random;
  let outageSince: number | null = null;
  let waits = 0;
  const progressed = (): void => {
    outageSince = null;
    waits = 0;
  };
  try {
    // Each pass resumes from the ledger's committed state; a transient failure costs the work
    // since the last committed part, never an attempt (docs/decisions.md).
    for (;;) {
      try {
        return await extractShard(claim, deps, settings, keeper, check, log, progressed);
      } catch (e: unknown) {
        if (isLeaseLost(e) || keeper.lost.aborted || e instanceof Stop || deps.stop.aborted)
          throw e;
        if (failureKind(e) !== 'transient') throw e;
        const now = deps.clock.nowMs();
        outageSince ??= now;
        if (now - outageSince >= budgetMs) throw new OutageTooLong(e, now - outageSince);
        const waitMs = Math.min(retry.capMs, retry.baseMs * 2 ** waits) * (0.5 + random() / 2);
        waits++;
        log.warn('transient failure; retrying from the last committed part, lease kept', {
          error: e,
          wait_ms: Math.round(waitMs),
          outage_ms: now - outageSince,
          retries: waits,
        });
        await pause(waitMs, timers, [keeper.lost, deps.stop]);
        check();
      }
    }
  } catch (e: unknown) {
    keeper.stop();
    if (isLeaseLost(e) || keeper.lost.aborted) {
      const reason = toError(keeper.lost.aborted ? keeper.lost.reason : e).message;
      log.warn('stopped: the lease is no longer ours; nothing more is written', { reason });
      return { kind: 'lost', claim: keeper.claim, reason };
    }
    if (e instanceof Stop || deps.stop.aborted) return release(keeper.claim, deps, log);
    if (e instanceof OutageTooLong) return releaseAfterOutage(keeper.claim, deps, log, e);
    if (errorCode(e) === 'FINGERPRINT_MISMATCH') {
      const reason = toError(e).message;
      log.error('this run cannot commit into the shard: its parts were made with other settings', {
        reason,
      });
      const out = await release(keeper.claim, deps, log);
      return out.kind === 'stopped' ? { kind: 'refused', claim: keeper.claim, reason } : out;
    }
    return fail(keeper.claim, deps, log, e, failureKind(e) === 'permanent');
  } finally {
    keeper.stop();
  }
}

/** Waits `ms`, or less when one of `signals` fires. */
function pause(ms: number, timers: Timers, signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      timers.clearTimeout(handle);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    };
    const handle = timers.setTimeout(done, ms);
    for (const s of signals) {
      if (s.aborted) return done();
      s.addEventListener('abort', done, { once: true });
    }
  });
}

/** Tasks a holder reserves ahead at least, before its rate is known (a few batches' worth). */
export const MIN_RESERVE_TASKS = 4;

/** The most work, in time, a holder reserves ahead by default: 30 s (`work --reserve_seconds`). */
export const DEFAULT_RESERVE_AHEAD_MS = 30_000;

/**
 * How far ahead the holder reserves (docs/decisions.md#work-units-split-the-tail): the tasks it
 * gets through in `horizonMs` (`reserveAheadMs`, at most half a lease) at its rate so far, and
 * at least `MIN_RESERVE_TASKS`. What a holder reserved no split can take, so this is the tail a
 * unit keeps to itself; the cost of a shorter one is a ledger write each time the holder reaches
 * its reservation (every 30 s of work by default, besides the heartbeats every third of a
 * lease). The rate counts tasks the model has run, not tasks read: the first reads fill the
 * pipeline in a burst that says nothing about the pace.
 */
export function reserveAheadTasks(tasksDone: number, elapsedMs: number, horizonMs: number): number {
  const rate = elapsedMs > 0 ? tasksDone / elapsedMs : 0;
  return Math.max(MIN_RESERVE_TASKS, Math.ceil(rate * horizonMs));
}

/**
 * One pass over a claimed work unit: from the ledger's next task to the unit's end (which a
 * split may move down meanwhile), parts committed as they fill; then the unit is completed,
 * and the holder whose unit is the shard's last writes the shard's manifest and completes the
 * shard. Throws on any failure; `processShard` decides.
 */
async function extractShard(
  claim: Claim,
  deps: ShardJobDeps,
  settings: ShardJobSettings,
  keeper: LeaseKeeper,
  check: () => void,
  log: Logger,
  progressed: () => void,
): Promise<ShardOutcome> {
  const metaKey = shardMetadataKey(claim.shard_id);
  const meta = decodeJson(
    ShardMetadataSchema,
    (await deps.dataset.readAll(metaKey)).toString('utf8'),
    deps.dataset.uriOf(metaKey),
  );
  const unit = claim.unit ?? 0;
  const record = await deps.ledger.getShard(claim.dataset_id, claim.shard_id, unit);
  if (!record)
    throw new ShardlineError(
      'NOT_FOUND',
      `${unit ? `unit ${unit} of ` : ''}shard ${claim.shard_id} of ${claim.dataset_id} is not in the ledger`,
    );
  const shardEnd = meta.first_task_index + meta.total_tasks;
  keeper.noteEnd(endOf(record));
  const start = { task: record.next_task_index, sample: record.next_sample };
  if (record.parts_committed > 0)
    log.info('resuming after the last committed part', {
      parts: record.parts_committed,
      next_task_index: start.task,
      next_sample: start.sample,
    });

  const progress: ShardProgress = {
    shardId: claim.shard_id,
    tasksDone: 0,
    tasksToDo: keeper.end - start.task,
    samples: 0,
    tokens: 0,
    partsCommitted: record.parts_committed,
  };
  const pipeline = new PartPipeline({
    shardId: claim.shard_id,
    unit,
    shardEnd,
    end: { task: keeper.end, sample: 0 },
    extractor: deps.extractor,
    output: deps.output,
    positions: deps.positions,
    metadata: deps.runMetadata,
    partSizeBytes: settings.partSizeBytes,
    batch: settings.batch,
    firstPartIndex: record.parts_committed,
    start,
    fingerprint: deps.fingerprint,
    check,
    log,
    commit: async (input, result) => {
      await deps.ledger.commitPart(keeper.claim, input);
      progressed();
      log.info('part committed', {
        part: result.name,
        tasks: `${input.first_task_index}-${input.last_task_index}`,
        samples: result.samples,
        rows: result.rows,
        tokens: result.tokens,
        bytes: input.bytes,
      });
      progress.partsCommitted = input.part_index + 1;
      deps.onProgress?.(progress);
    },
  });
  // The holder reads a task only once it is reserved (a split never takes a reserved task),
  // reserving about half a lease of work ahead; each heartbeat carries the next reservation.
  const startedMs = deps.clock.nowMs();
  let tasksRead = 0;
  let samplesRead = 0;
  let frontier = start.task;
  const ahead = (): number => {
    // Tasks the model has run: its samples so far, at the tasks' samples per task.
    const done = samplesRead > 0 ? (pipeline.counts.samples * tasksRead) / samplesRead : 0;
    const horizonMs = Math.min(
      settings.leaseMs / 2,
      settings.reserveAheadMs ?? DEFAULT_RESERVE_AHEAD_MS,
    );
    return reserveAheadTasks(done, deps.clock.nowMs() - startedMs, horizonMs);
  };
  keeper.reserveAhead = () => frontier + ahead();
  let end = keeper.end;
  const endMoved = (): void => {
    if (keeper.end === end) return;
    log.info('a split moved the end of this unit', { from: end, to: keeper.end });
    end = keeper.end;
    pipeline.moveEnd({ task: end, sample: 0 });
    progress.tasksToDo = end - start.task;
  };
  try {
    for await (const { taskIndex, task } of shardTasks(
      deps.dataset,
      meta,
      start.task,
      undefined,
      () => keeper.end,
    )) {
      check();
      if (deps.drain?.aborted) break;
      await keeper.reserve(taskIndex, ahead());
      endMoved();
      if (taskIndex >= end) break;
      const { samples, skipped } = buildSamples(
        task,
        taskIndex,
        deps.sampleOptions,
        deps.tokenizer,
      );
      await pipeline.addTask(
        taskIndex,
        samples,
        skipped,
        taskIndex === start.task ? start.sample : 0,
      );
      tasksRead++;
      samplesRead += samples.length - (taskIndex === start.task ? start.sample : 0);
      frontier = taskIndex + 1;
      progress.tasksDone++;
      progress.samples = pipeline.counts.samples;
      progress.tokens = pipeline.counts.tokens;
      deps.onProgress?.(progress);
    }
    endMoved();
    // A preemption notice: the last part ends where reading stopped (named for that end, as a
    // part cut at a split is), and the unit goes back to be resumed there.
    const drained = deps.drain?.aborted === true && frontier < end;
    await pipeline.finish(drained ? { task: frontier, sample: 0 } : undefined);
    if (drained) {
      keeper.stop();
      log.notice('preemption notice: committed the part in hand; releasing the unit', {
        next_task_index: frontier,
        end_task: end,
      });
      return await release(keeper.claim, deps, log);
    }
  } catch (e: unknown) {
    await pipeline.abandon();
    throw e;
  }

  // Every task of the unit is in a committed part. Complete it; the ledger refuses the shard's
  // last unit without the shard's manifest, so exactly one completer writes the manifest.
  check();
  try {
    const done = await deps.ledger.complete(keeper.claim, undefined, { requireManifest: true });
    keeper.stop();
    log.notice('unit completed; the shard has units still running', {
      unit,
      parts: done.parts_committed,
      samples: done.samples_committed,
    });
    return {
      kind: 'completed',
      claim: keeper.claim,
      shardCompleted: false,
      parts: done.parts_committed,
      samples: done.samples_committed,
      manifestUri: null,
    };
  } catch (e: unknown) {
    if (errorCode(e) !== 'MANIFEST_REQUIRED') throw e;
  }
  const parts = await deps.ledger.listShardParts(keeper.claim);
  const manifest = await buildShardManifest(deps.output, {
    datasetId: claim.dataset_id,
    shardId: claim.shard_id,
    firstTaskIndex: meta.first_task_index,
    totalTasks: meta.total_tasks,
    workerId: claim.worker_id,
    epoch: claim.epoch,
    parts,
  });
  const key = shardManifestKey(claim.shard_id);
  await deps.output.writeAll(key, encodeManifest(manifest), { contentType: 'application/json' });
  check();
  const manifestUri = deps.output.uriOf(key);
  await deps.ledger.complete(keeper.claim, {
    parts: parts.length,
    samples: manifest.samples,
    bytes: manifest.bytes,
    uri: manifestUri,
  });
  keeper.stop();
  log.notice('shard completed', {
    parts: parts.length,
    samples: manifest.samples,
    skipped: manifest.skipped,
    tokens: manifest.tokens,
    ...(new Set(parts.map((p) => p.unit)).size > 1
      ? { units: new Set(parts.map((p) => p.unit)).size }
      : {}),
  });
  if (deps.messaging) {
    // Best effort: the ledger already says completed, and workers roll the dataset manifest up
    // themselves when the event is lost (worker/loop.ts).
    await deps.messaging.publisher
      .publish(deps.messaging.eventsTopic, {
        type: 'shard.completed',
        version: MESSAGE_VERSION,
        dataset_id: claim.dataset_id,
        shard_id: claim.shard_id,
        worker_id: claim.worker_id,
        epoch: claim.epoch,
        manifest_uri: manifestUri,
        parts: parts.length,
        samples: manifest.samples,
        completed_at: isoTime(deps.clock.nowMs()),
      })
      .catch((e: unknown) => log.warn('could not publish shard.completed', { error: e }));
  }
  return {
    kind: 'completed',
    claim: keeper.claim,
    shardCompleted: true,
    parts: parts.length,
    samples: manifest.samples,
    manifestUri,
  };
}

/** Gives the shard back without an attempt penalty (shutdown), and rings its doorbell. */
async function release(claim: Claim, deps: ShardJobDeps, log: Logger): Promise<ShardOutcome> {
  try {
    await deps.ledger.release(claim);
  } catch (e: unknown) {
    if (isLeaseLost(e)) return { kind: 'lost', claim, reason: toError(e).message };
    throw e;
  }
  log.notice('shutting down: shard released (no attempt counted)');
  if (deps.messaging) {
    await ringDoorbells(
      deps.messaging.publisher,
      deps.messaging.workTopic,
      deps.clock,
      [{ dataset_id: claim.dataset_id, shard_id: claim.shard_id, dataset_uri: deps.datasetUri }],
      'release',
    ).catch((e: unknown) =>
      log.warn('could not ring the doorbell of the released shard; polling workers will find it', {
        error: e,
      }),
    );
  }
  return { kind: 'stopped', claim };
}

/**
 * Gives the shard back after an outage outlasted the job's budget: released, no attempt
 * counted (the shard did nothing wrong); its doorbell rings for when the services are back.
 */
async function releaseAfterOutage(
  claim: Claim,
  deps: ShardJobDeps,
  log: Logger,
  outage: OutageTooLong,
): Promise<ShardOutcome> {
  const reason = outage.message;
  log.error('an outage outlasted the retry budget; releasing the shard (no attempt counted)', {
    reason,
    outage_ms: outage.outageMs,
  });
  const out = await release(claim, deps, log);
  return out.kind === 'stopped' ? { kind: 'released', claim, reason } : out;
}

/**
 * Records a failure against the claim: a counted attempt (the shard is retried elsewhere after
 * its backoff), or, when `permanent` (docs/decisions.md), the shard fails at once.
 */
async function fail(
  claim: Claim,
  deps: ShardJobDeps,
  log: Logger,
  e: unknown,
  permanent: boolean,
): Promise<ShardOutcome> {
  const err = toError(e);
  const reason =
    `${(err as { code?: unknown }).code ? `${String((err as { code?: unknown }).code)}: ` : ''}${err.message}`.slice(
      0,
      2000,
    );
  let final = false;
  try {
    const after = await deps.ledger.fail(claim, reason, { final: permanent });
    final = after.status === 'failed';
  } catch (failError: unknown) {
    if (isLeaseLost(failError)) return { kind: 'lost', claim, reason: toError(failError).message };
    log.error('could not record the failure in the ledger; the lease will expire instead', {
      error: failError,
    });
    return { kind: 'failed', claim, reason, final: false };
  }
  log.error(
    permanent
      ? 'shard failed for good: the data is wrong in a way no retry fixes'
      : final
        ? 'shard failed for good (max attempts)'
        : 'shard failed; it goes back to be retried after its backoff',
    { error: err, reason },
  );
  if (deps.messaging) {
    const { publisher, eventsTopic, workTopic } = deps.messaging;
    await publisher
      .publish(eventsTopic, {
        type: 'shard.failed',
        version: MESSAGE_VERSION,
        dataset_id: claim.dataset_id,
        shard_id: claim.shard_id,
        worker_id: claim.worker_id,
        epoch: claim.epoch,
        reason,
        attempts:
          (await deps.ledger.getShard(claim.dataset_id, claim.shard_id, claim.unit ?? 0))
            ?.attempts ?? 0,
        final,
        failed_at: isoTime(deps.clock.nowMs()),
      })
      .catch((pe: unknown) => log.warn('could not publish shard.failed', { error: pe }));
    if (!final) {
      await ringDoorbells(
        publisher,
        workTopic,
        deps.clock,
        [{ dataset_id: claim.dataset_id, shard_id: claim.shard_id, dataset_uri: deps.datasetUri }],
        'retry',
      ).catch((pe: unknown) =>
        log.warn('could not ring the doorbell of the failed shard', { error: pe }),
      );
    }
  }
  return { kind: 'failed', claim, reason, final };
}
