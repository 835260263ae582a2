/**
 * `shardline plan`'s pieces without a model: its byte model against the real part writer's
 * files, the part-cut rule, the tasks it samples (counted as `create` counts them) and its wall
 * time for a number of workers. The end-to-end check (plan, then the real run) is
 * test/integration/cli/plan-accuracy.test.ts.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { seededRandom } from '../../../core/random';
import { scanLines } from '../../../core/split/scan';
import { sourceFromStore } from '../../../core/split/source';
import { generateArcTasks } from '../../../synthetic/arc-puzzles';
import type { PlanSettings, TaskMeasure } from '../../../worker/extraction/plan';
import {
  countParts,
  estimateTotals,
  makespan,
  measureTask,
  modelMarginBytes,
  partOverhead,
} from '../../../worker/extraction/plan';
import { PartWriter, rowBytes, runMetadata } from '../../../worker/extraction/part-writer';
import { chooseIndices, sampleInputFile } from '../../../worker/extraction/plan-sample';
import { covers } from '../../../worker/extraction/estimate';
import { parsePositions } from '../../../worker/extraction/positions';
import { loadPromptSetup } from '../../../worker/extraction/prompt-setup';
import { buildSamples } from '../../../worker/extraction/samples';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('plan-unit');
afterAll(cleanup);

// The bundled Qwen tokenizer, a short max_seq_length so that some prompts are shortened and
// some dropped, as a run with these settings would.
const setup = loadPromptSetup(
  { predictionsPerTask: 3, augment: true, seed: 5, maxSeqLength: 700 },
  dir,
);
const layers = [0, 2, 3];
const hiddenSize = 16;

function settings(positions = 'all'): PlanSettings {
  return {
    ...setup,
    positions: parsePositions(positions),
    layout: { layers, hiddenSize, dtype: 'float16' },
    runMetadata: runMetadata({
      model: 'tiny',
      engine: { modelSha256: 'ab'.repeat(32), residualMethod: 'optimum', numLayers: 4 },
      tokenizer: setup.tokenizer.info,
      samples: setup.sampleOptions,
      stored: { layers, dtype: 'float16', positions },
      backend: 'onnx',
    }),
    partSizeBytes: 1 << 20,
    batchSize: 4,
  };
}

/** ARC tasks of several sizes, a text task, a malformed task and a text too long to keep. */
const tasks: unknown[] = [
  ...generateArcTasks(10, 3, 12),
  { text: 'The residual stream is where the layers write.' },
  { train: 'not a list', test: [] },
  { text: 'word '.repeat(2000) },
];

test('the byte model: tasks measured one at a time plus a header per part equal the real part writer’s files, within the stated margin', async () => {
  const s = settings();
  const overhead = await partOverhead(s);
  let predicted = overhead.headerBytes;
  const measures: TaskMeasure[] = [];
  for (const [i, t] of tasks.entries()) {
    const m = await measureTask(t, i, s, overhead, () => 0);
    measures.push(m.measure);
    predicted += m.measure.bytes;
  }
  // The real writer, one part holding every task, activations of the real size (zeros).
  const writer = new PartWriter({
    shardId: 0,
    partIndex: 0,
    layers,
    hiddenSize,
    dtype: 'float16',
    metadata: s.runMetadata,
  });
  let samples = 0;
  for (const [i, t] of tasks.entries()) {
    const built = buildSamples(t, i, s.sampleOptions, s.tokenizer);
    for (const x of built.samples)
      writer.addSample(
        x,
        layers.map(() => new Uint16Array(x.tokenIds.length * hiddenSize)),
        null,
      );
    writer.addSkipped(built.skipped);
    samples += built.samples.length;
  }
  const part = await writer.finish(new LocalBlobStore(dir));
  const actual = part.safetensors.bytes + part.index.bytes;
  const margin = modelMarginBytes(samples, tasks.length, 1, layers.length);
  expect(Math.abs(actual - predicted)).toBeLessThanOrEqual(margin);
  // The margin is a small share of the bytes, not a blanket.
  expect(margin / actual).toBeLessThan(0.01);
  // What the tasks exercise: prompts shortened to fit, a sample dropped for length, a bad task.
  const skipped = measures.reduce<Record<string, number>>((acc, m) => {
    for (const [k, v] of Object.entries(m.skipped)) acc[k] = (acc[k] ?? 0) + v;
    return acc;
  }, {});
  expect(skipped['too_long']).toBeGreaterThan(0);
  expect(skipped['invalid_train']).toBe(1);
  expect(measures.reduce((n, m) => n + m.shortened, 0)).toBeGreaterThan(0);
  expect(measures.reduce((n, m) => n + m.samples, 0)).toBe(samples);
});

