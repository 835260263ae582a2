/**
 * The extraction of one shard as a pipeline, so the extractor never waits for the rest of the
 * worker (the figures are in bench/README.md, extract):
 *
 *   tasks → samples → batches ──extract (up to `depth` batches queued)──▶ part writer
 *                                                  part full ──▶ write ──▶ commit (in order)
 *
 * - Parts are cut by size at sample boundaries, planned from the samples' row counts before
 *   extraction, so the cut depends only on the samples since the part began: a resumed shard
 *   makes the same parts. A task's samples may span two parts; the ledger's `next_sample`
 *   says where in a task a part ended.
 * - The next batch is queued before the current one is awaited; a full part is written and
 *   committed while later batches compute, and only the next commit waits for it. At most two
 *   parts are held (one filling, one being written) plus the batches in flight.
 * - Chunks are checked against their CRC32C before any of their tasks is yielded
 *   (worker/tasks.ts), so a corrupted chunk never reaches a committed part.
 * - The last part is cut at the work unit's end, which a split may move down while the
 *   pipeline runs (`moveEnd`); the holder never feeds a task past its reservation, and a split
 *   never cuts below it, so the new end is never below a task already fed. A part cut where a
 *   split put the end is named after it (`unitPartName`).
 */
import type { BlobStore } from '../core/blob/store';
import { ShardlineError, toError } from '../core/errors';
import type { PartInput } from '../core/ledger/ledger';
import type { Logger } from '../core/log';
import type { Rows } from './extraction/activations';
import type { BatchLimits } from './extraction/batch';
import { planBatches } from './extraction/batch';
import type { Extractor } from './extraction/engine';
import type { PartResult } from './extraction/part-writer';
import { PartWriter, rowBytes, unitPartName } from './extraction/part-writer';
import type { PositionSpec } from './extraction/positions';
import { selectPositions } from './extraction/positions';
import type { Sample, SkippedSample } from './extraction/samples';

/** What the pipeline needs. */
export interface PipelineOptions {
  shardId: number;
  /** The work unit (default 0: the shard's own). */
  unit?: number;
  /**
   * Where the shard ends (exclusive task index): a part cut at any other end was cut where a
   * split put it, and its name says so. Default: never named so.
   */
  shardEnd?: number;
  /** Where the unit ends now (exclusive); `moveEnd` moves it, `finish` cuts there. */
  end?: { task: number; sample: number };
  extractor: Extractor;
  output: BlobStore;
  positions: PositionSpec;
  metadata: Readonly<Record<string, string>>;
  partSizeBytes: number;
  batch: BatchLimits & { maxBatchSize: number };
  /** Batches queued on the extractor at once. Default 2. */
  depth?: number;
  /** The first part's index (parts already committed). */
  firstPartIndex: number;
  /** Where the first part begins: task and sample within it. */
  start: { task: number; sample: number };
  /** The run fingerprint every part carries. */
  fingerprint: string;
  /** Commits one written part (the ledger's `commitPart`, fenced by the claim). */
  commit: (part: PartInput, result: PartResult) => Promise<void>;
  /** Throws when the job must stop (lease lost, shutdown). */
  check: () => void;
  log: Logger;
}

interface PlannedSample {
  sample: Sample;
  positions: Int32Array | null;
  /** Index of the sample among its task's samples. */
  indexInTask: number;
  part: PartPlan;
}

interface PartPlan {
  index: number;
  start: { task: number; sample: number };
  /** Where it ends (exclusive), once cut. */
  end: { task: number; sample: number } | null;
  bytes: number;
  samples: number;
  /** Samples extracted into its writer so far. */
  extracted: number;
  lastTask: number;
  writer: PartWriter | null;
  skipped: SkippedSample[];
  /** Cut at the unit's end (by `finish`), not by size. */
  atEnd: boolean;
}

/** Counts for progress. */
export interface PipelineCounts {
  samples: number;
  tokens: number;
  partsCommitted: number;
}

/** One shard's extraction pipeline; feed tasks in order, then `finish`. */
export class PartPipeline {
  private readonly depth: number;
  private readonly bytesPerRow: number;
  private current: PartPlan;
  private pending: PlannedSample[] = [];
  private readonly inflight: Array<{
    samples: PlannedSample[];
    result: Promise<{ rows: Rows[][] }>;
  }> = [];
  private commitChain: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private end: { task: number; sample: number } | null;
  /** The last task fed (`addTask`), or null before the first. */
  private fedTask: number | null = null;
  readonly counts: PipelineCounts = { samples: 0, tokens: 0, partsCommitted: 0 };

