/**
 * Messages between `ExtractionEngine` (the thread that renews the lease) and its worker
 * thread (which owns the onnxruntime session). Token ids and activations cross as transferred
 * `ArrayBuffer`s, never copied.
 */
import type { ActivationDtype } from './activations';
import type { PreparedModel } from './prepare-model';
import type { SessionSettings } from './session';

/** What the worker thread starts with (`workerData`). */
export interface EngineWorkerData {
  /** The module to run in the worker (this package's `engine-worker`). */
  entry: string;
  /** `@swc/core` when running from TypeScript sources (tests), else null. */
  swcCorePath: string | null;
  /** The model to prepare and load. */
  modelPath: string;
  /** Layers to expose; undefined for all. */
  layers?: number[];
  /** Output element type. */
  dtype: ActivationDtype;
  /** Session settings. */
  session: SessionSettings;
  /** Run one tiny batch after loading (finds the hidden size, warms caches). */
  warmup: boolean;
}

/** An error as it crosses the thread boundary. */
export interface WireError {
  /** Our error code when there is one. */
  code: string | undefined;
  /** Message. */
  message: string;
  /** Stack of the worker-side error. */
  stack: string | undefined;
}

/** Main → worker. `positions`/`positionCounts` only when some rows are asked for. */
export type ToWorker =
  | {
      type: 'run';
      id: number;
      tokens: Int32Array;
      lengths: Int32Array;
      positions: Int32Array | null;
      positionCounts: Int32Array | null;
    }
  | { type: 'close' };

/**
 * A batch's rows as they cross the thread boundary: the output buffers, transferred (not
 * copied), and where each (layer, sequence)'s rows lie in them: `[buffer, element offset,
 * elements]`.
 */
export interface WireRows {
  buffers: ArrayBuffer[];
  views: Array<Array<[number, number, number]>>;
}

/** Worker → main. */
export type FromWorker =
  | { type: 'ready'; model: PreparedModel; reused: boolean; hiddenSize: number; loadMs: number }
  | { type: 'init-error'; error: WireError }
  | {
      type: 'result';
      id: number;
      rowCounts: number[];
      hiddenSize: number;
      rows: WireRows;
      runMs: number;
    }
  | { type: 'run-error'; id: number; error: WireError }
  | { type: 'closed' };
