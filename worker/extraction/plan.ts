/**
 * `shardline plan`: what a run will cost, before it starts. It builds the prompts of a seeded
 * sample of tasks (all of them when there are few) with the real prompt builder and tokenizer,
 * sizes each task's output with the real part writer, and scales the sample to the dataset
 * with a 95 % interval (worker/extraction/estimate.ts): samples, tokens, prompts dropped or
 * shortened for length, stored rows, parts and output bytes. Machine time comes from a short
 * calibration of the real model (worker/extraction/calibrate.ts) or from a rate the user
 * measured; wall time for N workers follows from the shards' sizes; costs from prices given.
 *
 * Bytes, part by part, as the worker writes them (worker/extraction/part-writer.ts): each
 * task's rows × layers × hidden × dtype bytes of activations, plus what the writer itself
 * writes for its samples (token ids, offsets, task indexes, the index lines and the skipped
 * entries), measured by running the writer on the task's samples without activations; plus
 * each part's fixed header (the run's metadata and the tensor table), measured on an empty
 * part with the real layers. What this leaves out is bounded and added to the interval: the
 * digits of offsets and counts, which grow with a part's size (`modelMarginBytes`).
 */
import * as path from 'node:path';

import type { Location } from '../../core/blob/location';
import { parseLocation, splitParent } from '../../core/blob/location';
import type { BlobInfo, BlobStore, BlobWriter } from '../../core/blob/store';
import { ConfigError, ShardlineError } from '../../core/errors';
import { Prng } from '../../core/random';
import type { Logger } from '../../core/log';
import { sourceFromStore } from '../../core/split/source';
import type { ActivationDtype } from './activations';
import { calibrate } from './calibrate';
import type { Calibration } from './calibrate';
import { ExtractionEngine } from './engine';
import type { Estimate } from './estimate';
import { estimateTotal, scaleEstimate, sumEstimates, widen } from './estimate';
import { readModelShape, resolveModelFile } from './model-shape';
import { PartWriter, runMetadata, sampleBytes } from './part-writer';
import { sampleDataset, sampleInputFile } from './plan-sample';
import type { TaskSample } from './plan-sample';
import type { PositionSpec } from './positions';
import { formatPositions, selectPositions, storedRows } from './positions';
import { loadPromptSetup } from './prompt-setup';
import type { ExtractionChoices } from './prompt-setup';
import type { Sample, SampleOptions, SkippedSample } from './samples';
import { buildSamples } from './samples';
import type { PromptTokenizer } from './tokenizer';

/** What the stored activations look like. */
export interface OutputLayout {
  /** Layers extracted, ascending. */
  layers: number[];
  /** Row width. */
  hiddenSize: number;
  dtype: ActivationDtype;
}

/** Bytes per stored element of a dtype. */
export function dtypeBytes(dtype: ActivationDtype): number {
  return dtype === 'float16' ? 2 : 4;
}

/** How tasks become samples and parts, as the run will do it. */
export interface PlanSettings {
  sampleOptions: SampleOptions;
  tokenizer: PromptTokenizer;
  positions: PositionSpec;
  layout: OutputLayout;
  /** The run-level metadata every part's header carries (`runMetadata`). */
  runMetadata: Readonly<Record<string, string>>;
  /** `--part_size_mb` in bytes: a part is cut at the sample boundary before it would pass it. */
  partSizeBytes: number;
  /** `--batch_size`: the worker adds samples to a part a batch at a time. */
  batchSize: number;
}

/** One task as a run will process it. */
export interface TaskMeasure {
  taskIndex: number;
  /** Prompts built (one per test input × augmentation; one for text). */
  samples: number;
  /** Prompt tokens: what the model runs. */
  tokens: number;
  /** Rows stored (`--positions`); each costs layers × hidden × dtype bytes. */
  rows: number;
  /** Samples or whole tasks skipped, by reason (`too_long`: dropped for length). */
  skipped: Record<string, number>;
  /** Prompts kept but shortened for length (train examples dropped, text cut). */
  shortened: number;
  /** Bytes the task adds to its part's two files (everything but the part's fixed header). */
  bytes: number;
  /** What each sample adds to the part writer's running size (the part-cut rule), in order. */
  sampleSizes: number[];
  /** Milliseconds it took to build and tokenize the prompts. */
  buildMs: number;
}

