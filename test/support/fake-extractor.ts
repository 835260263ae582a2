/**
 * A stand-in extractor for the worker's failure tests: a child process speaking the extractor
 * protocol (docs/extractor-protocol.md) that answers with rows computed from each token's id,
 * position and layer (`fakeRow`), so a test can check every stored row, and that misbehaves
 * on request. `writeFakeExtractor` writes a launcher `node` runs:
 *
 *   node fake-extractor.cjs --state DIR --plan die@3,version [--hidden 8] [--layers 2]
 *
 * Each child started records itself in `DIR/child-<n>.json` (n = 1, 2, …: its generation, and
 * its pid), and behaves as the plan's n-th entry says (children past the plan's end are `ok`):
 *
 * - `ok`: a correct extractor;
 * - `die@K`: on its K-th `extract`, writes half an answer and exits with status 1;
 * - `hang@K`: never answers its K-th `extract` (nor any after it), and stays alive; it writes
 *   `DIR/hanging` when it begins to;
 * - `garbage@K`: answers its K-th `extract` with text on stdout (a stray print);
 * - `version`: speaks only protocol version 2: answers `init` with `UNSUPPORTED_VERSION` and
 *   exits with status 2, as the protocol's §8 says a child must.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { FrameReader, encodeFrame } from '../../worker/extraction/protocol-extractor';
import type { OutArray } from '../../worker/extraction/protocol-extractor';
import { f32ToF16Bits } from '../../worker/extraction/fp16';
import { writeTsLauncher } from './ts-processes';

/**
 * Writes the program into `dir` (`dir/fake-extractor.cjs`) and returns its path: run it as
 * `node PATH --state DIR --plan PLAN …`.
 */
export function writeFakeExtractor(dir: string): string {
  return writeTsLauncher(dir, 'fake-extractor', __filename, 'runFakeExtractor');
}

/** The weights hash the fake reports (any fixed string: a restarted fake must match it). */
export const FAKE_WEIGHTS_SHA256 = 'fake-extractor-weights-v1';

/**
 * Element `d` of layer `layer`'s row for token `token` at `position`: a multiple of 1/8 in
 * [0, 8), exact in float16 and float32.
 */
export function fakeRow(layer: number, token: number, position: number, d: number): number {
  return (((token % 251) + 3 * position + 7 * layer + d) % 64) / 8;
}

/** One child's record in the state folder. */
export interface FakeChildRecord {
  generation: number;
  pid: number;
  mode: string;
}

/** The children a fake extractor's state folder has seen, in generation order. */
export function fakeChildren(stateDir: string): FakeChildRecord[] {
  return readdirSync(stateDir)
    .filter((f) => /^child-\d+\.json$/.test(f))
    .map((f) => JSON.parse(readFileSync(path.join(stateDir, f), 'utf8')) as FakeChildRecord)
    .sort((a, b) => a.generation - b.generation);
}

