/**
 * `work --backend jax` (the Python extractor of worker/jax, on numpy here: the same forward
 * functions JAX runs, jit off) against `work --backend onnx` on demo-like data: the demo's
 * model shape and ARC puzzles, one seeded set of weights written both as an ONNX export and as
 * a Hugging Face checkpoint folder. The parts must be the same parts: the same files, tensors,
 * shapes and index lines, and the same metadata apart from what names the backend and the
 * files it read the weights from; the activations within 1e-4 of their RMS in float32 and at
 * apart by at most that plus one float16 step in float16. A dataset begun on one backend refuses
 * the other.
 */
import { createHash } from 'node:crypto';
import { cpSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { DEMO_MODEL, DEMO_MODEL_SEED } from '../../../cli/commands/demo';
import { parseSafetensorsHeader, readTensor } from '../../../core/safetensors';
import type { SafetensorsFile } from '../../../core/safetensors';
import { generateArcTasks } from '../../../synthetic/arc-puzzles';
import { generateQwen2Model, writeHfCheckpoint } from '../../../synthetic/qwen2';
import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import { PROVENANCE_KEYS } from '../../../worker/extraction/part-writer';
import { cli } from '../../support/cli';
import { pythonTest } from '../../support/python';
import { makeTempDir } from '../../support/tmp';

const LAYERS = Array.from({ length: DEMO_MODEL.numLayers }, (_, i) => i);

let root: string;
let cleanup: () => void;
let onnxModel: string;
let checkpoint: string;
/** A dataset as `create` left it, copied for each run. */
let pristine: string;

beforeAll(async () => {
  ({ dir: root, cleanup } = makeTempDir('backends-e2e'));
  const onnx = generateQwen2Model({
    dir: path.join(root, 'onnx'),
    shape: DEMO_MODEL,
    seed: DEMO_MODEL_SEED,
    lmHead: true,
    externalData: true,
  });
  onnxModel = onnx.modelPath;
  checkpoint = writeHfCheckpoint(path.join(root, 'hf'), DEMO_MODEL, DEMO_MODEL_SEED, true).dir;
  // What `shardline demo` makes (ARC puzzles of sides up to 6), fewer of them.
  const tasks = generateArcTasks(8, 7, 6).map((t) => JSON.stringify(t));
  writeFileSync(path.join(root, 'tasks.jsonl'), `${tasks.join('\n')}\n`);
  pristine = path.join(root, 'pristine');
  const made = await cli(
    ['create', '--input_file', 'tasks.jsonl', '--output_dir', pristine, '--num_shards', '2'],
    { cwd: root },
  );
  expect(made.code).toBe(0);
});
afterAll(() => cleanup());

/** Runs `work` on a fresh copy of the dataset; returns the copy's activations folder. */
async function work(name: string, backend: string[], ...extra: string[]): Promise<string> {
  const dir = path.join(root, name);
  cpSync(pristine, dir, { recursive: true });
  const run = await workIn(dir, backend, ...extra);
  expect({ name, code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({
    name,
    code: 0,
    stderr: '',
  });
  return path.join(dir, 'activations');
}

function workIn(dir: string, backend: string[], ...extra: string[]) {
  return cli(
    [
      'work',
      '--sharded_dataset_dir',
      dir,
      ...backend,
      '--model_name',
      'demo-qwen2-random',
      '--predictions_per_task',
      '2',
      // Small parts: each shard is cut into several, and the cuts must agree too.
      '--part_size_mb',
      '0.5',
      '--threads',
      '1',
      ...extra,
    ],
    { cwd: root },
  );
}

const ONNX = (): string[] => ['--backend', 'onnx', '--model_path', onnxModel];
const JAX = (): string[] => [
  '--backend',
  'jax',
  '--jax_array',
  'numpy',
  '--model_path',
  checkpoint,
];

/** Every file under `dir`, relative, sorted. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

interface Part {
  file: Buffer;
  parsed: SafetensorsFile;
}

function readPart(file: string): Part {
  const bytes = readFileSync(file);
  return { file: bytes, parsed: parseSafetensorsHeader(bytes) };
}

const sha256Of = (...files: string[]): string => {
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(f));
  return h.digest('hex');
};

/** What the two runs' parts differ in: must be what names the backend and its weights' files. */
const BACKEND_KEYS = ['backend', 'model_sha256', 'residual_method', 'fingerprint'];

/** The distance from `x` to the next float16 away from zero (the float16 step at `x`). */
function f16Step(x: number): number {
  const a = Math.abs(x);
  return a < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(a)) - 10);
}

/**
 * Compares two runs part by part; returns, per layer, the largest activation difference, the
 * largest difference less one float16 step at the larger value (float16 runs), and the RMS of
 * the ONNX run's activations.
 */
function compareRuns(
  onnxOut: string,
  jaxOut: string,
): { maxDiff: number[]; maxBeyondStep: number[]; rms: number[]; rowsCompared: number } {
  const files = filesUnder(onnxOut);
  expect(filesUnder(jaxOut)).toEqual(files);
  const parts = files.filter((f) => f.endsWith('.safetensors'));
  expect(parts.length).toBeGreaterThan(2); // several parts per shard: the cuts were compared
  const maxDiff = LAYERS.map(() => 0);
  const maxBeyondStep = LAYERS.map(() => 0);
  const sumSq = LAYERS.map(() => 0);
  let count = 0;
  for (const name of parts) {
    const a = readPart(path.join(onnxOut, name));
    const b = readPart(path.join(jaxOut, name));
    // The index lines (sample ids, tasks, augmentations, tokens, prompt hashes): byte for byte.
    const index = name.replace(/\.safetensors$/, '.index.jsonl');
    expect(readFileSync(path.join(jaxOut, index), 'utf8')).toBe(
      readFileSync(path.join(onnxOut, index), 'utf8'),
    );
    // The same tensors with the same types and shapes.
    const layout = (p: Part) =>
      [...p.parsed.tensors].map(([n, t]) => [n, t.dtype, t.shape.join('x')].join(' '));
    expect(layout(b)).toEqual(layout(a));
    // The same metadata but for the backend and its model files' hash (and the fingerprint,
    // which hashes that).
    const differ = Object.keys({ ...a.parsed.metadata, ...b.parsed.metadata }).filter(
      (k) => a.parsed.metadata[k] !== b.parsed.metadata[k],
    );
    expect(differ.sort()).toEqual([...BACKEND_KEYS].sort());
    for (const [tensor, entry] of a.parsed.tensors) {
      const x = readTensor(a.file, a.parsed, tensor);
      const y = readTensor(b.file, b.parsed, tensor);
      const m = /^resid_post\.(\d+)$/.exec(tensor);
      if (!m) {
        // Offsets, task indexes, positions, token ids: exact. The statistics (float64, of the
        // activations) only as close as the activations are.
        if (tensor.startsWith('stats.')) continue;
        expect({ tensor, equal: Buffer.from(x.buffer).equals(Buffer.from(y.buffer)) }).toEqual({
          tensor,
          equal: true,
        });
        continue;
      }
      const l = Number(m[1]);
      const f16 = entry.dtype === 'F16';
      for (let i = 0; i < x.length; i++) {
        const u = f16 ? f16BitsToNumber(x[i] as number) : (x[i] as number);
        const v = f16 ? f16BitsToNumber(y[i] as number) : (y[i] as number);
        maxDiff[l] = Math.max(maxDiff[l]!, Math.abs(u - v));
        sumSq[l]! += u * u;
        if (f16)
          maxBeyondStep[l] = Math.max(
            maxBeyondStep[l]!,
            Math.abs(u - v) - f16Step(Math.max(Math.abs(u), Math.abs(v))),
          );
      }
      if (l === 0) count += x.length / DEMO_MODEL.hiddenSize;
    }
  }
  const rms = sumSq.map((s) => Math.sqrt(s / (count * DEMO_MODEL.hiddenSize)));
  return { maxDiff, maxBeyondStep, rms, rowsCompared: count };
}

describe('the JAX extractor on numpy against the ONNX engine, through the worker', () => {
  pythonTest(
    'float32: the same parts, activations within 1e-4 of their RMS',
    async () => {
      const onnxOut = await work('onnx-fp32', ONNX(), '--dtype', 'fp32');
      const jaxOut = await work('jax-fp32', JAX(), '--dtype', 'fp32');
      const { maxDiff, rms, rowsCompared } = compareRuns(onnxOut, jaxOut);
      expect(rowsCompared).toBeGreaterThan(5_000);
      for (const l of LAYERS)
        expect({ layer: l, relative: maxDiff[l]! / rms[l]! < 1e-4 }).toEqual({
          layer: l,
          relative: true,
        });
      console.info(
        `float32, ${rowsCompared} rows: max |onnx - jax| / RMS per layer ${LAYERS.map((l) => (maxDiff[l]! / rms[l]!).toExponential(2)).join(', ')}`,
      );

      // The runs agree on the model but not on its hash: each backend hashes the files it
      // reads the weights from (ONNX: model.onnx and its external data; JAX: the safetensors).
      const meta = (out: string) =>
        readPart(path.join(out, 'shard_000', 'part_00000.safetensors')).parsed.metadata;
      const [o, j] = [meta(onnxOut), meta(jaxOut)];
      expect(o.backend).toBe('onnx');
      expect(j.backend).toBe('jax:numpy');
      expect(o.model_sha256).toBe(
        sha256Of(onnxModel, path.join(path.dirname(onnxModel), 'model.onnx_data')),
      );
      expect(j.model_sha256).toBe(sha256Of(path.join(checkpoint, 'model.safetensors')));
      expect(j.residual_method).toBe('hidden_states');
      // Everything else the fingerprint covers is the same.
      for (const k of PROVENANCE_KEYS)
        if (!BACKEND_KEYS.includes(k)) expect({ k, v: j[k] }).toEqual({ k, v: o[k] });
    },
    { timeoutMs: 600_000 },
  );

  pythonTest(
    'float16: the same parts, values apart by at most the float32 tolerance plus one float16 step',
    async () => {
      const onnxOut = await work('onnx-fp16', ONNX());
      const jaxOut = await work('jax-fp16', JAX());
      const { maxDiff, maxBeyondStep, rms } = compareRuns(onnxOut, jaxOut);
      // Both compute in float32 and round once to float16: where the float32 results straddle
      // a rounding boundary they land one float16 step apart (near zero, where the steps are
      // finer than the float32 difference, several steps: hence the bound in values).
      for (const l of LAYERS)
        expect({ layer: l, within: maxBeyondStep[l]! <= 1e-4 * rms[l]! }).toEqual({
          layer: l,
          within: true,
        });
      console.info(
        `float16: max |onnx - jax| / RMS per layer ${LAYERS.map((l) => (maxDiff[l]! / rms[l]!).toExponential(2)).join(', ')}`,
      );
    },
    { timeoutMs: 600_000 },
  );

  pythonTest(
    'a dataset begun on one backend refuses the other (their model hashes differ)',
    async () => {
      const dir = path.join(root, 'mixed');
      cpSync(pristine, dir, { recursive: true });
      expect((await workIn(dir, JAX(), '--max_shards', '1')).code).toBe(0);
      const onnx = await workIn(dir, ONNX());
      expect(onnx.code).toBe(4);
      expect(onnx.stderr).toContain('model_sha256:');
      // The same backend resumes and finishes.
      expect((await workIn(dir, JAX())).code).toBe(0);
    },
    { timeoutMs: 600_000 },
  );
});
