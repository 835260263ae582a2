/**
 * From task to samples with the real Qwen tokenizer and the default template: golden prompts,
 * augmentation that is recorded and independent of shard order, the length policy, and
 * malformed tasks that are skipped with a reason instead of crashing the run.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { augmentationFor } from '../../../worker/extraction/augment';
import { planBatches } from '../../../worker/extraction/batch';
import { encodeGrid, transformGrid } from '../../../worker/extraction/grid';
import {
  loadPromptTemplate,
  parsePromptTemplate,
} from '../../../worker/extraction/prompt-template';
import {
  buildSamples,
  renderArcPrompt,
  resolveSampleOptions,
} from '../../../worker/extraction/samples';
import type { Sample, SampleOptions } from '../../../worker/extraction/samples';
import { parseTask } from '../../../worker/extraction/task';
import type { ArcTask } from '../../../worker/extraction/task';
import { bundledQwenTokenizerFiles, loadTokenizer } from '../../../worker/extraction/tokenizer';
import type { PromptTokenizer } from '../../../worker/extraction/tokenizer';
import { makeTempDir } from '../../support/tmp';

let tok: PromptTokenizer;
const template = loadPromptTemplate();
beforeAll(() => {
  tok = loadTokenizer();
});

const options = (o: Partial<SampleOptions> = {}): SampleOptions =>
  resolveSampleOptions({ template, ...o });

const DEMO = {
  task_id: 'demo',
  train: [
    {
      input: [
        [1, 1, 0],
        [0, 0, 1],
      ],
      output: [[2]],
    },
    { input: [[3]], output: [[4, 5]] },
  ],
  test: [
    {
      input: [
        [0, 7],
        [7, 0],
      ],
    },
  ],
};

const SYSTEM =
  'You solve visual reasoning puzzles made of coloured grids. A grid is a rectangle of cells, and each cell holds a ' +
  'colour written as a digit from 0 to 9. A puzzle gives a few demonstrations, each an input grid and the output ' +
  'grid it becomes. The same hidden transformation produces every demonstrated output from its input. Work out ' +
  'that transformation from the demonstrations, then apply it to the test input.\n\nGrids are written inside a ' +
  'grid code block. Its first line gives the shape as rows x columns; each following line is one row: the row ' +
  'number, a space, then the colours of that row from left to right.';

describe('prompt rendering (golden)', () => {
  test('an ARC task renders in Qwen2.5 ChatML, with encoded grids, ending at the answer grid opening', () => {
    const { samples, skipped } = buildSamples(
      DEMO,
      5,
      options({ augment: false, keepPromptText: true }),
      tok,
    );
    expect(skipped).toEqual([]);
    expect(samples).toHaveLength(1);
    const expected =
      `<|im_start|>system\n${SYSTEM}<|im_end|>\n` +
      '<|im_start|>user\nStudy the demonstrations below, then give the output grid for the test input.\n' +
      '\n## Example 1\n\n### Input\n\n```grid shape: 2x3\n1 110\n2 001\n```\n\n### Output\n\n```grid shape: 1x1\n1 2\n```\n' +
      '\n## Example 2\n\n### Input\n\n```grid shape: 1x1\n1 3\n```\n\n### Output\n\n```grid shape: 1x2\n1 45\n```\n' +
      '\n## Test case\n\n### Input\n\n```grid shape: 2x2\n1 07\n2 70\n```<|im_end|>\n' +
      '<|im_start|>assistant\n### Output\n\n```grid';
    const s = samples[0]!;
    expect(s.promptText).toBe(expected);
    expect(s.promptSha256).toBe(createHash('sha256').update(expected).digest('hex'));
    // Control tokens are parsed as such; the prompt ends with `<|im_start|>assistant\n### Output\n\n```grid`.
    expect(Array.from(s.tokenIds.slice(-8))).toEqual([
      151644, 77091, 198, 14374, 9258, 271, 73594, 4203,
    ]);
    expect(s.tokenIds[0]).toBe(151644);
    expect(s).toMatchObject({
      sampleId: '5.0.0',
      taskIndex: 5,
      taskId: 'demo',
      kind: 'arc',
      testIndex: 0,
      trainExamplesTotal: 2,
      trainExamplesUsed: 2,
      truncated: false,
      augmentation: {
        index: 0,
        hflip: false,
        rot90: 0,
        colorMap: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        trainOrder: [0, 1],
      },
    });
  });

  test('the bundled tokenizer behaves as Qwen2.5 (Qwen3-only tokens dropped)', () => {
    expect(tok.encode('Hello, my dog is cute', { addSpecialTokens: true })).toEqual([
      9707, 11, 847, 5562, 374, 18838,
    ]);
    expect(tok.encode('<think>', { addSpecialTokens: false })).toEqual([13708, 766, 29]);
    expect(tok.info).toMatchObject({
      chatTemplateSource: 'bundled-qwen2.5',
      maxAddedTokenId: 151664,
    });
    expect(tok.info.tokenizerSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  test("a model's own tokenizer_config.json chat template is used when given", () => {
    const files = bundledQwenTokenizerFiles();
    const own = loadTokenizer({
      tokenizerPath: files.tokenizerPath,
      tokenizerConfigPath: files.configPath,
    });
    expect(own.info).toMatchObject({
      chatTemplateSource: 'tokenizer_config',
      maxAddedTokenId: null,
    });
    // This file's template is Qwen3's, which opens the assistant turn with an empty think block.
    const text = own.renderOpenChat([
      { role: 'user', content: 'U' },
      { role: 'assistant', content: 'A' },
    ]);
    expect(text).toBe(
      '<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA',
    );
    expect(own.encode('<think>', { addSpecialTokens: false })).toEqual([151667]);
  });

  test('a replacement template file is used as written; its format errors name the file', () => {
    const { dir, cleanup } = makeTempDir('template');
    try {
      const file = path.join(dir, 'mine.prompt');
      writeFileSync(
        file,
        'my notes\n=== user ===\n{{ n_train }} example(s):\n{% for ex in train %}{{ ex.number }}: {{ ex.input }} -> {{ ex.output }}\n{% endfor %}Q: {{ test_input }}\n\n\n=== assistant ===\nA:',
      );
      const mine = loadPromptTemplate(file);
      const task = parseTask(DEMO) as ArcTask;
      const plain: Pick<PromptTokenizer, 'renderOpenChat'> = {
        renderOpenChat: (m) => m.map((x) => `[${x.role}]${x.content}`).join('|'),
      };
      const aug = {
        index: 0,
        hflip: false,
        rot90: 0,
        colorMap: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        trainOrder: [1, 0],
      };
      expect(renderArcPrompt(task, 0, aug, 1, mine, plain)).toBe(
        '[user]1 example(s):\n1: ```grid shape: 1x1\n1 3\n``` -> ```grid shape: 1x2\n1 45\n```\nQ: ```grid shape: 2x2\n1 07\n2 70\n```|[assistant]A:',
      );
    } finally {
      cleanup();
    }
    expect(() => parsePromptTemplate('=== user ===\nx\n', 'a.prompt')).toThrow(
      /a\.prompt.*assistant/,
    );
    expect(() =>
      parsePromptTemplate('=== user ===\n=== user ===\n=== assistant ===\n', 'b.prompt'),
    ).toThrow(/twice/);
    let jinjaError: unknown;
    try {
      parsePromptTemplate('=== user ===\n{% for %}\n=== assistant ===\n', 'c.prompt');
    } catch (e: unknown) {
      jinjaError = e;
    }
    expect(jinjaError).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('augmentation', () => {
  const tasks = Array.from({ length: 6 }, (_, i) => ({
    train: [
      {
        input: [
          [i % 10, 1],
          [2, 3],
        ],
        output: [[4]],
      },
      { input: [[5, 6, 7]], output: [[8], [9]] },
      { input: [[0]], output: [[1, 2]] },
    ],
    test: [
      {
        input: [
          [1, 2, 3],
          [4, 5, 6],
        ],
      },
    ],
  }));

  const byId = (samples: Sample[]): Map<string, unknown> =>
    new Map(
      samples.map((s) => [
        s.sampleId,
        { ids: Array.from(s.tokenIds), aug: s.augmentation, hash: s.promptSha256 },
      ]),
    );

  test('does not depend on shard order or on which tasks came before', () => {
    const o = options({ seed: 'run-1' });
    const forward = tasks.flatMap((t, i) => buildSamples(t, 100 + i, o, tok).samples);
    const backward = [...tasks.entries()]
      .reverse()
      .flatMap(([i, t]) => buildSamples(t, 100 + i, o, tok).samples);
    const shardB = [...tasks.entries()]
      .slice(3)
      .flatMap(([i, t]) => buildSamples(t, 100 + i, o, tok).samples);
    expect(byId(backward)).toEqual(byId(forward));
    const f = byId(forward);
    for (const [id, v] of byId(shardB)) expect(v).toEqual(f.get(id));
    expect(forward).toHaveLength(6 * 8);
  });

  test('covers the 8 flips/rotations with recorded colour maps and train orders, seeded by run seed', () => {
    const o = options({ seed: 7, keepPromptText: true });
    const { samples } = buildSamples(tasks[0], 0, o, tok);
    expect(samples.map((s) => [s.augmentation!.hflip, s.augmentation!.rot90])).toEqual([
      [false, 0],
      [false, 1],
      [false, 2],
      [false, 3],
      [true, 0],
      [true, 1],
      [true, 2],
      [true, 3],
    ]);
    const task = parseTask(tasks[0]) as ArcTask;
    for (const s of samples) {
      const a = s.augmentation!;
      expect([...a.colorMap].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect([...a.trainOrder].sort()).toEqual([0, 1, 2]);
      // The prompt shows exactly the recorded transform of the test input...
      expect(s.promptText).toContain(
        `### Input\n\n${encodeGrid(transformGrid(task.test[0]!, a))}<|im_end|>`,
      );
      // ...and the train pairs in the recorded order.
      const shown = a.trainOrder.map((k) => encodeGrid(transformGrid(task.train[k]!.input, a)));
      const positions = shown.map((g) => s.promptText!.indexOf(`### Input\n\n${g}`));
      expect(positions.every((p) => p > 0)).toBe(true);
      expect([...positions].sort((x, y) => x - y)).toEqual(positions);
    }
    const otherSeed = buildSamples(tasks[0], 0, options({ seed: 8 }), tok).samples;
    expect(otherSeed.map((s) => s.augmentation!.colorMap)).not.toEqual(
      samples.map((s) => s.augmentation!.colorMap),
    );
  });

  test('the drawing scheme is pinned, so a resumed run augments its remaining tasks as before', () => {
    expect(augmentationFor('seed', 'abc', 3, 4)).toEqual({
      index: 3,
      hflip: false,
      rot90: 3,
      colorMap: [0, 1, 2, 4, 6, 8, 7, 5, 3, 9],
      trainOrder: [2, 3, 0, 1],
    });
    expect(augmentationFor(0, 'abc', 12, 5)).toEqual({
      index: 12,
      hflip: true,
      rot90: 0,
      colorMap: [0, 6, 7, 8, 1, 4, 2, 5, 9, 3],
      trainOrder: [1, 4, 2, 3, 0],
    });
  });

  test('keeps colour 0 in place about 9 times in 10, as the original', () => {
    let fixed = 0;
    for (let t = 0; t < 50; t++)
      for (let a = 0; a < 8; a++)
        if (augmentationFor(1, `task${t}`, a, 3).colorMap[0] === 0) fixed++;
    expect(fixed / 400).toBeGreaterThan(0.85);
    expect(fixed / 400).toBeLessThan(0.96);
  });

  test('predictions_per_task counts samples per test input; augment off gives one untransformed sample', () => {
    const twoTests = { ...tasks[1], test: [{ input: [[1]] }, { input: [[2, 2]] }] };
    const sixteen = buildSamples(twoTests, 3, options({ predictionsPerTask: 16 }), tok).samples;
    expect(sixteen).toHaveLength(32);
    expect(sixteen.map((s) => s.sampleId).slice(14, 18)).toEqual([
      '3.0.14',
      '3.0.15',
      '3.1.0',
      '3.1.1',
    ]);
    expect(sixteen[9]!.augmentation).toMatchObject({ hflip: false, rot90: 1 });
    expect(buildSamples(twoTests, 3, options({ predictionsPerTask: 3 }), tok).samples).toHaveLength(
      6,
    );
    const off = buildSamples(twoTests, 3, options({ augment: false }), tok).samples;
    expect(off.map((s) => s.augmentation)).toEqual(
      [0, 1].map(() => ({
        index: 0,
        hflip: false,
        rot90: 0,
        colorMap: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        trainOrder: [0, 1, 2],
      })),
    );
  });
});

describe('length policy', () => {
  const big = (seed: number): number[][] =>
    Array.from({ length: 6 }, (_, r) =>
      Array.from({ length: 6 }, (_, c) => (r * 7 + c * 3 + seed) % 10),
    );
  const task = {
    train: Array.from({ length: 6 }, (_, i) => ({ input: big(i), output: big(i + 1) })),
    test: [{ input: big(9) }],
  };
  const parsed = parseTask(task) as ArcTask;
  const aug = {
    index: 0,
    hflip: false,
    rot90: 0,
    colorMap: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    trainOrder: [0, 1, 2, 3, 4, 5],
  };
  const tokensWith = (k: number): number =>
    tok.encode(renderArcPrompt(parsed, 0, aug, k, template, tok), { addSpecialTokens: false })
      .length;

  test('a long prompt drops trailing train examples until it fits, and says so', () => {
    const max = tokensWith(3);
    expect(tokensWith(4)).toBeGreaterThan(max);
    const { samples, skipped } = buildSamples(
      task,
      0,
      options({ augment: false, maxSeqLength: max }),
      tok,
    );
    expect(skipped).toEqual([]);
    expect(samples[0]).toMatchObject({ trainExamplesTotal: 6, trainExamplesUsed: 3 });
    expect(samples[0]!.tokenIds.length).toBe(max);
    // A prompt that fits keeps every example.
    expect(
      buildSamples(task, 0, options({ augment: false, maxSeqLength: tokensWith(6) }), tok)
        .samples[0]!.trainExamplesUsed,
    ).toBe(6);
  });

  test('a prompt that does not fit even with the minimum examples is skipped, per sample, with the reason', () => {
    const { samples, skipped } = buildSamples(
      task,
      4,
      options({ maxSeqLength: tokensWith(1) - 1 }),
      tok,
    );
    expect(samples).toEqual([]);
    expect(skipped).toHaveLength(8);
    expect(skipped[3]).toMatchObject({
      taskIndex: 4,
      testIndex: 0,
      augmentationIndex: 3,
      reason: 'too_long',
    });
    // With min_train_examples 0 the bare test case still fits.
    const bare = buildSamples(
      task,
      4,
      options({ augment: false, maxSeqLength: tokensWith(1) - 1, minTrainExamples: 0 }),
      tok,
    );
    expect(bare.samples[0]!.trainExamplesUsed).toBe(0);
  });

  test('text is skipped when too long, or cut and marked with text_overflow=truncate', () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(20);
    const n = tok.encode(text, { addSpecialTokens: true }).length;
    const skipped = buildSamples({ text }, 9, options({ maxSeqLength: n - 1 }), tok);
    expect(skipped.samples).toEqual([]);
    expect(skipped.skipped[0]).toMatchObject({ taskIndex: 9, reason: 'too_long' });
    const cut = buildSamples(
      { text },
      9,
      options({ maxSeqLength: 10, textOverflow: 'truncate' }),
      tok,
    );
    expect(cut.samples[0]).toMatchObject({ truncated: true });
    expect(Array.from(cut.samples[0]!.tokenIds)).toEqual(
      tok.encode(text, { addSpecialTokens: true }).slice(0, 10),
    );
  });
});

describe('text tasks and ids', () => {
  test('text is tokenized as it is; ids come from task_id, id, or the content', () => {
    const { samples } = buildSamples({ id: 42, text: 'Hello, my dog is cute' }, 1, options(), tok);
    expect(samples[0]).toMatchObject({
      sampleId: '1.0.0',
      taskId: '42',
      kind: 'text',
      augmentation: null,
      trainExamplesUsed: null,
    });
    expect(Array.from(samples[0]!.tokenIds)).toEqual([9707, 11, 847, 5562, 374, 18838]);
    expect(samples[0]!.promptSha256).toBe(
      createHash('sha256').update('Hello, my dog is cute').digest('hex'),
    );
    const a = buildSamples({ text: 'same' }, 1, options(), tok).samples[0]!;
    const b = buildSamples({ text: 'same' }, 2, options(), tok).samples[0]!;
    expect(a.taskId).toMatch(/^task_[0-9a-f]{16}$/);
    expect(b.taskId).toBe(a.taskId);
  });
});

describe('malformed tasks are skipped with a reason, never thrown', () => {
  const good = { input: [[1]], output: [[2]] };
  test.each([
    [
      'ragged grid',
      { train: [{ input: [[1, 2], [3]], output: [[1]] }], test: [{ input: [[1]] }] },
      'invalid_grid',
    ],
    ['colour 10', { train: [good], test: [{ input: [[10]] }] }, 'invalid_grid'],
    [
      'negative colour',
      { train: [{ input: [[-1]], output: [[1]] }], test: [{ input: [[1]] }] },
      'invalid_grid',
    ],
    ['fractional colour', { train: [good], test: [{ input: [[1.5]] }] }, 'invalid_grid'],
    ['string colour', { train: [good], test: [{ input: [['3']] }] }, 'invalid_grid'],
    [
      'empty grid',
      { train: [{ input: [], output: [[1]] }], test: [{ input: [[1]] }] },
      'invalid_grid',
    ],
    ['empty row', { train: [good], test: [{ input: [[]] }] }, 'invalid_grid'],
    ['no test', { train: [good] }, 'no_test_input'],
    ['empty test', { train: [good], test: [] }, 'no_test_input'],
    ['test without input', { train: [good], test: [{ output: [[1]] }] }, 'no_test_input'],
    [
      'train pair without output',
      { train: [{ input: [[1]] }], test: [{ input: [[1]] }] },
      'invalid_train',
    ],
    ['no train', { test: [{ input: [[1]] }] }, 'invalid_train'],
    ['neither ARC nor text', { prompt: 'hi' }, 'unknown_kind'],
    ['empty text', { text: '' }, 'empty_text'],
    ['an array', [1, 2, 3], 'not_an_object'],
    ['null', null, 'not_an_object'],
    ['a number', 7, 'not_an_object'],
  ])('%s', (_label, task, reason) => {
    const result = buildSamples(task, 12, options(), tok);
    expect(result.samples).toEqual([]);
    expect(result.skipped).toHaveLength(1);
    expect(result.skipped[0]).toMatchObject({ taskIndex: 12, testIndex: null, reason });
    expect(result.skipped[0]!.detail.length).toBeGreaterThan(0);
  });

  test('the id of a malformed task is kept when it has one', () => {
    expect(buildSamples({ task_id: 'x1', train: [] }, 0, options(), tok).skipped[0]!.taskId).toBe(
      'x1',
    );
  });

  test('bad options are configuration errors and do throw', () => {
    expect(() => resolveSampleOptions({ template, predictionsPerTask: 0 })).toThrow(
      /predictions_per_task/,
    );
    expect(() => resolveSampleOptions({ template, maxSeqLength: 1.5 })).toThrow(/max_seq_length/);
  });
});

describe('batch planning', () => {
  test('keeps order, respects size and padded-token limits, gives an oversize sequence its own batch', () => {
    expect(planBatches([10, 10, 10, 10, 10], { maxBatchSize: 2 })).toEqual([
      [0, 2],
      [2, 4],
      [4, 5],
    ]);
    expect(
      planBatches([100, 300, 50, 5000, 20], { maxBatchSize: 8, maxBatchTokens: 1000 }),
    ).toEqual([
      [0, 3],
      [3, 4],
      [4, 5],
    ]);
    expect(planBatches([])).toEqual([]);
    expect(() => planBatches([1], { maxBatchSize: 0 })).toThrow(/batch_size/);
  });
});
