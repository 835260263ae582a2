/**
 * Phase 1 on worker threads gives exactly what one sequential scan gives: the same counts,
 * CRC32C, rejected lines (numbers, reasons, order), the same `--strict` error, and through
 * the CLI the byte-identical dataset. The threads run the compiled worker script, so this
 * tier (which runs after the build) is where they can be tested.
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import type { RejectedLine } from '../../../core/dataset/metadata';
import type * as ParallelScan from '../../../core/split/parallel-scan';
import type * as Scan from '../../../core/split/scan';
import { generateJsonl } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';

const ROOT = path.resolve(__dirname, '../../..');
const DIST = path.join(ROOT, 'dist', 'core', 'split');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { scanFileParallel, scanThreads } = require(
  path.join(DIST, 'parallel-scan.js'),
) as typeof ParallelScan;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { scanLines } = require(path.join(DIST, 'scan.js')) as typeof Scan;

const { dir, cleanup } = makeTempDir('parallel-scan');
afterAll(cleanup);

const MAX_LINE = 4096;

function inputFile(name: string, bytes: Buffer): string {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

async function sequential(file: string, strict = false) {
  const rejected: RejectedLine[] = [];
  const scan = await scanLines(createReadStream(file), {
    maxLineBytes: MAX_LINE,
    strict,
    onRejected: (r) => void rejected.push(r),
  });
  return { scan, rejected };
}

async function parallel(file: string, threads: number, strict = false) {
  const rejected: RejectedLine[] = [];
  const scan = await scanFileParallel(file, statSync(file).size, threads, {
    maxLineBytes: MAX_LINE,
    strict,
    onRejected: (r) => void rejected.push(r),
  });
  return { scan, rejected };
}

const counts = (s: Scan.ScanResult) => ({
  bytes: s.bytes,
  crc32c: s.crc32c,
  lines: s.lines,
  blankLines: s.blankLines,
  rejectedLines: s.rejectedLines,
  tasks: s.tasks,
  rejected: Array.from({ length: s.rejected.length }, (_, i) => s.rejected.at(i)),
});

// Blank, rejected, CRLF and over-long lines, a BOM, and no final newline: every edge the
// sequential scan handles, now falling on range boundaries too.
const messy = (): Buffer => {
  const { input } = generateJsonl(41, {
    lines: 3000,
    blankRate: 0.05,
    badRate: 0.04,
    crlfRate: 0.2,
    bom: true,
    finalNewline: false,
    bigChance: 0.01,
  });
  const tooLong = Buffer.from(`{"x":"${'y'.repeat(MAX_LINE + 10)}"}\n`);
  const cut = input.indexOf(10, Math.floor(input.length / 2)) + 1;
  return Buffer.concat([input.subarray(0, cut), tooLong, input.subarray(cut)]);
};

test.each([2, 3, 7])('%i threads: the same scan as one thread', async (threads) => {
  const file = inputFile(`messy-${threads}.jsonl`, messy());
  const want = await sequential(file);
  const got = await parallel(file, threads);
  expect(got.scan).not.toBeNull();
  expect(want.scan.rejectedLines).toBeGreaterThan(50);
  expect(counts(got.scan!)).toEqual(counts(want.scan));
  expect(got.rejected).toEqual(want.rejected);
  // Checkpoints may sit elsewhere, but each is a line start with the right counts before it.
  const bytes = readFileSync(file);
  for (const c of got.scan!.checkpoints) {
    expect(c.offset === 0 || bytes[c.offset - 1] === 10).toBe(true);
  }
});

test('--strict: a bad line in a later range is named with its number in the whole file', async () => {
  const good = generateJsonl(42, { lines: 2000, bigChance: 0 }).input;
  const bad = Buffer.from('{"a":1,,}\n');
  const file = inputFile('strict.jsonl', Buffer.concat([good, good, bad, good]));
  const want = await sequential(file, true).then(
    () => null,
    (e: unknown) => e as Error & { details: unknown },
  );
  const got = await parallel(file, 4, true).then(
    () => null,
    (e: unknown) => e as Error & { details: unknown },
  );
  expect(want?.message).toMatch(/^line 4001 is not a valid task: invalid JSON at column 8/);
  expect(got?.message).toBe(want?.message);
  expect(got?.details).toEqual(want?.details);
});

test('more rejected lines than worth holding: null, so the caller scans on one thread', async () => {
  const file = inputFile('garbage.jsonl', Buffer.from('not json\n'.repeat(45_000)));
  const got = await parallel(file, 2);
  expect(got.scan).toBeNull();
  expect(got.rejected).toEqual([]);
});

test('thread count: SHARDLINE_SCAN_THREADS, else cores for large inputs only', () => {
  expect(scanThreads(10, { SHARDLINE_SCAN_THREADS: '3' })).toBe(3);
  expect(scanThreads(1e10, { SHARDLINE_SCAN_THREADS: '0' })).toBe(1);
  expect(scanThreads(10, {})).toBe(1);
  expect(scanThreads(1e10, {})).toBeGreaterThanOrEqual(1);
  expect(() => scanThreads(10, { SHARDLINE_SCAN_THREADS: 'many' })).toThrow(
    /SHARDLINE_SCAN_THREADS must be a whole number/,
  );
});

test('shardline create on threads writes the byte-identical dataset', () => {
  const file = inputFile('cli.jsonl', messy());
  const run = (threads: string, out: string) => {
    const r = spawnSync(
      process.execPath,
      [
        path.join(ROOT, 'dist', 'cli', 'main.js'),
        'create',
        '--input_file',
        file,
        '--output_dir',
        out,
        '--num_shards',
        '5',
        '--chunk_size_mb',
        '0.05',
        '--max_line_mb',
        String(MAX_LINE / 1048576),
        '--dataset_id',
        'same',
      ],
      { env: { ...process.env, SHARDLINE_SCAN_THREADS: threads }, encoding: 'utf8' },
    );
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
  };
  const one = path.join(dir, 'one');
  const four = path.join(dir, 'four');
  run('1', one);
  run('4', four);
  const files = (root: string): string[] =>
    readdirSync(root, { recursive: true, encoding: 'utf8' })
      .filter((f) => statSync(path.join(root, f)).isFile() && !f.startsWith('ledger.sqlite'))
      .sort();
  expect(files(four)).toEqual(files(one));
  expect(files(one)).toContain('rejected.jsonl');
  for (const f of files(one)) {
    const a = readFileSync(path.join(one, f), 'utf8');
    const b = readFileSync(path.join(four, f), 'utf8');
    // created_at differs between runs; everything else is equal.
    const strip = (s: string) => s.replace(/"created_at": "[^"]*"/g, '');
    expect(strip(b)).toBe(strip(a));
  }
});
