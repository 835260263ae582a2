/**
 * Writing one output part: `shard_XXX/part_XXXXX.safetensors` (activations, the tokens they
 * belong to, statistics) and `shard_XXX/part_XXXXX.index.jsonl` (one record per sample) to a
 * `BlobStore`.
 *
 * Names and bytes are deterministic (same samples and activations → same files, no
 * timestamps), so a retried part overwrites identical content and never duplicates it.
 * Rows are held in memory (views, not copies) until `finish()` (safetensors needs every
 * tensor's size in the header); the caller cuts parts by size (`sampleBytes`).
 *
 * Tensors, in file order (format version 2; the small ones first, so a reader of the header
 * and the statistics need not read the activations):
 * - `sample_offsets` I64 `[n_samples + 1]`: sample k's rows are `[off[k], off[k+1])`.
 * - `sample_task_index` I64 `[n_samples]`: the task index of each sample.
 * - `token_positions` I32 `[n_rows]`: the position in its prompt of each row's token.
 * - `token_ids` I32 `[n_rows]`: each row's token id.
 * - `stats.resid_post.{layer}.mean` and `.m2` F64 `[hidden]`, `.count_norm` F64 `[2]`: the
 *   layer's statistics over this part's rows (worker/extraction/layer-stats.ts).
 * - `resid_post.{layer}` F16 or F32 `[n_rows, hidden]`, one per layer in ascending order.
 */
import { crc32c } from '@node-rs/crc32';
import { createHash } from 'node:crypto';

import type { BlobStore } from '../../core/blob/store';
import { joinKey } from '../../core/blob/store';
import { crc32cBase64 } from '../../core/checksum';
import { shardDirName } from '../../core/dataset/paths';
import { ShardlineError, toError } from '../../core/errors';
import type { ActivationDtype, ExtractedBatch, Rows } from './activations';
import { HOOK_POINT, residTensorName } from './activations';
import { planBatches } from './batch';
import type { BatchLimits } from './batch';
import type { EngineInfo, Extractor } from './engine';
import { GRID_ENCODING } from './grid';
import type { LayerStats } from '../../core/layer-stats';
import { StatsAccumulator } from './layer-stats';
import type { Sample, SampleOptions, SkippedSample } from './samples';
import type { TokenizerInfo } from './tokenizer';
import {
  encodeSafetensorsHeader,
  safetensorsChunks,
  safetensorsSize,
} from '../../core/safetensors';
import type { TensorSource } from '../../core/safetensors';

/** Version of the part format (tensor names, index fields, metadata keys). */
export const PART_FORMAT_VERSION = 2;
/** `format` metadata value of every part. */
export const PART_FORMAT = 'shardline.activations';

/** `part_00000` for part 0 (five digits, more past 99999). */
export function partName(partIndex: number): string {
  return `part_${String(partIndex).padStart(5, '0')}`;
}

/**
 * The name of a work unit's part (docs/decisions.md#work-units-split-the-tail): `part_00000`
 * for unit 0 (a shard never split is named as before), `part_u2_00000` for unit 2; with
 * `cutAtSplit`, the task where a split ended the unit and the part with it, `…_to1480`. A part
 * cut there holds what a size cut would not have, so its name says where it stops: a holder
 * that had not yet learned of the split cannot write other bytes under the same name.
 */
export function unitPartName(unit: number, partIndex: number, cutAtSplit?: number): string {
  const base = unit === 0 ? partName(partIndex) : `part_u${unit}_${partName(partIndex).slice(5)}`;
  return cutAtSplit === undefined ? base : `${base}_to${cutAtSplit}`;
}

/** The two object keys of a part, under an optional prefix (e.g. `activations/RUN`). */
export function partKeys(
  shardId: number,
  partIndex: number,
  prefix = '',
  name = partName(partIndex),
): { safetensors: string; index: string } {
  const base = joinKey(prefix, shardDirName(shardId), name);
  return { safetensors: `${base}.safetensors`, index: `${base}.index.jsonl` };
}