/** Whether `pid` still runs (a zombie, dead but not yet reaped by its parent, does not). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true; // no /proc: it answered the signal
  }
}

function flag(argv: readonly string[], name: string, fallback?: string): string {
  const at = argv.indexOf(`--${name}`);
  const v = at >= 0 ? argv[at + 1] : fallback;
  if (v === undefined) throw new Error(`fake extractor: --${name} is required`);
  return v;
}

/** The program: serves one session on stdin/stdout as the plan says. */
export function runFakeExtractor(argv: readonly string[]): void {
  const stateDir = flag(argv, 'state');
  const plan = flag(argv, 'plan', '').split(',').filter(Boolean);
  const hidden = Number(flag(argv, 'hidden', '8'));
  const numLayers = Number(flag(argv, 'layers', '2'));
  const generation = fakeChildren(stateDir).length + 1;
  const mode = plan[generation - 1] ?? 'ok';
  const record: FakeChildRecord = { generation, pid: process.pid, mode };
  writeFileSync(path.join(stateDir, `child-${generation}.json`), JSON.stringify(record));
  const [kind, at] = mode.split('@') as [string, string | undefined];
  const misbehaveAt = at === undefined ? Infinity : Number(at);

  const send = (header: Record<string, unknown>, arrays?: OutArray[]): void => {
    for (const b of encodeFrame(header, arrays)) process.stdout.write(b);
  };
  const reader = new FrameReader();
  let layers: number[] = [];
  let outputDtype = 'float16';
  let extracts = 0;
  let stuck = false;

  process.stdin.on('data', (chunk: Buffer) => {
    for (const frame of reader.push(chunk)) {
      const h = frame.header;
      if (h.type === 'init') {
        if (kind === 'version') {
          send({
            type: 'error',
            id: null,
            code: 'UNSUPPORTED_VERSION',
            message: `this extractor speaks shardline-extractor version 2; init offered versions ${JSON.stringify(h.versions)}`,
            retryable: false,
          });
          process.stderr.write('fake extractor: no common protocol version\n');
          process.exitCode = 2;
          process.stdin.destroy();
          return;
        }
        layers = Array.isArray(h.layers)
          ? [...new Set(h.layers as number[])].sort((a, b) => a - b)
          : Array.from({ length: numLayers }, (_, i) => i);
        outputDtype = String(h.output_dtype);
        send({
          type: 'ready',
          protocol: 'shardline-extractor',
          version: 1,
          backend: 'fake',
          model: {
            model_type: 'fake',
            num_layers: numLayers,
            hidden_size: hidden,
            vocab_size: 151936,
            weights_sha256: FAKE_WEIGHTS_SHA256,
          },
          layers,
          compute_dtype: h.compute_dtype,
          output_dtype: outputDtype,
          devices: ['cpu:0 fake'],
        });
        continue;
      }
      if (h.type === 'shutdown') {
        send({ type: 'bye' });
        process.stdin.destroy();
        return;
      }
      if (h.type !== 'extract' || stuck) continue;
      extracts++;
      const answer = () => result(frame.payload, frame.arrays, Number(h.id));
      if (extracts < misbehaveAt || kind === 'ok') {
        send(...answer());
      } else if (kind === 'die') {
        const bytes = Buffer.concat(encodeFrame(...answer()));
        process.stdout.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () =>
          process.exit(1),
        );
        process.stderr.write(`fake extractor: dying in the middle of batch ${String(h.id)}\n`);
        return;
      } else if (kind === 'hang') {
        stuck = true;
        writeFileSync(path.join(stateDir, 'hanging'), String(process.pid));
        process.stderr.write(`fake extractor: hanging on batch ${String(h.id)}\n`);
        setInterval(() => undefined, 1 << 30);
      } else if (kind === 'garbage') {
        process.stdout.write('Traceback (most recent call last):\n  a stray print\n');
      }
    }
  });

  /** The answer to one `extract`: rows by `fakeRow` at every token or the positions asked for. */
  const result = (
    payload: ArrayBuffer,
    arrays: Map<string, { offset: number; nbytes: number }>,
    id: number,
  ): [Record<string, unknown>, OutArray[]] => {
    const i32 = (name: string): Int32Array => {
      const a = arrays.get(name);
      return a ? new Int32Array(payload, a.offset, a.nbytes / 4) : new Int32Array(0);
    };
    const tokens = i32('token_ids');
    const lengths = i32('lengths');
    const positions = arrays.has('positions') ? i32('positions') : null;
    const counts = positions ? i32('position_counts') : lengths;
    const rows: Array<{ token: number; position: number }> = [];
    let start = 0;
    let p = 0;
    lengths.forEach((n, k) => {
      const want = positions
        ? Array.from(positions.subarray(p, p + counts[k]!))
        : Array.from({ length: n }, (_, i) => i);
      p += positions ? counts[k]! : 0;
      for (const pos of want) rows.push({ token: tokens[start + pos]!, position: pos });
      start += n;
    });
    const out: OutArray[] = [
      { name: 'row_counts', dtype: 'int32', shape: [counts.length], data: Int32Array.from(counts) },
    ];
    for (const layer of layers) {
      const values = rows.flatMap((r) =>
        Array.from({ length: hidden }, (_, d) => fakeRow(layer, r.token, r.position, d)),
      );
      out.push(
        outputDtype === 'float16'
          ? {
              name: `resid_post.${layer}`,
              dtype: 'float16',
              shape: [rows.length, hidden],
              data: Uint16Array.from(values, f32ToF16Bits),
            }
          : {
              name: `resid_post.${layer}`,
              dtype: 'float32',
              shape: [rows.length, hidden],
              data: Float32Array.from(values),
            },
      );
    }
    return [{ type: 'result', id, hidden_size: hidden, layers, dtype: outputDtype }, out];
  };
}