/** A store that keeps nothing but the sizes written: the part writer's bytes, counted. */
class CountingStore implements BlobStore {
  readonly root = 'plan://counted';
  private readonly sizes = new Map<string, number>();

  private refuse(what: string): never {
    throw new ShardlineError('INTERNAL', `the plan's counting store cannot ${what}`);
  }
  read(): never {
    return this.refuse('read');
  }
  readAll(): Promise<Buffer> {
    return Promise.reject(new ShardlineError('INTERNAL', "the plan's counting store cannot read"));
  }
  writer(key: string): BlobWriter {
    let size = 0;
    return {
      write: (data) => {
        size += data.byteLength;
        return Promise.resolve();
      },
      close: () => {
        this.sizes.set(key, size);
        return Promise.resolve(this.info(key, size));
      },
      abort: () => Promise.resolve(),
    };
  }
  writeAll(key: string, data: Uint8Array | string): Promise<BlobInfo> {
    const size = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
    this.sizes.set(key, size);
    return Promise.resolve(this.info(key, size));
  }
  stat(key: string): Promise<BlobInfo | null> {
    const size = this.sizes.get(key);
    return Promise.resolve(size === undefined ? null : this.info(key, size));
  }
  list(): AsyncIterable<BlobInfo> {
    return this.refuse('list');
  }
  delete(key: string): Promise<void> {
    this.sizes.delete(key);
    return Promise.resolve();
  }
  uriOf(key: string): string {
    return `${this.root}/${key}`;
  }
  private info(key: string, size: number): BlobInfo {
    return { key, size, generation: '1' };
  }
}

/**
 * Bytes of a part holding `samples` and `skipped`, written by the real part writer with the
 * given layers but no activation rows (`layers: []` sizes everything but the activations).
 */
async function partBytes(
  samples: readonly Sample[],
  skipped: readonly SkippedSample[],
  s: PlanSettings,
  layers: readonly number[],
): Promise<number> {
  const { hiddenSize, dtype } = s.layout;
  const writer = new PartWriter({
    shardId: 0,
    partIndex: 0,
    layers,
    hiddenSize,
    dtype,
    metadata: s.runMetadata,
  });
  if (samples.length > 0 && layers.length > 0)
    throw new ShardlineError('INTERNAL', 'partBytes sizes samples with no layers only');
  for (const x of samples) {
    const n = x.tokenIds.length;
    const positions = selectPositions(s.positions, {
      length: n,
      answerStart: x.answerStart ?? null,
    });
    writer.addSample(x, [], s.positions.kind === 'all' ? null : Int32Array.from(positions));
  }
  writer.addSkipped(skipped);
  const r = await writer.finish(new CountingStore());
  return r.safetensors.bytes + r.index.bytes;
}

/** The fixed bytes of parts: an empty part without and with the real layers. */
export interface PartOverhead {
  /** An empty part's files with no layers (subtracted from each task's measure). */
  bareBytes: number;
  /** An empty part's files with the real layers: each part's fixed header. */
  headerBytes: number;
}

/** Measures the fixed bytes of a part under `s`. */
export async function partOverhead(s: PlanSettings): Promise<PartOverhead> {
  return {
    bareBytes: await partBytes([], [], s, []),
    headerBytes: await partBytes([], [], s, s.layout.layers),
  };
}

/** One task measured, and its samples (for a calibration). */
export interface MeasuredTask {
  measure: TaskMeasure;
  samples: Sample[];
}

/**
 * Builds `task`'s samples as the worker would and measures them. `now` is a monotonic clock in
 * ms; `overhead` from `partOverhead(s)`.
 */
export async function measureTask(
  task: unknown,
  taskIndex: number,
  s: PlanSettings,
  overhead: PartOverhead,
  now: () => number,
): Promise<MeasuredTask> {
  const t0 = now();
  const { samples, skipped } = buildSamples(task, taskIndex, s.sampleOptions, s.tokenizer);
  const buildMs = now() - t0;
  const { layers, hiddenSize, dtype } = s.layout;
  const rowBytes = layers.length * hiddenSize * dtypeBytes(dtype);
  const rows = samples.map((x) => storedRows(s.positions, x.tokenIds.length));
  const files = (await partBytes(samples, skipped, s, [])) - overhead.bareBytes;
  const skippedByReason: Record<string, number> = {};
  for (const k of skipped) skippedByReason[k.reason] = (skippedByReason[k.reason] ?? 0) + 1;
  const totalRows = rows.reduce((a, b) => a + b, 0);
  return {
    samples,
    measure: {
      taskIndex,
      samples: samples.length,
      tokens: samples.reduce((n, x) => n + x.tokenIds.length, 0),
      rows: totalRows,
      skipped: skippedByReason,
      shortened: samples.filter(
        (x) =>
          x.truncated ||
          (x.trainExamplesUsed !== null &&
            x.trainExamplesTotal !== null &&
            x.trainExamplesUsed < x.trainExamplesTotal),
      ).length,
      bytes: files + totalRows * rowBytes,
      // What the worker's part cuts count (PartWriter.byteSize).
      sampleSizes: rows.map((n) => sampleBytes(n, layers.length, hiddenSize, dtype)),
      buildMs,
    },
  };
}