  constructor(private readonly o: PipelineOptions) {
    this.depth = o.depth ?? 2;
    this.end = o.end ?? null;
    const info = o.extractor.info;
    this.bytesPerRow = rowBytes(info.layers.length, info.hiddenSize, info.dtype);
    this.current = this.newPart(o.firstPartIndex, o.start);
  }

  private newPart(index: number, start: { task: number; sample: number }): PartPlan {
    return {
      index,
      start,
      end: null,
      bytes: 0,
      samples: 0,
      extracted: 0,
      lastTask: start.task,
      writer: null,
      skipped: [],
      atEnd: false,
    };
  }

  /**
   * Moves the unit's end (a split moved it; ends only move down). Refused (`INTERNAL`) when a
   * task at or past it was already fed: the reservation rule makes that impossible.
   */
  moveEnd(end: { task: number; sample: number }): void {
    const fedPast =
      this.fedTask !== null &&
      (this.fedTask > end.task || (this.fedTask === end.task && end.sample === 0));
    if (fedPast)
      throw new ShardlineError(
        'INTERNAL',
        `the unit's end moved to task ${end.task}, below task ${this.fedTask!} already fed`,
      );
    this.end = end;
  }

  /**
   * Adds one task's samples (in order; `fromSample` skips those an earlier part committed) and
   * what was skipped of it; queues extraction as batches fill.
   */
  async addTask(
    taskIndex: number,
    samples: readonly Sample[],
    skipped: readonly SkippedSample[],
    fromSample = 0,
  ): Promise<void> {
    this.rethrow();
    if (
      this.end !== null &&
      taskIndex >= this.end.task &&
      !(taskIndex === this.end.task && this.end.sample > 0)
    )
      throw new ShardlineError(
        'INTERNAL',
        `task ${taskIndex} is past the unit's end (task ${this.end.task})`,
      );
    this.fedTask = taskIndex;
    // What a task skipped is recorded once, in the part its first sample falls in.
    if (fromSample === 0 && skipped.length > 0) this.current.skipped.push(...skipped);
    this.current.lastTask = Math.max(this.current.lastTask, taskIndex);
    for (let k = fromSample; k < samples.length; k++) {
      const sample = samples[k]!;
      const positions =
        this.o.positions.kind === 'all'
          ? null
          : Int32Array.from(
              selectPositions(this.o.positions, {
                length: sample.tokenIds.length,
                answerStart: sample.answerStart ?? null,
              }),
            );
      const rows = positions ? positions.length : sample.tokenIds.length;
      const bytes = rows * this.bytesPerRow + 16;
      if (this.current.samples > 0 && this.current.bytes + bytes > this.o.partSizeBytes)
        await this.cut({ task: taskIndex, sample: k });
      const part = this.current;
      part.samples++;
      part.bytes += bytes;
      part.lastTask = taskIndex;
      this.pending.push({ sample, positions, indexInTask: k, part });
    }
    await this.dispatch(false);
  }

  /** Ends the current part at `at` (exclusive) and opens the next. */
  private async cut(at: { task: number; sample: number }): Promise<void> {
    const done = this.current;
    done.end = at;
    this.current = this.newPart(done.index + 1, at);
    this.current.lastTask = at.task;
    await this.maybeFinish(done);
  }

  /** Queues full batches (all pending ones with `all`), keeping at most `depth` in flight. */
  private async dispatch(all: boolean): Promise<void> {
    const limits = this.o.batch;
    while (this.pending.length >= limits.maxBatchSize || (all && this.pending.length > 0)) {
      const plan = planBatches(
        this.pending.map((p) => p.sample.tokenIds.length),
        limits,
      );
      const [, end] = plan[0]!;
      if (!all && plan.length === 1 && end === this.pending.length && end < limits.maxBatchSize)
        break; // not full yet
      this.o.check();
      const batch = this.pending.slice(0, end);
      this.pending = this.pending.slice(end);
      const seqs = batch.map((p) => p.sample.tokenIds);
      const positions =
        this.o.positions.kind === 'all' ? undefined : batch.map((p) => p.positions!);
      const result = this.o.extractor.extract(seqs, positions);
      // Handled when awaited below; a rejection meanwhile must not count as unhandled.
      result.catch(() => undefined);
      this.inflight.push({ samples: batch, result });
      while (this.inflight.length > this.depth) await this.drainOne();
    }
  }