test('with --positions last, one row per sample is stored and only those rows cost activation bytes', async () => {
  const all = settings('all');
  const last = settings('last');
  const [a, b] = await Promise.all([partOverhead(all), partOverhead(last)]);
  const ma = (await measureTask(tasks[0], 0, all, a, () => 0)).measure;
  const mb = (await measureTask(tasks[0], 0, last, b, () => 0)).measure;
  expect(mb.tokens).toBe(ma.tokens);
  expect(mb.rows).toBe(mb.samples);
  // Each stored row costs its activations in every layer, its position and its token id
  // (rowBytes); only the digits of the tensors' shapes in the header differ besides.
  const saved = (ma.rows - mb.rows) * rowBytes(layers.length, hiddenSize, 'float16');
  expect(Math.abs(ma.bytes - mb.bytes - saved)).toBeLessThan(64);
});

test('parts are cut as the worker cuts them: before the sample that would pass the size, even inside a task', () => {
  const task = (sizes: number[]): TaskMeasure => ({
    taskIndex: 0,
    samples: sizes.length,
    tokens: 0,
    rows: 0,
    skipped: {},
    shortened: 0,
    bytes: 0,
    sampleSizes: sizes,
    buildMs: 0,
  });
  // Six samples of 100 into parts of 500: five fit, the sixth opens a second part (inside the
  // task), and the next task's sample joins it.
  expect(countParts([task([100, 100, 100, 100, 100, 100]), task([100])], 500)).toBe(2);
  // Exactly full: no cut until a sample would pass the size.
  expect(countParts([task([250, 250])], 500)).toBe(1);
  expect(countParts([task([250, 250]), task([1])], 500)).toBe(2);
  // A sample larger than a part gets a part of its own, never an empty one before it.
  expect(countParts([task([900]), task([900])], 500)).toBe(2);
  // Tasks with nothing but skipped samples still make a part; no task, no part.
  expect(countParts([task([])], 500)).toBe(1);
  expect(countParts([], 500)).toBe(0);
});

test('parts from a sample: a bootstrap of the cut rule, right when every task fills a part and when many share one', () => {
  const t = (i: number, size: number): TaskMeasure => ({
    taskIndex: i,
    samples: 1,
    tokens: 1,
    rows: 1,
    skipped: {},
    shortened: 0,
    bytes: size,
    sampleSizes: [size],
    buildMs: 0,
  });
  const shards = (n: number) => [
    { shardId: 0, firstTaskIndex: 0, totalTasks: n / 2 },
    { shardId: 1, firstTaskIndex: n / 2, totalTasks: n / 2 },
  ];
  const s = { partSizeBytes: 1000, batchSize: 1, layout: settings().layout };
  const overhead = { bareBytes: 0, headerBytes: 0 };
  // Every task is larger than a part: one part per task, whatever the mean size says.
  const big = estimateTotals(
    { totalTasks: 100, shards: shards(100), census: false },
    [t(0, 1200), t(1, 3000), t(2, 1100)],
    s,
    overhead,
  );
  expect(big.parts).toEqual({ value: 100, low: 100, high: 100 });
  // Many small tasks per part: about bytes / part size, and a real draw falls inside.
  const measured = [t(0, 10), t(1, 30), t(2, 10), t(3, 30)];
  const many = estimateTotals(
    { totalTasks: 10_000, shards: shards(10_000), census: false },
    measured,
    s,
    overhead,
  );
  // 200,000 bytes in parts of at most 1000: at least 200 parts, a few more for the slack a
  // cut leaves when the next sample would not fit.
  expect(many.parts.value).toBeGreaterThanOrEqual(200);
  expect(many.parts.value).toBeLessThan(210);
  const rnd = seededRandom(11);
  const realization = (n: number): TaskMeasure[] =>
    Array.from({ length: n }, (_, i) => t(i, rnd() < 0.5 ? 10 : 30));
  const actual = countParts(realization(5000), 1000) + countParts(realization(5000), 1000);
  expect(covers(many.parts, actual)).toBe(true);
});

