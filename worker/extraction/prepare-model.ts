/**
 * Preparing a model file for extraction: read `model.onnx`, rewrite it (`surgery.ts`), and
 * write the result beside the original, where its external data (`model.onnx_data`) must be:
 * onnxruntime 1.30 refuses external data outside the model's folder, even through a symlink
 * (docs/notes/onnx.md §1). The rewrite is cached under a key of (surgery version, SHA-256 of
 * `model.onnx`, layers, dtype): the rewritten graph refers to the same external data: a second worker on the same machine, or a restart, reuses it.
 * Writes go to a temporary name and are renamed into place, so concurrent workers never see
 * half a file.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';

import { onnx } from 'onnx-proto';

import { ConfigError, ShardlineError, toError } from '../../core/errors';
import type { ActivationDtype } from './activations';
import { rewriteForExtraction } from './surgery';
import type { ResidualMethod } from './surgery';

/** Bumped whenever the rewrite changes, so old cached rewrites are not reused. */
export const SURGERY_VERSION = 1;

/** What a Hugging Face `config.json` says about the decoder (fields that matter here). */
export interface DecoderConfig {
  /** `num_hidden_layers`. */
  numLayers?: number;
  /** `hidden_size`. */
  hiddenSize?: number;
  /** `num_key_value_heads`. */
  numKvHeads?: number;
  /** `head_dim`, or `hidden_size / num_attention_heads`. */
  headDim?: number;
}

/** One `past_key_values.*` input: fed as an empty `[B, kvHeads, 0, headDim]` tensor. */
export interface PastInput {
  /** Input name. */
  name: string;
  /** Element type of the empty tensor. */
  elemType: 'float32' | 'float16';
  /** Key/value heads. */
  kvHeads: number;
  /** Head width. */
  headDim: number;
}

/** A model ready for extraction. Serialisable (crosses to the worker thread and to disk). */
export interface PreparedModel {
  /** The original `model.onnx`. */
  sourcePath: string;
  /** The rewritten model, beside the original. */
  preparedPath: string;
  /**
   * SHA-256 (hex) of the model's bytes: `model.onnx` followed by its external data files in
   * ascending name order, so two fine-tunes of one export (the same graph file, other
   * weights) differ. Computed afresh on every load: weights may change under an unchanged graph.
   */
  modelSha256: string;
  /** SHA-256 (hex) of `model.onnx` alone: the key of the cached rewrite. */
  graphSha256: string;
  /** The external data files `model.onnx` refers to, relative to its folder, ascending. */
  externalData: string[];
  /** How the residual stream was found. */
  method: ResidualMethod;
  /** Layers in the model. */
  numLayers: number;
  /** Layers exposed, ascending. */
  layers: number[];
  /** Output names in `layers` order. */
  outputNames: string[];
  /** Element type of the outputs. */
  dtype: ActivationDtype;
  /** Hidden size when known before running (config.json or the embedding), else null. */
  hiddenSize: number | null;
  /** Inputs of the rewritten graph, other than `past_key_values.*`. */
  inputNames: string[];
  /** `past_key_values.*` inputs still read by the rewritten graph. */
  pastInputs: PastInput[];
}

/** Options of `prepareModel`. */
export interface PrepareOptions {
  /** Path of `model.onnx` (its external data, if any, beside it). */
  modelPath: string;
  /** Layers to expose, 0-based; default all. */
  layers?: readonly number[];
  /** Output element type; default float16. */
  dtype?: ActivationDtype;
}

/** What `prepareModel` returns: the model and whether a cached rewrite was reused. */
export interface PrepareResult {
  /** The prepared model. */
  model: PreparedModel;
  /** True when an existing rewrite was reused. */
  reused: boolean;
}

const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids']);

