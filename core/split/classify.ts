/**
 * What one input line is: a task, a blank line, or a rejection with its reason.
 */
import { isUtf8 } from 'node:buffer';

import { scrubSecrets } from '../log';
import { checkJsonObject } from './json-check';

/** Line kinds. A string is a rejection reason. */
export type LineVerdict = 'task' | 'blank' | { reason: string };

const BLANK = 'empty line';

/**
 * Classifies `buf[start, end)`, a line without its `\n` (a trailing `\r` is JSON whitespace
 * and needs no special case). `utf8Checked` skips the UTF-8 check when the caller already
 * validated a larger block containing the line.
 */
export function classifyLine(
  buf: Buffer,
  start: number,
  end: number,
  maxLineBytes: number,
  utf8Checked: boolean,
): LineVerdict {
  if (end - start > maxLineBytes) {
    return { reason: `line is ${end - start} bytes, over the ${maxLineBytes}-byte limit` };
  }
  const verdict = checkJsonObject(buf, start, end);
  if (verdict === BLANK) return 'blank';
  // A JSON error caused by bytes that are not UTF-8 is better reported as such.
  if (!utf8Checked && !isUtf8(buf.subarray(start, end))) {
    const at = firstInvalidUtf8(buf, start, end);
    const where =
      at < end
        ? ` at column ${at - start + 1} (byte 0x${buf[at]!.toString(16).padStart(2, '0')})`
        : '';
    return { reason: `invalid UTF-8${where}; is the file in another encoding?` };
  }
  return verdict === null ? 'task' : { reason: verdict };
}

/**
 * The index of the first byte of `buf[start, end)` that is not part of a well-formed UTF-8
 * sequence (Unicode table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF);
 * `end` when there is none. Only called for lines already known to be invalid.
 */
export function firstInvalidUtf8(buf: Uint8Array, start: number, end: number): number {
  let i = start;
  while (i < end) {
    const c = buf[i]!;
    if (c < 0x80) {
      i++;
      continue;
    }
    let n: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) n = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c === 0xe0) lo = 0xa0;
      if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f;
    } else return i;
    if (i + n >= end) return i;
    const second = buf[i + 1]!;
    if (second < lo || second > hi) return i;
    for (let k = 2; k <= n; k++) {
      const b = buf[i + k]!;
      if (b < 0x80 || b > 0xbf) return i;
    }
    i += n + 1;
  }
  return end;
}

/**
 * A short, safe preview of a line for `rejected.jsonl`, ingest records and logs: at most
 * `maxChars` characters (never the whole payload), control characters escaped, and
 * credentials found by pattern replaced (a rejected line may hold an API key; its preview ends
 * up in logs and in shared buckets).
 */
export function previewOf(bytes: Uint8Array, maxChars = 80): string {
  const text = Buffer.from(
    bytes.buffer,
    bytes.byteOffset,
    Math.min(bytes.byteLength, maxChars * 4),
  ).toString('utf8');
  const clean = scrubSecrets(text).replace(
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return clean.length > maxChars ? `${clean.slice(0, maxChars)}…` : clean;
}