/**
 * The parts a worker cuts a shard into, given every task's measure in order: the part in hand
 * is cut before the sample that would take it past `partSizeBytes` (a sample boundary, maybe
 * inside a task; worker/part-pipeline.ts), and never left empty; what a task skips goes into
 * the part in hand, so a shard whose tasks were all skipped still makes one part. Exact when
 * every task was measured.
 */
export function countParts(tasks: readonly TaskMeasure[], partSizeBytes: number): number {
  if (tasks.length === 0) return 0;
  let parts = 1;
  let bytes = 0;
  let samples = 0;
  for (const t of tasks)
    for (const size of t.sampleSizes) {
      if (samples > 0 && bytes + size > partSizeBytes) {
        parts++;
        bytes = 0;
        samples = 0;
      }
      bytes += size;
      samples++;
    }
  return parts;
}

/**
 * A bound on what the byte model leaves out: the digits of row numbers and token offsets in a
 * full part's index lines (≤ 16 bytes a sample), the per-task counts and header padding that
 * measuring one task at a time adds (≤ 40 bytes a task), and the digits of the shapes and
 * offsets in a full part's tensor table (≤ 32 bytes a tensor, 64 more a part).
 */
export function modelMarginBytes(
  samples: number,
  tasks: number,
  parts: number,
  layers: number,
): number {
  return 16 * samples + 40 * tasks + (32 * (layers + 3) + 64) * parts;
}

/** The totals `shardline plan` states. */
export interface PlanEstimates {
  samples: Estimate;
  tokens: Estimate;
  /** Rows stored (with `--positions all`, the tokens). */
  stored_rows: Estimate;
  /** Samples dropped because even the shortest prompt is over `--max_seq_length`. */
  dropped_for_length: Estimate;
  /** Samples kept with fewer train examples (or a text cut) to fit `--max_seq_length`. */
  shortened_for_length: Estimate;
  /** Skipped samples and tasks by reason (`too_long` is `dropped_for_length`). */
  skipped_by_reason: Record<string, Estimate>;
  parts: Estimate;
  /** Bytes of every part's files: what the dataset `_MANIFEST.json` reports as `bytes`. */
  output_bytes: Estimate;
  /** Mean prompt-building time per task on this machine (ms). */
  build_ms_per_task: number;
}

/** Totals for a dataset of `sample.totalTasks` tasks from the measured ones (`seed`: the part bootstrap's). */
export function estimateTotals(
  sample: Pick<TaskSample, 'totalTasks' | 'shards' | 'census'>,
  measures: readonly TaskMeasure[],
  s: Pick<PlanSettings, 'partSizeBytes' | 'batchSize' | 'layout'>,
  overhead: PartOverhead,
  seed = 0,
): PlanEstimates {
  const N = sample.totalTasks;
  const total = (f: (m: TaskMeasure) => number): Estimate =>
    estimateTotal(
      measures.map((m) => f(m)),
      N,
    );
  const reasons = [...new Set(measures.flatMap((m) => Object.keys(m.skipped)))].sort();
  const skipped = Object.fromEntries(reasons.map((r) => [r, total((m) => m.skipped[r] ?? 0)]));
  const samples = total((m) => m.samples);
  const parts = estimateParts(sample, measures, s, seed);
  const contentBytes = total((m) => m.bytes);
  const bytes = widen(
    sumEstimates(contentBytes, scaleEstimate(parts, overhead.headerBytes)),
    modelMarginBytes(samples.high, N, parts.high, s.layout.layers.length),
  );
  return {
    samples,
    tokens: total((m) => m.tokens),
    stored_rows: total((m) => m.rows),
    dropped_for_length: skipped['too_long'] ?? { value: 0, low: 0, high: 0 },
    shortened_for_length: total((m) => m.shortened),
    skipped_by_reason: skipped,
    parts,
    output_bytes: bytes,
    build_ms_per_task: measures.length
      ? measures.reduce((n, m) => n + m.buildMs, 0) / measures.length
      : 0,
  };
}

