/**
 * The byte-level JSON scanner agrees with JSON.parse on what is "one JSON object"; so does the
 * native validator (every compiled variant), verdict for verdict.
 */
import { MAX_JSON_DEPTH, checkJsonObject } from '../../../core/split/json-check';
import { LINE_REJECT, LINE_TASK } from '../../../core/split/native';
import { isTaskLine, rng, taskJson } from '../../support/jsonl-gen';
import { NATIVE_OFF, requireAddon } from './native-support';

const check = (s: string | Buffer): string | null => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return checkJsonObject(b, 0, b.length);
};

/** The native verdict of each variant on a line: LINE_TASK, LINE_BLANK or LINE_REJECT. */
const nativeVerdicts = (s: string | Buffer): number[] => {
  if (NATIVE_OFF) return [];
  const addon = requireAddon();
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return addon.variants.map((v) => addon.checkLine(b, 0, b.length, v));
};
const allAre = (verdicts: number[], want: number): boolean => verdicts.every((v) => v === want);

test.each([
  '{}',
  ' { } ',
  '{"a":1}',
  '{"a":[1,2,[3,{"b":null}]],"c":true,"d":false,"e":"x\\"y\\\\z\\/\\b\\f\\n\\r\\t\\u00e9"}',
  '{"n":-0,"m":0.5,"o":1e10,"p":-1.25E-3,"q":123456789012345678901234567890}',
  '{"unicode":"日本語 🧩"}',
  '{"a":1}\r',
  '{"":{"":{}}}',
  // ARC grids take a fast path; the shapes around its edges:
  '{"g":[[1,2,3],[4,5,6]],"h":[[0]],"e":[[]],"m":[[1,2],[3,10]],"x":[1,2,3],"y":[]}',
  '{"g":[[1, 2],[3,4]],"h":[[1,2],[3,-4]],"i":[[1,2],[[3]]],"j":[[1,2],{"k":1}]}',
])('accepts %s', (text) => {
  expect(check(text)).toBeNull();
  expect(allAre(nativeVerdicts(text), LINE_TASK)).toBe(true);
});

test.each([
  ['[1,2]', 'not a JSON object: the line is an array'],
  ['"s"', 'not a JSON object: the line is a string'],
  ['-3', 'not a JSON object: the line is a number'],
  ['null', 'not a JSON object: the line is null'],
  ['{"a":1', 'truncated'],
  ['{"a":1}}', "unexpected '}' after the object"],
  ['{"a":1,}', 'expected a "key"'],
  ['{"a" 1}', "expected ':'"],
  ['{"a":01}', 'malformed number'],
  ['{"a":1.}', 'malformed number'],
  ['{"a":.5}', 'expected a value'],
  ['{"a":tru}', 'expected a value'],
  ['{"a":"\\x"}', 'invalid escape'],
  ['{"a":"\\u12G4"}', 'invalid escape'],
  ['{"a":"tab\there"}', 'control character'],
  ['{"a":"unterminated}', 'unterminated string'],
  ['{"a":[1,2}', "expected ',' or ']'"],
  ['   ', 'empty line'],
  ['{"g":[[1,2],[3,4]}', "expected ',' or ']'"],
  ['{"g":[[1,2,],[3]]}', 'expected a value'],
  ['{"g":[[1,2],[3,x]]}', 'expected a value'],
  ['{"g":[[01,2]]}', 'malformed number'],
  ['{"g":[[1,2],[3,4]]', 'truncated'],
  ['{"g":[[1,2],[3,4', 'truncated'],
  ['{"g":[[1,2],]}', 'expected a value'],
])('rejects %s', (text, reason) => {
  expect(check(text)).toContain(reason);
  if (reason !== 'empty line') expect(allAre(nativeVerdicts(text), LINE_REJECT)).toBe(true);
});

test('reports the column of the error', () => {
  expect(check('{"a":1,,}')).toBe('invalid JSON at column 8: expected a "key", found \',\'');
});

