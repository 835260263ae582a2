/**
 * Task coverage as `verify` judges it (cli/verify-tasks.ts): every task of a shard once, as
 * samples (test input × augmentation) or recorded as skipped with a reason; duplicates, tasks
 * outside the shard and a running shard's unfinished task.
 */
import { checkCoverage, formatRanges } from '../../../cli/verify-tasks';
import type { CoverageInput, SampleRef, SkipRef } from '../../../cli/verify-tasks';

const A = 'gs://b/out/shard_000/part_00000.index.jsonl';
const B = 'gs://b/out/shard_000/part_00001.index.jsonl';
const MANIFEST = 'gs://b/out/shard_000/_MANIFEST.json';

/** Every sample of ARC tasks `tasks` with `tests` test inputs and 2 augmentations, in `file`. */
function arc(tasks: number[], tests = 1, file = A): SampleRef[] {
  return tasks.flatMap((task) =>
    Array.from({ length: tests * 2 }, (_, k) => ({
      task,
      test: Math.floor(k / 2),
      aug: k % 2,
      kind: 'arc',
      file,
    })),
  );
}

function coverage(over: Partial<CoverageInput>): ReturnType<typeof checkCoverage> {
  return checkCoverage({
    shardUri: MANIFEST,
    first: 10,
    completeEnd: 14,
    end: 14,
    augmentations: 2,
    samples: [],
    skips: [],
    ...over,
  });
}

const skip = (
  task: number,
  test: number | null,
  aug: number | null,
  reason = 'too_long',
): SkipRef => ({
  task,
  test,
  aug,
  reason,
  file: A,
});

test('every task once, as samples or skipped with a reason: nothing to report', () => {
  expect(
    coverage({
      samples: [
        ...arc([10], 2),
        ...arc([11]).filter((s) => s.aug === 0),
        { task: 13, test: 0, aug: 0, kind: 'text', file: B },
      ],
      // Task 11's second augmentation was too long; task 12 was not a task at all.
      skips: [skip(11, 0, 1), skip(12, null, null, 'invalid_train')],
    }),
  ).toEqual([]);
});

test('whole tasks missing are reported as ranges against the shard; a sample missing against its file', () => {
  const problems = coverage({
    samples: [...arc([10]).filter((s) => !(s.aug === 1)), ...arc([13], 1, B)],
  });
  expect(problems).toEqual([
    {
      uri: A,
      kind: 'tasks',
      message:
        'task 10: sample(s) 10.0.1 missing (neither in an index file nor recorded as skipped)',
    },
    {
      uri: MANIFEST,
      kind: 'tasks',
      message: '2 task(s) missing: 11-12 (no sample in any listed part, not recorded as skipped)',
    },
  ]);
});

test('a test input between two present ones is required', () => {
  const samples = arc([10, 11, 12, 13], 3).filter((s) => !(s.task === 12 && s.test === 1));
  expect(coverage({ samples }).map((p) => p.message)).toEqual([
    'task 12: sample(s) 12.1.0, 12.1.1 missing (neither in an index file nor recorded as skipped)',
  ]);
});

test('a sample stored twice names both files; stored and skipped is reported too', () => {
  const problems = coverage({
    samples: [...arc([10, 11, 12, 13]), ...arc([11], 1, B).slice(0, 1)],
    skips: [skip(12, 0, 0)],
  });
  expect(problems).toEqual([
    { uri: B, kind: 'tasks', message: `sample 11.0.0 appears 2 times (${A}, ${B})` },
    {
      uri: A,
      kind: 'tasks',
      message: 'task 12: sample(s) 12.0.0 both stored and recorded as skipped, or skipped twice',
    },
  ]);
});

test('tasks outside the shard, and a skip without a reason', () => {
  const problems = coverage({
    samples: [...arc([10, 11, 12, 13]), ...arc([3, 4, 20], 1, B)],
    skips: [skip(13, 0, 1, '')],
  });
  expect(problems).toContainEqual({
    uri: B,
    kind: 'tasks',
    message: "holds task(s) 3-4, 20, outside the shard's tasks 10-13",
  });
  expect(problems).toContainEqual({
    uri: A,
    kind: 'tasks',
    message: 'a skipped entry of task 13 has no reason',
  });
});

test('a running shard: tasks its parts passed must be complete; the one in progress may be partial', () => {
  const partial = arc([12]).slice(0, 1);
  expect(coverage({ completeEnd: 12, end: 13, samples: [...arc([10, 11]), ...partial] })).toEqual(
    [],
  );
  // A task it has not reached yet cannot be in a committed part.
  expect(
    coverage({ completeEnd: 12, end: 13, samples: [...arc([10, 11, 13])] }).map((p) => p.message),
  ).toEqual([
    "holds task(s) 13, outside the tasks the shard's committed parts have reached (10-12)",
  ]);
  // One it passed can not be partial.
  expect(
    coverage({ completeEnd: 12, end: 13, samples: [...arc([10]), ...arc([11]).slice(1)] }).map(
      (p) => p.message,
    ),
  ).toEqual([
    'task 11: sample(s) 11.0.0 missing (neither in an index file nor recorded as skipped)',
  ]);
});

test('formatRanges', () => {
  expect(formatRanges([1, 2, 3, 5, 7, 8])).toBe('1-3, 5, 7-8');
  expect(formatRanges([])).toBe('');
});
