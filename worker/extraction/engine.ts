/**
 * The extraction engine: a decoder LM in onnxruntime-node on a worker thread, so the thread
 * that renews the lease keeps beating while a forward pass runs (onnxruntime's `run` blocks
 * its thread for seconds; docs/notes/onnx.md §1 measured a 576 ms stall of a 10 ms timer during a
 * 653 ms run on the main thread, ≤102 ms with a worker thread, during loading).
 *
 * ```ts
 * const engine = await ExtractionEngine.open({ modelPath: 'model/model.onnx', layers: [3, 7] });
 * const batch = await engine.extract(samples.map((s) => s.tokenIds));
 * await engine.close();
 * ```
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { ShardlineError, toError } from '../../core/errors';
import type { ErrorCode } from '../../core/errors';
import type { Logger } from '../../core/log';
import { silentLogger } from '../../core/log';
import type { ActivationDtype, ExtractedBatch } from './activations';
import type { EngineWorkerData, FromWorker, ToWorker, WireError } from './engine-protocol';
import type { PreparedModel } from './prepare-model';
import type { SessionSettings } from './session';
import { checkPositions } from './session';

/** Options of `ExtractionEngine.open`. */
export interface EngineOptions extends SessionSettings {
  /** Path of `model.onnx` (with `model.onnx_data` beside it when the weights are external). */
  modelPath: string;
  /** Layers to extract, 0-based. Default: all. */
  layers?: number[];
  /** Stored element type. Default `float16` (cast inside the graph). */
  dtype?: ActivationDtype;
  /** Run one 1-token batch after loading. Default true. */
  warmup?: boolean;
  /** Logger; default silent. */
  logger?: Logger;
}

/** What an extractor runs, for part metadata and logs. */
export interface EngineInfo {
  /** What runs the model: `onnx`, or `jax:jax`, `jax:numpy`, `command:…` over the protocol. */
  backend: string;
  /** The original model file (ONNX) or checkpoint folder (the protocol's backends). */
  modelPath: string;
  /**
   * What identifies the model in part metadata and the run fingerprint: the SHA-256 (hex) of
   * the files the weights are read from. ONNX: `model.onnx` followed by its external data files
   * (ascending names); the protocol's backends: what `ready` reports (the JAX extractor: the
   * checkpoint's safetensors files concatenated in ascending name order). The two differ for
   * one model, so a dataset's parts all come from one backend's files (docs/extractor-protocol.md §3.2).
   */
  modelSha256: string;
  /** The rewritten model actually loaded. */
  preparedModelPath: string;
  /** True when an earlier rewrite was reused. */
  reusedPreparedModel: boolean;
  /**
   * How the residual stream was found: the graph surgery's `optimum`, `genai` or `structural`,
   * or `hidden_states` (the protocol's backends compute it directly).
   */
  residualMethod: PreparedModel['method'] | 'hidden_states';
  /** Layers in the model. */
  numLayers: number;
  /** Layers extracted, ascending. */
  layers: number[];
  /** Row width. */
  hiddenSize: number;
  /** Stored element type. */
  dtype: ActivationDtype;
  /** Execution providers asked for. */
  executionProviders: string[];
  /** Milliseconds to prepare and load the model (and warm up). */
  loadMs: number;
}

/** How long `close()` waits for the thread to finish its queue and exit before terminating it. */
export const CLOSE_GRACE_MS = 60_000;

interface Pending {
  resolve: (b: ExtractedBatch) => void;
  reject: (e: Error) => void;
}

/** Codes the worker thread raises on purpose; anything else (an `ENOENT`...) becomes the fallback. */
const WORKER_CODES = new Set<string>([
  'INVALID_ARGUMENT',
  'INVALID_INPUT',
  'MODEL',
  'NOT_FOUND',
  'INTERNAL',
]);

function fromWire(e: WireError, fallback: ErrorCode): ShardlineError {
  const code = e.code !== undefined && WORKER_CODES.has(e.code) ? (e.code as ErrorCode) : fallback;
  const err = new ShardlineError(
    code,
    e.message,
    e.code === undefined ? {} : { details: { cause_code: e.code } },
  );
  if (e.stack) err.stack = e.stack;
  return err;
}

/**
 * The worker entry and, when running from TypeScript sources (jest, `node -r`), a bootstrap
 * that compiles `.ts` on the fly with `@swc/core` (a dev dependency; the compiled `dist/`
 * tree needs nothing).
 */