test('an error inside an ARC grid is reported at its own column', () => {
  const text = '{"g":[[1,2],[3,4],[5,6,7,8,9,x,1]]}';
  expect(check(text)).toBe(
    `invalid JSON at column ${text.indexOf('x') + 1}: expected a value, found 'x'`,
  );
});

test('NUL bytes are rejected', () => {
  expect(check(Buffer.from([0x7b, 0x00, 0x7d]))).toContain('byte 0x00');
  expect(check(Buffer.from('{"a":"\u0000"}'))).toContain('NUL byte in string');
  expect(allAre(nativeVerdicts(Buffer.from([0x7b, 0x00, 0x7d])), LINE_REJECT)).toBe(true);
  expect(allAre(nativeVerdicts(Buffer.from('{"a":"\u0000"}')), LINE_REJECT)).toBe(true);
});

test(`nesting deeper than ${MAX_JSON_DEPTH} is refused, not a stack overflow`, () => {
  const deep = '{"a":' + '['.repeat(MAX_JSON_DEPTH + 5) + ']'.repeat(MAX_JSON_DEPTH + 5) + '}';
  expect(check(deep)).toContain('nested deeper');
  const ok = '{"a":' + '['.repeat(MAX_JSON_DEPTH - 2) + ']'.repeat(MAX_JSON_DEPTH - 2) + '}';
  expect(check(ok)).toBeNull();
  // Exactly at the limit: 512 containers (the object and 511 arrays), and one more.
  const edge = (n: number) => '{"a":' + '['.repeat(n) + ']'.repeat(n) + '}';
  expect(check(edge(MAX_JSON_DEPTH - 1))).toBeNull();
  expect(check(edge(MAX_JSON_DEPTH))).toContain('nested deeper');
  expect(allAre(nativeVerdicts(deep), LINE_REJECT)).toBe(true);
  expect(allAre(nativeVerdicts(ok), LINE_TASK)).toBe(true);
  expect(allAre(nativeVerdicts(edge(MAX_JSON_DEPTH - 1)), LINE_TASK)).toBe(true);
  expect(allAre(nativeVerdicts(edge(MAX_JSON_DEPTH)), LINE_REJECT)).toBe(true);
});

test('checks only the given range of a larger buffer', () => {
  const b = Buffer.from('xx{"a":1}yy');
  expect(checkJsonObject(b, 2, 9)).toBeNull();
  expect(checkJsonObject(b, 2, 10)).not.toBeNull();
});

test('differential: agrees with JSON.parse on thousands of valid and mutated lines', () => {
  const r = rng(7);
  const alphabet = '{}[]",:0123456789.eE+-tfnrul \\abcx';
  let disagreements: string[] = [];
  let valid = 0;
  for (let i = 0; i < 20_000; i++) {
    let text = taskJson(r, i, 0);
    const mutations = Math.floor(r() * 3);
    for (let m = 0; m < mutations; m++) {
      const at = Math.floor(r() * (text.length + 1));
      const op = r();
      const ch = alphabet[Math.floor(r() * alphabet.length)]!;
      if (op < 0.4) text = text.slice(0, at) + ch + text.slice(at);
      else if (op < 0.8) text = text.slice(0, at) + text.slice(at + 1);
      else text = text.slice(0, at) + ch + text.slice(at + 1);
    }
    const expected = isTaskLine(Buffer.from(text));
    const got = check(text) === null;
    if (expected) valid++;
    if (expected !== got) disagreements.push(text);
    if (!allAre(nativeVerdicts(text), expected ? LINE_TASK : LINE_REJECT))
      disagreements.push(`native: ${text}`);
    if (disagreements.length > 5) break;
  }
  disagreements = disagreements.slice(0, 5);
  expect(disagreements).toEqual([]);
  expect(valid).toBeGreaterThan(5000);
});
