/**
 * Seeded generators of JSONL inputs for splitter tests, with an independent oracle: which
 * lines are tasks is decided here with `JSON.parse` and a fatal `TextDecoder`, not with the
 * splitter's own scanner.
 */
import { seededRandom } from '../../core/random';

/** A small seeded PRNG (mulberry32). */
export { seededRandom as rng } from '../../core/random';

/** The oracle: is this line (without `\n`) a task? */
export function isTaskLine(line: Uint8Array): boolean {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(line);
  } catch {
    return false;
  }
  if (text.trim() === '') return false;
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v);
  } catch {
    return false;
  }
}

const WORDS = [
  'grid',
  'été',
  '日本語',
  'emoji 🧩',
  'tab\there',
  'quote "q"',
  'back\\slash',
  'ünï',
  'Ωmega',
  'plain',
];

function grid(r: () => number): number[][] {
  const h = 1 + Math.floor(r() * 6);
  const w = 1 + Math.floor(r() * 6);
  return Array.from({ length: h }, () => Array.from({ length: w }, () => Math.floor(r() * 10)));
}

/** One valid task object as JSON text, of varied size and content. */
export function taskJson(r: () => number, i: number, bigChance = 0.02): string {
  const kind = r();
  if (kind < 0.45) {
    const train = Array.from({ length: 1 + Math.floor(r() * 3) }, () => ({
      input: grid(r),
      output: grid(r),
    }));
    return JSON.stringify({
      task_id: `task_${i.toString(16).padStart(8, '0')}`,
      train,
      test: [{ input: grid(r) }],
    });
  }
  const words = Array.from(
    { length: 1 + Math.floor(r() * 12) },
    () => WORDS[Math.floor(r() * WORDS.length)]!,
  );
  let text = words.join(' ');
  if (r() < bigChance) text = text.repeat(200 + Math.floor(r() * 800));
  const obj: Record<string, unknown> = {
    text,
    n: i,
    f: Math.round(r() * 1e6) / 1e3,
    ok: r() < 0.5,
    none: null,
  };
  // Pretty spacing sometimes: bytes must be preserved as they are.
  return r() < 0.2 ? JSON.stringify(obj, null, 1).replace(/\n/g, ' ') : JSON.stringify(obj);
}

const BAD_LINES: ReadonlyArray<string | Uint8Array> = [
  '[1,2,3]',
  '"just a string"',
  '42',
  'null',
  'true',
  '{"a":1',
  '{"a":1}}',
  '{"a":1,}',
  '{a:1}',
  "{'a':1}",
  '{"a":01}',
  '{"a":1.}',
  '{"a":"\u0001"}',
  '{"a":1} x',
  'not json at all',
  Uint8Array.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), // invalid UTF-8 in a string
  Uint8Array.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x00, 0x7d]), // NUL
];

/** Options of `generateJsonl`. */
export interface GenOptions {
  lines: number;
  blankRate?: number;
  badRate?: number;
  crlfRate?: number;
  bom?: boolean;
  finalNewline?: boolean;
  bigChance?: number;
}

/** A generated input and, from the oracle, the task lines it holds (normalised, without `\n`). */
export function generateJsonl(seed: number, o: GenOptions): { input: Buffer; tasks: Buffer[] } {
  const r = seededRandom(seed);
  const parts: Buffer[] = [];
  const tasks: Buffer[] = [];
  for (let i = 0; i < o.lines; i++) {
    const x = r();
    let line: Buffer;
    if (x < (o.blankRate ?? 0)) line = Buffer.from(r() < 0.5 ? '' : ' \t ');
    else if (x < (o.blankRate ?? 0) + (o.badRate ?? 0)) {
      const bad = BAD_LINES[Math.floor(r() * BAD_LINES.length)]!;
      line = Buffer.from(bad);
    } else line = Buffer.from(taskJson(r, i, o.bigChance));
    const last = i === o.lines - 1;
    // An empty last line without a newline would not be a line at all.
    if (last && o.finalNewline === false && line.length === 0) line = Buffer.from(' ');
    if (isTaskLine(line)) tasks.push(line);
    const crlf = r() < (o.crlfRate ?? 0);
    const ending = last && o.finalNewline === false ? '' : crlf ? '\r\n' : '\n';
    parts.push(line, Buffer.from(ending));
  }
  let input = Buffer.concat(parts);
  if (o.bom) input = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), input]);
  return { input, tasks };
}
