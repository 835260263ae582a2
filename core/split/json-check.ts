/**
 * A validating JSON scanner over bytes: says whether one line is exactly one JSON object
 * (RFC 8259), without building it.
 *
 * Why not `JSON.parse`: on ARC tasks (grids of small integers) it builds millions of arrays
 * and ran at 40-50 MB/s on this machine kind, five times slower than the disk. This scanner
 * allocates nothing per line. UTF-8 validity is checked separately (`isUtf8`, native).
 */

/** Deepest nesting accepted; deeper input is rejected rather than risking a huge stack. */
export const MAX_JSON_DEPTH = 512;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJ = 0x7b;
const CLOSE_OBJ = 0x7d;
const OPEN_ARR = 0x5b;
const CLOSE_ARR = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

// What the scanner expects next.
const EXPECT_VALUE = 0;
const EXPECT_KEY_OR_CLOSE = 1; // just after `{`
const EXPECT_KEY = 2; // after `,` in an object
const EXPECT_COLON = 3;
const EXPECT_COMMA_OR_CLOSE = 4;
const EXPECT_VALUE_OR_CLOSE = 5; // just after `[`

const isWs = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
const isDigit = (c: number): boolean => c >= ZERO && c <= NINE;
const isHex = (c: number): boolean =>
  (c >= ZERO && c <= NINE) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);

function kindOf(first: number): string {
  if (first === OPEN_ARR) return 'an array';
  if (first === QUOTE) return 'a string';
  if (first === 0x74) return 'true';
  if (first === 0x66) return 'false';
  if (first === 0x6e) return 'null';
  return 'a number';
}

const isBomAt = (b: Uint8Array, i: number, end: number): boolean =>
  i + 3 <= end && b[i] === 0xef && b[i + 1] === 0xbb && b[i + 2] === 0xbf;

/**
 * Names the byte at `i` for a message: printable ASCII as itself, a valid UTF-8 sequence as
 * its code point (never the raw character: it may be invisible or reorder the text around
 * it), anything else as a hex byte.
 */
