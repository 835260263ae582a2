/**
 * The shape of a model's residual stream (layers and hidden size) without loading it into
 * onnxruntime: from the Hugging Face `config.json` beside it when that says both, else from
 * the ONNX graph itself (the residual stream as graph surgery finds it, and the width of the
 * embedding table). What `shardline plan` sizes the output with.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { onnx } from 'onnx-proto';

import { ShardlineError, toError } from '../../core/errors';
import { embeddingWidth, readDecoderConfig } from './prepare-model';
import { findResidualStream } from './surgery';

/** What `readModelShape` found. */
export interface ModelShape {
  /** The model file. */
  modelPath: string;
  /** Decoder layers. */
  numLayers: number;
  /** Row width of the residual stream. */
  hiddenSize: number;
  /** Where the numbers came from. */
  from: 'config.json' | 'onnx graph';
}

/**
 * The model file a `--model_path` names: the file itself, or in a folder its `model.onnx`
 * (or `onnx/model.onnx`, the Hugging Face layout). Fails with `NOT_FOUND` otherwise.
 */
export function resolveModelFile(modelPath: string): string {
  if (!existsSync(modelPath))
    throw new ShardlineError('NOT_FOUND', `--model_path ${modelPath} does not exist`);
  if (!statSync(modelPath).isDirectory()) return modelPath;
  for (const rel of ['model.onnx', path.join('onnx', 'model.onnx')]) {
    const file = path.join(modelPath, rel);
    if (existsSync(file)) return file;
  }
  throw new ShardlineError(
    'NOT_FOUND',
    `--model_path ${modelPath} is a folder without model.onnx or onnx/model.onnx`,
  );
}

/**
 * Layers and hidden size of the model at `modelFile`. Fails with `MODEL` when neither
 * `config.json` nor the graph tells them.
 */
export function readModelShape(modelFile: string): ModelShape {
  const config = readDecoderConfig(modelFile);
  if (config.numLayers !== undefined && config.hiddenSize !== undefined)
    return {
      modelPath: modelFile,
      numLayers: config.numLayers,
      hiddenSize: config.hiddenSize,
      from: 'config.json',
    };
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(readFileSync(modelFile));
  } catch (e: unknown) {
    throw new ShardlineError('MODEL', `${modelFile} is not an ONNX model: ${toError(e).message}`, {
      cause: e,
    });
  }
  const graph = model.graph;
  if (!graph) throw new ShardlineError('MODEL', `${modelFile} has no graph`);
  const numLayers = findResidualStream(graph, config.numLayers).tensors.length;
  const hiddenSize = config.hiddenSize ?? embeddingWidth(graph);
  if (!hiddenSize)
    throw new ShardlineError(
      'MODEL',
      `cannot tell the hidden size of ${modelFile}: no config.json beside it and no embedding table that input_ids indexes (give --hidden_size)`,
    );
  return { modelPath: modelFile, numLayers, hiddenSize, from: 'onnx graph' };
}
