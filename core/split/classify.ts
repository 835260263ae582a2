/**
 * What one input line is: a task, a blank line, or a rejection with its reason.
 */
import { isUtf8 } from 'node:buffer';

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
  if (verdict === null) {
    if (!utf8Checked && !isUtf8(buf.subarray(start, end))) return { reason: 'invalid UTF-8' };
    return 'task';
  }
  if (verdict === BLANK) return 'blank';
  // A JSON error caused by bytes that are not UTF-8 is better reported as such.
  if (!utf8Checked && !isUtf8(buf.subarray(start, end))) return { reason: 'invalid UTF-8' };
  return { reason: verdict };
}

/** A short, safe preview of a line for `rejected.jsonl` and messages (never the whole payload). */
export function previewOf(bytes: Uint8Array, maxChars = 80): string {
  const text = Buffer.from(
    bytes.buffer,
    bytes.byteOffset,
    Math.min(bytes.byteLength, maxChars * 4),
  ).toString('utf8');
  const clean = text.replace(
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return clean.length > maxChars ? `${clean.slice(0, maxChars)}…` : clean;
}
