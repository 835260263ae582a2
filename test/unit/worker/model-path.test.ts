/**
 * `--model_path` given a folder: the one ONNX model in it (or in its `onnx/` subfolder) is
 * used, the worker's cached rewrites are not models, and none or several is a clear error
 * naming what was found.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { isShardlineRewrite, onnxModelsIn, resolveModelPath } from '../../../worker/model-path';

const { dir, cleanup } = makeTempDir('model-path');
afterAll(cleanup);

/** What `fn` throws. */
function errorOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e: unknown) {
    return e;
  }
  throw new Error('expected an error');
}

let n = 0;
/** A fresh folder holding these files (paths relative to it; empty content). */
function folder(files: string[]): string {
  const root = path.join(dir, `m${n++}`);
  mkdirSync(root, { recursive: true });
  for (const f of files) {
    mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    writeFileSync(path.join(root, f), 'x');
  }
  return root;
}

test('a file is used as it is', () => {
  const root = folder(['weights.onnx']);
  expect(resolveModelPath(path.join(root, 'weights.onnx'))).toBe(path.join(root, 'weights.onnx'));
});

test('a folder with one model in it, or in its onnx/ subfolder, resolves to that model', () => {
  const flat = folder(['model.onnx', 'model.onnx_data', 'tokenizer.json', 'config.json']);
  expect(resolveModelPath(flat)).toBe(path.join(flat, 'model.onnx'));
  const hf = folder(['onnx/model.onnx', 'onnx/model.onnx_data', 'tokenizer.json']);
  expect(resolveModelPath(hf)).toBe(path.join(hf, 'onnx', 'model.onnx'));
});

test("the worker's cached rewrites beside the model are not counted as models", () => {
  const root = folder([
    'onnx/model.onnx',
    'onnx/model.shardline-3f2a9c01.onnx',
    'onnx/model.shardline-77aa.onnx',
  ]);
  expect(resolveModelPath(root)).toBe(path.join(root, 'onnx', 'model.onnx'));
  expect(isShardlineRewrite('model.shardline-3f2a9c01.onnx')).toBe(true);
  expect(isShardlineRewrite('model.onnx')).toBe(false);
  expect(isShardlineRewrite('shardline.onnx')).toBe(false);
});

test('a symbolic link to a model file counts; one to a folder or nowhere does not', () => {
  const store = folder(['real/model.onnx']);
  const root = folder([]);
  symlinkSync(path.join(store, 'real', 'model.onnx'), path.join(root, 'model.onnx'));
  symlinkSync(path.join(store, 'real'), path.join(root, 'linked.onnx'));
  symlinkSync(path.join(store, 'missing.onnx'), path.join(root, 'dangling.onnx'));
  expect(onnxModelsIn(root)).toEqual([path.join(root, 'model.onnx')]);
});

test('a folder with no model fails as not found, saying where it looked', () => {
  const root = folder(['config.json', 'model.safetensors', 'onnx/model.shardline-1.onnx']);
  expect(() => resolveModelPath(root)).toThrow(
    /searched the folder and onnx\/\) holds no \.onnx model/,
  );
  expect(errorOf(() => resolveModelPath(root))).toMatchObject({ code: 'NOT_FOUND' });
});

test('a folder with several models fails as bad usage, listing each one to choose from', () => {
  const root = folder(['onnx/model.onnx', 'onnx/model_fp16.onnx', 'decoder.onnx']);
  const error = errorOf(() => resolveModelPath(root));
  expect(error).toMatchObject({ code: 'INVALID_ARGUMENT' });
  const message = (error as Error).message;
  expect(message).toContain('holds 3 .onnx models');
  for (const f of ['decoder.onnx', 'onnx/model.onnx', 'onnx/model_fp16.onnx'])
    expect(message).toContain(`--model_path ${path.join(root, f)}`);
});

test('a path that does not exist fails as not found', () => {
  const missing = path.join(dir, 'nowhere');
  expect(() => resolveModelPath(missing)).toThrow(`--model_path ${missing} does not exist`);
  expect(errorOf(() => resolveModelPath(missing))).toMatchObject({ code: 'NOT_FOUND' });
});
