/**
 * Phase 1 on worker threads (the JavaScript checker) and in blocks on the thread pool (the
 * native one) gives exactly what one sequential scan gives: the same counts, CRC32C, rejected
 * lines (numbers, reasons, order), the same `--strict` error, and through the CLI the
 * byte-identical dataset for every engine and thread count. The threads run the compiled
 * worker script, so this tier (which runs after the build) is where they can be tested.
 */
import { spawnSync } from 'node:child_process';

import { crc32c } from '@node-rs/crc32';
import { createReadStream, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import type { RejectedLine } from '../../../core/dataset/metadata';
import type * as Native from '../../../core/split/native';
import type * as NativeScan from '../../../core/split/native-scan';
import type * as ParallelScan from '../../../core/split/parallel-scan';
import type * as Scan from '../../../core/split/scan';
import type * as Settings from '../../../core/split/settings';
import { generateJsonl } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';
import { ENGINES, NATIVE_OFF } from '../../unit/split/native-support';

const ROOT = path.resolve(__dirname, '../../..');
const DIST = path.join(ROOT, 'dist', 'core', 'split');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { scanFileParallel, scanThreads } = require(
  path.join(DIST, 'parallel-scan.js'),
) as typeof ParallelScan;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { scanLines } = require(path.join(DIST, 'scan.js')) as typeof Scan;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { scanFileNative } = require(path.join(DIST, 'native-scan.js')) as typeof NativeScan;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { loadSplitAddon } = require(path.join(DIST, 'native.js')) as typeof Native;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { splitSettingsFromEnv } = require(path.join(DIST, 'settings.js')) as typeof Settings;

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
    engine: 'js',
    onRejected: (r) => void rejected.push(r),
  });
  return { scan, rejected };
}

/** The native scan of the file, in blocks of `blockBytes` (small ones: many blocks, long lines). */
async function native(file: string, threads: number, blockBytes: number, strict = false) {
  const addon = loadSplitAddon();
  if (!addon) throw new Error('the native splitter is not built (npm run build:native)');
  const rejected: RejectedLine[] = [];
  const scan = await scanFileNative(file, {
    addon,
    threads,
    blockBytes,
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
  const threads = (env: Record<string, string>) => splitSettingsFromEnv(env).threads;
  expect(scanThreads(10, threads({ SHARDLINE_SCAN_THREADS: '3' }))).toBe(3);
  expect(scanThreads(1e10, threads({ SHARDLINE_SCAN_THREADS: '0' }))).toBe(1);
  expect(scanThreads(10, threads({}))).toBe(1);
  expect(scanThreads(1e10, threads({}))).toBeGreaterThanOrEqual(1);
  expect(() => threads({ SHARDLINE_SCAN_THREADS: 'many' })).toThrow(
    /SHARDLINE_SCAN_THREADS must be a whole number/,
  );
  expect(() => splitSettingsFromEnv({ SHARDLINE_SPLIT_ENGINE: 'fast' })).toThrow(
    /SHARDLINE_SPLIT_ENGINE must be auto, native or js, got "fast"/,
  );
});

const describeNative = NATIVE_OFF ? describe.skip : describe;

describeNative('the native scan (blocks on the thread pool)', () => {
  test.each([
    [1, 4096],
    [2, 4096],
    [3, 1000],
    [7, 65536],
  ])(
    '%i blocks at once of %i bytes: the same scan as the sequential one',
    async (threads, block) => {
      const file = inputFile(`native-${threads}-${block}.jsonl`, messy());
      const want = await sequential(file);
      const got = await native(file, threads, block);
      expect(want.scan.rejectedLines).toBeGreaterThan(50);
      expect(counts(got.scan)).toEqual(counts(want.scan));
      expect(got.rejected).toEqual(want.rejected);
      // The segments cover the file; a plain one holds only tasks, unchanged, with its checksum.
      const bytes = readFileSync(file);
      const segments = got.scan.segments!;
      let offset = 0;
      let plain = 0;
      for (const [i, g] of segments.entries()) {
        expect(g.offset).toBe(offset);
        offset += g.bytes;
        const next = segments[i + 1];
        expect((next?.tasks ?? got.scan.tasks) - g.tasks).toBe(g.taskCount);
        if (!g.plain) continue;
        plain++;
        const text = bytes.subarray(g.offset, g.offset + g.bytes);
        expect(crc32c(text) >>> 0).toBe(g.crc32c);
        expect(text.includes(13)).toBe(false);
        expect(text[text.length - 1]).toBe(10);
        expect((next?.lines ?? got.scan.lines) - g.lines).toBe(g.taskCount);
      }
      expect(offset).toBe(bytes.length);
      // (In this messy input only small blocks come out with nothing but plain tasks.)
      if (block <= 4096) expect(plain).toBeGreaterThan(0);
    },
  );

  test('--strict: the same error as the sequential scan', async () => {
    const good = generateJsonl(42, { lines: 2000, bigChance: 0 }).input;
    const bad = Buffer.from('{"a":1,,}\n');
    const file = inputFile('strict-native.jsonl', Buffer.concat([good, good, bad, good]));
    const fail = (p: Promise<unknown>) =>
      p.then(
        () => null,
        (e: unknown) => e as Error & { details: unknown },
      );
    const want = await fail(sequential(file, true));
    const got = await fail(native(file, 3, 8192, true));
    expect(want?.message).toMatch(/^line 4001 is not a valid task/);
    expect(got?.message).toBe(want?.message);
    expect(got?.details).toEqual(want?.details);
  });

  test('rejected lines beyond what one block scan records: all reported, in order', async () => {
    const lines = Array.from({ length: 30_000 }, (_, i) => (i % 3 === 0 ? '{"ok":1}' : `bad ${i}`));
    const file = inputFile('garbage-native.jsonl', Buffer.from(lines.join('\n') + '\n'));
    const want = await sequential(file);
    const got = await native(file, 2, 1 << 20);
    expect(got.scan.rejectedLines).toBe(20_000);
    expect(counts(got.scan)).toEqual(counts(want.scan));
    expect(got.rejected).toEqual(want.rejected);
  });
});

test('shardline create with every engine and thread count writes the byte-identical dataset', () => {
  const file = inputFile('cli.jsonl', messy());
  const run = (engine: string, threads: string, out: string) => {
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
      {
        env: { ...process.env, SHARDLINE_SCAN_THREADS: threads, SHARDLINE_SPLIT_ENGINE: engine },
        encoding: 'utf8',
      },
    );
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
  };
  const one = path.join(dir, 'one');
  run('js', '1', one);
  const files = (root: string): string[] =>
    readdirSync(root, { recursive: true, encoding: 'utf8' })
      .filter((f) => statSync(path.join(root, f)).isFile() && !f.startsWith('ledger.sqlite'))
      .sort();
  expect(files(one)).toContain('rejected.jsonl');
  for (const engine of ENGINES) {
    for (const threads of ['1', '4']) {
      if (engine === 'js' && threads === '1') continue;
      const other = path.join(dir, `${engine}-${threads}`);
      run(engine, threads, other);
      expect(files(other)).toEqual(files(one));
      for (const f of files(one)) {
        const a = readFileSync(path.join(one, f), 'utf8');
        const b = readFileSync(path.join(other, f), 'utf8');
        // created_at differs between runs; everything else is equal.
        const strip = (s: string) => s.replace(/"created_at": "[^"]*"/g, '');
        expect({ engine, threads, f, text: strip(b) }).toEqual({
          engine,
          threads,
          f,
          text: strip(a),
        });
      }
    }
  }
});