/** Bootstrap replicates of the part count when tasks were sampled. */
const PART_REPLICATES = 100;
/** Tasks simulated per shard and replicate at most; longer shards are scaled (parts grow linearly). */
const PART_SIM_TASKS = 5000;

/**
 * Parts over all shards: counted exactly when every task was measured (`countParts` per
 * shard). Else a bootstrap: each shard is filled with tasks drawn (seeded, with replacement)
 * from the measured ones and cut by `countParts`, 100 times; the value is the mean of the
 * totals and the interval their 2.5th to 97.5th percentiles. The cut depends on how tasks
 * overshoot the part size, which a mean alone does not tell.
 */
function estimateParts(
  sample: Pick<TaskSample, 'totalTasks' | 'shards' | 'census'>,
  measures: readonly TaskMeasure[],
  s: Pick<PlanSettings, 'partSizeBytes' | 'batchSize'>,
  seed: number,
): Estimate {
  if (sample.census) {
    let parts = 0;
    for (const shard of sample.shards) {
      const end = shard.firstTaskIndex + shard.totalTasks;
      const inShard = measures.filter(
        (m) => m.taskIndex >= shard.firstTaskIndex && m.taskIndex < end,
      );
      parts += countParts(inShard, s.partSizeBytes);
    }
    return { value: parts, low: parts, high: parts };
  }
  if (measures.length === 0)
    return { value: sample.shards.length, low: sample.shards.length, high: Infinity };
  // Shards differ by at most one task: simulate each distinct length once per replicate.
  const lengths = new Map<number, number>();
  for (const sh of sample.shards) lengths.set(sh.totalTasks, (lengths.get(sh.totalTasks) ?? 0) + 1);
  const rng = Prng.fromKey('shardline-plan-parts', seed);
  const totals: number[] = [];
  for (let r = 0; r < PART_REPLICATES; r++) {
    let total = 0;
    for (const [m, count] of lengths) {
      const n = Math.min(m, PART_SIM_TASKS);
      const drawn = Array.from({ length: n }, () => measures[rng.nextInt(measures.length)]!);
      total += (count * countParts(drawn, s.partSizeBytes) * m) / n;
    }
    totals.push(total);
  }
  totals.sort((x, y) => x - y);
  const at = (q: number): number =>
    totals[Math.min(totals.length - 1, Math.floor(q * totals.length))]!;
  return {
    value: Math.round(totals.reduce((x, y) => x + y, 0) / totals.length),
    low: Math.floor(at(0.025)),
    high: Math.ceil(at(0.975)),
  };
}

/** Where the rate of a worker comes from. */
export type ThroughputSource =
  | { kind: 'calibrate'; calibration: Calibration; loadMs: number }
  | { kind: 'flag'; tokensPerSecond: number };

/** Machine and wall time of the run. */
export interface PlanTime {
  /** Tokens per second of one worker. */
  tokens_per_second: number;
  /** `calibrate` (the model alone, measured here; prompt building added) or `flag` (the user's whole-worker figure). */
  source: 'calibrate' | 'flag';
  /** Seconds each worker spends loading the model before its first claim (calibrate only). */
  load_seconds: number;
  /** Seconds of prompt building per task, added to the model time (calibrate only). */
  build_seconds_per_task: number;
  workers: number;
  /** Busy time of one worker doing everything: the model, plus prompt building. */
  machine_seconds: Estimate;
  /** Until the last shard completes with `workers` workers (shards taken in order as workers free up). */
  wall_seconds: Estimate;
  /** Workers × wall time: what the machines are held for. */
  worker_hours: Estimate;
}

/**
 * When the last of `shardSeconds` (busy time per shard) finishes with `workers` workers that
 * each start after `startSeconds` and take the next shard in order whenever they are free.
 */
