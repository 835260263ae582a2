/**
 * The native validator gives exactly the JavaScript checker's verdict (json-check.ts + the
 * UTF-8 check of classify.ts) on every line: a seeded differential fuzz over random and
 * mutated JSON lines, ARC grids cut at every 64-byte window offset, UTF-8 edge bytes, and
 * nesting around the depth limit, for every compiled variant this CPU runs (avx2, sse2). The
 * block scan, CRC32C and range copy of the addon are checked against their references too.
 */
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { crc32c } from '@node-rs/crc32';

import { classifyLine } from '../../../core/split/classify';
import { MAX_JSON_DEPTH } from '../../../core/split/json-check';
import {
  BLOCK_BLANK,
  BLOCK_CR_LINES,
  BLOCK_CRC,
  BLOCK_EXCEPTIONS,
  BLOCK_HEADER,
  BLOCK_LINES,
  BLOCK_STOP,
  BLOCK_TASKS,
  LINE_BLANK,
  LINE_REJECT,
  LINE_TASK,
} from '../../../core/split/native';
import { rng, taskJson } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';
import { NATIVE_OFF, picker, requireAddon } from './native-support';

const { dir, cleanup } = makeTempDir('native-check');
afterAll(cleanup);

/** The JavaScript verdict, as LINE_* (no length limit). */
function jsVerdict(line: Buffer): number {
  const v = classifyLine(line, 0, line.length, Number.MAX_SAFE_INTEGER, false);
  return v === 'task' ? LINE_TASK : v === 'blank' ? LINE_BLANK : LINE_REJECT;
}

const NAMES = ['task', 'blank', 'reject'];

/** Grids of one-digit numbers (ARC), of any shape up to 30 x 30, sometimes empty rows. */
function arcGrid(r: () => number): string {
  const { int } = picker(r);
  const h = 1 + int(r() < 0.2 ? 30 : 8);
  const w = int(r() < 0.2 ? 31 : 9);
  return JSON.stringify(Array.from({ length: h }, () => Array.from({ length: w }, () => int(10))));
}

/** An ARC-like task whose grids start at a random offset (a key of random length before them). */
function arcTask(r: () => number): string {
  const { int } = picker(r);
  const pad = 'k'.repeat(int(80));
  const pairs = Array.from(
    { length: 1 + int(3) },
    () => `{"input":${arcGrid(r)},"output":${arcGrid(r)}}`,
  );
  return `{"${pad}":${int(3)},"train":[${pairs.join(',')}],"test":[{"input":${arcGrid(r)}}]}`;
}

/** Arrays that leave the fast path at once or half way: spaces, numbers of several digits, strings, objects. */
function oddArrays(r: () => number): string {
  const { int, pick } = picker(r);
  const values = [
    '1',
    '23',
    '-4',
    '0.5',
    '1e3',
    '"s"',
    '{"a":[1,2]}',
    '[]',
    '[[]]',
    'true',
    'null',
    '[7,[8,[9]]]',
  ];
  const arr = (depth: number): string => {
    const n = int(12);
    const items = Array.from({ length: n }, () =>
      depth < 4 && r() < 0.3 ? arr(depth + 1) : r() < 0.7 ? String(int(10)) : pick(values),
    );
    const sep = r() < 0.2 ? ', ' : ',';
    return `[${items.join(sep)}]`;
  };
  return `{"a":${arr(0)},"b":${arr(0)}}`;
}

/** Strings with random code points and, sometimes, one raw byte from the UTF-8 edge cases. */
function utf8Task(r: () => number): Buffer {
  const { int, pick } = picker(r);
  const cps = [
    0x41, 0x7f, 0x80, 0x7ff, 0x800, 0xfff, 0xd7ff, 0xe000, 0xfeff, 0xffff, 0x10000, 0x10ffff,
    0x1f9e9,
  ];
  const text = Array.from({ length: int(40) }, () => String.fromCodePoint(pick(cps))).join('');
  const line = Buffer.from(JSON.stringify({ t: text, pad: 'x'.repeat(int(70)) }));
  if (r() < 0.6) {
    const edge = [
      0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xa0, 0x9f, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
      0x90, 0x8f,
    ];
    const at = 6 + int(Math.max(1, line.length - 8));
    line[at] = pick(edge);
  }
  return line;
}

