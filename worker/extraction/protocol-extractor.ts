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
/** The largest payload read (what one ArrayBuffer may hold here): 2^53 - 1 bytes. */
const MAX_PAYLOAD_BYTES = Number.MAX_SAFE_INTEGER;

/** Options of `ProtocolExtractor.open`. */
export interface ProtocolExtractorOptions {
  /** The child's command line: program and arguments (no shell). */
  command: readonly string[];
  /** The child's environment; default this process's. */
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
      if (payloadLen > MAX_PAYLOAD_BYTES) throw protocolError(`a payload of ${payloadLen} bytes`);
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
      const entries = (header as { arrays?: unknown }).arrays ?? [];
      if (!Array.isArray(entries)) throw protocolError('a header whose arrays is not a list');
      for (const a of entries as ArrayEntry[]) {
        const item = ITEM[a?.dtype];
        const count =
          Array.isArray(a?.shape) && a.shape.every((d) => Number.isSafeInteger(d) && d >= 0)
            ? a.shape.reduce((x, y) => x * y, 1)
            : NaN;
        if (
          typeof a?.name !== 'string' ||
          !item ||
          !Number.isSafeInteger(count) ||
          a.nbytes !== count * item
        )
          throw protocolError(`array ${String(a?.name)} is malformed`);
        if (
          !Number.isSafeInteger(a.offset) ||
          a.offset < 0 ||
          a.offset % 8 !== 0 ||
          a.offset + a.nbytes > payloadLen
        )
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

/** What a child's `ready` said, checked. */
interface ReadyFacts {
  /** `ready.backend` (`jax`, `numpy`, or an implementation's own name), or null. */
  backend: string | null;
  numLayers: number;
  hiddenSize: number;
  /** Ascending: the order of every result's layers. */
  layers: number[];
  weightsSha256: string;
  devices: string[];
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

/** Checks a child's first frame against the `init` sent; throws the reason it is not usable. */
function checkReady(h: Frame['header'], o: ProtocolExtractorOptions): ReadyFacts {
  if (h.type === 'error') throw new Error(`${String(h.code)}: ${String(h.message)}`);
  if (h.type !== 'ready') throw new Error(`its first answer is ${h.type}, not ready`);
  if (h.protocol !== PROTOCOL || !PROTOCOL_VERSIONS.includes(h.version as 1))
    throw new Error(
      `it speaks ${String(h.protocol)} version ${String(h.version)}; this worker speaks ${PROTOCOL} version ${PROTOCOL_VERSIONS.join(', ')}`,
    );
  if (h.output_dtype !== o.outputDtype)
    throw new Error(`it returns ${String(h.output_dtype)}, not ${o.outputDtype}`);
  const model = (typeof h.model === 'object' && h.model !== null ? h.model : {}) as Record<
    string,
    unknown
  >;
  const numLayers = model.num_layers;
  const hiddenSize = model.hidden_size;
  if (!isCount(numLayers) || !isCount(hiddenSize))
    throw new Error(
      `its ready has no usable model.num_layers and model.hidden_size (${String(numLayers)}, ${String(hiddenSize)})`,
    );
  // Parts record the model's hash, and the run fingerprint relies on it to keep two models'
  // activations out of one dataset: a child that cannot say what it loaded is not used.
  if (typeof model.weights_sha256 !== 'string' || model.weights_sha256 === '')
    throw new Error('its ready has no model.weights_sha256 (docs/extractor-protocol.md §3.2)');
  const want = o.layers
    ? [...new Set(o.layers)].sort((a, b) => a - b)
    : Array.from({ length: numLayers }, (_, i) => i);
  if (JSON.stringify(h.layers) !== JSON.stringify(want))
    throw new Error(`it returns layers ${JSON.stringify(h.layers)}, not ${JSON.stringify(want)}`);
  if (want.some((l) => !Number.isSafeInteger(l) || l < 0 || l >= numLayers))
    throw new Error(`layers ${JSON.stringify(want)} are not all among the model's ${numLayers}`);
  return {
    backend: typeof h.backend === 'string' ? h.backend : null,
    numLayers,
    hiddenSize,
    layers: want,
    weightsSha256: model.weights_sha256,
    devices: Array.isArray(h.devices) ? h.devices.map(String) : [],
  };
}

/**
 * One child process: its pipes, the frames it sends, the tail of its stderr. Once broken
 * (killed, or a protocol error on its stdout) nothing more it writes is read.
 */
class ExtractorChild {
  readonly proc: ChildProcess;
  private readonly reader = new FrameReader();
  private readonly stderrTail: string[] = [];
  private broken = false;
  /** Where its frames go; `handshake` points this at the extractor once `ready` came. */
  onFrame: (f: Frame) => void = () => undefined;
  /** Called once with the reason when its stdout is not the protocol. */
  onBroken: (why: string) => void = () => undefined;
  /** Resolves with how the process ended (`code 1`, `signal SIGKILL`), once its pipes closed. */
  readonly ended: Promise<string>;

  constructor(command: readonly string[], env: NodeJS.ProcessEnv | undefined, log: Logger) {
    const [program, ...args] = command;
    // Without `env` the child inherits this process's environment (spawn's default).
    this.proc = spawn(program!, args, { ...(env ? { env } : {}), stdio: ['pipe', 'pipe', 'pipe'] });
    const { stdin, stdout, stderr } = this.proc;
    stdin!.on('error', () => undefined); // a dead child's EPIPE: its end is reported by `ended`
    let partial = '';
    stderr!.on('data', (d: Buffer) => {
      const lines = (partial + d.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line) continue;
        this.stderrTail.push(line);
        if (this.stderrTail.length > 20) this.stderrTail.shift();
        log.debug('extractor', { pid: this.proc.pid, line });
      }
    });
    stdout!.on('data', (d: Buffer) => {
      if (this.broken) return;
      let frames: Frame[];
      try {
        frames = this.reader.push(d);
      } catch (e: unknown) {
        this.broken = true;
        this.onBroken(toError(e).message);
        return;
      }
      for (const f of frames) if (!this.broken) this.onFrame(f);
    });
    // `close`, not `exit`: the last frames and stderr lines have been read by then.
    this.ended = new Promise((resolve) => {
      this.proc.once('error', (e) => resolve(`it could not be run: ${e.message}`));
      this.proc.once('close', (code, signal) =>
        resolve(signal ? `signal ${signal}` : `code ${String(code)}`),
      );
    });
  }

  /** Sends one frame (already encoded). */
  write(frame: readonly Buffer[]): void {
    for (const b of frame) this.proc.stdin!.write(b);
  }

  /** Stops reading it and kills it. */
  kill(): void {
    this.broken = true;
    this.proc.kill('SIGKILL');
  }

  /** `; its last words: …` from its stderr, or ''. */
  tail(): string {
    return this.stderrTail.length
      ? `; its last words: ${this.stderrTail.slice(-5).join(' | ')}`
      : '';
  }
}

/**
 * Starts a child, sends `init` and waits for its `ready`. Frames that come after `ready` and
 * before the caller takes the child over are kept in `early`. Fails with `MODEL` and the reason
 * (the child's error frame, its exit, a protocol error, no answer in time, another version).
 */
async function handshake(
  o: ProtocolExtractorOptions,
  log: Logger,
): Promise<{ child: ExtractorChild; ready: ReadyFacts; early: Frame[] }> {
  if (o.command.length === 0)
    throw new ShardlineError('INVALID_ARGUMENT', 'an empty extractor command');
  const child = new ExtractorChild(o.command, o.env, log);
  const early: Frame[] = [];
  const startMs = o.startTimeoutMs ?? 30 * 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    const ready = await new Promise<ReadyFacts>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no ready within ${Math.round(startMs / 1000)} s`)),
        startMs,
      );
      child.onBroken = (why) => reject(new Error(why));
      child.onFrame = (f) => {
        child.onFrame = (later) => early.push(later);
        try {
          resolve(checkReady(f.header, o));
        } catch (e: unknown) {
          reject(toError(e));
        }
      };
      void child.ended.then((how) => reject(new Error(`it exited (${how})`)));
      child.write(
        encodeFrame({
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
        }),
      );
    });
    return { child, ready, early };
  } catch (e: unknown) {
    child.kill();
    // The reason may be in its last stderr lines, read by the time its pipes close.
    await Promise.race([child.ended, new Promise((r) => setTimeout(r, 1000).unref())]);
    throw new ShardlineError(
      'MODEL',
      `the extractor (${o.command.join(' ')}) did not start: ${toError(e).message}${child.tail()}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** A batch sent (or waiting to be sent) to the child. */
interface Request {
  id: number;
  /** The encoded `extract` frame until it is written. */
  frame: Buffer[] | null;
  rowCounts: number[];
  resolve: (b: ExtractedBatch) => void;
  reject: (e: Error) => void;
}

/** The protocol's error codes this worker keeps as its own (others become `MODEL`). */
const CODES = new Map<string, ErrorCode>([
  ['INVALID_INPUT', 'INVALID_INPUT'],
  ['MODEL', 'MODEL'],
]);

/** How long `close()` waits for the child to answer `shutdown` and exit before killing it. */
const CLOSE_GRACE_MS = 30_000;

/** The extractor port over a child process. */
export class ProtocolExtractor implements Extractor {
  private child: ExtractorChild | null = null;
  private starting: Promise<void> | null = null;
  private readonly queue: Request[] = [];
  private nextId = 1;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly options: ProtocolExtractorOptions,
    readonly info: EngineInfo,
    private readonly log: Logger,
  ) {}

  /** Starts the child and waits for its `ready`; fails with `MODEL` and the child's reason. */
  static async open(options: ProtocolExtractorOptions): Promise<ProtocolExtractor> {
    const log = options.logger ?? silentLogger;
    const startedMs = Date.now();
    const { child, ready, early } = await handshake(options, log);
    const info: EngineInfo = {
      backend: ready.backend ? `${options.backend}:${ready.backend}` : options.backend,
      modelPath: options.modelPath,
      modelSha256: ready.weightsSha256,
      preparedModelPath: options.modelPath,
      reusedPreparedModel: false,
      residualMethod: 'hidden_states',
      numLayers: ready.numLayers,
      layers: ready.layers,
      hiddenSize: ready.hiddenSize,
      dtype: options.outputDtype,
      executionProviders: ready.devices,
      loadMs: Date.now() - startedMs,
    };
    const extractor = new ProtocolExtractor(options, info, log);
    extractor.adopt(child, early);
    log.info('extractor ready', {
      backend: info.backend,
      model: info.modelPath,
      pid: child.proc.pid,
      layers: info.layers,
      hidden_size: info.hiddenSize,
      devices: info.executionProviders,
      load_ms: info.loadMs,
    });
    return extractor;
  }

  /** Makes `child` the current one: its frames and its end now concern this extractor. */
  private adopt(child: ExtractorChild, early: readonly Frame[]): void {
    this.child = child;
    child.onFrame = (f) => {
      if (this.child === child) this.onFrame(f);
    };
    child.onBroken = (why) => {
      if (this.child === child) this.kill(`extractor protocol error: ${why}`);
    };
    void child.ended.then((how) => {
      if (this.child !== child) return;
      this.child = null;
      this.failAll(new ShardlineError('MODEL', `the extractor exited (${how})${child.tail()}`));
    });
    for (const f of early) child.onFrame(f);
  }

  /** A fresh child after a failure; its `ready` must describe the same model as the first's. */
  private restart(): void {
    if (this.starting || this.closed) return;
    this.log.warn('starting a fresh extractor after a failure', { command: this.options.command });
    this.starting = (async () => {
      try {
        const { child, ready, early } = await handshake(this.options, this.log);
        const i = this.info;
        if (
          ready.hiddenSize !== i.hiddenSize ||
          ready.numLayers !== i.numLayers ||
          ready.weightsSha256 !== i.modelSha256
        ) {
          child.kill();
          throw new ShardlineError(
            'MODEL',
            `the restarted extractor serves another model (weights ${ready.weightsSha256}, hidden ${ready.hiddenSize}) than the first (${i.modelSha256}, ${i.hiddenSize})`,
          );
        }
        this.log.info('extractor ready', { pid: child.proc.pid, restarted: true });
        this.adopt(child, early);
      } catch (e: unknown) {
        this.failAll(toError(e));
      } finally {
        this.starting = null;
      }
      this.pump();
    })();
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
    const frame = encodeFrame({ type: 'extract', id }, arrays);
    return new Promise<ExtractedBatch>((resolve, reject) => {
      this.queue.push({ id, frame, rowCounts, resolve, reject });
      this.pump();
    });
  }

  /** Writes the requests not yet sent, in order; starts a child first when there is none. */
  private pump(): void {
    if (this.queue.length === 0) return;
    const child = this.child;
    if (!child) return this.restart();
    for (const r of this.queue) {
      if (!r.frame) continue;
      child.write(r.frame);
      r.frame = null;
    }
    if (this.timer === undefined) this.arm();
  }

  /** Starts the timeout of the oldest outstanding request (it runs until that one's answer). */
  private arm(): void {
    const oldest = this.queue[0];
    if (!oldest || oldest.frame) return;
    const ms = this.options.requestTimeoutMs ?? 10 * 60_000;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kill(
        `the extractor did not answer batch ${oldest.id} within ${Math.round(ms / 1000)} s (--extractor_timeout_seconds); killed it`,
      );
    }, ms);
    this.timer.unref();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onFrame(f: Frame): void {
    const h = f.header;
    if (h.type === 'bye') return;
    if (h.type !== 'result' && h.type !== 'error')
      return this.kill(`extractor protocol error: an unexpected ${h.type} frame`);
    if (h.type === 'error' && h.id === null)
      return this.kill(`the extractor gave up: ${String(h.code)}: ${String(h.message)}`);
    const head = this.queue[0];
    if (!head || head.frame || h.id !== head.id)
      return this.kill(
        `extractor protocol error: an answer for batch ${String(h.id)}, expected ${head && !head.frame ? head.id : 'none'}`,
      );
    this.queue.shift();
    this.disarm();
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
      head.reject(toError(e));
      this.kill(toError(e).message);
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
    const total = counts.reduce((a, b) => a + b, 0);
    const rows = this.info.layers.map((layer): Rows[] => {
      const all = view(f, residTensorName(layer), dtype) as Rows;
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
    child?.kill();
    this.failAll(new ShardlineError('MODEL', `${why}${child ? child.tail() : ''}`));
  }

  private failAll(err: Error): void {
    this.disarm();
    for (const r of this.queue.splice(0)) r.reject(err);
  }

  /** Asks the child to finish and exit (`shutdown`); kills it if it has not within 30 s. */
  async close(): Promise<void> {
    this.closed = true;
    await this.starting;
    this.failAll(new ShardlineError('INTERNAL', 'extractor is closed'));
    const child = this.child;
    this.child = null;
    if (!child) return;
    child.write(encodeFrame({ type: 'shutdown' }));
    child.proc.stdin!.end();
    const timer = setTimeout(() => child.kill(), CLOSE_GRACE_MS);
    await child.ended;
    clearTimeout(timer);
  }
}