function positiveInt(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/**
 * Reads `config.json` beside the model or one folder up (the `onnx/` subfolder layout of
 * Hugging Face repositories); `text_config` of multimodal configs is used when present.
 * Returns `{}` when there is none.
 */
export function readDecoderConfig(modelPath: string): DecoderConfig {
  const dir = path.dirname(modelPath);
  for (const file of [path.join(dir, 'config.json'), path.join(dir, '..', 'config.json')]) {
    if (!existsSync(file)) continue;
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e: unknown) {
      throw new ConfigError(`${file} is not valid JSON: ${toError(e).message}`);
    }
    if (typeof raw !== 'object' || raw === null) return {};
    let c = raw as Record<string, unknown>;
    if (typeof c['text_config'] === 'object' && c['text_config'] !== null) {
      c = c['text_config'] as Record<string, unknown>;
    }
    const hidden = positiveInt(c['hidden_size']);
    const heads = positiveInt(c['num_attention_heads']);
    const headDim = positiveInt(c['head_dim']) ?? (hidden && heads ? hidden / heads : undefined);
    const out: DecoderConfig = {};
    const layers = positiveInt(c['num_hidden_layers']);
    if (layers !== undefined) out.numLayers = layers;
    if (hidden !== undefined) out.hiddenSize = hidden;
    const kv = positiveInt(c['num_key_value_heads']) ?? heads;
    if (kv !== undefined) out.numKvHeads = kv;
    if (headDim !== undefined && Number.isInteger(headDim)) out.headDim = headDim;
    return out;
  }
  return {};
}

const toNumber = (v: unknown): number | null => {
  if (typeof v === 'number') return v;
  if (typeof v === 'object' && v !== null && 'toNumber' in v) {
    return (v as { toNumber(): number }).toNumber();
  }
  return null;
};

function describeInputs(
  graph: onnx.IGraphProto,
  config: DecoderConfig,
): {
  inputNames: string[];
  pastInputs: PastInput[];
} {
  const inputNames: string[] = [];
  const pastInputs: PastInput[] = [];
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  for (const input of graph.input ?? []) {
    const name = input.name ?? '';
    if (initializers.has(name)) continue;
    if (name.startsWith('past_key_values.') || name.startsWith('past_key_values_')) {
      const t = input.type?.tensorType;
      const elem = t?.elemType;
      if (elem !== onnx.TensorProto.DataType.FLOAT && elem !== onnx.TensorProto.DataType.FLOAT16) {
        throw new ShardlineError(
          'MODEL',
          `input ${name} has element type ${elem}; only float32 and float16 are supported`,
        );
      }
      const dims = t?.shape?.dim ?? [];
      const kvHeads = toNumber(dims[1]?.dimValue) || config.numKvHeads;
      const headDim = toNumber(dims[3]?.dimValue) || config.headDim;
      if (!kvHeads || !headDim) {
        throw new ShardlineError(
          'MODEL',
          `input ${name} has symbolic head dimensions and there is no config.json with num_key_value_heads and head_dim`,
        );
      }
      pastInputs.push({
        name,
        elemType: elem === onnx.TensorProto.DataType.FLOAT ? 'float32' : 'float16',
        kvHeads,
        headDim,
      });
    } else if (KNOWN_INPUTS.has(name)) {
      inputNames.push(name);
    } else {
      throw new ShardlineError(
        'MODEL',
        `unsupported model input ${name} (expected input_ids, attention_mask, position_ids, past_key_values.*)`,
      );
    }
  }
  if (!inputNames.includes('input_ids')) {
    throw new ShardlineError('MODEL', 'the rewritten model does not read input_ids');
  }
  return { inputNames, pastInputs };
}

/** The hidden size read from the graph: the width of the embedding table `input_ids` indexes, or null. */
export function embeddingWidth(graph: onnx.IGraphProto): number | null {
  const embed = (graph.node ?? []).find(
    (n) => n.opType === 'Gather' && n.input?.[1] === 'input_ids',
  );
  const weight = embed && (graph.initializer ?? []).find((t) => t.name === embed.input?.[0]);
  const dims = weight?.dims ?? [];
  return dims.length === 2 ? toNumber(dims[1]) : null;
}

/** The external data files the graph's initializers refer to (`location`), ascending. */
function externalDataFiles(graph: onnx.IGraphProto): string[] {
  const files = new Set<string>();
  for (const t of graph.initializer ?? [])
    for (const e of t.externalData ?? []) if (e.key === 'location' && e.value) files.add(e.value);
  return [...files].sort();
}

/**
 * SHA-256 of the model: the graph file's `bytes`, then each external data file (relative to
 * the graph's folder) in the order given, streamed in 8 MiB reads. Fails with `MODEL` when a
 * file cannot be read.
 */
