/**
 * An extractor in another process, spoken to over the extractor protocol (version 1,
 * docs/extractor-protocol.md): the JAX extractor (`python3 -m shardline_jax`, worker/jax) on a
 * TPU or GPU host, or a user's own implementation (`--backend_command`). The worker keeps
 * everything else (claims, leases, parts); this class only starts the child, sends batches
 * and reads the rows back.
 *
 * Failures: a child that exits, hangs past its timeout, answers garbage or speaks another
 * version fails the requests in flight with `MODEL` (the claim fails with that reason, and
 * nothing of the batch is written); the child is killed, and the next request starts a fresh
 * one (its `ready` must describe the same model). The lease keeper runs on the worker's own
 * thread, independent of the child.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

import { ShardlineError, toError } from '../../core/errors';
import type { ErrorCode } from '../../core/errors';
import type { Logger } from '../../core/log';
import { silentLogger } from '../../core/log';
import type { ActivationDtype, ExtractedBatch, Rows } from './activations';
import { residTensorName } from './activations';
import type { EngineInfo, Extractor } from './engine';
import { checkPositions } from './session';

/** The protocol's name and the versions this worker speaks. */
export const PROTOCOL = 'shardline-extractor';
export const PROTOCOL_VERSIONS = [1] as const;

const MAGIC = Buffer.from('SLXF', 'ascii');
const MAX_JSON_BYTES = 16 << 20;

/** Options of `ProtocolExtractor.open`. */
export interface ProtocolExtractorOptions {
  /** The child's command line: program and arguments (no shell). */
  command: readonly string[];
  /** The child's environment. */
  env?: NodeJS.ProcessEnv;
  /** The Hugging Face checkpoint folder the child loads. */
  modelPath: string;
  /** Layers to return; undefined for all. */
  layers?: readonly number[];
  /** What the child computes in. */
  computeDtype: 'float32' | 'bfloat16';
  /** What it returns (and the parts store). */
  outputDtype: ActivationDtype;
  maxBatchSize: number;
  maxBatchTokens: number;
  maxSeqLength: number;
  /** What `info.backend` says when the child names none: `jax` or `command`. */
  backend: string;
  /** Longest wait for `ready` (loading, compiling): default 30 minutes. */
  startTimeoutMs?: number;
  /** Longest wait for one answer once it is the oldest outstanding: default 10 minutes. */
  requestTimeoutMs?: number;
  logger?: Logger;
}

/** An array in a frame. */
interface ArrayEntry {
  name: string;
  dtype: 'int32' | 'float16' | 'float32';
  shape: number[];
  offset: number;
  nbytes: number;
}

/** A decoded frame. */
interface Frame {
  header: Record<string, unknown> & { type: string };
  payload: ArrayBuffer;
  arrays: Map<string, ArrayEntry>;
}

const ITEM = { int32: 4, float16: 2, float32: 4 } as const;

function protocolError(message: string): ShardlineError {
  return new ShardlineError('MODEL', `extractor protocol error: ${message}`);
}

/** An array to send. */
export type OutArray = {
  name: string;
  dtype: ArrayEntry['dtype'];
  shape: number[];
  data: ArrayBufferView;
};

/** Encodes one frame; `arrays` are laid out at 8-byte-aligned offsets. */
export function encodeFrame(
  header: Record<string, unknown>,
  arrays: readonly OutArray[] = [],
): Buffer[] {
  const entries: ArrayEntry[] = [];
  let offset = 0;
  for (const a of arrays) {
    offset = Math.ceil(offset / 8) * 8;
    entries.push({
      name: a.name,
      dtype: a.dtype,
      shape: a.shape,
      offset,
      nbytes: a.data.byteLength,
    });
    offset += a.data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(arrays.length ? { ...header, arrays: entries } : header));
  const head = Buffer.alloc(16);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(json.length, 4);
  head.writeBigUInt64LE(BigInt(offset), 8);
  const out: Buffer[] = [head, json];
  let at = 0;
  arrays.forEach((a, i) => {
    const e = entries[i]!;
    if (e.offset > at) out.push(Buffer.alloc(e.offset - at));
    out.push(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength));
    at = e.offset + e.nbytes;
  });
  return out;
}

/** Reads frames from a byte stream; `push` data as it arrives, get whole frames back. */
export class FrameReader {
  private head: Buffer = Buffer.alloc(0);
  private frame: {
    header: Frame['header'];
    arrays: Map<string, ArrayEntry>;
    payload: Uint8Array;
    filled: number;
  } | null = null;

