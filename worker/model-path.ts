/**
 * `--model_path` names the ONNX model file, or a folder that holds exactly one: the model
 * folder a launch script mounts (`/models`) or an export's root, whose model may sit in an
 * `onnx/` subfolder (the Hugging Face layout). The worker's own cached rewrites beside a
 * model (`model.shardline-<key>.onnx`, worker/extraction/prepare-model.ts) are not models.
 */
import type { Dirent } from 'node:fs';
import { readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { ShardlineError } from '../core/errors';

/** Folders searched for a model, relative to the folder given: itself, then `onnx/`. */
export const MODEL_SUBFOLDERS = ['.', 'onnx'] as const;

/** A cached rewrite made by the worker, not a model: `<stem>.shardline-<key>.onnx`. */
export function isShardlineRewrite(fileName: string): boolean {
  return /\.shardline-[^/]*\.onnx$/i.test(fileName);
}

function entriesOf(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch (e: unknown) {
    if ((e as { code?: unknown }).code === 'ENOENT' || (e as { code?: unknown }).code === 'ENOTDIR')
      return [];
    throw new ShardlineError('NOT_FOUND', `--model_path: cannot read the folder ${dir}`, {
      cause: e,
    });
  }
}

/** The ONNX models in `folder` and its `onnx/` subfolder, as absolute paths, sorted. */
export function onnxModelsIn(folder: string): string[] {
  const found: string[] = [];
  for (const sub of MODEL_SUBFOLDERS) {
    const dir = path.join(folder, sub);
    for (const e of entriesOf(dir)) {
      if (!e.name.toLowerCase().endsWith('.onnx') || isShardlineRewrite(e.name)) continue;
      const file = path.join(dir, e.name);
      // A symbolic link counts when it points at a file (mounted model stores link files).
      if (e.isFile() || (e.isSymbolicLink() && statSync(file, { throwIfNoEntry: false })?.isFile()))
        found.push(file);
    }
  }
  return found.sort();
}

/**
 * Resolves `--model_path` (already absolute) to the model file: a file is taken as it is; a
 * folder must hold exactly one `.onnx` model in itself or its `onnx/` subfolder. Throws
 * `NOT_FOUND` when the path does not exist or the folder holds no model, and
 * `INVALID_ARGUMENT` listing the candidates when it holds several.
 */
export function resolveModelPath(modelPath: string): string {
  const stat = statSync(modelPath, { throwIfNoEntry: false });
  if (!stat) throw new ShardlineError('NOT_FOUND', `--model_path ${modelPath} does not exist`);
  if (!stat.isDirectory()) return modelPath;
  const models = onnxModelsIn(modelPath);
  if (models.length === 1) return models[0]!;
  const where = `${modelPath} (searched ${MODEL_SUBFOLDERS.map((s) => (s === '.' ? 'the folder' : `${s}/`)).join(' and ')})`;
  if (models.length === 0)
    throw new ShardlineError(
      'NOT_FOUND',
      `--model_path ${where} holds no .onnx model; give the model file, e.g. --model_path ${path.join(modelPath, 'onnx', 'model.onnx')}`,
      { details: { model_path: modelPath } },
    );
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `--model_path ${where} holds ${models.length} .onnx models; name the one to use: ${models
      .map((m) => `--model_path ${m}`)
      .join(' or ')}`,
    { details: { model_path: modelPath, candidates: models } },
  );
}