/** One line of `part_XXXXX.index.jsonl`; line k describes sample k of the part. */
export interface IndexRecord {
  /** `TASKINDEX.TESTINDEX.AUGINDEX`. */
  sample_id: string;
  /** Position of the sample in the part (line number, 0-based). */
  row: number;
  /** The task's global index in the dataset. */
  task_index: number;
  /** The task's id (its own, or derived from its content). */
  task_id: string;
  /** `arc` or `text`. */
  kind: 'arc' | 'text';
  /** Which test input of the task (0 for text). */
  test_index: number;
  /** The augmentation, or null for text tasks. */
  augmentation: {
    index: number;
    hflip: boolean;
    rot90: number;
    color_map: number[];
    train_order: number[];
  } | null;
  /** Tokens in this sample's prompt. */
  n_tokens: number;
  /** Rows stored for it: `n_tokens`, or fewer with `--positions`. */
  n_rows: number;
  /** Its first row in `token_positions`, `token_ids` and every `resid_post.*` tensor. */
  row_offset: number;
  /** Train examples the task has (null for text). */
  train_examples_total: number | null;
  /** Train examples in the prompt: the first ones of `augmentation.train_order` (null for text). */
  train_examples_used: number | null;
  /** True when a text prompt was cut to max_seq_length. */
  truncated: boolean;
  /** SHA-256 (hex) of the prompt text. */
  prompt_sha256: string;
}

/** One file of a finished part. */
export interface PartFile {
  /** Object key. */
  key: string;
  /** Size in bytes. */
  bytes: number;
  /** CRC32C, big-endian, base64 (Cloud Storage's form). */
  crc32c: string;
}

/** What a finished part reports: what the ledger's `commitPart` and the manifest record. */
export interface PartResult {
  /** `part_00000`. */
  name: string;
  /** The shard. */
  shardId: number;
  /** The part's index within its work unit. */
  partIndex: number;
  /** Samples (rows of the index). */
  samples: number;
  /** Tokens of the samples' prompts (what the model ran). */
  tokens: number;
  /** Rows stored (of every activation tensor). */
  rows: number;
  /** Per-layer statistics of the stored rows (keyed `resid_post.{layer}`). */
  stats: Record<string, LayerStats>;
  /** Skipped samples or tasks recorded in the part's metadata. */
  skipped: number;
  /** Smallest task index among samples and skipped entries, or null for an empty part. */
  firstTaskIndex: number | null;
  /** Largest task index among samples and skipped entries, or null for an empty part. */
  lastTaskIndex: number | null;
  /** The safetensors file. */
  safetensors: PartFile;
  /** The index file. */
  index: PartFile;
}

/** What a part needs to know beyond its rows. */
export interface PartOptions {
  /** The shard. */
  shardId: number;
  /** The part's index within its work unit (0, 1, ...). */
  partIndex: number;
  /** The work unit (default 0: the shard's own; recorded in the metadata when another). */
  unit?: number;
  /** The file stem; default `partName(partIndex)` (see `unitPartName`). */
  name?: string;
  /** Key prefix in the store; default none. */
  prefix?: string;
  /** The layers, in the engine's order. */
  layers: readonly number[];
  /** Row width. */
  hiddenSize: number;
  /** Element type of the activations. */
  dtype: ActivationDtype;
  /** Run-level metadata strings (see `runMetadata`); part-level keys are added. */
  metadata: Readonly<Record<string, string>>;
}