function contentSha256(
  bytes: Uint8Array,
  sourcePath: string,
  externalData: readonly string[],
): string {
  const hash = createHash('sha256').update(bytes);
  const buffer = Buffer.allocUnsafe(8 << 20);
  for (const name of externalData) {
    const file = path.resolve(path.dirname(sourcePath), name);
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (e: unknown) {
      throw new ShardlineError(
        'MODEL',
        `cannot read ${file}, the external data ${path.basename(sourcePath)} refers to: ${toError(e).message}`,
        { cause: e },
      );
    }
    try {
      for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;)
        hash.update(buffer.subarray(0, n));
    } finally {
      closeSync(fd);
    }
  }
  return hash.digest('hex');
}

function writeAtomically(file: string, data: Uint8Array | string): void {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, file);
  } catch (e: unknown) {
    rmSync(tmp, { force: true });
    throw new ShardlineError(
      'MODEL',
      `cannot write ${file} (the model's folder must be writable): ${toError(e).message}`,
      {
        cause: e,
      },
    );
  }
}

/**
 * Rewrites the model for extraction, or reuses a cached rewrite with the same key.
 * Synchronous and CPU-heavy for large single-file models (decode, hash, encode): the engine
 * calls it on its worker thread. Fails with `MODEL` (unreadable or unsupported model),
 * `INVALID_ARGUMENT` (bad layers).
 */
export function prepareModel(options: PrepareOptions): PrepareResult {
  const sourcePath = path.resolve(options.modelPath);
  const dtype = options.dtype ?? 'float16';
  let bytes: Buffer;
  try {
    bytes = readFileSync(sourcePath);
  } catch (e: unknown) {
    throw new ShardlineError('MODEL', `cannot read model ${sourcePath}: ${toError(e).message}`, {
      cause: e,
    });
  }
  const graphSha256 = createHash('sha256').update(bytes).digest('hex');
  const layersKey = options.layers ? [...new Set(options.layers)].sort((a, b) => a - b) : 'all';
  const key = createHash('sha256')
    .update(JSON.stringify({ v: SURGERY_VERSION, model: graphSha256, layers: layersKey, dtype }))
    .digest('hex')
    .slice(0, 16);
  const stem = path.basename(sourcePath, '.onnx');
  const preparedPath = path.join(path.dirname(sourcePath), `${stem}.shardline-${key}.onnx`);
  const infoPath = `${preparedPath}.json`;

  if (existsSync(preparedPath) && existsSync(infoPath)) {
    try {
      const cached = JSON.parse(readFileSync(infoPath, 'utf8')) as Partial<PreparedModel>;
      // A sidecar of an older worker has no graphSha256: rewritten below, under the same name.
      if (
        cached.graphSha256 === graphSha256 &&
        cached.dtype === dtype &&
        Array.isArray(cached.externalData)
      ) {
        const modelSha256 = contentSha256(bytes, sourcePath, cached.externalData);
        return {
          model: { ...(cached as PreparedModel), sourcePath, preparedPath, modelSha256 },
          reused: true,
        };
      }
    } catch {
      // A damaged sidecar: rewrite below.
    }
  }

  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e: unknown) {
    throw new ShardlineError('MODEL', `${sourcePath} is not an ONNX model: ${toError(e).message}`, {
      cause: e,
    });
  }
  const config = readDecoderConfig(sourcePath);
  const graph = model.graph;
  if (!graph) throw new ShardlineError('MODEL', `${sourcePath} has no graph`);
  const hiddenSize = config.hiddenSize ?? embeddingWidth(graph);
  // Before the rewrite, which prunes the initializers the extraction does not need.
  const externalData = externalDataFiles(graph);
  const modelSha256 = contentSha256(bytes, sourcePath, externalData);
  const result = rewriteForExtraction(model, {
    dtype,
    ...(options.layers ? { layers: options.layers } : {}),
    ...(config.numLayers ? { expectedLayers: config.numLayers } : {}),
    ...(hiddenSize ? { hiddenSize } : {}),
  });
  const { inputNames, pastInputs } = describeInputs(graph, config);
  const prepared: PreparedModel = {
    sourcePath,
    preparedPath,
    modelSha256,
    graphSha256,
    externalData,
    method: result.method,
    numLayers: result.numLayers,
    layers: result.layers,
    outputNames: result.outputNames,
    dtype,
    hiddenSize: hiddenSize ?? null,
    inputNames,
    pastInputs,
  };
  writeAtomically(preparedPath, onnx.ModelProto.encode(model).finish());
  writeAtomically(infoPath, `${JSON.stringify(prepared, null, 2)}\n`);
  return { model: prepared, reused: false };
}