  /** Feeds bytes; returns the frames they complete. Throws a protocol error on garbage. */
  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    let data = chunk;
    while (data.length > 0) {
      if (this.frame) {
        const f = this.frame;
        const n = Math.min(data.length, f.payload.length - f.filled);
        f.payload.set(data.subarray(0, n), f.filled);
        f.filled += n;
        data = data.subarray(n);
        if (f.filled === f.payload.length) {
          out.push({
            header: f.header,
            arrays: f.arrays,
            payload: f.payload.buffer as ArrayBuffer,
          });
          this.frame = null;
        }
        continue;
      }
      this.head = this.head.length ? Buffer.concat([this.head, data]) : data;
      data = Buffer.alloc(0);
      if (this.head.length < 16) break;
      if (!this.head.subarray(0, 4).equals(MAGIC))
        throw protocolError(
          `a frame starts with ${JSON.stringify(this.head.subarray(0, 4).toString('latin1'))}, not SLXF`,
        );
      const jsonLen = this.head.readUInt32LE(4);
      const payloadLen = Number(this.head.readBigUInt64LE(8));
      if (jsonLen > MAX_JSON_BYTES) throw protocolError(`a header of ${jsonLen} bytes`);
      if (this.head.length < 16 + jsonLen) break;
      let header: unknown;
      try {
        header = JSON.parse(this.head.subarray(16, 16 + jsonLen).toString('utf8'));
      } catch {
        throw protocolError('a header that is not JSON');
      }
      if (
        typeof header !== 'object' ||
        header === null ||
        typeof (header as { type?: unknown }).type !== 'string'
      )
        throw protocolError('a header without a type');
      const arrays = new Map<string, ArrayEntry>();
      for (const a of ((header as { arrays?: unknown }).arrays ?? []) as ArrayEntry[]) {
        const item = ITEM[a.dtype];
        const count = Array.isArray(a.shape) ? a.shape.reduce((x, y) => x * y, 1) : NaN;
        if (!item || !Number.isSafeInteger(count) || count < 0 || a.nbytes !== count * item)
          throw protocolError(`array ${String(a.name)} is malformed`);
        if (a.offset % 8 !== 0 || a.offset + a.nbytes > payloadLen)
          throw protocolError(`array ${a.name} lies outside the payload`);
        if (arrays.has(a.name)) throw protocolError(`array ${a.name} appears twice`);
        arrays.set(a.name, a);
      }
      const rest = this.head.subarray(16 + jsonLen);
      this.head = Buffer.alloc(0);
      this.frame = {
        header: header as Frame['header'],
        arrays,
        payload: new Uint8Array(new ArrayBuffer(payloadLen)),
        filled: 0,
      };
      if (payloadLen === 0) {
        out.push({
          header: this.frame.header,
          arrays,
          payload: this.frame.payload.buffer as ArrayBuffer,
        });
        this.frame = null;
      }
      data = rest;
    }
    return out;
  }

  /** True between frames (an EOF here is a clean end). */
  get idle(): boolean {
    return this.frame === null && this.head.length === 0;
  }
}

function view(
  frame: Frame,
  name: string,
  dtype: ArrayEntry['dtype'],
): Int32Array | Uint16Array | Float32Array {
  const a = frame.arrays.get(name);
  if (!a) throw protocolError(`a ${String(frame.header.type)} without ${name}`);
  if (a.dtype !== dtype) throw protocolError(`${name} is ${a.dtype}, expected ${dtype}`);
  const n = a.nbytes / ITEM[dtype];
  return dtype === 'int32'
    ? new Int32Array(frame.payload, a.offset, n)
    : dtype === 'float16'
      ? new Uint16Array(frame.payload, a.offset, n)
      : new Float32Array(frame.payload, a.offset, n);
}

interface Request {
  id: number;
  lengths: number[];
  rowCounts: number[];
  resolve: (b: ExtractedBatch) => void;
  reject: (e: Error) => void;
}

/** The protocol's error codes this worker keeps as its own. */
const CODES = new Map<string, ErrorCode>([
  ['INVALID_INPUT', 'INVALID_INPUT'],
  ['MODEL', 'MODEL'],
]);