export function makespan(
  shardSeconds: readonly number[],
  workers: number,
  startSeconds: number,
): number {
  const longest = shardSeconds.reduce((a, b) => Math.max(a, b), 0);
  if (workers >= shardSeconds.length) return startSeconds + longest;
  // A min-heap of the times the workers are next free.
  const free = new Array<number>(workers).fill(startSeconds);
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < free.length && free[l]! < free[m]!) m = l;
      if (r < free.length && free[r]! < free[m]!) m = r;
      if (m === i) return;
      [free[i], free[m]] = [free[m]!, free[i]!];
      i = m;
    }
  };
  for (const d of shardSeconds) {
    free[0]! += d;
    down(0);
  }
  return free.reduce((a, b) => Math.max(a, b), startSeconds);
}

/** Time for the run from the token totals, per-shard tokens and a worker's rate. */
export function estimateTime(
  sample: Pick<TaskSample, 'totalTasks' | 'shards' | 'census'>,
  measures: readonly TaskMeasure[],
  totals: PlanEstimates,
  source: ThroughputSource,
  workers: number,
): PlanTime {
  const tps =
    source.kind === 'calibrate' ? source.calibration.tokensPerSecond : source.tokensPerSecond;
  const buildPerTask = source.kind === 'calibrate' ? totals.build_ms_per_task / 1000 : 0;
  const load = source.kind === 'calibrate' ? source.loadMs / 1000 : 0;
  // Tokens per shard: exact with a census, else in proportion to its tasks.
  const meanTokens = totals.tokens.value / sample.totalTasks;
  const shardTokens = sample.shards.map((sh) =>
    sample.census
      ? measures
          .filter(
            (m) =>
              m.taskIndex >= sh.firstTaskIndex && m.taskIndex < sh.firstTaskIndex + sh.totalTasks,
          )
          .reduce((n, m) => n + m.tokens, 0)
      : sh.totalTasks * meanTokens,
  );
  const at = (tokenFactor: number): { machine: number; wall: number } => {
    const shardSeconds = sample.shards.map(
      (sh, k) => (shardTokens[k]! * tokenFactor) / tps + sh.totalTasks * buildPerTask,
    );
    return {
      machine: shardSeconds.reduce((a, b) => a + b, 0),
      wall: makespan(shardSeconds, workers, load),
    };
  };
  const t = totals.tokens;
  const mid = at(1);
  const low = at(t.value > 0 ? t.low / t.value : 1);
  const high = at(t.value > 0 ? t.high / t.value : 1);
  const wall = { value: mid.wall, low: low.wall, high: high.wall };
  return {
    tokens_per_second: tps,
    source: source.kind,
    load_seconds: load,
    build_seconds_per_task: buildPerTask,
    workers,
    machine_seconds: { value: mid.machine, low: low.machine, high: high.machine },
    wall_seconds: wall,
    worker_hours: scaleEstimate(wall, workers / 3600),
  };
}

/** Costs, when prices were given. */
export interface PlanCost {
  /** USD per month to keep the output, at `price_per_gib_month` (Cloud Storage bills GiB). */
  storage_per_month?: Estimate;
  price_per_gib_month?: number;
  /** USD for the machines: worker-hours × `price_per_worker_hour`. */
  compute?: Estimate;
  price_per_worker_hour?: number;
}

/** Everything `shardline plan` needs to know. */
export interface PlanConfig extends ExtractionChoices {
  /** `--dataset_dir`, or */
  datasetDir?: string;
  /** `--input_file` (as `create` would split it into `numShards` shards). */
  inputFile?: string;
  numShards: number;
  /** Lines longer than this are rejected (as `create --max_line_mb`). */
  maxLineBytes: number;
  /** `--model_path` (a model file or its folder); else `hiddenSize` and `numLayers`. */
  modelPath?: string;
  hiddenSize?: number;
  numLayers?: number;
  /** Measure every task when there are at most this many, else a sample of this many. */
  sampleTasks: number;
  sampleSeed: number;
  /** Run the model here for `calibrateMs` to measure tokens per second. */
  calibrate: boolean;
  calibrateMs: number;
  /** A worker's measured tokens per second (instead of calibrating). */
  tokensPerSecond?: number;
  workers: number;
  pricePerGibMonth?: number;
  pricePerWorkerHour?: number;
}

/** What `planRun` needs from its caller. */
export interface PlanIo {
  /** Relative paths are resolved against it. */
  cwd: string;
  /** Opens a store at a local folder or `gs://` prefix. */
  openStore(location: Location): BlobStore;
  log: Logger;
  /** A monotonic clock in ms (`performance.now`). */
  now: () => number;
  signal: AbortSignal;
  /** Tasks measured so far, of how many. */
  onProgress?: (done: number, total: number) => void;
}

