/**
 * Graph surgery and the prepared-model cache, on generated models of every kind the surgery
 * must handle: weights inline or in `model.onnx_data`, lm head present or not, optimum names,
 * onnxruntime-genai fused norms, and no meaningful names at all. Each rewritten model is run
 * and compared with the float64 reference, so "found the residual stream" means the right one.
 */
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { onnx } from 'onnx-proto';

import { ExtractionEngine } from '../../../worker/extraction/engine';
import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import { prepareModel } from '../../../worker/extraction/prepare-model';
import type { PreparedModel } from '../../../worker/extraction/prepare-model';
import { Prng } from '../../../core/random';
import { generateQwen2Model } from '../../../synthetic/qwen2';
import type { Qwen2ModelOptions, Qwen2Shape } from '../../../synthetic/qwen2';
import { findResidualStream } from '../../../worker/extraction/surgery';
import { referenceResiduals, referenceWeights } from '../../support/qwen2-reference';
import { makeTempDir } from '../../support/tmp';
import { packedRows } from '../../../worker/extraction/activations';
import type { ExtractedBatch, Rows } from '../../../worker/extraction/activations';

/** Every layer's rows of a batch, packed in sequence order. */
const packed = (b: ExtractedBatch): Rows[] => b.layers.map((_, l) => packedRows(b, l));

const SHAPE: Qwen2Shape = {
  vocabSize: 300,
  hiddenSize: 32,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 48,
};
const SEED = 'surgery';
const weights = referenceWeights(SHAPE, SEED);

let root: string;
let cleanup: () => void;
beforeAll(() => ({ dir: root, cleanup } = makeTempDir('surgery')));
afterAll(() => cleanup());

/** The error `fn` throws; fails the test when it does not throw. */
function thrown(fn: () => unknown): { code?: unknown; message: string } {
  try {
    fn();
  } catch (e: unknown) {
    return e as { code?: unknown; message: string };
  }
  throw new Error('expected an error');
}

let modelCount = 0;
function generate(options: Partial<Qwen2ModelOptions> = {}): string {
  const dir = path.join(root, `m${modelCount++}`);
  return generateQwen2Model({ dir, shape: SHAPE, seed: SEED, ...options }).modelPath;
}

function loadGraph(file: string): onnx.IGraphProto {
  return onnx.ModelProto.decode(readFileSync(file)).graph!;
}

/**
 * Runs the model through the engine (which reuses the rewrite `prepareModel` just cached) on
 * a padded batch and returns the worst difference to the float64 reference. (onnxruntime
 * cannot run inside jest's sandbox itself: its tensors fail `instanceof` across realms.)
 */
async function worstDiff(prepared: PreparedModel, requested?: number[]): Promise<number> {
  const rng = Prng.fromKey('tokens');
  const seqs = [7, 2, 11].map((n) => Array.from({ length: n }, () => rng.nextInt(SHAPE.vocabSize)));
  const engine = await ExtractionEngine.open({
    modelPath: prepared.sourcePath,
    ...(requested ? { layers: requested } : {}),
    dtype: prepared.dtype,
    intraOpNumThreads: 1,
  });
  try {
    expect(engine.info.reusedPreparedModel).toBe(true);
    expect(engine.info.preparedModelPath).toBe(prepared.preparedPath);
    const batch = await engine.extract(seqs);
    let worst = 0;
    let first = 0;
    for (const seq of seqs) {
      const ref = referenceResiduals(SHAPE, weights, seq);
      prepared.layers.forEach((layer, l) => {
        const got = packed(batch)[l]!;
        const value = (i: number): number =>
          got instanceof Uint16Array ? f16BitsToNumber(got[i]!) : got[i]!;
        for (let i = 0; i < seq.length * SHAPE.hiddenSize; i++) {
          worst = Math.max(worst, Math.abs(value(first * SHAPE.hiddenSize + i) - ref[layer]![i]!));
        }
      });
      first += seq.length;
    }
    return worst;
  } finally {
    await engine.close();
  }
}