/** What `runMetadata` records. */
export interface RunMetadataInput {
  /**
   * How the user names the model (e.g. `Qwen/Qwen2.5-0.5B@<revision>` or a `gs://` URI).
   * Recorded as given; keep machine-specific paths out of it so parts stay byte-identical
   * across workers.
   */
  model: string;
  /** The engine's facts (model hash, residual method). */
  engine: Pick<EngineInfo, 'modelSha256' | 'residualMethod' | 'numLayers'>;
  /** The tokenizer's provenance. */
  tokenizer: TokenizerInfo;
  /** How samples were built. */
  samples: SampleOptions;
  /** What is stored: layers, element type, positions (`formatPositions`). */
  stored: { layers: readonly number[]; dtype: ActivationDtype; positions: string };
  /** The extractor: `onnx`, `jax`, or `command` (a user's own, over the protocol). */
  backend: string;
  /** More string entries (e.g. `dataset_id`, `run_id`). */
  extra?: Readonly<Record<string, string>>;
}

/**
 * The run-level `__metadata__` entries of every part (all strings, as safetensors requires):
 * model and its hash, tokenizer and template hashes, the sample options. Part-level entries
 * (shard, counts, layers, dtype, skipped) are added by `PartWriter.finish`.
 */
export function runMetadata(input: RunMetadataInput): Record<string, string> {
  const t = input.tokenizer;
  const o = input.samples;
  return {
    ...input.extra,
    model: input.model,
    model_sha256: input.engine.modelSha256,
    model_num_layers: String(input.engine.numLayers),
    residual_method: input.engine.residualMethod,
    tokenizer_sha256: t.tokenizerSha256,
    tokenizer_config_sha256: t.configSha256 ?? '',
    chat_template_sha256: t.chatTemplateSha256 ?? '',
    chat_template_source: t.chatTemplateSource,
    prompt_template_sha256: o.template.sha256,
    grid_encoding: GRID_ENCODING,
    seed: String(o.seed),
    augment: String(o.augment),
    predictions_per_task: String(o.predictionsPerTask),
    max_seq_length: String(o.maxSeqLength),
    min_train_examples: String(o.minTrainExamples),
    text_overflow: o.textOverflow,
    layers: JSON.stringify(input.stored.layers),
    dtype: input.stored.dtype,
    positions: input.stored.positions,
    format_version: String(PART_FORMAT_VERSION),
    backend: input.backend,
  };
}

/**
 * The run-level metadata entries that decide what the activations are, and so must be the
 * same in every part of a dataset: the model and its hash, the tokenizer and template hashes,
 * the prompt and augmentation settings, layers, element type, positions, format version. Not
 * the backend (ONNX and JAX runs of one model agree to 1e-4) nor the model's name.
 */
export const PROVENANCE_KEYS = [
  'model_sha256',
  'residual_method',
  'tokenizer_sha256',
  'tokenizer_config_sha256',
  'chat_template_sha256',
  'prompt_template_sha256',
  'grid_encoding',
  'seed',
  'augment',
  'predictions_per_task',
  'max_seq_length',
  'min_train_examples',
  'text_overflow',
  'layers',
  'dtype',
  'positions',
  'format_version',
] as const;

/** The fingerprint of a run: a hash of its `PROVENANCE_KEYS` entries (32 hex digits). */
export function runFingerprint(metadata: Readonly<Record<string, string>>): string {
  const identity = PROVENANCE_KEYS.map((k) => [k, metadata[k] ?? '']);
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32);
}

/** The provenance entries that differ between two runs' metadata: `[key, ours, theirs]`. */
export function provenanceDiff(
  ours: Readonly<Record<string, string>>,
  theirs: Readonly<Record<string, string>>,
): Array<[string, string, string]> {
  return PROVENANCE_KEYS.filter((k) => (ours[k] ?? '') !== (theirs[k] ?? '')).map((k) => [
    k,
    ours[k] ?? '',
    theirs[k] ?? '',
  ]);
}

