/**
 * The task corpus through `buildSamples` (issue 9): task lines that passed the splitter (valid
 * JSON objects) but are not usable ARC or text tasks are skipped as a whole, with the reason
 * and a detail naming the place; nothing throws; valid tasks mixed in still yield every sample,
 * under their own task index. The default tokenizer and template, as a worker runs them.
 */
import { checkJsonObject } from '../../../core/split/json-check';
import { loadPromptTemplate } from '../../../worker/extraction/prompt-template';
import type { SampleBatchResult, SampleOptions } from '../../../worker/extraction/samples';
import { buildSamples, resolveSampleOptions } from '../../../worker/extraction/samples';
import type { PromptTokenizer } from '../../../worker/extraction/tokenizer';
import { loadTokenizer } from '../../../worker/extraction/tokenizer';
import type { TaskCase } from '../../support/corpus';
import { TASK_CASES, hugeGridTask } from '../../support/corpus';

let tok: PromptTokenizer;
const template = loadPromptTemplate();
beforeAll(() => {
  tok = loadTokenizer();
});
const options = (o: Partial<SampleOptions> = {}): SampleOptions =>
  resolveSampleOptions({ template, ...o });

/** What a worker does with a chunk line: JSON.parse, then `buildSamples`; a throw is recorded. */
function run(line: string, index: number, o: SampleOptions): SampleBatchResult | { threw: string } {
  try {
    return buildSamples(JSON.parse(line) as unknown, index, o, tok);
  } catch (e: unknown) {
    return { threw: String(e) };
  }
}

const invalid = TASK_CASES.filter(
  (c): c is TaskCase & { expect: { reason: string; detail: RegExp } } => 'reason' in c.expect,
);
const valid = TASK_CASES.filter((c) => 'samples' in c.expect);

test('every corpus line is one the splitter lets through (a JSON object, at most 512 deep)', () => {
  for (const c of TASK_CASES) {
    const b = Buffer.from(c.line);
    const verdict = checkJsonObject(b, 0, b.length);
    const isObject = c.line.startsWith('{');
    expect({ name: c.name, accepted: verdict === null }).toEqual({
      name: c.name,
      accepted: isObject,
    });
  }
  expect(invalid.length).toBeGreaterThan(40);
});

test.each(invalid.map((c) => [c.name, c] as const))(
  '%s: skipped as a whole with its reason, never thrown',
  (_name, c) => {
    const result = run(c.line, 17, options({ augment: false }));
    expect('threw' in result ? result.threw : null).toBeNull();
    const { samples, skipped } = result as SampleBatchResult;
    expect(samples).toEqual([]);
    expect(skipped).toHaveLength(1);
    expect(skipped[0]).toEqual({
      taskIndex: 17,
      taskId: null,
      testIndex: null,
      augmentationIndex: null,
      reason: c.expect.reason,
      detail: expect.stringMatching(c.expect.detail) as unknown,
    });
  },
);

test('valid tasks mixed among the bad ones keep every sample, under their own task index', () => {
  // valid, bad, bad, valid, bad, ... in a fixed interleaving.
  const lines: TaskCase[] = [];
  invalid.forEach((c, i) => {
    if (i % 2 === 0) lines.push(valid[(i / 2) % valid.length]!);
    lines.push(c);
  });
  lines.push(valid[0]!);
  const o = options(); // augmentation on: 8 samples per test input
  const samplesByIndex = new Map<number, string[]>();
  const skippedByIndex = new Map<number, string[]>();
  const threw: string[] = [];
  lines.forEach((c, index) => {
    const result = run(c.line, index, o);
    if ('threw' in result) {
      threw.push(`${c.name}: ${result.threw}`);
    } else {
      for (const s of result.samples)
        samplesByIndex.set(index, [...(samplesByIndex.get(index) ?? []), s.sampleId]);
      for (const s of result.skipped)
        skippedByIndex.set(s.taskIndex, [...(skippedByIndex.get(s.taskIndex) ?? []), s.reason]);
    }
  });
  expect(threw).toEqual([]);
  lines.forEach((c, index) => {
    if ('samples' in c.expect) {
      const tests = (JSON.parse(c.line) as { test?: unknown[] }).test?.length ?? 1;
      const perTest = 'test' in (JSON.parse(c.line) as object) ? 8 : 1;
      expect({ name: c.name, samples: samplesByIndex.get(index)?.length }).toEqual({
        name: c.name,
        samples: tests * perTest,
      });
      expect(skippedByIndex.get(index)).toBeUndefined();
      for (const id of samplesByIndex.get(index)!) expect(id.startsWith(`${index}.`)).toBe(true);
    } else {
      expect({ name: c.name, samples: samplesByIndex.get(index) }).toEqual({
        name: c.name,
        samples: undefined,
      });
      expect(skippedByIndex.get(index)).toEqual([c.expect.reason]);
    }
  });
});

test('the largest ARC grids (30x30) and a huge one (80x80) are skipped as too long, per sample', () => {
  for (const [size, o] of [
    [30, options()],
    [80, options({ augment: false })],
  ] as const) {
    const result = run(hugeGridTask(size), 3, o);
    expect('threw' in result ? result.threw : null).toBeNull();
    const { samples, skipped } = result as SampleBatchResult;
    expect(samples).toEqual([]);
    expect(skipped).toHaveLength(o.augment ? 8 : 1);
    for (const [a, s] of skipped.entries()) {
      expect(s).toEqual({
        taskIndex: 3,
        taskId: `huge-${size}`,
        testIndex: 0,
        augmentationIndex: a,
        reason: 'too_long',
        detail: expect.stringMatching(
          /^\d+ tokens with 1 train example\(s\) > max_seq_length 2048$/,
        ) as unknown,
      });
    }
  }
  // With room for it, the 30x30 task is a valid task with its samples.
  const roomy = run(hugeGridTask(30), 3, options({ augment: false, maxSeqLength: 16384 }));
  expect(roomy).toMatchObject({ skipped: [], samples: [{ sampleId: '3.0.0' }] });
});
