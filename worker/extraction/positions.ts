/**
 * Which token positions of a sample are stored (`--positions`). The model always sees the
 * whole prompt; only the stored rows cost bytes.
 *
 * - `all` (the default): every real token.
 * - `last`: the last prompt token (where the model predicts the first token of its answer).
 * - `answer`: for ARC prompts, the first token of the fence that opens the answer grid (the
 *   assistant's "```grid": the rows from there on are the model writing its answer); for text
 *   tasks, which have no answer block, the last token.
 * - a list of positions and ranges, counted from the start (`0`, `16-31`) or, negative, from
 *   the end (`-1` is the last token, `-8--1` the last eight): `0,16-31,-1`. Positions past a
 *   sample's length are left out for that sample; the rows stay in ascending order, each once.
 */
import { ConfigError } from '../../core/errors';

/** A parsed `--positions`. */
export type PositionSpec =
  | { kind: 'all' }
  | { kind: 'last' }
  | { kind: 'answer' }
  | { kind: 'list'; ranges: ReadonlyArray<readonly [number, number]> };

/** The text form of a spec, as parts record it (`all`, `last`, `answer`, `0,16-31,-1`). */
export function formatPositions(spec: PositionSpec): string {
  if (spec.kind !== 'list') return spec.kind;
  return spec.ranges.map(([a, b]) => (a === b ? String(a) : `${a}-${b}`)).join(',');
}

/** Parses `--positions`; a bad value fails naming the flag and the part it could not read. */
export function parsePositions(text: string): PositionSpec {
  const t = text.trim();
  if (t === 'all' || t === 'last' || t === 'answer') return { kind: t };
  const ranges: Array<[number, number]> = [];
  for (const part of t.split(',').map((p) => p.trim())) {
    const m = /^(-?\d+)(?:-(-?\d+))?$/.exec(part);
    if (!m)
      throw new ConfigError(
        `--positions must be all, last, answer, or a list like 0,16-31,-1; cannot read ${JSON.stringify(part)} in ${JSON.stringify(text)}`,
      );
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (Math.sign(a) !== Math.sign(b) && !(a >= 0 && b >= 0))
      throw new ConfigError(
        `--positions range ${part} mixes a position from the start with one from the end`,
      );
    if (b < a) throw new ConfigError(`--positions range ${part} goes backwards`);
    ranges.push([a, b]);
  }
  return { kind: 'list', ranges };
}

/** What a sample offers for choosing its positions. */
export interface PositionContext {
  /** Tokens in the prompt. */
  length: number;
  /** ARC: the position of the first token of the answer grid's opening fence; text: none. */
  answerStart: number | null;
}

/** The positions stored for one sample: ascending, each once, all within `[0, length)`. */
export function selectPositions(spec: PositionSpec, sample: PositionContext): number[] {
  const n = sample.length;
  if (n === 0) return [];
  switch (spec.kind) {
    case 'all':
      return Array.from({ length: n }, (_, i) => i);
    case 'last':
      return [n - 1];
    case 'answer':
      return [sample.answerStart ?? n - 1];
    case 'list': {
      const out = new Set<number>();
      for (const [a, b] of spec.ranges) {
        const from = a < 0 ? n + a : a;
        const to = b < 0 ? n + b : b;
        for (let i = Math.max(0, from); i <= Math.min(n - 1, to); i++) out.add(i);
      }
      return [...out].sort((x, y) => x - y);
    }
  }
}

/** How many rows a sample of `length` tokens stores (what `shardline plan` counts). */
export function storedRows(spec: PositionSpec, length: number): number {
  if (spec.kind === 'all') return length;
  if (spec.kind === 'last' || spec.kind === 'answer') return length > 0 ? 1 : 0;
  return selectPositions(spec, { length, answerStart: null }).length;
}