function indexRecord(sample: Sample, row: number, offset: number, nRows: number): IndexRecord {
  const a = sample.augmentation;
  return {
    sample_id: sample.sampleId,
    row,
    task_index: sample.taskIndex,
    task_id: sample.taskId,
    kind: sample.kind,
    test_index: sample.testIndex,
    augmentation: a
      ? {
          index: a.index,
          hflip: a.hflip,
          rot90: a.rot90,
          color_map: [...a.colorMap],
          train_order: [...a.trainOrder],
        }
      : null,
    n_tokens: sample.tokenIds.length,
    n_rows: nRows,
    row_offset: offset,
    train_examples_total: sample.trainExamplesTotal,
    train_examples_used: sample.trainExamplesUsed,
    truncated: sample.truncated,
    prompt_sha256: sample.promptSha256,
  };
}

/** Bytes of one stored row in a part: its activations in every layer, its position and id. */
export function rowBytes(layers: number, hiddenSize: number, dtype: ActivationDtype): number {
  return layers * hiddenSize * (dtype === 'float16' ? 2 : 4) + 8;
}

/** Accumulates the samples of one part and writes its two files. */
export class PartWriter {
  private readonly records: IndexRecord[] = [];
  private readonly positionPieces: Int32Array[] = [];
  private readonly idPieces: Int32Array[] = [];
  private readonly taskIndexes: number[] = [];
  private readonly layerPieces: Rows[][];
  private readonly stats: StatsAccumulator[];
  private readonly skippedList: SkippedSample[] = [];
  private tokenCount = 0;
  private rowCount = 0;
  private dataBytes = 0;
  private finished = false;

  /** Starts an empty part. */
  constructor(private readonly options: PartOptions) {
    this.layerPieces = options.layers.map(() => []);
    this.stats = options.layers.map(() => new StatsAccumulator(options.hiddenSize));
  }

  /** Samples added so far. */
  get samples(): number {
    return this.records.length;
  }

  /** Prompt tokens of the samples added so far. */
  get tokens(): number {
    return this.tokenCount;
  }

  /** Rows added so far. */
  get rows(): number {
    return this.rowCount;
  }

  /** Bytes of tensor data held so far (≈ the file size); cut parts by this. */
  get byteSize(): number {
    return this.dataBytes;
  }

