/**
 * The engine end to end on a generated model, checked against an independent float64 forward
 * pass (test/support/qwen2-reference.ts): what a researcher gets in a part must be the
 * model's residual stream, for every sample of a padded batch.
 */
import { Prng } from '../../../core/random';
import { ExtractionEngine } from '../../../worker/extraction/engine';
import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import { generateQwen2Model } from '../../../synthetic/qwen2';
import type { Qwen2Shape } from '../../../synthetic/qwen2';
import { referenceResiduals, referenceWeights } from '../../support/qwen2-reference';
import type { ReferenceWeights } from '../../support/qwen2-reference';
import { makeTempDir } from '../../support/tmp';
import { packedRows } from '../../../worker/extraction/activations';
import type { ExtractedBatch, Rows } from '../../../worker/extraction/activations';

/** Every layer's rows of a batch, packed in sequence order. */
const packed = (b: ExtractedBatch): Rows[] => b.layers.map((_, l) => packedRows(b, l));

const SHAPE: Qwen2Shape = {
  vocabSize: 512,
  hiddenSize: 64,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 96,
};
const SEED = 11;

function randomSequences(lengths: number[], seed: string): number[][] {
  const rng = Prng.fromKey(seed);
  return lengths.map((n) => Array.from({ length: n }, () => rng.nextInt(SHAPE.vocabSize)));
}

/** Row `row` of layer output `data` ([tokens, hidden]) as numbers. */
function rowsOf(
  data: Uint16Array | Float32Array,
  first: number,
  count: number,
  H: number,
): number[] {
  const out: number[] = [];
  for (let i = first * H; i < (first + count) * H; i++) {
    out.push(data instanceof Uint16Array ? f16BitsToNumber(data[i]!) : data[i]!);
  }
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('ExtractionEngine', () => {
  let dir: string;
  let cleanup: () => void;
  let modelPath: string;
  let weights: ReferenceWeights;

  beforeAll(() => {
    ({ dir, cleanup } = makeTempDir('engine'));
    modelPath = generateQwen2Model({ dir, shape: SHAPE, seed: SEED }).modelPath;
    weights = referenceWeights(SHAPE, SEED);
  });
  afterAll(() => cleanup());

  test('fp32 residual streams of a right-padded batch match the float64 reference within 1e-4', async () => {
    const engine = await ExtractionEngine.open({
      modelPath,
      dtype: 'float32',
      layers: [0, 2],
      intraOpNumThreads: 1,
    });
    try {
      expect(engine.info).toMatchObject({
        numLayers: 3,
        layers: [0, 2],
        hiddenSize: 64,
        dtype: 'float32',
        residualMethod: 'optimum',
      });
      const lengths = [9, 3, 17, 1];
      const seqs = randomSequences(lengths, 'fp32');
      const batch = await engine.extract(seqs);
      expect(batch.rowCounts).toEqual(lengths);
      expect(packed(batch).map((a) => a.length)).toEqual([30 * 64, 30 * 64]);

      let first = 0;
      let worst = 0;
      for (const [k, seq] of seqs.entries()) {
        const ref = referenceResiduals(SHAPE, weights, seq);
        [0, 2].forEach((layer, l) => {
          worst = Math.max(
            worst,
            maxAbsDiff(rowsOf(packed(batch)[l]!, first, seq.length, 64), ref[layer]!),
          );
        });
        first += lengths[k]!;
      }
      expect(worst).toBeLessThanOrEqual(1e-4);

      // The tolerance is meaningful: a broken causal mask is far outside it.
      const unmasked = referenceResiduals(SHAPE, weights, seqs[0]!, { attendToFuture: true });
      expect(maxAbsDiff(rowsOf(packed(batch)[1]!, 0, 9, 64), unmasked[2]!)).toBeGreaterThan(1e-2);

      // A sequence alone gives the rows it had inside the padded batch.
      const alone = await engine.extract([seqs[2]!]);
      expect(
        maxAbsDiff(rowsOf(packed(alone)[1]!, 0, 17, 64), rowsOf(packed(batch)[1]!, 12, 17, 64)),
      ).toBeLessThanOrEqual(1e-5);
    } finally {
      await engine.close();
    }
  });

  test('fp16 outputs are the reference rounded to fp16 (within half an fp16 ulp plus fp32 error)', async () => {
    const engine = await ExtractionEngine.open({
      modelPath,
      dtype: 'float16',
      intraOpNumThreads: 1,
    });
    try {
      expect(engine.info.layers).toEqual([0, 1, 2]);
      const seqs = randomSequences([6, 13], 'fp16');
      const batch = await engine.extract(seqs);
      expect(packed(batch).every((a) => a instanceof Uint16Array)).toBe(true);
      let first = 0;
      for (const seq of seqs) {
        const ref = referenceResiduals(SHAPE, weights, seq);
        for (let layer = 0; layer < 3; layer++) {
          const got = rowsOf(packed(batch)[layer]!, first, seq.length, 64);
          got.forEach((v, i) => {
            const r = ref[layer]![i]!;
            // fp16 has 11 significant bits: rounding error ≤ 2^-11 |r|; 2^-24 covers subnormals.
            expect(Math.abs(v - r)).toBeLessThanOrEqual(Math.abs(r) * 2 ** -11 + 1e-4 + 2 ** -24);
          });
        }
        first += seq.length;
      }
    } finally {
      await engine.close();
    }
  });

  test('the calling thread stays responsive while a batch runs', async () => {
    const engine = await ExtractionEngine.open({
      modelPath,
      dtype: 'float16',
      intraOpNumThreads: 1,
    });
    try {
      const seqs = randomSequences([400, 400, 400, 400], 'busy');
      let ticks = 0;
      let done = false;
      const pending = engine.extract(seqs).finally(() => (done = true));
      // Count event-loop turns until the batch is back; a blocked loop would count ~0.
      while (!done) {
        await new Promise((r) => setTimeout(r, 1));
        ticks++;
      }
      await pending;
      expect(ticks).toBeGreaterThanOrEqual(3);
    } finally {
      await engine.close();
    }
  });

  test('a bad token id fails that batch with MODEL and the engine keeps working', async () => {
    const engine = await ExtractionEngine.open({ modelPath, intraOpNumThreads: 1, warmup: false });
    try {
      await expect(engine.extract([[1, 2, SHAPE.vocabSize + 5]])).rejects.toMatchObject({
        code: 'MODEL',
      });
      await expect(engine.extract([[1, 2], []])).rejects.toMatchObject({
        code: 'INVALID_ARGUMENT',
      });
      await expect(engine.extract([[1, -3]])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      const ok = await engine.extract([[1, 2, 3]]);
      expect(ok.rowCounts).toEqual([3]);
      expect(ok.hiddenSize).toBe(64);
    } finally {
      await engine.close();
      await engine.close();
    }
    await expect(engine.extract([[1]])).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  test('an execution provider that is not installed fails at open instead of silently using the CPU', async () => {
    await expect(
      ExtractionEngine.open({ modelPath, executionProviders: ['cuda'], warmup: false }),
    ).rejects.toMatchObject({ code: 'MODEL' });
  });

  test('a missing model or a layer it does not have fails at open', async () => {
    await expect(ExtractionEngine.open({ modelPath: `${dir}/nope.onnx` })).rejects.toMatchObject({
      code: 'MODEL',
    });
    const badLayer = ExtractionEngine.open({ modelPath, layers: [3] });
    await expect(badLayer).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(badLayer).rejects.toThrow(/layers 0-2/);
  });
});