  private newWriter(part: PartPlan): PartWriter {
    const { layers, hiddenSize, dtype } = this.o.extractor.info;
    return new PartWriter({
      shardId: this.o.shardId,
      partIndex: part.index,
      unit: this.o.unit ?? 0,
      layers,
      hiddenSize,
      dtype,
      metadata: this.o.metadata,
    });
  }

  /** Awaits the oldest batch in flight and routes its rows to the parts' writers. */
  private async drainOne(): Promise<void> {
    const next = this.inflight.shift();
    if (!next) return;
    const batch = await next.result;
    this.o.check();
    next.samples.forEach((p, k) => {
      const part = p.part;
      part.writer ??= this.newWriter(part);
      part.writer.addSample(
        p.sample,
        batch.rows.map((layer) => layer[k]!),
        p.positions,
      );
      part.extracted++;
      this.counts.samples++;
      this.counts.tokens += p.sample.tokenIds.length;
    });
    for (const part of new Set(next.samples.map((p) => p.part))) await this.maybeFinish(part);
  }

  /**
   * When a cut part has all its samples, writes it and chains its commit. The previous part's
   * commit is awaited first: at most one part is written while the next one fills.
   */
  private async maybeFinish(part: PartPlan): Promise<void> {
    if (part.end === null || part.extracted < part.samples) return;
    // A part covers its range even when every sample in it was skipped: the ledger moves on.
    if (part.end.task === part.start.task && part.end.sample === part.start.sample) return;
    await this.commitChain;
    this.rethrow();
    this.o.check();
    const writer = part.writer ?? this.newWriter(part);
    writer.addSkipped(part.skipped);
    const end = part.end;
    const lastTask = end.sample > 0 ? end.task : end.task - 1;
    const unit = this.o.unit ?? 0;
    const splitEnd =
      part.atEnd && this.o.shardEnd !== undefined && end.task !== this.o.shardEnd
        ? end.task
        : undefined;
    const name = unitPartName(unit, part.index, splitEnd);
    this.commitChain = (async () => {
      const result = await writer.finish(this.o.output, name);
      part.writer = null; // its rows can go
      this.o.check();
      await this.o.commit(
        {
          part_index: part.index,
          name: result.name,
          first_task_index: part.start.task,
          first_sample: part.start.sample,
          last_task_index: lastTask,
          next_task_index: end.task,
          next_sample: end.sample,
          samples: result.samples,
          bytes: result.safetensors.bytes + result.index.bytes,
          checksums: {
            [`${result.name}.safetensors`]: result.safetensors.crc32c,
            [`${result.name}.index.jsonl`]: result.index.crc32c,
          },
          fingerprint: this.o.fingerprint,
        },
        result,
      );
      this.counts.partsCommitted++;
    })().catch((e: unknown) => {
      this.failure ??= toError(e);
    });
  }

  private rethrow(): void {
    if (this.failure !== null) throw this.failure;
  }

  /**
   * After the last task: extracts what is pending, cuts the last part at the unit's end (`end`
   * when given, moved there first; else the end given or last moved to), writes and commits
   * it, and waits for every commit.
   */
  async finish(end?: { task: number; sample: number }): Promise<void> {
    if (end) this.moveEnd(end);
    if (this.end === null)
      throw new ShardlineError('INTERNAL', 'finish: the unit has no end to cut the last part at');
    await this.dispatch(true);
    while (this.inflight.length > 0) await this.drainOne();
    this.current.end = this.end;
    this.current.atEnd = true;
    await this.maybeFinish(this.current);
    await this.commitChain;
    this.rethrow();
  }

  /** Abandons queued work (the job is stopping): settles what is in flight, commits nothing. */
  async abandon(): Promise<void> {
    this.failure ??= new ShardlineError('INTERRUPTED', 'the shard job stopped');
    await Promise.allSettled(this.inflight.map((b) => b.result));
    this.inflight.length = 0;
    await this.commitChain;
  }
}
