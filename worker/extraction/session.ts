/**
 * One onnxruntime-node session over a prepared model: builds the feeds for a batch (right
 * padding, attention mask, position ids 0..n-1, empty past key/values), runs, and keeps only
 * the rows of real tokens.
 *
 * Right padding is exact: with a causal mask no real token attends to a later pad, so a
 * padded batch gives the same activations as each sequence alone (docs/notes/onnx.md §1, pitfall 8).
 *
 * `run()` blocks the calling thread for the whole forward pass (the binding's native run is
 * synchronous), so in a worker process this class lives on a worker thread (`engine.ts`).
 */
import * as ort from 'onnxruntime-node';

import { ShardlineError, toError } from '../../core/errors';
import type { ExtractedBatch, Rows } from './activations';
import type { PreparedModel } from './prepare-model';

/** Session settings. */
export interface SessionSettings {
  /**
   * Execution providers in order, e.g. `['cuda', 'cpu']` when the installation has CUDA.
   * Default `['cpu']`. Note: onnxruntime does not fall back when a provider fails to load
   * (`['webgpu', 'cpu']` throws on a machine without Vulkan).
   */
  executionProviders?: string[];
  /** Threads inside one operator. Default: onnxruntime's (all cores). */
  intraOpNumThreads?: number;
  /** Threads across operators (only with parallel execution). Default: onnxruntime's. */
  interOpNumThreads?: number;
  /** Token id written into padding positions (never attended to). Default 0. */
  padTokenId?: number;
}

