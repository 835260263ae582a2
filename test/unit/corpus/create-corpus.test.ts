/**
 * The bad-input corpus through `shardline create` (issue 9): every case ends in a dataset
 * whose tasks are exactly the valid lines, in order, with each rejected line recorded with its
 * number and reason, or in a clear refusal (exit 3, the file and the line named) that leaves
 * nothing behind. Never a crash. With each line checker (SHARDLINE_SPLIT_ENGINE js and native):
 * the same datasets, rejections and messages.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { firstInvalidUtf8 } from '../../../core/split/classify';
import { EXIT } from '../../../cli/exit-codes';
import { cli } from '../../support/cli';
import type { CliRun } from '../../support/cli';
import type { DatasetOutcome, InputCase, RefusedOutcome } from '../../support/corpus';
import {
  BAD_LINES,
  BLANK_LINES,
  CHUNK_BYTES,
  CORPUS_SETTINGS,
  MAX_DEPTH,
  ODD_TASKS,
  inputCases,
  oracleTasks,
  rawBytesOf,
} from '../../support/corpus';
import { readAndCheckDataset } from '../../support/dataset-check';
import { isTaskLine, rng } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';
import { ENGINES } from '../split/native-support';

const { dir, cleanup } = makeTempDir('corpus-create');
afterAll(cleanup);

const CASES = inputCases();
const datasetCases = CASES.filter(
  (c): c is InputCase & { expect: DatasetOutcome } => c.expect.kind === 'dataset',
);
const refusedCases = CASES.filter(
  (c): c is InputCase & { expect: RefusedOutcome } => c.expect.kind === 'refused',
);

const FLAGS = [
  '--num_shards',
  String(CORPUS_SETTINGS.numShards),
  '--chunk_size_mb',
  String(CORPUS_SETTINGS.chunkSizeMb),
  '--max_line_mb',
  String(CORPUS_SETTINGS.maxLineMb),
];

let runs = 0;
/** Writes the case's file in a folder of its own and runs `create` on it with `engine`. */
async function createFrom(
  engine: string,
  c: InputCase,
  extra: string[] = [],
): Promise<CliRun & { cwd: string }> {
  const cwd = path.join(dir, `${c.name}-${++runs}`);
  mkdirSync(cwd);
  writeFileSync(path.join(cwd, c.file), c.bytes);
  const run = await cli(
    ['create', '--input_file', c.file, '--output_dir', 'ds', ...FLAGS, ...extra],
    { cwd, env: { SHARDLINE_SPLIT_ENGINE: engine } },
  );
  return { ...run, cwd };
}

/** No crash: no stack trace, no "unexpected failure", no exit 1. */
function expectNoCrash(run: CliRun): void {
  expect(run.code).not.toBe(EXIT.FAILURE);
  expect(run.stderr).not.toMatch(/unexpected failure|\n\s+at .+:\d+:\d+/);
}

const text = (bufs: readonly Buffer[]): string[] => bufs.map((x) => x.toString('utf8'));

describe('the corpus itself', () => {
  test('the hand-written verdicts agree with the oracle (JSON.parse + fatal UTF-8 decoding)', () => {
    for (const line of [...BAD_LINES, ...ODD_TASKS, ...BLANK_LINES]) {
      // The one documented difference: JSON.parse reads any depth, the splitter stops at 512.
      const deep = line.label === `nesting ${MAX_DEPTH + 1} deep`;
      expect({ line: line.label, task: isTaskLine(line.bytes) }).toEqual({
        line: line.label,
        task: line.verdict === 'task' || deep,
      });
    }
  });

  test.each(datasetCases.map((c) => [c.name, c] as const))(
    '%s: the expected tasks are what the oracle finds in the bytes',
    (_name, c) => {
      expect(text(oracleTasks(rawBytesOf(c)))).toEqual(text(c.expect.tasks));
    },
  );

  test('the column given for invalid UTF-8 is where the well-formed prefix ends (20 000 random lines)', () => {
    const g = rng(31);
    const pool = [0x41, 0x7b, 0x22, 0x80, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xa0, 0xed, 0x9f, 0xef];
    pool.push(0xf0, 0x90, 0xf4, 0x8f, 0xf5, 0xff, 0xe6, 0x97, 0xa5);
    const wrong: string[] = [];
    for (let n = 0; n < 20_000; n++) {
      const line = Buffer.from(
        Array.from({ length: Math.floor(g() * 12) }, () => pool[Math.floor(g() * pool.length)]!),
      );
      const at = firstInvalidUtf8(line, 0, line.length);
      const ok =
        at === line.length
          ? isUtf8(line)
          : !isUtf8(line) && isUtf8(line.subarray(0, at)) && !isUtf8(line.subarray(at));
      if (!ok) wrong.push(`${line.toString('hex')} -> ${at}`);
    }
    expect(wrong).toEqual([]);
  });

  test('covers every kind of input the issue lists', () => {
    const names = CASES.map((c) => c.name);
    for (const kind of [
      'empty',
      'only-blank-lines',
      'bom',
      'crlf',
      'no-final-newline',
      'invalid-json-amid-tasks',
      'not-objects-amid-tasks',
      'line-larger-than-a-chunk',
      'invalid-utf8-amid-tasks',
      'nul-bytes-amid-tasks',
      'gzip-truncated',
      'gzip-not-gzip',
      'kitchen-sink',
    ])
      expect(names).toContain(kind);
  });
});

