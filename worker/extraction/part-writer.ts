/**
 * Writing one output part: `shard_XXX/part_XXXXX.safetensors` (activations, token ids, sample
 * offsets) and `shard_XXX/part_XXXXX.index.jsonl` (one record per sample) to a `BlobStore`.
 *
 * Names and bytes are deterministic (same samples and activations → same files, no
 * timestamps), so a retried part overwrites identical content and never duplicates it.
 * Rows are held in memory until `finish()` (safetensors needs every tensor's size in the
 * header), so the caller cuts parts by `byteSize` (e.g. 256 MiB).
 *
 * Tensors, in file order:
 * - `sample_offsets` I64 `[n_samples + 1]`: sample k's tokens are rows `[off[k], off[k+1])`.
 * - `sample_task_index` I64 `[n_samples]`: the task index of each sample.
 * - `token_ids` I32 `[n_tokens]`.
 * - `resid_post.{layer}` F16 or F32 `[n_tokens, hidden]`, one per layer in ascending order.
 */
import { crc32c } from '@node-rs/crc32';

import type { BlobStore } from '../../core/blob/store';
import { joinKey } from '../../core/blob/store';
import { crc32cBase64 } from '../../core/checksum';
import { shardDirName } from '../../core/dataset/paths';
import { ShardlineError, toError } from '../../core/errors';
import type { ActivationDtype, ExtractedBatch } from './activations';
import { HOOK_POINT, residTensorName } from './activations';
import { planBatches } from './batch';
import type { BatchLimits } from './batch';
import type { EngineInfo, Extractor } from './engine';
import { GRID_ENCODING } from './grid';
import type { Sample, SampleOptions, SkippedSample } from './samples';
import type { TokenizerInfo } from './tokenizer';
import { encodeSafetensorsHeader, safetensorsChunks, safetensorsSize } from './safetensors';
import type { TensorSource } from './safetensors';

/** Version of the part format (tensor names, index fields, metadata keys). */
export const PART_FORMAT_VERSION = 1;
/** `format` metadata value of every part. */
export const PART_FORMAT = 'shardline.activations';

/** `part_00000` for part 0 (five digits, more past 99999). */
export function partName(partIndex: number): string {
  return `part_${String(partIndex).padStart(5, '0')}`;
}

/** The two object keys of a part, under an optional prefix (e.g. `activations/RUN`). */
export function partKeys(
  shardId: number,
  partIndex: number,
  prefix = '',
): { safetensors: string; index: string } {
  const base = joinKey(prefix, shardDirName(shardId), partName(partIndex));
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
  /** Tokens (rows) of this sample. */
  n_tokens: number;
  /** First row of this sample in `token_ids` and every `resid_post.*` tensor. */
  token_offset: number;
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
  /** The part's index within the shard. */
  partIndex: number;
  /** Samples (rows of the index). */
  samples: number;
  /** Tokens (rows of every activation tensor). */
  tokens: number;
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
  /** The part's index within the shard (0, 1, ...). */
  partIndex: number;
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
  };
}

function indexRecord(sample: Sample, row: number, offset: number): IndexRecord {
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
    token_offset: offset,
    train_examples_total: sample.trainExamplesTotal,
    train_examples_used: sample.trainExamplesUsed,
    truncated: sample.truncated,
    prompt_sha256: sample.promptSha256,
  };
}

/** Accumulates the batches of one part and writes its two files. */
export class PartWriter {
  private readonly records: IndexRecord[] = [];
  private readonly tokenPieces: Int32Array[] = [];
  private readonly taskIndexes: number[] = [];
  private readonly layerPieces: Array<Array<Uint16Array | Float32Array>>;
  private readonly skippedList: SkippedSample[] = [];
  private tokenCount = 0;
  private dataBytes = 0;
  private finished = false;

  /** Starts an empty part. */
  constructor(private readonly options: PartOptions) {
    this.layerPieces = options.layers.map(() => []);
  }

  /** Samples added so far. */
  get samples(): number {
    return this.records.length;
  }