/** Nesting around the depth limit, sometimes with a grid at the bottom. */
function deepTask(r: () => number): string {
  const { int } = picker(r);
  const depth = MAX_JSON_DEPTH - 80 + int(100);
  const opens = Array.from({ length: depth - 1 }, () => (r() < 0.85 ? '[' : '{"k":'));
  const closes = opens
    .slice()
    .reverse()
    .map((o) => (o === '[' ? ']' : '}'));
  const inner = r() < 0.5 ? '[[1,2],[3,4]]' : '0';
  return `{"d":${opens.join('')}${inner}${closes.join('')}}`;
}

/** Applies 0-3 random edits drawn from `alphabet`. */
function mutate(r: () => number, text: string, alphabet: string): string {
  const { int } = picker(r);
  for (let m = int(4); m > 0; m--) {
    const at = int(text.length + 1);
    const ch = alphabet[int(alphabet.length)]!;
    const op = r();
    if (op < 0.35) text = text.slice(0, at) + ch + text.slice(at);
    else if (op < 0.7) text = text.slice(0, at) + text.slice(at + 1);
    else if (op < 0.9) text = text.slice(0, at) + ch + text.slice(at + 1);
    else
      text =
        text.slice(0, at) + text.slice(at, at + 1 + int(4)).repeat(2) + text.slice(at + 1 + int(4));
  }
  return text;
}

/** Lines of every kind, seeded. */
function* fuzzLines(seed: number, count: number): Generator<Buffer> {
  const r = rng(seed);
  const { int, pick } = picker(r);
  const structural = '{}[]",:0123456789-. \t\r';
  for (let i = 0; i < count; i++) {
    const kind = int(10);
    let line: Buffer;
    if (kind === 0)
      line = Buffer.from(mutate(r, taskJson(r, i, 0), '{}[]",:0123456789.eE+-tfnrul \\abcx'));
    else if (kind <= 3) line = Buffer.from(mutate(r, arcTask(r), '0123456789,[] -{}".x'));
    else if (kind === 4)
      line = Buffer.from(r() < 0.5 ? arcTask(r) : mutate(r, oddArrays(r), structural));
    else if (kind === 5) line = utf8Task(r);
    else if (kind === 6)
      line = Buffer.from(r() < 0.5 ? deepTask(r) : mutate(r, deepTask(r), '[]{}0,'));
    else if (kind === 7)
      line = Buffer.from(
        Array.from({ length: int(90) }, () => structural.charCodeAt(int(structural.length))),
      );
    else if (kind === 8) {
      const ws = [' ', '\t', '\r', ''];
      line = Buffer.from(
        Array.from({ length: int(5) }, () => pick(ws)).join('') +
          (r() < 0.5 ? '' : arcTask(r)) +
          pick(ws),
      );
    } else {
      // Raw byte edits of a valid task: controls, NUL, BOM, high bytes, escapes.
      const base = Buffer.from(taskJson(r, i, 0));
      const bytes = [0x00, 0x01, 0x1f, 0x7f, 0x5c, 0x22, 0xef, 0xbb, 0xbf, 0xc3, 0xa9, 0x0d, 0x75];
      for (let m = 1 + int(3); m > 0; m--) base[int(base.length)] = pick(bytes);
      line = r() < 0.1 ? Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), base]) : base;
    }
    yield line;
  }
}

const describeNative = NATIVE_OFF ? describe.skip : describe;