/** A running child. */
interface Child {
  proc: ChildProcess;
  reader: FrameReader;
  stderrTail: string[];
  exited: Promise<void>;
}

/** The extractor port over a child process. */
export class ProtocolExtractor implements Extractor {
  private child: Child | null = null;
  private readonly queue: Request[] = [];
  private nextId = 1;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private starting: Promise<Child> | null = null;

  private constructor(
    private readonly options: ProtocolExtractorOptions,
    readonly info: EngineInfo,
    child: Child,
    private readonly log: Logger,
  ) {
    this.child = child;
  }

  /** Starts the child and waits for its `ready`; fails with `MODEL` and the child's reason. */
  static async open(options: ProtocolExtractorOptions): Promise<ProtocolExtractor> {
    const log = options.logger ?? silentLogger;
    const started = Date.now();
    // Frames after `ready` go to the extractor, which exists only once `ready` has come.
    const sink: { to?: ProtocolExtractor } = {};
    const { child, ready } = await ProtocolExtractor.start(options, log, (f) =>
      sink.to?.onFrame(f),
    );
    const model = (ready.model ?? {}) as Record<string, unknown>;
    const info: EngineInfo = {
      backend:
        typeof ready.backend === 'string' ? `${options.backend}:${ready.backend}` : options.backend,
      modelPath: options.modelPath,
      modelSha256: weightsSha256(model),
      preparedModelPath: options.modelPath,
      reusedPreparedModel: false,
      residualMethod: 'hidden_states',
      numLayers: Number(model.num_layers),
      layers: (ready.layers as number[]).slice(),
      hiddenSize: Number(model.hidden_size),
      dtype: options.outputDtype,
      executionProviders: ((ready.devices as unknown[] | undefined) ?? []).map(String),
      loadMs: Date.now() - started,
    };
    const extractor = new ProtocolExtractor(options, info, child, log);
    sink.to = extractor;
    extractor.watch(child);
    log.info('extractor ready', {
      backend: info.backend,
      model: info.modelPath,
      layers: info.layers,
      hidden_size: info.hiddenSize,
      devices: info.executionProviders,
      load_ms: info.loadMs,
    });
    return extractor;
  }

