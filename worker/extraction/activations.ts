/**
 * The activations of one model batch as an extractor hands them over: per layer, per
 * sequence, that sequence's rows (its real tokens, or the positions asked for), never padding.
 */

/** Element type of stored activations. fp16 (default) halves the bytes; fp32 on request. */
export type ActivationDtype = 'float16' | 'float32';

/** A layer's rows: fp16 bit patterns (`Uint16Array`) or fp32 values. */
export type Rows = Uint16Array | Float32Array;

/** Activations of one batch. */
export interface ExtractedBatch {
  /** Element type: `float16` arrays hold fp16 bit patterns (`Uint16Array`). */
  dtype: ActivationDtype;
  /** Width of a row (the model's hidden size). */
  hiddenSize: number;
  /** The layers, 0-based, in the order of `rows`. */
  layers: number[];
  /** Rows per sequence (its real tokens, or its chosen positions), in batch order. */
  rowCounts: number[];
  /**
   * `rows[l][k]`: layer `l`'s rows of sequence `k`, `[rowCounts[k], hiddenSize]` row-major.
   * Views into the extractor's output where it can (the ONNX engine's padded output, the
   * protocol's payload), so nothing is copied on the way to the part file.
   */
  rows: Rows[][];
}

/** The rows of layer `l` of every sequence of `batch`, packed in sequence order (a copy). */
export function packedRows(batch: ExtractedBatch, l: number): Rows {
  const pieces = batch.rows[l] ?? [];
  const n = pieces.reduce((a, p) => a + p.length, 0);
  const out = batch.dtype === 'float16' ? new Uint16Array(n) : new Float32Array(n);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The hook point recorded in every part: the residual stream after a decoder layer. */
export const HOOK_POINT = 'resid_post';

/** Name of a layer's tensor in graphs and parts: `resid_post.{layer}`. */
export function residTensorName(layer: number): string {
  return `${HOOK_POINT}.${layer}`;
}