describe.each([
  { label: 'inline weights, lm head', options: {}, method: 'optimum' },
  { label: 'external data, lm head', options: { externalData: true }, method: 'optimum' },
  {
    label: 'external data, no lm head',
    options: { externalData: true, lmHead: false },
    method: 'optimum',
  },
  { label: 'inline weights, no lm head', options: { lmHead: false }, method: 'optimum' },
  { label: 'genai fused norms', options: { norms: 'fused' as const }, method: 'genai' },
  {
    label: 'genai fused norms, external data',
    options: { norms: 'fused' as const, externalData: true },
    method: 'genai',
  },
  {
    label: 'no meaningful names',
    options: { anonymous: true, lmHead: false },
    method: 'structural',
  },
  {
    label: 'fused and nameless',
    options: { anonymous: true, norms: 'fused' as const },
    method: 'structural',
  },
])('surgery on a model with $label', ({ options, method }) => {
  test('exposes the true residual stream, prunes the head and present.*, writes beside the original', async () => {
    const modelPath = generate(options);
    const { model, reused } = prepareModel({ modelPath, dtype: 'float32' });
    expect(reused).toBe(false);
    expect(model.method).toBe(method);
    expect(model.numLayers).toBe(3);
    expect(model.layers).toEqual([0, 1, 2]);
    expect(path.dirname(model.preparedPath)).toBe(path.dirname(modelPath));

    const graph = loadGraph(model.preparedPath);
    expect(graph.output!.map((o) => o.name)).toEqual([
      'resid_post.0',
      'resid_post.1',
      'resid_post.2',
    ]);
    const tensorNames = new Set((graph.initializer ?? []).map((t) => t.name));
    expect(tensorNames.has('onnx::MatMul.lm_head.weight')).toBe(false);
    expect(
      (graph.node ?? []).some((n) =>
        (n.output ?? []).some((o) => o === 'logits' || o.startsWith('present.')),
      ),
    ).toBe(false);
    if (options.externalData) {
      // The rewrite refers to the original data file, not a copy.
      const external = (graph.initializer ?? []).filter(
        (t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL,
      );
      expect(external.length).toBeGreaterThan(0);
      expect(
        external.every((t) =>
          t.externalData?.some((e) => e.key === 'location' && e.value === 'model.onnx_data'),
        ),
      ).toBe(true);
    }
    expect(await worstDiff(model)).toBeLessThanOrEqual(1e-4);
  });
});

describe('prepared-model cache and layer selection', () => {
  test('a second prepare reuses the rewrite; other layers or dtype get their own file', () => {
    const modelPath = generate({ externalData: true });
    const a = prepareModel({ modelPath, layers: [1], dtype: 'float16' });
    const b = prepareModel({ modelPath, layers: [1], dtype: 'float16' });
    expect(a.reused).toBe(false);
    expect(b.reused).toBe(true);
    expect(b.model.preparedPath).toBe(a.model.preparedPath);
    const c = prepareModel({ modelPath, layers: [0, 1], dtype: 'float16' });
    const d = prepareModel({ modelPath, layers: [1], dtype: 'float32' });
    expect(new Set([a.model.preparedPath, c.model.preparedPath, d.model.preparedPath]).size).toBe(
      3,
    );
    // No temporary files left behind.
    expect(readdirSync(path.dirname(modelPath)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  test('asking for early layers prunes the later ones and their past inputs', async () => {
    const modelPath = generate();
    const { model } = prepareModel({ modelPath, layers: [0], dtype: 'float32' });
    const graph = loadGraph(model.preparedPath);
    expect((graph.node ?? []).some((n) => /layers\.[12]\//.test(n.name ?? ''))).toBe(false);
    expect(model.pastInputs.map((p) => p.name)).toEqual([
      'past_key_values.0.key',
      'past_key_values.0.value',
    ]);
    expect(await worstDiff(model, [0])).toBeLessThanOrEqual(1e-4);
  });

  test('fp16 outputs are cast inside the graph', async () => {
    const modelPath = generate();
    const { model } = prepareModel({ modelPath, layers: [2], dtype: 'float16' });
    const graph = loadGraph(model.preparedPath);
    expect(graph.output![0]!.type!.tensorType!.elemType).toBe(onnx.TensorProto.DataType.FLOAT16);
    expect(graph.node!.at(-1)).toMatchObject({ opType: 'Cast', output: ['resid_post.2'] });
    // Within fp16 rounding of residuals of magnitude < 64: 2^-11 * 64 = 0.03.
    expect(await worstDiff(model, [2])).toBeLessThanOrEqual(0.03);
  });

  test('unusable models fail with MODEL, bad layers with INVALID_ARGUMENT', () => {
    const modelPath = generate();
    expect(thrown(() => prepareModel({ modelPath, layers: [3] }))).toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect(thrown(() => prepareModel({ modelPath, layers: [-1] }))).toMatchObject({
      code: 'INVALID_ARGUMENT',
    });

    const notOnnx = path.join(root, 'junk.onnx');
    writeFileSync(notOnnx, 'this is not a protobuf at all, just text');
    expect(thrown(() => prepareModel({ modelPath: notOnnx }))).toMatchObject({ code: 'MODEL' });

    // config.json disagreeing with the graph: the layer count is checked, not assumed.
    const dir = path.dirname(generate());
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ ...config, num_hidden_layers: 5 }),
    );
    const mismatch = thrown(() => prepareModel({ modelPath: path.join(dir, 'model.onnx') }));
    expect(mismatch).toMatchObject({ code: 'MODEL' });
    expect(mismatch.message).toContain('residual stream');
  });

  test('a legacy merged decoder (If node) is refused with advice', () => {
    const graph: onnx.IGraphProto = {
      node: [{ name: 'branch', opType: 'If', input: ['use_cache_branch'], output: ['y'] }],
    };
    const e = thrown(() => findResidualStream(graph));
    expect(e).toMatchObject({ code: 'MODEL' });
    expect(e.message).toContain('model.onnx');
  });

  test('a config.json one folder up (the Hugging Face onnx/ layout) is read and enforced', () => {
    const repo = path.join(root, 'hf-repo');
    const modelPath = generateQwen2Model({
      dir: path.join(repo, 'onnx'),
      shape: SHAPE,
      seed: SEED,
    }).modelPath;
    const config = JSON.parse(
      readFileSync(path.join(repo, 'onnx', 'config.json'), 'utf8'),
    ) as Record<string, unknown>;
    rmSync(path.join(repo, 'onnx', 'config.json'));
    writeFileSync(
      path.join(repo, 'config.json'),
      JSON.stringify({ ...config, num_hidden_layers: 4 }),
    );
    expect(thrown(() => prepareModel({ modelPath }))).toMatchObject({ code: 'MODEL' });
    writeFileSync(path.join(repo, 'config.json'), JSON.stringify(config));
    expect(prepareModel({ modelPath }).model.numLayers).toBe(3);
  });
});
