/**
 * The whole extraction path as the worker loop will drive it: task lines → samples (real Qwen
 * tokenizer) → batches → engine (worker thread, generated full-vocabulary model) → part files
 * in a blob store → read back by the numpy-only example reader, which must see exactly what
 * was written.
 */
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { ExtractionEngine } from '../../../worker/extraction/engine';
import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import { PartWriter, extractInto, runMetadata } from '../../../worker/extraction/part-writer';
import type { PartResult } from '../../../worker/extraction/part-writer';
import { loadPromptTemplate } from '../../../worker/extraction/prompt-template';
import { buildSamples, resolveSampleOptions } from '../../../worker/extraction/samples';
import type { Sample, SkippedSample } from '../../../worker/extraction/samples';
import { generateQwen2Model } from '../../../synthetic/qwen2';
import { loadTokenizer } from '../../../worker/extraction/tokenizer';
import { pythonTest, runPython } from '../../support/python';
import { makeTempDir } from '../../support/tmp';
import { packedRows } from '../../../worker/extraction/activations';
import type { ExtractedBatch, Rows } from '../../../worker/extraction/activations';

/** Every layer's rows of a batch, packed in sequence order. */
const packed = (b: ExtractedBatch): Rows[] => b.layers.map((_, l) => packedRows(b, l));

const READER = path.resolve(__dirname, '../../../examples/read_activations.py');

const TASKS: unknown[] = [
  {
    task_id: 'a',
    train: [
      {
        input: [
          [1, 0],
          [0, 1],
        ],
        output: [[2]],
      },
      { input: [[3, 3]], output: [[4]] },
    ],
    test: [{ input: [[5, 6]] }],
  },
  { text: 'Residual streams, one row per token.' },
  { task_id: 'broken', train: [{ input: [[1, 2], [3]], output: [[1]] }], test: [{ input: [[1]] }] },
  {
    train: [{ input: [[7]], output: [[8, 9]] }],
    test: [
      {
        input: [
          [0, 1],
          [1, 0],
        ],
      },
      { input: [[2]] },
    ],
  },
];
const FIRST_TASK_INDEX = 1000;

interface Run {
  result: PartResult;
  store: LocalBlobStore;
  samples: Sample[];
  batches: ExtractedBatch[];
}

describe('extraction pipeline', () => {
  let root: string;
  let cleanup: () => void;
  let engine: ExtractionEngine;
  const tokenizer = loadTokenizer();
  const options = resolveSampleOptions({
    template: loadPromptTemplate(),
    predictionsPerTask: 2,
    seed: 5,
  });

  beforeAll(async () => {
    ({ dir: root, cleanup } = makeTempDir('pipeline'));
    // The real vocabulary, a tiny body: the tokenizer's ids are all valid.
    const { modelPath } = generateQwen2Model({
      dir: path.join(root, 'model'),
      shape: {
        vocabSize: 151936,
        hiddenSize: 16,
        numLayers: 3,
        numHeads: 2,
        numKvHeads: 1,
        intermediateSize: 32,
      },
      externalData: true,
      seed: 1,
    });
    engine = await ExtractionEngine.open({ modelPath, layers: [0, 2], intraOpNumThreads: 1 });
  });
  afterAll(async () => {
    await engine.close();
    cleanup();
  });

  async function run(storeDir: string): Promise<Run> {
    const samples: Sample[] = [];
    const skipped: SkippedSample[] = [];
    TASKS.forEach((task, i) => {
      const r = buildSamples(task, FIRST_TASK_INDEX + i, options, tokenizer);
      samples.push(...r.samples);
      skipped.push(...r.skipped);
    });
    const store = new LocalBlobStore(storeDir);
    const writer = new PartWriter({
      shardId: 2,
      partIndex: 0,
      layers: engine.info.layers,
      hiddenSize: engine.info.hiddenSize,
      dtype: engine.info.dtype,
      metadata: runMetadata({
        model: 'synthetic-qwen2',
        engine: engine.info,
        tokenizer: tokenizer.info,
        samples: options,
        stored: { layers: engine.info.layers, dtype: engine.info.dtype, positions: 'all' },
        backend: engine.info.backend,
      }),
    });
    const batches: ExtractedBatch[] = [];
    const recording = {
      extract: async (seqs: ReadonlyArray<ArrayLike<number>>): Promise<ExtractedBatch> => {
        const batch = await engine.extract(seqs);
        batches.push(batch);
        return batch;
      },
    };
    expect(await extractInto(recording, samples, writer, { maxBatchSize: 3 })).toBe(3);
    writer.addSkipped(skipped);
    return { result: await writer.finish(store), store, samples, batches };
  }

  test('every valid sample lands in the part once, in order, and a retry rewrites identical bytes', async () => {
    const first = await run(path.join(root, 'out1'));
    // 2 predictions × (1 test + 2 tests) ARC samples + 1 text sample; the ragged task is skipped.
    expect(first.samples.map((s) => s.sampleId)).toEqual([
      '1000.0.0',
      '1000.0.1',
      '1001.0.0',
      '1003.0.0',
      '1003.0.1',
      '1003.1.0',
      '1003.1.1',
    ]);
    expect(first.result).toMatchObject({
      samples: 7,
      skipped: 1,
      firstTaskIndex: 1000,
      lastTaskIndex: 1003,
    });
    expect(first.result.tokens).toBe(first.samples.reduce((n, s) => n + s.tokenIds.length, 0));
    const again = await run(path.join(root, 'out2'));
    expect(again.result).toEqual(first.result);
    const a = await first.store.readAll(first.result.safetensors.key);
    const b = await again.store.readAll(again.result.safetensors.key);
    expect(b.equals(a)).toBe(true);
  });

  pythonTest('the numpy-only reader reads exactly the values that were written', async () => {
    const { result, store, samples, batches } = await run(path.join(root, 'out3'));
    const file = path.join(store.root, result.safetensors.key);
    const out = runPython([READER, file, '--json']);
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    const read = JSON.parse(out.stdout) as {
      metadata: Record<string, string>;
      index: Array<Record<string, unknown>>;
      samples: Array<{ tokens: number[]; positions: number[]; layers: Record<string, number[][]> }>;
    };
    expect(read.metadata).toMatchObject({
      dtype: 'float16',
      layers: '[0,2]',
      model: 'synthetic-qwen2',
      hook_point: 'resid_post',
    });
    expect(read.index.map((r) => r['sample_id'])).toEqual(samples.map((s) => s.sampleId));
    expect(read.samples).toHaveLength(samples.length);

    // What the engine handed over, sample by sample, decoded from fp16.
    let k = 0;
    for (const batch of batches) {
      let row = 0;
      for (const n of batch.rowCounts) {
        expect(read.samples[k]!.tokens).toEqual(Array.from(samples[k]!.tokenIds));
        expect(read.samples[k]!.positions).toEqual(Array.from({ length: n }, (_, i) => i));
        batch.layers.forEach((layer, l) => {
          const want: number[][] = [];
          for (let r = 0; r < n; r++) {
            want.push(
              Array.from(packed(batch)[l]!.subarray((row + r) * 16, (row + r + 1) * 16), (bits) =>
                f16BitsToNumber(bits),
              ),
            );
          }
          expect(read.samples[k]!.layers[String(layer)]).toEqual(want);
        });
        row += n;
        k++;
      }
    }

    // The summary mode works too (what a person runs first).
    const summary = runPython([READER, file]);
    expect(summary.status).toBe(0);
    expect(summary.stdout).toContain('samples 7');
    expect(summary.stdout).toContain('task 1002 (invalid_grid)');
  });
});