/** What `shardline plan` reports (`--json` prints it as it is). */
export interface PlanReport {
  source: { kind: 'dataset' | 'input_file'; uri: string; tasks: number; shards: number };
  sample: { tasks: number; census: boolean; seed: number; method: string };
  settings: {
    layers: number[];
    positions: string;
    dtype: ActivationDtype;
    max_seq_length: number;
    predictions_per_task: number;
    augment: boolean;
    seed: number;
    part_size_bytes: number;
    batch_size: number;
  };
  model: {
    path: string | null;
    num_layers: number;
    hidden_size: number;
    shape_from: string;
    bytes_per_row: number;
  };
  estimates: PlanEstimates;
  time: PlanTime | null;
  cost: PlanCost | null;
}

/** The interval method, in words, for the report. */
const METHOD =
  'every task measured: the totals are exact (bytes within a stated bound on header digits)';
const SAMPLED =
  'simple random sample of tasks (seeded); total = N × sample mean, 95 % interval = ± t(0.975, n−1) × N·s/√n·√(1 − n/N)';

/** Validates the layers against the model and returns them (all when undefined). */
function checkLayers(layers: number[] | undefined, numLayers: number): number[] {
  const all = Array.from({ length: numLayers }, (_, i) => i);
  if (layers === undefined) return all;
  for (const l of layers)
    if (l >= numLayers)
      throw new ConfigError(
        `--layers: layer ${l} does not exist: the model has layers 0-${numLayers - 1}`,
      );
  return layers;
}