  /** Spawns a child, sends `init`, and waits for `ready` (its frames after go to `onFrame`). */
  private static start(
    o: ProtocolExtractorOptions,
    log: Logger,
    onFrame: (f: Frame) => void,
  ): Promise<{ child: Child; ready: Record<string, unknown> }> {
    const [program, ...args] = o.command;
    if (!program)
      return Promise.reject(new ShardlineError('INVALID_ARGUMENT', 'an empty extractor command'));
    const proc = spawn(program, args, {
      env: o.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const child: Child = {
      proc,
      reader: new FrameReader(),
      stderrTail: [],
      exited: new Promise((r) => proc.once('exit', () => r())),
    };
    let partial = '';
    proc.stderr.on('data', (d: Buffer) => {
      const lines = (partial + d.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line) continue;
        child.stderrTail.push(line);
        if (child.stderrTail.length > 20) child.stderrTail.shift();
        log.debug('extractor', { line });
      }
    });
    proc.stdin.on('error', () => undefined); // a dead child's EPIPE is reported by its exit
    return new Promise((resolve, reject) => {
      let ready = false;
      const fail = (why: string): void => {
        if (ready) return;
        ready = true;
        clearTimeout(timer);
        proc.kill('SIGKILL');
        reject(
          new ShardlineError(
            'MODEL',
            `the extractor (${o.command.join(' ')}) did not start: ${why}${tail(child)}`,
          ),
        );
      };
      const timer = setTimeout(
        () => fail(`no ready after ${Math.round((o.startTimeoutMs ?? 30 * 60_000) / 1000)} s`),
        o.startTimeoutMs ?? 30 * 60_000,
      );
      proc.once('error', (e) => fail(e.message));
      proc.once('exit', (code, signal) => fail(`it exited (${signal ?? `code ${String(code)}`})`));
      proc.stdout.on('data', (d: Buffer) => {
        let frames: Frame[];
        try {
          frames = child.reader.push(d);
        } catch (e: unknown) {
          if (!ready) fail((e as Error).message);
          else
            onFrame({
              header: { type: '__protocol_error__', message: (e as Error).message },
              payload: new ArrayBuffer(0),
              arrays: new Map(),
            });
          return;
        }
        for (const f of frames) {
          if (ready) {
            onFrame(f);
            continue;
          }
          const h = f.header;
          if (h.type === 'error') return fail(`${String(h.code)}: ${String(h.message)}`);
          if (h.type !== 'ready') return fail(`its first answer is ${h.type}, not ready`);
          if (h.protocol !== PROTOCOL || !PROTOCOL_VERSIONS.includes(h.version as 1))
            return fail(
              `it speaks ${String(h.protocol)} version ${String(h.version)}, this worker ${PROTOCOL} ${PROTOCOL_VERSIONS.join(', ')}`,
            );
          if (h.output_dtype !== o.outputDtype)
            return fail(`it returns ${String(h.output_dtype)}, not ${o.outputDtype}`);
          if (
            o.layers &&
            JSON.stringify(h.layers) !==
              JSON.stringify([...new Set(o.layers)].sort((a, b) => a - b))
          )
            return fail(
              `it returns layers ${JSON.stringify(h.layers)}, not ${JSON.stringify(o.layers)}`,
            );
          ready = true;
          clearTimeout(timer);
          proc.removeAllListeners('exit');
          resolve({ child, ready: h });
        }
      });
      write(proc, {
        type: 'init',
        protocol: PROTOCOL,
        versions: [...PROTOCOL_VERSIONS],
        model_path: o.modelPath,
        layers: o.layers ? [...o.layers] : null,
        compute_dtype: o.computeDtype,
        output_dtype: o.outputDtype,
        max_batch_size: o.maxBatchSize,
        max_batch_tokens: o.maxBatchTokens,
        max_seq_length: o.maxSeqLength,
      });
    });
  }

  /** After `ready`: a child's exit fails whatever is outstanding. */
  private watch(child: Child): void {
    child.proc.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      this.failAll(`the extractor exited (${signal ?? `code ${String(code)}`})${tail(child)}`);
    });
  }

  /** A fresh child after a failure: it must describe the same model as the first. */
  private async ensureChild(): Promise<Child> {
    if (this.child) return this.child;
    this.starting ??= (async () => {
      this.log.warn('starting a fresh extractor after a failure', {
        command: this.options.command,
      });
      const { child, ready } = await ProtocolExtractor.start(this.options, this.log, (f) =>
        this.onFrame(f),
      );
      const model = (ready.model ?? {}) as Record<string, unknown>;
      if (
        Number(model.hidden_size) !== this.info.hiddenSize ||
        weightsSha256(model) !== this.info.modelSha256
      ) {
        child.proc.kill('SIGKILL');
        throw new ShardlineError(
          'MODEL',
          'the restarted extractor serves another model than the first',
        );
      }
      this.child = child;
      this.watch(child);
      return child;
    })().finally(() => (this.starting = null));
    return this.starting;
  }

  extract(
    sequences: ReadonlyArray<ArrayLike<number>>,
    positions?: ReadonlyArray<ArrayLike<number>>,
  ): Promise<ExtractedBatch> {
    if (this.closed) return Promise.reject(new ShardlineError('INTERNAL', 'extractor is closed'));
    const lengths = sequences.map((s) => s.length);
    try {
      if (lengths.some((n) => n === 0))
        throw new ShardlineError('INVALID_ARGUMENT', 'a sequence has no tokens');
      if (positions) checkPositions(positions, lengths);
    } catch (e: unknown) {
      return Promise.reject(toError(e));
    }
    const tokens = new Int32Array(lengths.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const s of sequences) for (let k = 0; k < s.length; k++) tokens[at++] = s[k]!;
    const arrays: OutArray[] = [
      { name: 'token_ids', dtype: 'int32', shape: [tokens.length], data: tokens },
      { name: 'lengths', dtype: 'int32', shape: [lengths.length], data: Int32Array.from(lengths) },
    ];
    const rowCounts = positions ? positions.map((p) => p.length) : lengths;
    if (positions) {
      const flat = Int32Array.from(positions.flatMap((p) => Array.from(p)));
      arrays.push(
        { name: 'positions', dtype: 'int32', shape: [flat.length], data: flat },
        {
          name: 'position_counts',
          dtype: 'int32',
          shape: [rowCounts.length],
          data: Int32Array.from(rowCounts),
        },
      );
    }
    const id = this.nextId++;
    return new Promise<ExtractedBatch>((resolve, reject) => {
      this.queue.push({ id, lengths, rowCounts, resolve, reject });
      this.ensureChild().then(
        (child) => {
          write(child.proc, { type: 'extract', id }, arrays);
          this.arm();
        },
        (e: unknown) => this.failAll((e as Error).message),
      );
    });
  }

  /** (Re)starts the timeout of the oldest outstanding request. */
  private arm(): void {
    clearTimeout(this.timer);
    if (this.queue.length === 0) return;
    const ms = this.options.requestTimeoutMs ?? 10 * 60_000;
    this.timer = setTimeout(() => {
      this.kill(`no answer within ${Math.round(ms / 1000)} s`);
    }, ms);
    this.timer.unref();
  }

  private onFrame(f: Frame): void {
    const h = f.header;
    if (h.type === '__protocol_error__') return this.kill(String(h.message));
    if (h.type === 'bye') return;
    const head = this.queue[0];
    if (h.type !== 'result' && h.type !== 'error')
      return this.kill(`an unexpected ${h.type} frame`);
    if (h.type === 'error' && h.id === null)
      return this.kill(`the extractor gave up: ${String(h.code)}: ${String(h.message)}`);
    if (!head || h.id !== head.id)
      return this.kill(`an answer for request ${String(h.id)}, expected ${head?.id ?? 'none'}`);
    this.queue.shift();
    this.arm();
    if (h.type === 'error') {
      const code = CODES.get(String(h.code)) ?? 'MODEL';
      head.reject(
        new ShardlineError(
          code,
          `the extractor refused a batch: ${String(h.code)}: ${String(h.message)}`,
        ),
      );
      return;
    }
    try {
      head.resolve(this.decode(f, head));
    } catch (e: unknown) {
      head.reject(e as Error);
      this.kill((e as Error).message);
    }
  }

  private decode(f: Frame, req: Request): ExtractedBatch {
    const h = f.header;
    const dtype = this.info.dtype;
    const H = this.info.hiddenSize;
    if (
      h.hidden_size !== H ||
      h.dtype !== dtype ||
      JSON.stringify(h.layers) !== JSON.stringify(this.info.layers)
    )
      throw protocolError('a result whose hidden size, dtype or layers differ from ready');
    const counts = Array.from(view(f, 'row_counts', 'int32'));
    if (counts.join() !== req.rowCounts.join())
      throw protocolError(`row counts ${counts.join()} for ${req.rowCounts.join()}`);
    const rows = this.info.layers.map((layer): Rows[] => {
      const all = view(f, residTensorName(layer), dtype) as Rows;
      const total = counts.reduce((a, b) => a + b, 0);
      if (all.length !== total * H)
        throw protocolError(
          `${residTensorName(layer)} holds ${all.length / H} rows, expected ${total}`,
        );
      let at = 0;
      return counts.map((n) => {
        const v = all.subarray(at * H, (at + n) * H);
        at += n;
        return v;
      });
    });
    return { dtype, hiddenSize: H, layers: [...this.info.layers], rowCounts: counts, rows };
  }

  /** Kills the child; what is outstanding fails with `why`; the next request starts a fresh one. */
  private kill(why: string): void {
    const child = this.child;
    this.child = null;
    child?.proc.kill('SIGKILL');
    this.failAll(`${why}${child ? tail(child) : ''}`);
  }

  private failAll(why: string): void {
    clearTimeout(this.timer);
    const err = new ShardlineError('MODEL', why);
    for (const r of this.queue.splice(0)) r.reject(err);
  }

  /** Asks the child to finish and exit (`shutdown`); kills it if it does not within 30 s. */
  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    this.child = null;
    if (!child) return;
    write(child.proc, { type: 'shutdown' });
    child.proc.stdin!.end();
    const t = setTimeout(() => child.proc.kill('SIGKILL'), 30_000);
    await child.exited;
    clearTimeout(t);
  }
}

function write(
  proc: ChildProcess,
  header: Record<string, unknown>,
  arrays?: readonly OutArray[],
): void {
  for (const b of encodeFrame(header, arrays)) proc.stdin!.write(b);
}

function tail(child: Child): string {
  return child.stderrTail.length
    ? `; its last words: ${child.stderrTail.slice(-5).join(' | ')}`
    : '';
}

/** The `model.weights_sha256` a child's `ready` reports ('' when it reports none). */
function weightsSha256(model: Record<string, unknown>): string {
  return typeof model.weights_sha256 === 'string' ? model.weights_sha256 : '';
}