/** Refuses positions that are not ascending, unique and inside their sequence. */
export function checkPositions(
  positions: ReadonlyArray<ArrayLike<number>>,
  lengths: readonly number[],
): void {
  if (positions.length !== lengths.length)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${positions.length} position lists for ${lengths.length} sequences`,
    );
  positions.forEach((p, k) => {
    for (let i = 0; i < p.length; i++) {
      const v = p[i]!;
      if (!Number.isInteger(v) || v < 0 || v >= lengths[k]! || (i > 0 && v <= p[i - 1]!))
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `position ${v} of sequence ${k} is not ascending within its ${lengths[k]} tokens`,
        );
    }
  });
}

function modelError(message: string, cause?: unknown): ShardlineError {
  return new ShardlineError('MODEL', message, cause === undefined ? {} : { cause });
}

/** A session and the knowledge to feed it. */
export class ExtractionSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** The prepared model this session runs. */
    readonly model: PreparedModel,
    private readonly padTokenId: number,
  ) {}

  /** Loads the prepared model. Fails with `MODEL` (bad file, unavailable provider). */
  static async create(
    model: PreparedModel,
    settings: SessionSettings = {},
  ): Promise<ExtractionSession> {
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: settings.executionProviders ?? ['cpu'],
      graphOptimizationLevel: 'all',
      // Errors reach the caller as exceptions carrying onnxruntime's message; its own log
      // lines would only repeat them on stderr.
      logSeverityLevel: 4,
      ...(settings.intraOpNumThreads !== undefined
        ? { intraOpNumThreads: settings.intraOpNumThreads }
        : {}),
      ...(settings.interOpNumThreads !== undefined
        ? { interOpNumThreads: settings.interOpNumThreads }
        : {}),
    };
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(model.preparedPath, options);
    } catch (e: unknown) {
      throw modelError(
        `onnxruntime cannot load ${model.preparedPath} with providers ` +
          `[${(settings.executionProviders ?? ['cpu']).join(', ')}]: ${toError(e).message}`,
        e,
      );
    }
    return new ExtractionSession(session, model, settings.padTokenId ?? 0);
  }

  /**
   * Runs one batch of token-id sequences (each non-empty) and returns, per layer and sequence,
   * the rows of the real tokens, or only those at `positions[k]` (ascending, within the
   * sequence) when given. With every row asked for, the rows are views into onnxruntime's
   * output (no copy); chosen positions are copied out (a few rows). Fails with
   * `INVALID_ARGUMENT` on an empty sequence or a position outside it, `MODEL` when onnxruntime
   * fails (e.g. a token id outside the vocabulary).
   */
  async run(
    sequences: ReadonlyArray<ArrayLike<number>>,
    positions?: ReadonlyArray<ArrayLike<number>>,
  ): Promise<ExtractedBatch> {
    const B = sequences.length;
    const { layers, dtype, outputNames } = this.model;
    if (B === 0) {
      return {
        dtype,
        hiddenSize: this.model.hiddenSize ?? 0,
        layers: [...layers],
        rowCounts: [],
        rows: layers.map(() => []),
      };
    }
    const lengths = sequences.map((s) => s.length);
    if (lengths.some((n) => n === 0)) {
      throw new ShardlineError('INVALID_ARGUMENT', 'a sequence has no tokens');
    }
    if (positions) checkPositions(positions, lengths);
    const S = Math.max(...lengths);
    const ids = new BigInt64Array(B * S).fill(BigInt(this.padTokenId));
    const mask = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    sequences.forEach((seq, b) => {
      for (let k = 0; k < S; k++) {
        const at = b * S + k;
        if (k < seq.length) {
          ids[at] = BigInt(seq[k]!);
          mask[at] = 1n;
        }
        pos[at] = BigInt(k);
      }
    });
    const feeds: Record<string, ort.Tensor> = {};
    const inputs = new Set(this.model.inputNames);
    feeds['input_ids'] = new ort.Tensor('int64', ids, [B, S]);
    if (inputs.has('attention_mask'))
      feeds['attention_mask'] = new ort.Tensor('int64', mask, [B, S]);
    if (inputs.has('position_ids')) feeds['position_ids'] = new ort.Tensor('int64', pos, [B, S]);
    for (const p of this.model.pastInputs) {
      feeds[p.name] =
        p.elemType === 'float32'
          ? new ort.Tensor('float32', new Float32Array(0), [B, p.kvHeads, 0, p.headDim])
          : new ort.Tensor('float16', new Uint16Array(0), [B, p.kvHeads, 0, p.headDim]);
    }

    let results: ort.InferenceSession.ReturnType;
    try {
      results = await this.session.run(feeds, outputNames);
    } catch (e: unknown) {
      throw modelError(`onnxruntime run failed (batch ${B}x${S}): ${toError(e).message}`, e);
    }

    let hidden = 0;
    const rows = outputNames.map((name): Rows[] => {
      const t = results[name];
      if (!t) throw modelError(`onnxruntime returned no ${name}`);
      const [tb, ts, th] = t.dims as [number, number, number];
      if (t.dims.length !== 3 || tb !== B || ts !== S) {
        throw modelError(`${name} has shape [${t.dims.join(', ')}], expected [${B}, ${S}, hidden]`);
      }
      hidden = th;
      const data = t.data;
      const ok = dtype === 'float16' ? data instanceof Uint16Array : data instanceof Float32Array;
      if (!ok) throw modelError(`${name} came back as ${t.type}, expected ${dtype}`);
      const all = data as Rows;
      // Sequence b's real rows are contiguous: [b*S, b*S + length) of the padded output.
      return lengths.map((len, b) => {
        const seq = all.subarray(b * S * th, (b * S + len) * th);
        const want = positions?.[b];
        if (!want) return seq;
        const out =
          dtype === 'float16'
            ? new Uint16Array(want.length * th)
            : new Float32Array(want.length * th);
        for (let r = 0; r < want.length; r++) {
          const p = want[r]!;
          out.set(seq.subarray(p * th, (p + 1) * th), r * th);
        }
        return out;
      });
    });
    return {
      dtype,
      hiddenSize: hidden,
      layers: [...layers],
      rowCounts: positions ? positions.map((p) => p.length) : lengths,
      rows,
    };
  }

  /** Releases the native session. */
  async release(): Promise<void> {
    await this.session.release();
  }
}