/** Estimates a run (see the module comment). */
export async function planRun(config: PlanConfig, io: PlanIo): Promise<PlanReport> {
  if ((config.datasetDir === undefined) === (config.inputFile === undefined))
    throw new ConfigError('give one of --dataset_dir or --input_file');
  if (config.calibrate && config.tokensPerSecond !== undefined)
    throw new ConfigError('give --calibrate or --tokens_per_second, not both');

  // The model's shape: from the model, or from the flags.
  let modelFile: string | null = null;
  let numLayers: number;
  let hiddenSize: number;
  let shapeFrom: string;
  if (config.modelPath !== undefined) {
    modelFile = resolveModelFile(parseLocalPath(config.modelPath, io.cwd));
    const shape = readModelShape(modelFile);
    numLayers = config.numLayers ?? shape.numLayers;
    hiddenSize = config.hiddenSize ?? shape.hiddenSize;
    shapeFrom = shape.from;
  } else if (config.hiddenSize !== undefined && config.numLayers !== undefined) {
    if (config.calibrate) throw new ConfigError('--calibrate needs --model_path');
    numLayers = config.numLayers;
    hiddenSize = config.hiddenSize;
    shapeFrom = 'flags';
  } else {
    throw new ConfigError(
      'give --model_path (a model.onnx or its folder), or --hidden_size and --num_layers',
    );
  }
  const layers = checkLayers(config.layers, numLayers);
  const layout: OutputLayout = { layers, hiddenSize, dtype: config.dtype };

  const { tokenizer, sampleOptions } = loadPromptSetup(
    { ...config, ...(modelFile ? { modelPath: modelFile } : {}) },
    io.cwd,
  );
  const settings: PlanSettings = {
    sampleOptions,
    tokenizer,
    positions: config.positions,
    layout,
    runMetadata: runMetadata({
      model: config.modelName ?? (modelFile ? path.basename(path.dirname(modelFile)) : 'model'),
      // Only the lengths of these two matter for the header's size.
      engine: { modelSha256: '0'.repeat(64), residualMethod: 'optimum', numLayers },
      tokenizer: tokenizer.info,
      samples: sampleOptions,
      stored: { layers, dtype: config.dtype, positions: formatPositions(config.positions) },
      backend: 'onnx',
    }),
    partSizeBytes: config.partSizeBytes,
    batchSize: config.batchSize,
  };

  // The tasks.
  let sample: TaskSample;
  let kind: PlanReport['source']['kind'];
  let uri: string;
  if (config.datasetDir !== undefined) {
    const store = io.openStore(parseLocation(config.datasetDir, io.cwd));
    kind = 'dataset';
    uri = store.root;
    sample = await sampleDataset(store, config.sampleTasks, config.sampleSeed, io.signal);
  } else {
    const { parent, name } = splitParent(parseLocation(config.inputFile!, io.cwd));
    const source = await sourceFromStore(io.openStore(parent), name);
    kind = 'input_file';
    uri = source.uri;
    sample = await sampleInputFile(
      source,
      {
        sampleTasks: config.sampleTasks,
        seed: config.sampleSeed,
        numShards: config.numShards,
        maxLineBytes: config.maxLineBytes,
      },
      io.signal,
    );
  }
  io.log.info('tasks chosen', {
    tasks: sample.totalTasks,
    measured: sample.tasks.length,
    census: sample.census,
  });

  // Measure them, keeping a few hundred prompts for the calibration.
  const overhead = await partOverhead(settings);
  const measures: TaskMeasure[] = [];
  const kept: Int32Array[] = [];
  for (const t of sample.tasks) {
    io.signal.throwIfAborted();
    const m = await measureTask(t.task, t.taskIndex, settings, overhead, io.now);
    measures.push(m.measure);
    if (config.calibrate && kept.length < 256) kept.push(...m.samples.map((x) => x.tokenIds));
    io.onProgress?.(measures.length, sample.tasks.length);
  }
  const estimates = estimateTotals(sample, measures, settings, overhead, config.sampleSeed);

  // Time.
  let source: ThroughputSource | null = null;
  if (config.tokensPerSecond !== undefined)
    source = { kind: 'flag', tokensPerSecond: config.tokensPerSecond };
  else if (config.calibrate) {
    if (kept.length === 0)
      throw new ShardlineError(
        'INVALID_INPUT',
        'no prompt to calibrate with: every measured task was skipped',
      );
    const engine = await ExtractionEngine.open({
      modelPath: modelFile!,
      layers,
      dtype: config.dtype,
      executionProviders: config.executionProviders,
      ...(config.threads ? { intraOpNumThreads: config.threads } : {}),
      logger: io.log,
    });
    try {
      const calibration = await calibrate(engine, kept, {
        limits: { maxBatchSize: config.batchSize, maxBatchTokens: config.maxBatchTokens },
        budgetMs: config.calibrateMs,
        now: io.now,
        signal: io.signal,
      });
      io.log.info('calibrated', {
        tokens_per_second: Math.round(calibration.tokensPerSecond),
        batches: calibration.batches,
      });
      source = { kind: 'calibrate', calibration, loadMs: engine.info.loadMs };
    } finally {
      await engine.close();
    }
  }
  const time = source ? estimateTime(sample, measures, estimates, source, config.workers) : null;

  // Costs.
  let cost: PlanCost | null = null;
  if (config.pricePerGibMonth !== undefined || (config.pricePerWorkerHour !== undefined && time)) {
    cost = {};
    if (config.pricePerGibMonth !== undefined) {
      cost.price_per_gib_month = config.pricePerGibMonth;
      cost.storage_per_month = scaleEstimate(
        estimates.output_bytes,
        config.pricePerGibMonth / 2 ** 30,
      );
    }
    if (config.pricePerWorkerHour !== undefined && time) {
      cost.price_per_worker_hour = config.pricePerWorkerHour;
      cost.compute = scaleEstimate(time.worker_hours, config.pricePerWorkerHour);
    }
  }

  return {
    source: { kind, uri, tasks: sample.totalTasks, shards: sample.shards.length },
    sample: {
      tasks: sample.tasks.length,
      census: sample.census,
      seed: config.sampleSeed,
      method: sample.census ? METHOD : SAMPLED,
    },
    settings: {
      layers,
      positions: formatPositions(config.positions),
      dtype: config.dtype,
      max_seq_length: config.maxSeqLength,
      predictions_per_task: config.predictionsPerTask,
      augment: config.augment,
      seed: config.seed,
      part_size_bytes: config.partSizeBytes,
      batch_size: config.batchSize,
    },
    model: {
      path: modelFile,
      num_layers: numLayers,
      hidden_size: hiddenSize,
      shape_from: shapeFrom,
      bytes_per_row: layers.length * hiddenSize * dtypeBytes(config.dtype),
    },
    estimates,
    time,
    cost,
  };
}

/** A local path from a flag (a model must be on this machine). */
function parseLocalPath(p: string, cwd: string): string {
  const loc = parseLocation(p, cwd);
  if (loc.kind !== 'local')
    throw new ConfigError(
      `--model_path must be a local path (copy the model here first), got ${p}`,
    );
  return loc.path;
}