function workerEntry(): { entry: string; swcCorePath: string | null } {
  const ext = path.extname(__filename);
  const entry = path.join(__dirname, `engine-worker${ext}`);
  if (ext !== '.ts') return { entry, swcCorePath: null };
  let swcCorePath: string;
  try {
    swcCorePath = require.resolve('@swc/core');
  } catch (e: unknown) {
    throw new ShardlineError(
      'INTERNAL',
      `running the engine from TypeScript sources needs @swc/core: ${toError(e).message}`,
    );
  }
  return { entry, swcCorePath };
}

const TS_BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
const Module = require('node:module');
const fs = require('node:fs');
const { transformSync } = require(workerData.swcCorePath);
Module._extensions['.ts'] = function (module, filename) {
  const { code } = transformSync(fs.readFileSync(filename, 'utf8'), {
    filename,
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
    module: { type: 'commonjs' },
    sourceMaps: 'inline',
  });
  module._compile(code, filename);
};
require(workerData.entry);
`;

/**
 * The port the worker loop depends on (docs/conventions.md#narrow-ports): `ExtractionEngine`
 * implements it; tests of the loop can pass a fake.
 */
export interface Extractor {
  /** What is being run. */
  readonly info: EngineInfo;
  /**
   * Runs one batch of token-id sequences and returns, per layer and sequence, the rows of the
   * real tokens, or of `positions[k]` only (ascending, within the sequence) when given.
   * Batches may be queued before earlier ones resolve; they resolve in order.
   */
  extract(
    sequences: ReadonlyArray<ArrayLike<number>>,
    positions?: ReadonlyArray<ArrayLike<number>>,
  ): Promise<ExtractedBatch>;
  /** Releases the model. */
  close(): Promise<void>;
}

/** A loaded model on its worker thread. */
export class ExtractionEngine implements Extractor {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private closed = false;
  private failure: ShardlineError | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly worker: Worker,
    /** What the engine runs. */
    readonly info: EngineInfo,
    private readonly logger: Logger,
  ) {
    worker.on('message', (msg: FromWorker) => this.onMessage(msg));
    worker.on('error', (e: Error) =>
      this.fail(
        new ShardlineError('MODEL', `extraction thread failed: ${e.message}`, { cause: e }),
      ),
    );
    worker.on('exit', (code) => {
      if (!this.closed)
        this.fail(new ShardlineError('MODEL', `extraction thread exited (code ${code})`));
    });
  }

  /**
   * Starts the worker thread, prepares the model (graph surgery, cached beside it) and loads
   * it. Fails with `MODEL` (unreadable or unsupported model, provider unavailable) or
   * `INVALID_ARGUMENT` (a layer that does not exist).
   */
  static async open(options: EngineOptions): Promise<ExtractionEngine> {
    const logger = options.logger ?? silentLogger;
    if (!existsSync(options.modelPath)) {
      throw new ShardlineError('MODEL', `model not found: ${options.modelPath}`);
    }
    const { entry, swcCorePath } = workerEntry();
    const executionProviders = options.executionProviders ?? ['cpu'];
    const data: EngineWorkerData = {
      entry,
      swcCorePath,
      modelPath: options.modelPath,
      ...(options.layers ? { layers: options.layers } : {}),
      dtype: options.dtype ?? 'float16',
      session: {
        executionProviders,
        ...(options.intraOpNumThreads !== undefined
          ? { intraOpNumThreads: options.intraOpNumThreads }
          : {}),
        ...(options.interOpNumThreads !== undefined
          ? { interOpNumThreads: options.interOpNumThreads }
          : {}),
        ...(options.padTokenId !== undefined ? { padTokenId: options.padTokenId } : {}),
      },
      warmup: options.warmup ?? true,
    };
    const worker = swcCorePath
      ? new Worker(TS_BOOTSTRAP, { eval: true, workerData: data })
      : new Worker(entry, { workerData: data });

    const ready = await new Promise<Extract<FromWorker, { type: 'ready' }>>((resolve, reject) => {
      const onMessage = (msg: FromWorker): void => {
        if (msg.type === 'ready') {
          cleanup();
          resolve(msg);
        } else if (msg.type === 'init-error') {
          cleanup();
          reject(fromWire(msg.error, 'MODEL'));
        }
      };
      const onError = (e: Error): void => {
        cleanup();
        reject(
          new ShardlineError('MODEL', `extraction thread failed to start: ${e.message}`, {
            cause: e,
          }),
        );
      };
      const onExit = (code: number): void => {
        cleanup();
        reject(new ShardlineError('MODEL', `extraction thread exited during start (code ${code})`));
      };
      const cleanup = (): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    }).catch(async (e: unknown) => {
      await worker.terminate();
      throw e;
    });

    const m = ready.model;
    const info: EngineInfo = {
      backend: 'onnx',
      modelPath: m.sourcePath,
      modelSha256: m.modelSha256,
      preparedModelPath: m.preparedPath,
      reusedPreparedModel: ready.reused,
      residualMethod: m.method,
      numLayers: m.numLayers,
      layers: m.layers,
      hiddenSize: ready.hiddenSize,
      dtype: m.dtype,
      executionProviders,
      loadMs: Math.round(ready.loadMs),
    };
    logger.info('extraction model loaded', {
      model: info.modelPath,
      prepared: info.preparedModelPath,
      reused: info.reusedPreparedModel,
      method: info.residualMethod,
      layers: info.layers,
      hidden_size: info.hiddenSize,
      dtype: info.dtype,
      load_ms: info.loadMs,
    });
    return new ExtractionEngine(worker, info, logger);
  }

  /**
   * Runs one batch: the sequences are right-padded to the longest and run together. Returns
   * per layer the real tokens' rows, packed in sequence order. Batches are queued and run one
   * at a time. Fails with `MODEL` (run failed, thread died) or `INVALID_ARGUMENT`.
   */
  extract(
    sequences: ReadonlyArray<ArrayLike<number>>,
    positions?: ReadonlyArray<ArrayLike<number>>,
  ): Promise<ExtractedBatch> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new ShardlineError('INTERNAL', 'engine is closed'));
    const lengths = Int32Array.from(sequences, (s) => s.length);
    const tokens = new Int32Array(lengths.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const s of sequences) {
      for (let k = 0; k < s.length; k++) {
        const v = s[k]!;
        if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
          return Promise.reject(
            new ShardlineError('INVALID_ARGUMENT', `token id ${v} is not a non-negative int32`),
          );
        }
        tokens[at++] = v;
      }
    }
    let wirePositions: Int32Array | null = null;
    let positionCounts: Int32Array | null = null;
    if (positions) {
      try {
        checkPositions(positions, [...lengths]);
      } catch (err: unknown) {
        return Promise.reject(toError(err));
      }
      positionCounts = Int32Array.from(positions, (p) => p.length);
      wirePositions = new Int32Array(positionCounts.reduce((a, b) => a + b, 0));
      let p = 0;
      for (const list of positions)
        for (let k = 0; k < list.length; k++) wirePositions[p++] = list[k]!;
    }
    const id = this.nextId++;
    return new Promise<ExtractedBatch>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const msg: ToWorker = {
        type: 'run',
        id,
        tokens,
        lengths,
        positions: wirePositions,
        positionCounts,
      };
      const transfer: ArrayBuffer[] = [tokens.buffer, lengths.buffer];
      if (wirePositions && positionCounts)
        transfer.push(wirePositions.buffer as ArrayBuffer, positionCounts.buffer as ArrayBuffer);
      this.worker.postMessage(msg, transfer);
    });
  }

  /**
   * Stops the worker thread after the batches already queued; idempotent. A thread that does
   * not exit within `CLOSE_GRACE_MS` is terminated.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      if (!this.failure) {
        let timer: NodeJS.Timeout | undefined;
        const exited = new Promise<void>((resolve) => {
          this.worker.once('exit', () => resolve());
          timer = setTimeout(resolve, CLOSE_GRACE_MS);
        });
        const msg: ToWorker = { type: 'close' };
        this.worker.postMessage(msg);
        await exited;
        clearTimeout(timer);
      }
      await this.worker.terminate();
    })();
    return this.closing;
  }

  private onMessage(msg: FromWorker): void {
    if (msg.type === 'result') {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      const { buffers, views } = msg.rows;
      p?.resolve({
        dtype: this.info.dtype,
        hiddenSize: msg.hiddenSize,
        layers: [...this.info.layers],
        rowCounts: msg.rowCounts,
        // Views over the transferred buffers (no copy), made with this realm's constructors
        // so `instanceof` works for callers in another realm than the deserializer's (jest).
        rows: views.map((layer) =>
          layer.map(([b, offset, length]) =>
            this.info.dtype === 'float16'
              ? new Uint16Array(buffers[b]!, offset * 2, length)
              : new Float32Array(buffers[b]!, offset * 4, length),
          ),
        ),
      });
    } else if (msg.type === 'run-error') {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      p?.reject(fromWire(msg.error, 'MODEL'));
    }
  }

  private fail(e: ShardlineError): void {
    if (this.failure) return;
    this.failure = e;
    this.logger.error('extraction thread failed', { error: e });
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}