function describe(b: Uint8Array, i: number, end: number): string {
  if (i >= end) return 'end of line';
  const c = b[i]!;
  if (c >= 0x21 && c < 0x7f) return `'${String.fromCharCode(c)}'`;
  if (isBomAt(b, i, end)) return 'a byte-order mark (U+FEFF)';
  const n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
  if (n > 0 && i + n <= end) {
    const text = Buffer.from(b.buffer, b.byteOffset + i, n).toString('utf8');
    const cp = text.codePointAt(0)!;
    if (cp !== 0xfffd && text.length === (cp > 0xffff ? 2 : 1)) {
      return `character U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
    }
  }
  return `byte 0x${c.toString(16).padStart(2, '0')}`;
}

/** Reusable container stack (1 = object, 2 = array); the scanner is synchronous. */
const stack = new Uint8Array(MAX_JSON_DEPTH);

/**
 * Checks that `b[start, end)` holds one JSON object with optional surrounding whitespace.
 * Returns null when it does, otherwise a reason naming the column (1-based byte offset).
 * A line holding another JSON value is named as such ("the line is an array"); a line that
 * is not JSON at all gets the column where it stops being JSON.
 */
export function checkJsonObject(b: Uint8Array, start: number, end: number): string | null {
  let i = start;
  while (i < end && isWs(b[i]!)) i++;
  if (i === end) return 'empty line';
  const first = b[i]!;
  if (first === OPEN_OBJ) return checkValue(b, start, i, end);
  if (isBomAt(b, i, end)) {
    return fail(
      i - start,
      'the line starts with a byte-order mark (U+FEFF); only the first line of a file may (were files concatenated?)',
    );
  }
  // Checked in full: a line of prose starting with "n" is not "null".
  const invalid = checkValue(b, start, i, end);
  return invalid ?? `not a JSON object: the line is ${kindOf(first)}`;
}

/** Checks that `b[i, end)` is one JSON value followed by whitespace; `start` is the line's first byte. */
function checkValue(b: Uint8Array, start: number, i: number, end: number): string | null {
  const topIsObject = b[i] === OPEN_OBJ;
  let depth = 0;
  let state = EXPECT_VALUE;

  while (i < end) {
    const c = b[i]!;
    if (c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a) {
      i++;
      continue;
    }
    switch (state) {
      case EXPECT_VALUE:
      case EXPECT_VALUE_OR_CLOSE:
        if (c === OPEN_ARR && depth < MAX_JSON_DEPTH) {
          // Fast path for ARC grids: a whole row of one-digit numbers in one tight loop.
          const j =
            b[i + 1] === OPEN_ARR && depth + 1 < MAX_JSON_DEPTH
              ? skipDigitGrid(b, i, end)
              : skipDigitRow(b, i, end);
          if (j > 0) {
            i = j;
            state = EXPECT_COMMA_OR_CLOSE;
            break;
          }
        }
        if (c === OPEN_OBJ || c === OPEN_ARR) {
          if (depth === MAX_JSON_DEPTH)
            return fail(i - start, `nested deeper than ${MAX_JSON_DEPTH}`);
          stack[depth++] = c === OPEN_OBJ ? 1 : 2;
          state = c === OPEN_OBJ ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
          i++;
          continue;
        }
        if (c === CLOSE_ARR && state === EXPECT_VALUE_OR_CLOSE) {
          depth--;
          i++;
          state = EXPECT_COMMA_OR_CLOSE;
          break;
        }
        if (c === QUOTE) {
          const j = scanString(b, i + 1, end);
          if (j < 0) {
            i = -j;
            return fail(i - start, stringError(b, i, end));
          }
          i = j;
          state = EXPECT_COMMA_OR_CLOSE;
          break;
        }
        if (c === MINUS || isDigit(c)) {
          // Fast path for ARC grids, rows of one-digit numbers: while the bytes read
          // "digit , digit", the first digit and its comma are a complete, valid element.
          if (stack[depth - 1] === 2) {
            while (i + 2 < end && b[i + 1] === COMMA) {
              const d0 = b[i]!;
              const d1 = b[i + 2]!;
              if (d0 < ZERO || d0 > NINE || d1 < ZERO || d1 > NINE) break;
              i += 2;
            }
          }
          const j = scanNumber(b, i, end);
          if (j < 0) {
            i = -j;
            return fail(i - start, `malformed number (unexpected ${describe(b, i, end)})`);
          }
          i = j;
          state = EXPECT_COMMA_OR_CLOSE;
          break;
        }
        if (c === 0x74 && lit(b, i, end, 'true')) i += 4;
        else if (c === 0x66 && lit(b, i, end, 'false')) i += 5;
        else if (c === 0x6e && lit(b, i, end, 'null')) i += 4;
        else return fail(i - start, `expected a value, found ${describe(b, i, end)}`);
        state = EXPECT_COMMA_OR_CLOSE;
        break;
      case EXPECT_KEY_OR_CLOSE:
      case EXPECT_KEY:
        if (c === QUOTE) {
          const j = scanString(b, i + 1, end);
          if (j < 0) {
            i = -j;
            return fail(i - start, stringError(b, i, end));
          }
          i = j;
          state = EXPECT_COLON;
          continue;
        }
        if (c === CLOSE_OBJ && state === EXPECT_KEY_OR_CLOSE) {
          depth--;
          i++;
          state = EXPECT_COMMA_OR_CLOSE;
          break;
        }
        return fail(i - start, `expected a "key", found ${describe(b, i, end)}`);
      case EXPECT_COLON:
        if (c !== COLON) return fail(i - start, `expected ':', found ${describe(b, i, end)}`);
        i++;
        state = EXPECT_VALUE;
        continue;
      case EXPECT_COMMA_OR_CLOSE: {
        const top = stack[depth - 1];
        if (c === COMMA) {
          i++;
          state = top === 1 ? EXPECT_KEY : EXPECT_VALUE;
          continue;
        }
        if ((c === CLOSE_OBJ && top === 1) || (c === CLOSE_ARR && top === 2)) {
          depth--;
          i++;
          break;
        }
        return fail(
          i - start,
          `expected ',' or '${top === 1 ? '}' : ']'}', found ${describe(b, i, end)}`,
        );
      }
    }
    if (depth === 0) {
      // The top-level value closed: only whitespace may follow.
      while (i < end && isWs(b[i]!)) i++;
      if (i === end) return null;
      return fail(
        i - start,
        `unexpected ${describe(b, i, end)} after the ${topIsObject ? 'object' : 'value'}`,
      );
    }
  }
  const inside = depth > 1 ? 'nested values' : topIsObject ? 'the object' : 'the array';
  return `invalid JSON: the line ends inside ${inside} (truncated?)`;
}

// Not a closure over the scanner's variables: a captured `i` would live on the heap and slow
// every step of the loop (measured 5x).
function fail(offset: number, what: string): string {
  return `invalid JSON at column ${offset + 1}: ${what}`;
}

/**
 * At a `[`: when the bytes read `[d,d,...,d]` (one-digit numbers, no spaces), returns the
 * index after the `]`; otherwise -1 and nothing is consumed (the general scanner takes over
 * and names any error).
 */
function skipDigitRow(b: Uint8Array, i: number, end: number): number {
  let j = i + 1;
  // Two elements a step while both are "d,": one unsigned compare per digit.
  while (j + 3 < end) {
    if (
      b[j + 1] !== COMMA ||
      b[j + 3] !== COMMA ||
      (b[j]! - ZERO) >>> 0 > 9 ||
      (b[j + 2]! - ZERO) >>> 0 > 9
    )
      break;
    j += 4;
  }
  while (j + 1 < end) {
    const d = b[j]!;
    if (d < ZERO || d > NINE) return -1;
    const next = b[j + 1]!;
    if (next === COMMA) j += 2;
    else if (next === CLOSE_ARR) return j + 2;
    else return -1;
  }
  return -1;
}

/** At a `[`: like skipDigitRow for a whole grid `[[d,...],...,[d,...]]`. */
function skipDigitGrid(b: Uint8Array, i: number, end: number): number {
  let j = i + 1;
  for (;;) {
    const k = skipDigitRow(b, j, end);
    if (k < 0 || k >= end) return -1;
    const next = b[k]!;
    if (next === CLOSE_ARR) return k + 1;
    if (next !== COMMA || b[k + 1] !== OPEN_ARR) return -1;
    j = k + 1;
  }
}

function lit(b: Uint8Array, i: number, end: number, word: string): boolean {
  if (i + word.length > end) return false;
  for (let k = 0; k < word.length; k++) if (b[i + k] !== word.charCodeAt(k)) return false;
  return true;
}

/** Scans a string body from after its opening quote; returns the index after the closing quote, or -(error index). */
function scanString(b: Uint8Array, i: number, end: number): number {
  while (i < end) {
    const c = b[i]!;
    if (c === QUOTE) return i + 1;
    if (c === BACKSLASH) {
      const e = b[i + 1];
      if (e === 0x75) {
        // \uXXXX
        if (i + 6 > end) return -i;
        for (let k = 2; k < 6; k++) if (!isHex(b[i + k]!)) return -i;
        i += 6;
        continue;
      }
      if (
        e === QUOTE ||
        e === BACKSLASH ||
        e === 0x2f ||
        e === 0x62 ||
        e === 0x66 ||
        e === 0x6e ||
        e === 0x72 ||
        e === 0x74
      ) {
        i += 2;
        continue;
      }
      return -i;
    }
    if (c < 0x20) return -i;
    i++;
  }
  return -end;
}

function stringError(b: Uint8Array, i: number, end: number): string {
  if (i >= end) return 'unterminated string';
  const c = b[i]!;
  if (c === BACKSLASH) return 'invalid escape in string';
  if (c === 0) return 'NUL byte in string';
  return `control character ${describe(b, i, end)} in string`;
}

/** Scans a number; returns the index after it, or -(error index). */
function scanNumber(b: Uint8Array, i: number, end: number): number {
  if (b[i] === MINUS) i++;
  if (i >= end) return -i;
  if (b[i] === ZERO) i++;
  else if (isDigit(b[i]!)) while (i < end && isDigit(b[i]!)) i++;
  else return -i;
  if (i < end && b[i] === DOT) {
    i++;
    if (i >= end || !isDigit(b[i]!)) return -i;
    while (i < end && isDigit(b[i]!)) i++;
  }
  if (i < end && (b[i] === 0x65 || b[i] === 0x45)) {
    i++;
    if (i < end && (b[i] === PLUS || b[i] === MINUS)) i++;
    if (i >= end || !isDigit(b[i]!)) return -i;
    while (i < end && isDigit(b[i]!)) i++;
  }
  if (i < end) {
    const c = b[i]!;
    if (!(c === COMMA || c === CLOSE_ARR || c === CLOSE_OBJ || isWs(c))) return -i;
  }
  return i;
}