describe.each(ENGINES)('engine %s', (engine) => {
  describe('inputs that become a dataset', () => {
    test.each(datasetCases.map((c) => [c.name, c] as const))(
      '%s: exactly the valid lines, in order; every rejected line recorded with its number and reason',
      async (_name, c) => {
        const run = await createFrom(engine, c, ['--json']);
        expectNoCrash(run);
        expect({ code: run.code, stderr: run.stderr.includes('shardline create:') }).toEqual({
          code: EXIT.OK,
          stderr: false,
        });
        const ds = path.join(run.cwd, 'ds');
        const back = await readAndCheckDataset(new LocalBlobStore(ds));
        expect(text(back.tasks)).toEqual(text(c.expect.tasks));
        expect(back.master).toMatchObject({
          total_tasks: c.expect.tasks.length,
          input_lines: c.expect.lines,
          blank_lines: c.expect.blank,
          rejected_lines: c.expect.rejected.length,
        });

        const raw = rawBytesOf(c);
        const rejectedFile = path.join(ds, 'rejected.jsonl');
        expect(existsSync(rejectedFile)).toBe(c.expect.rejected.length > 0);
        const recorded = existsSync(rejectedFile)
          ? readFileSync(rejectedFile, 'utf8')
              .trimEnd()
              .split('\n')
              .map(
                (l) =>
                  JSON.parse(l) as {
                    line: number;
                    offset: number;
                    bytes: number;
                    reason: string;
                    preview: string;
                  },
              )
          : [];
        expect(recorded.map((r) => r.line)).toEqual(c.expect.rejected.map((r) => r.line));
        recorded.forEach((rec, i) => {
          const want = c.expect.rejected[i]!;
          expect({ line: rec.line, reason: rec.reason }).toEqual({
            line: want.line,
            reason: expect.stringMatching(want.reason) as unknown,
          });
          // The record points at the line's bytes in the input, and previews only its start.
          if (want.bytes) {
            expect(rec.bytes).toBe(want.bytes.length);
            expect(raw.subarray(rec.offset, rec.offset + rec.bytes).equals(want.bytes)).toBe(true);
          }
          expect(rec.preview.length).toBeLessThanOrEqual(81);
        });

        const summary = JSON.parse(run.stdout) as {
          total_tasks: number;
          rejected_lines: number;
          rejected_sample: Array<{ line: number; preview: string }>;
        };
        expect(summary.total_tasks).toBe(c.expect.tasks.length);
        expect(summary.rejected_lines).toBe(c.expect.rejected.length);
        expect(summary.rejected_sample.map((r) => r.line)).toEqual(
          c.expect.rejected.slice(0, 20).map((r) => r.line),
        );
      },
    );

    test('a task larger than a chunk gets a chunk of its own; the others respect the limit', async () => {
      const c = datasetCases.find((x) => x.name === 'line-larger-than-a-chunk')!;
      const run = await createFrom(engine, c);
      expect(run.code).toBe(EXIT.OK);
      const back = await readAndCheckDataset(new LocalBlobStore(path.join(run.cwd, 'ds')));
      const chunks = back.shards.flatMap((s) => s.chunks);
      const big = chunks.filter((ch) => ch.bytes > CHUNK_BYTES);
      expect(big).toHaveLength(1);
      expect(big[0]!.num_tasks).toBe(1);
      expect(chunks.every((ch) => ch.num_tasks === 1 || ch.bytes <= CHUNK_BYTES)).toBe(true);
    });

    test('the human summary names the rejected lines and where the full list is', async () => {
      const c = datasetCases.find((x) => x.name === 'invalid-json-amid-tasks')!;
      const run = await createFrom(engine, c);
      expect(run.code).toBe(EXIT.OK);
      expect(run.stdout).toContain(
        `${c.expect.rejected.length} rejected line(s), listed with their reasons in ${path.join(run.cwd, 'ds', 'rejected.jsonl')}`,
      );
      expect(run.stdout).toContain('line 2: invalid JSON at column 1');
    });
  });

  describe('inputs that are refused', () => {
    test.each(refusedCases.map((c) => [c.name, c] as const))(
      '%s: exit 3 with a message naming the file (and the line), nothing left behind',
      async (_name, c) => {
        const run = await createFrom(engine, c);
        expectNoCrash(run);
        expect(run.code).toBe(EXIT.INVALID_INPUT);
        const message = run.stderr.split('\n').find((l) => l.startsWith('shardline create: '));
        expect(message).toMatch(c.expect.message);
        expect(message).toContain(path.join(run.cwd, c.file));
        const blamed = /; first rejected: line (\d+): (.*)\)$/.exec(message ?? '');
        if (c.expect.badLine) {
          expect({ line: Number(blamed?.[1]), reason: blamed?.[2] }).toEqual({
            line: c.expect.badLine.line,
            reason: expect.stringMatching(c.expect.badLine.reason) as unknown,
          });
        } else expect(blamed).toBeNull();
        const ds = path.join(run.cwd, 'ds');
        expect(existsSync(ds) ? readdirSync(ds) : []).toEqual([]);
      },
    );

    test('--strict stops at the first bad line, names it, and writes nothing', async () => {
      const c = datasetCases.find((x) => x.name === 'invalid-json-amid-tasks')!;
      const run = await createFrom(engine, c, ['--strict']);
      expectNoCrash(run);
      expect(run.code).toBe(EXIT.INVALID_INPUT);
      const first = c.expect.rejected[0]!;
      const stopped = /^shardline create: line (\d+) is not a valid task: (.*)$/m.exec(run.stderr);
      expect({ line: Number(stopped?.[1]), reason: stopped?.[2] }).toEqual({
        line: first.line,
        reason: expect.stringMatching(first.reason) as unknown,
      });
      const ds = path.join(run.cwd, 'ds');
      expect(existsSync(ds) ? readdirSync(ds) : []).toEqual([]);
    });
  });
});
