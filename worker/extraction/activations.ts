/**
 * The activations of one model batch as the engine hands them over: per layer, the rows of
 * the real (non-padding) tokens of every sequence, packed in sequence order.
 */

/** Element type of stored activations. fp16 (default) halves the bytes; fp32 on request. */
export type ActivationDtype = 'float16' | 'float32';

/** Activations of one batch. */
export interface ExtractedBatch {
  /** Element type: `float16` arrays hold fp16 bit patterns (`Uint16Array`). */
  dtype: ActivationDtype;
  /** Width of a row (the model's hidden size). */
  hiddenSize: number;
  /** The layers, 0-based, in the order of `activations`. */
  layers: number[];
  /** Real tokens per sequence, in batch order. */
  tokenCounts: number[];
  /**
   * One array per layer: `[sum(tokenCounts), hiddenSize]` row-major; sequence k's rows start
   * at `sum(tokenCounts[0..k))`. Padding rows are never included.
   */
  activations: Array<Uint16Array | Float32Array>;
}

/** The hook point recorded in every part: the residual stream after a decoder layer. */
export const HOOK_POINT = 'resid_post';

/** Name of a layer's tensor in graphs and parts: `resid_post.{layer}`. */
export function residTensorName(layer: number): string {
  return `${HOOK_POINT}.${layer}`;
}