  /** Tokens added so far. */
  get tokens(): number {
    return this.tokenCount;
  }

  /** Bytes of tensor data held so far (≈ the file size); cut parts by this. */
  get byteSize(): number {
    return this.dataBytes;
  }

  /**
   * Adds one engine batch and the samples it was run on (same order). Fails with
   * `INVALID_ARGUMENT` when they do not match (counts, layers, dtype, width).
   */
  add(samples: readonly Sample[], batch: ExtractedBatch): void {
    this.checkOpen();
    const { layers, hiddenSize, dtype } = this.options;
    const mismatch = (why: string): never => {
      throw new ShardlineError('INVALID_ARGUMENT', `batch does not fit part: ${why}`);
    };
    if (batch.dtype !== dtype) mismatch(`dtype ${batch.dtype}, part is ${dtype}`);
    if (batch.hiddenSize !== hiddenSize) mismatch(`hidden ${batch.hiddenSize} != ${hiddenSize}`);
    if (batch.layers.join() !== layers.join()) mismatch(`layers ${batch.layers.join()}`);
    if (batch.tokenCounts.length !== samples.length) {
      mismatch(`${batch.tokenCounts.length} sequences for ${samples.length} samples`);
    }
    let total = 0;
    samples.forEach((s, k) => {
      if (batch.tokenCounts[k] !== s.tokenIds.length) {
        mismatch(
          `sample ${s.sampleId} has ${s.tokenIds.length} tokens, batch row ${k} has ${batch.tokenCounts[k]}`,
        );
      }
      total += s.tokenIds.length;
    });
    batch.activations.forEach((a, l) => {
      if (a.length !== total * hiddenSize) mismatch(`layer ${layers[l]} holds ${a.length} values`);
    });
    for (const s of samples) {
      this.records.push(indexRecord(s, this.records.length, this.tokenCount));
      this.taskIndexes.push(s.taskIndex);
      this.tokenPieces.push(s.tokenIds);
      this.tokenCount += s.tokenIds.length;
    }
    batch.activations.forEach((a, l) => {
      this.layerPieces[l]!.push(a);
      this.dataBytes += a.byteLength;
    });
    this.dataBytes += total * 4 + samples.length * 16;
  }

  /** Records skipped tasks or samples in the part's metadata (`skipped`). */
  addSkipped(skipped: readonly SkippedSample[]): void {
    this.checkOpen();
    this.skippedList.push(...skipped);
  }

  /**
   * Writes the safetensors file (streamed) and then the index to `store`, and returns what
   * the ledger needs. The writer cannot be used afterwards. Errors: `STORAGE` from the store.
   */
  async finish(store: BlobStore): Promise<PartResult> {
    this.checkOpen();
    this.finished = true;
    const { shardId, partIndex, layers, hiddenSize, dtype } = this.options;
    const keys = partKeys(shardId, partIndex, this.options.prefix);
    const n = this.records.length;

    const offsets = new BigInt64Array(n + 1);
    this.records.forEach((r, k) => (offsets[k + 1] = BigInt(r.token_offset + r.n_tokens)));
    const tensors: TensorSource[] = [
      { name: 'sample_offsets', dtype: 'I64', shape: [n + 1], pieces: [offsets] },
      {
        name: 'sample_task_index',
        dtype: 'I64',
        shape: [n],
        pieces: [BigInt64Array.from(this.taskIndexes, (t) => BigInt(t))],
      },
      { name: 'token_ids', dtype: 'I32', shape: [this.tokenCount], pieces: this.tokenPieces },
      ...layers.map((layer, l): TensorSource => ({
        name: residTensorName(layer),
        dtype: dtype === 'float16' ? 'F16' : 'F32',
        shape: [this.tokenCount, hiddenSize],
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
      shard_id: String(shardId),
      part_index: String(partIndex),
      n_samples: String(n),
      n_tokens: String(this.tokenCount),
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
      name: partName(partIndex),
      shardId,
      partIndex,
      samples: n,
      tokens: this.tokenCount,
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
