/**
 * The engine's worker thread: prepares the model (graph surgery, cached), loads it in
 * onnxruntime, and runs batches on request, one at a time, posting activations back as
 * transferred buffers. Started by `ExtractionEngine.open`; not an entry point of its own.
 */
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';

import { errorCode, toError } from '../../core/errors';
import type { Rows } from './activations';
import type {
  EngineWorkerData,
  FromWorker,
  ToWorker,
  WireError,
  WireRows,
} from './engine-protocol';
import { prepareModel } from './prepare-model';
import { ExtractionSession } from './session';

/** `flat` cut into consecutive pieces of `counts` elements (views, no copy). */
function split(flat: Int32Array, counts: Int32Array): Int32Array[] {
  const out: Int32Array[] = [];
  let at = 0;
  for (const n of counts) {
    out.push(flat.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** The rows' buffers, each once, and where every view lies in them. */
function toWire(rows: Rows[][]): WireRows {
  const buffers: ArrayBuffer[] = [];
  const index = new Map<ArrayBufferLike, number>();
  const views = rows.map((layer) =>
    layer.map((v): [number, number, number] => {
      let i = index.get(v.buffer);
      if (i === undefined) {
        i = buffers.push(v.buffer as ArrayBuffer) - 1;
        index.set(v.buffer, i);
      }
      return [i, v.byteOffset / v.BYTES_PER_ELEMENT, v.length];
    }),
  );
  return { buffers, views };
}

function wire(e: unknown): WireError {
  const err = toError(e);
  return { code: errorCode(e), message: err.message, stack: err.stack };
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) return;
  const data = workerData as EngineWorkerData;
  const post = (msg: FromWorker, transfer: ArrayBuffer[] = []): void =>
    port.postMessage(msg, transfer);

  let session: ExtractionSession;
  let hiddenSize: number;
  let reused: boolean;
  const started = performance.now();
  try {
    const prepared = prepareModel({
      modelPath: data.modelPath,
      dtype: data.dtype,
      ...(data.layers ? { layers: data.layers } : {}),
    });
    reused = prepared.reused;
    session = await ExtractionSession.create(prepared.model, data.session);
    hiddenSize = prepared.model.hiddenSize ?? 0;
    if (data.warmup || hiddenSize === 0) {
      const probe = await session.run([[data.session.padTokenId ?? 0]]);
      hiddenSize = probe.hiddenSize;
    }
  } catch (e: unknown) {
    post({ type: 'init-error', error: wire(e) });
    return;
  }
  post({
    type: 'ready',
    model: session.model,
    reused,
    hiddenSize,
    loadMs: performance.now() - started,
  });

  // Messages are handled strictly one after another: a run blocks this thread anyway.
  let queue = Promise.resolve();
  port.on('message', (msg: ToWorker) => {
    queue = queue.then(async () => {
      if (msg.type === 'close') {
        await session.release().catch(() => undefined);
        post({ type: 'closed' });
        port.close();
        return;
      }
      const t0 = performance.now();
      try {
        const sequences = split(msg.tokens, msg.lengths);
        const positions =
          msg.positions && msg.positionCounts
            ? split(msg.positions, msg.positionCounts)
            : undefined;
        const batch = await session.run(sequences, positions);
        const rows = toWire(batch.rows);
        post(
          {
            type: 'result',
            id: msg.id,
            rowCounts: batch.rowCounts,
            hiddenSize: batch.hiddenSize,
            rows,
            runMs: performance.now() - t0,
          },
          rows.buffers,
        );
      } catch (e: unknown) {
        post({ type: 'run-error', id: msg.id, error: wire(e) });
      }
    });
  });
}

void main();
