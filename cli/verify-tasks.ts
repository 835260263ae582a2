/**
 * Whether a shard's outputs hold every task once, for `shardline verify`: each task of the
 * shard's range has its samples (every test input × augmentation, one each) in the parts'
 * index files, or is recorded as skipped with a reason in a part's metadata; nothing appears
 * twice and nothing outside the range appears at all.
 *
 * What the outputs alone cannot tell: how many test inputs an ARC task has. Test inputs
 * 0..t are checked when a sample or skip of t is present; a task whose last test input is
 * missing in full (every augmentation of it, and nothing recorded) is not seen without the
 * input chunks.
 */
import type { VerifyProblem } from './verify-report';

/** One sample, as a part's index line names it. */
export interface SampleRef {
  task: number;
  test: number;
  aug: number;
  kind: string;
  /** The index file's URI. */
  file: string;
}

/** One entry of a part's `skipped` metadata. */
export interface SkipRef {
  task: number;
  /** Null when the whole task was skipped. */
  test: number | null;
  /** Null when the whole task or test input was skipped. */
  aug: number | null;
  reason: string;
  /** The part's URI. */
  file: string;
}

/** A shard's task range and what its parts hold. */
export interface CoverageInput {
  /** Named by problems about the shard as a whole (its manifest, or its folder). */
  shardUri: string;
  /** The shard's first task. */
  first: number;
  /** Tasks `[first, completeEnd)` must be complete (a running shard: those its parts passed). */
  completeEnd: number;
  /** Tasks `[first, end)` may appear (a task a running shard is in the middle of, too). */
  end: number;
  /** Augmentations per ARC test input (`predictions_per_task`, or 1 without augmentation). */
  augmentations: number;
  samples: readonly SampleRef[];
  skips: readonly SkipRef[];
}

interface TaskEntry {
  kind: string | null;
  /** `test.aug` → the files that hold it. */
  samples: Map<string, string[]>;
  skips: SkipRef[];
}

/** A sorted list of integers as ranges: `3, 7-9, 12`. */
export function formatRanges(values: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < values.length;) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === values[j]! + 1) j++;
    out.push(i === j ? String(values[i]) : `${values[i]}-${values[j]}`);
    i = j + 1;
  }
  return out.join(', ');
}

/** A list cut to its first `max` entries, saying how many more there were. */
function cut(items: readonly string[], max = 8): string {
  return items.length <= max
    ? items.join(', ')
    : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}

/** The problems with a shard's task coverage; none when every task is there once. */
export function checkCoverage(input: CoverageInput): VerifyProblem[] {
  const problems: VerifyProblem[] = [];
  const tasks = new Map<number, TaskEntry>();
  const outside = new Map<string, number[]>();
  const entry = (task: number, file: string): TaskEntry | null => {
    if (task < input.first || task >= input.end || !Number.isSafeInteger(task)) {
      const list = outside.get(file) ?? [];
      list.push(task);
      outside.set(file, list);
      return null;
    }
    let e = tasks.get(task);
    if (!e) tasks.set(task, (e = { kind: null, samples: new Map(), skips: [] }));
    return e;
  };
  for (const s of input.samples) {
    const e = entry(s.task, s.file);
    if (!e) continue;
    e.kind ??= s.kind;
    const key = `${s.test}.${s.aug}`;
    const files = e.samples.get(key) ?? [];
    files.push(s.file);
    e.samples.set(key, files);
  }
  for (const s of input.skips) {
    if (!s.reason)
      problems.push({
        uri: s.file,
        kind: 'tasks',
        message: `a skipped entry of task ${s.task} has no reason`,
      });
    entry(s.task, s.file)?.skips.push(s);
  }
  for (const [file, list] of outside) {
    const sorted = [...new Set(list)].sort((a, b) => a - b);
    problems.push({
      uri: file,
      kind: 'tasks',
      message:
        `holds task(s) ${formatRanges(sorted)}, outside ` +
        (input.completeEnd < input.end
          ? `the tasks the shard's committed parts have reached (${input.first}-${input.end - 1})`
          : `the shard's tasks ${input.first}-${input.end - 1}`),
    });
  }

  const absent: number[] = [];
  for (let task = input.first; task < input.end; task++) {
    const e = tasks.get(task);
    const mustBeComplete = task < input.completeEnd;
    if (!e) {
      if (mustBeComplete) absent.push(task);
      continue;
    }
    for (const [key, files] of e.samples)
      if (files.length > 1)
        problems.push({
          uri: files[1]!,
          kind: 'tasks',
          message: `sample ${task}.${key} appears ${files.length} times (${[...new Set(files)].join(', ')})`,
        });
    const whole = e.skips.filter((s) => s.test === null);
    const anyFile = e.samples.values().next().value?.[0] ?? e.skips[0]!.file;
    if (whole.length > 0) {
      if (e.samples.size > 0 || e.skips.length > 1)
        problems.push({
          uri: anyFile,
          kind: 'tasks',
          message: `task ${task} is recorded as skipped (${whole[0]!.reason}) and also has samples or other skipped entries`,
        });
      continue;
    }
    const missing: string[] = [];
    const twice: string[] = [];
    const augs = e.kind === 'text' ? 1 : input.augmentations;
    const tests = [...e.samples.keys()]
      .map((k) => Number(k.split('.')[0]))
      .concat(e.skips.map((s) => s.test!));
    const lastTest = Math.max(...tests);
    for (let t = 0; t <= lastTest; t++) {
      const testSkips = e.skips.filter((s) => s.test === t);
      const wholeTest = testSkips.some((s) => s.aug === null);
      for (let a = 0; a < augs; a++) {
        const id = `${task}.${t}.${a}`;
        const stored = e.samples.get(`${t}.${a}`)?.length ?? 0;
        const skipped = testSkips.filter((s) => s.aug === a).length + (wholeTest ? 1 : 0);
        if (stored + skipped === 0) missing.push(id);
        // Stored twice is reported above, with the files.
        else if (skipped > 0 && stored + skipped > 1) twice.push(id);
      }
    }
    if (missing.length > 0 && mustBeComplete)
      problems.push({
        uri: anyFile,
        kind: 'tasks',
        message: `task ${task}: sample(s) ${cut(missing)} missing (neither in an index file nor recorded as skipped)`,
      });
    if (twice.length > 0)
      problems.push({
        uri: anyFile,
        kind: 'tasks',
        message: `task ${task}: sample(s) ${cut(twice)} both stored and recorded as skipped, or skipped twice`,
      });
  }
  if (absent.length > 0)
    problems.push({
      uri: input.shardUri,
      kind: 'tasks',
      message: `${absent.length} task(s) missing: ${formatRanges(absent)} (no sample in any listed part, not recorded as skipped)`,
    });
  return problems;
}