describeNative('the native validator', () => {
  const addon = NATIVE_OFF ? null : requireAddon();
  const variants = addon?.variants ?? [];

  test('runs its fastest variant, and at least the portable one', () => {
    expect(variants.length).toBeGreaterThanOrEqual(1);
    expect(variants).toContain(addon!.validator);
  });

  test.each([1, 2, 3, 4])(
    'differential fuzz, seed %i: 25 000 lines, every variant agrees with the JavaScript checker',
    (seed) => {
      const wrong: string[] = [];
      const seen = [0, 0, 0];
      // Bytes after a line (the next lines of a block) may be loaded but must not count.
      const after = Buffer.from(']]]],[1,2],[3]]]]}}]]'.repeat(4));
      for (const line of fuzzLines(seed, 25_000)) {
        const want = jsVerdict(line);
        seen[want]!++;
        const inBlock = Buffer.concat([line, after]);
        for (const variant of variants) {
          const alone = addon!.checkLine(line, 0, line.length, variant);
          const followed = addon!.checkLine(inBlock, 0, line.length, variant);
          for (const [where, got] of [
            ['', alone],
            [' (in a block)', followed],
          ] as const) {
            if (got !== want && wrong.length < 5)
              wrong.push(
                `${variant}${where}: ${NAMES[got]} where JS says ${NAMES[want]}: ${JSON.stringify(line.toString('latin1'))}`,
              );
          }
        }
      }
      // The fuzz reaches every verdict in numbers (a generator gone wrong would not).
      expect(seen[LINE_TASK]).toBeGreaterThan(5000);
      expect(seen[LINE_REJECT]).toBeGreaterThan(5000);
      expect(seen[LINE_BLANK]).toBeGreaterThan(100);
    },
  );

  test('a grid at every offset of a 64-byte window, whole and cut short', () => {
    const wrong: string[] = [];
    const grid = '[[1,2,3,4,5,6,7,8,9,0],[0,9,8,7,6,5,4,3,2,1],[5,5,5,5,5,5,5,5,5,5],[1],[2,3]]';
    for (let pad = 0; pad < 130; pad++) {
      const whole = `{"${'p'.repeat(pad)}":${grid}}`;
      for (let cut = whole.length; cut >= whole.length - grid.length - 3; cut--) {
        for (const text of [
          whole.slice(0, cut),
          whole.slice(0, cut) + '}',
          whole.slice(0, cut) + ']}',
        ]) {
          const line = Buffer.from(text);
          const want = jsVerdict(line);
          for (const variant of variants) {
            if (addon!.checkLine(line, 0, line.length, variant) !== want && wrong.length < 5)
              wrong.push(`${variant}: ${text}`);
          }
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  test('checks only the given range of a larger buffer', () => {
    const b = Buffer.from('xx{"a":[[1,2],[3]]}yy');
    expect(addon!.checkLine(b, 2, 19)).toBe(LINE_TASK);
    expect(addon!.checkLine(b, 2, 20)).toBe(LINE_REJECT);
    expect(addon!.checkLine(b, 0, 0)).toBe(LINE_BLANK);
  });

  test('scanBlock: the counts, the lines to re-check, and stopping when its list is full', () => {
    const r = rng(11);
    const { int } = picker(r);
    for (let round = 0; round < 40; round++) {
      const lines = [...fuzzLines(100 + round, 300)];
      for (let i = 0; i < lines.length; i += 7)
        lines[i] = Buffer.concat([lines[i]!, Buffer.from('\r')]);
      const block = Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
      const end = r() < 0.5 ? block.length : block.length - 1; // sometimes no final `\n`
      const maxLine = 50 + int(400);
      // What the JavaScript scan finds.
      const want = { lines: 0, tasks: 0, blank: 0, cr: 0, exceptions: [] as number[][] };
      for (let s = 0; s < end;) {
        let e = block.indexOf(10, s);
        if (e === -1 || e > end) e = end;
        const v = classifyLine(block, s, e, maxLine, false);
        if (v === 'task') want.tasks++;
        else if (v === 'blank') want.blank++;
        else want.exceptions.push([want.lines, s, e]);
        if (e > s && block[e - 1] === 0x0d) want.cr++;
        want.lines++;
        s = e + 1;
      }
      // The native scan, with room for only a few exceptions at a time.
      const room = 1 + int(5);
      const out = new Float64Array(BLOCK_HEADER + 3 * room);
      const got = { lines: 0, tasks: 0, blank: 0, cr: 0, exceptions: [] as number[][] };
      let from = 0;
      let crc = -1;
      for (;;) {
        addon!.scanBlock(block, from, end, from === 0 ? 0 : -1, maxLine, out);
        if (from === 0) crc = out[BLOCK_CRC]!;
        for (let k = 0; k < out[BLOCK_EXCEPTIONS]!; k++) {
          const b = BLOCK_HEADER + 3 * k;
          got.exceptions.push([got.lines + out[b]!, out[b + 1]!, out[b + 2]!]);
        }
        got.lines += out[BLOCK_LINES]!;
        got.tasks += out[BLOCK_TASKS]!;
        got.blank += out[BLOCK_BLANK]!;
        got.cr += out[BLOCK_CR_LINES]!;
        if (out[BLOCK_STOP]! >= end) break;
        expect(out[BLOCK_EXCEPTIONS]).toBe(room);
        from = out[BLOCK_STOP]!;
      }
      expect(got).toEqual(want);
      expect(crc).toBe(crc32c(block.subarray(0, end)) >>> 0);
    }
  });

  test('scanBlockAsync gives what scanBlock gives', async () => {
    const block = Buffer.from(
      [...fuzzLines(77, 2000)].map((l) => l.toString('latin1')).join('\n'),
      'latin1',
    );
    const a = new Float64Array(BLOCK_HEADER + 3 * 5000);
    const b = new Float64Array(BLOCK_HEADER + 3 * 5000);
    addon!.scanBlock(block, 0, block.length, 0, 1 << 20, a);
    await addon!.scanBlockAsync(block, 0, block.length, 0, 1 << 20, b);
    expect(Array.from(b)).toEqual(Array.from(a));
  });

  test('bad arguments are refused, not read out of bounds', () => {
    const out = new Float64Array(BLOCK_HEADER + 3);
    const b = Buffer.from('{}\n');
    // (Errors from the addon come from another realm than the test's: matched by message.)
    expect(() => addon!.scanBlock(b, 0, 4, 0, 10, out)).toThrow(/^scanBlock\(/);
    expect(() => addon!.scanBlock(b, 2, 1, -1, 10, out)).toThrow(/^scanBlock\(/);
    expect(() => addon!.scanBlock(b, 0, 3, 0, 10, new Float64Array(4))).toThrow(/^scanBlock\(/);
    expect(() => addon!.checkLine(b, 0, 9)).toThrow(/^checkLine\(/);
  });

  test('CRC32C: hardware, portable and @node-rs/crc32 agree, whole and continued', () => {
    const r = rng(5);
    const { int } = picker(r);
    for (let i = 0; i < 60; i++) {
      const n = i < 20 ? int(40) : int(200_000);
      const buf = Buffer.from(Array.from({ length: n }, () => int(256)));
      const want = crc32c(buf) >>> 0;
      expect(addon!.crc32c(buf)).toBe(want);
      expect(addon!.crc32c(buf, 0, 'portable')).toBe(want);
      const cut = int(n + 1);
      expect(addon!.crc32c(buf.subarray(cut), addon!.crc32c(buf.subarray(0, cut)))).toBe(want);
    }
  });

  test('copyFileRange copies the range, and says when the input is too short', async () => {
    const src = path.join(dir, 'src.bin');
    const dst = path.join(dir, 'dst.bin');
    const data = Buffer.from(Array.from({ length: 3_000_000 }, (_, i) => (i * 7) & 0xff));
    writeFileSync(src, data);
    writeFileSync(dst, Buffer.from('head'));
    const fin = openSync(src, 'r');
    const fout = openSync(dst, 'r+');
    try {
      await addon!.copyFileRange(fin, 1000, fout, 4, 2_500_000);
      await expect(
        addon!.copyFileRange(fin, 2_999_000, fout, 2_600_000, 5000),
      ).rejects.toMatchObject({
        code: 'ESHORT',
      });
    } finally {
      closeSync(fin);
      closeSync(fout);
    }
    const got = readFileSync(dst);
    expect(got.subarray(4, 2_500_004).equals(data.subarray(1000, 2_501_000))).toBe(true);
  });
});