  /**
   * Adds one sample: its rows in each layer (`rows[l]`, `[n, hidden]`, kept as given: pass
   * views, not copies) and the prompt positions they are (`positions`, ascending; null when
   * every token is stored). Fails with `INVALID_ARGUMENT` when the rows do not fit.
   */
  addSample(sample: Sample, rows: readonly Rows[], positions: Int32Array | null): void {
    this.checkOpen();
    const { layers, hiddenSize, dtype } = this.options;
    const nTokens = sample.tokenIds.length;
    const n = positions ? positions.length : nTokens;
    const mismatch = (why: string): never => {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `sample ${sample.sampleId} does not fit the part: ${why}`,
      );
    };
    if (rows.length !== layers.length)
      mismatch(`${rows.length} layers, the part has ${layers.length}`);
    rows.forEach((r, l) => {
      const want = dtype === 'float16' ? r instanceof Uint16Array : r instanceof Float32Array;
      if (!want) mismatch(`layer ${layers[l]} is not ${dtype}`);
      if (r.length !== n * hiddenSize)
        mismatch(`layer ${layers[l]} holds ${r.length / hiddenSize} rows, expected ${n}`);
    });
    const pos = positions ?? Int32Array.from({ length: nTokens }, (_, i) => i);
    const ids = positions
      ? Int32Array.from(positions, (p) => sample.tokenIds[p]!)
      : sample.tokenIds;
    this.records.push(indexRecord(sample, this.records.length, this.rowCount, n));
    this.taskIndexes.push(sample.taskIndex);
    this.positionPieces.push(pos);
    this.idPieces.push(ids);
    rows.forEach((r, l) => {
      this.layerPieces[l]!.push(r);
      this.stats[l]!.add(r, dtype === 'float16');
    });
    this.tokenCount += nTokens;
    this.rowCount += n;
    this.dataBytes += n * rowBytes(layers.length, hiddenSize, dtype) + 16;
  }

  /** Adds one extractor batch: sample k's rows are `batch.rows[l][k]` (see `addSample`). */
  add(
    samples: readonly Sample[],
    batch: ExtractedBatch,
    positions?: ReadonlyArray<Int32Array | null>,
  ): void {
    const { layers, hiddenSize, dtype } = this.options;
    const mismatch = (why: string): never => {
      throw new ShardlineError('INVALID_ARGUMENT', `batch does not fit part: ${why}`);
    };
    if (batch.dtype !== dtype) mismatch(`dtype ${batch.dtype}, part is ${dtype}`);
    if (batch.hiddenSize !== hiddenSize) mismatch(`hidden ${batch.hiddenSize} != ${hiddenSize}`);
    if (batch.layers.join() !== layers.join()) mismatch(`layers ${batch.layers.join()}`);
    if (batch.rowCounts.length !== samples.length)
      mismatch(`${batch.rowCounts.length} sequences for ${samples.length} samples`);
    samples.forEach((s, k) =>
      this.addSample(
        s,
        batch.rows.map((layer) => layer[k]!),
        positions?.[k] ?? null,
      ),
    );
  }

  /** Records skipped tasks or samples in the part's metadata (`skipped`). */
  addSkipped(skipped: readonly SkippedSample[]): void {
    this.checkOpen();
    this.skippedList.push(...skipped);
  }

  /**
   * Writes the safetensors file (streamed) and then the index to `store`, and returns what
   * the ledger needs. `fileName` overrides the stem given in the options (a pipeline names a
   * part once it knows where the part was cut). The writer cannot be used afterwards. Errors:
   * `STORAGE` from the store.
   */
  async finish(store: BlobStore, fileName?: string): Promise<PartResult> {
    this.checkOpen();
    this.finished = true;
    const { shardId, partIndex, layers, hiddenSize, dtype } = this.options;
    const unit = this.options.unit ?? 0;
    const name = fileName ?? this.options.name ?? partName(partIndex);
    const keys = partKeys(shardId, partIndex, this.options.prefix, name);
    const n = this.records.length;
    const R = this.rowCount;

    const offsets = new BigInt64Array(n + 1);
    this.records.forEach((r, k) => (offsets[k + 1] = BigInt(r.row_offset + r.n_rows)));
    const stats = Object.fromEntries(
      layers.map((layer, l) => [residTensorName(layer), this.stats[l]!.toJSON()]),
    );
    const tensors: TensorSource[] = [
      { name: 'sample_offsets', dtype: 'I64', shape: [n + 1], pieces: [offsets] },
      {
        name: 'sample_task_index',
        dtype: 'I64',
        shape: [n],
        pieces: [BigInt64Array.from(this.taskIndexes, (t) => BigInt(t))],
      },
      { name: 'token_positions', dtype: 'I32', shape: [R], pieces: this.positionPieces },
      { name: 'token_ids', dtype: 'I32', shape: [R], pieces: this.idPieces },
      ...layers.flatMap((layer, l): TensorSource[] => {
        const a = this.stats[l]!;
        const name = `stats.${residTensorName(layer)}`;
        return [
          { name: `${name}.mean`, dtype: 'F64', shape: [hiddenSize], pieces: [a.mean] },
          { name: `${name}.m2`, dtype: 'F64', shape: [hiddenSize], pieces: [a.m2] },
          {
            name: `${name}.count_norm`,
            dtype: 'F64',
            shape: [2],
            pieces: [Float64Array.of(a.count, a.normSum)],
          },
        ];
      }),
      ...layers.map((layer, l): TensorSource => ({
        name: residTensorName(layer),
        dtype: dtype === 'float16' ? 'F16' : 'F32',
        shape: [R, hiddenSize],
        pieces: this.layerPieces[l]!,
      })),
    ];

    const taskIdx = [...this.taskIndexes, ...this.skippedList.map((s) => s.taskIndex)];
    const first = taskIdx.length ? taskIdx.reduce((a, b) => Math.min(a, b)) : null;
    const last = taskIdx.length ? taskIdx.reduce((a, b) => Math.max(a, b)) : null;
    const metadata: Record<string, string> = {
      ...this.options.metadata,
      format: PART_FORMAT,
      format_version: String(PART_FORMAT_VERSION),
      hook_point: HOOK_POINT,
      dtype,
      layers: JSON.stringify(layers),
      hidden_size: String(hiddenSize),
      fingerprint: runFingerprint(this.options.metadata),
      shard_id: String(shardId),
      // Only a split unit's parts say which unit: a shard never split is written as before.
      ...(unit === 0 ? {} : { unit: String(unit), part_name: name }),
      part_index: String(partIndex),
      n_samples: String(n),
      n_tokens: String(this.tokenCount),
      n_rows: String(R),
      first_task_index: first === null ? '' : String(first),
      last_task_index: last === null ? '' : String(last),
      skipped: JSON.stringify(
        this.skippedList.map((s) => ({
          task_index: s.taskIndex,
          task_id: s.taskId,
          test_index: s.testIndex,
          augmentation_index: s.augmentationIndex,
          reason: s.reason,
          detail: s.detail,
        })),
      ),
    };

    const header = encodeSafetensorsHeader(tensors, metadata);
    const size = safetensorsSize(header, tensors);
    const writer = store.writer(keys.safetensors);
    let crc = 0;
    try {
      for (const chunk of safetensorsChunks(header, tensors)) {
        crc = crc32c(chunk, crc);
        await writer.write(chunk);
      }
    } catch (e: unknown) {
      await writer.abort();
      throw e instanceof ShardlineError
        ? e
        : new ShardlineError('STORAGE', `writing ${keys.safetensors}: ${toError(e).message}`, {
            cause: e,
          });
    }
    const info = await writer.close();
    if (info.size !== size) {
      throw new ShardlineError(
        'STORAGE',
        `${keys.safetensors}: wrote ${size} bytes, store reports ${info.size}`,
      );
    }

    const indexText = this.records.map((r) => `${JSON.stringify(r)}\n`).join('');
    const indexBytes = Buffer.from(indexText, 'utf8');
    await store.writeAll(keys.index, indexBytes, { contentType: 'application/jsonl' });

    return {
      name,
      shardId,
      partIndex,
      samples: n,
      tokens: this.tokenCount,
      rows: R,
      stats,
      skipped: this.skippedList.length,
      firstTaskIndex: first,
      lastTaskIndex: last,
      safetensors: { key: keys.safetensors, bytes: size, crc32c: crc32cBase64(crc) },
      index: {
        key: keys.index,
        bytes: indexBytes.length,
        crc32c: crc32cBase64(crc32c(indexBytes)),
      },
    };
  }

  private checkOpen(): void {
    if (this.finished) throw new ShardlineError('INTERNAL', 'part already finished');
  }
}

/**
 * Runs `samples` through the extractor in batches (`planBatches`, order kept) and adds each
 * batch to `writer`. Returns the number of model batches run. Errors from the extractor
 * (`MODEL`) propagate; the writer then holds the batches before the failing one.
 */
export async function extractInto(
  extractor: Pick<Extractor, 'extract'>,
  samples: readonly Sample[],
  writer: PartWriter,
  limits: BatchLimits = {},
): Promise<number> {
  const plan = planBatches(
    samples.map((s) => s.tokenIds.length),
    limits,
  );
  for (const [start, end] of plan) {
    const batch = samples.slice(start, end);
    writer.add(batch, await extractor.extract(batch.map((s) => s.tokenIds)));
  }
  return plan.length;
}