test('the sample of an input file: tasks counted as create counts them (blank and rejected lines left out, a BOM dropped)', async () => {
  const arc = generateArcTasks(30, 9, 5).map((t) => JSON.stringify(t));
  const lines = [
    '\ufeff' + arc[0],
    '',
    ...arc.slice(1, 10),
    'not json',
    '   ',
    '[1, 2]',
    ...arc.slice(10).map((l) => `${l}\r`),
  ];
  writeFileSync(path.join(dir, 'in.jsonl'), lines.join('\n'));
  const source = await sourceFromStore(new LocalBlobStore(dir), 'in.jsonl');
  const scan = await scanLines(source.open(), {
    maxLineBytes: 1 << 20,
    strict: false,
    onRejected: () => undefined,
  });
  const opts = { seed: 1, numShards: 4, maxLineBytes: 1 << 20 };
  const census = await sampleInputFile(source, { ...opts, sampleTasks: 100 });
  expect(census.totalTasks).toBe(scan.tasks);
  expect(census.census).toBe(true);
  expect(census.tasks.map((t) => (t.task as { task_id: string }).task_id)).toEqual(
    arc.map((l) => (JSON.parse(l) as { task_id: string }).task_id),
  );
  expect(census.shards.map((s) => s.totalTasks)).toEqual([7, 8, 7, 8]);
  const sample = await sampleInputFile(source, { ...opts, sampleTasks: 8 });
  expect(sample.census).toBe(false);
  expect(sample.tasks).toHaveLength(8);
  for (const t of sample.tasks)
    expect((t.task as { task_id: string }).task_id).toBe(
      (JSON.parse(arc[t.taskIndex]!) as { task_id: string }).task_id,
    );
  // Seeded: the same seed, the same tasks.
  expect((await sampleInputFile(source, { ...opts, sampleTasks: 8 })).tasks).toEqual(sample.tasks);
});

test('chosen indices are distinct, ascending, in range and fixed by the seed', () => {
  const a = chooseIndices(1000, 50, 7);
  expect(a).toHaveLength(50);
  expect(new Set(a).size).toBe(50);
  expect(a).toEqual([...a].sort((x, y) => x - y));
  expect(Math.min(...a)).toBeGreaterThanOrEqual(0);
  expect(Math.max(...a)).toBeLessThan(1000);
  expect(chooseIndices(1000, 50, 7)).toEqual(a);
  expect(chooseIndices(1000, 50, 8)).not.toEqual(a);
  expect(chooseIndices(5, 50, 7)).toEqual([0, 1, 2, 3, 4]);
});

test('wall time: shards go to whichever worker is free first, each worker after loading its model', () => {
  expect(makespan([10, 10, 10], 2, 1)).toBe(21);
  expect(makespan([10, 10, 10], 8, 1)).toBe(11);
  expect(makespan([30, 10, 10, 10], 2, 0)).toBe(30);
});
