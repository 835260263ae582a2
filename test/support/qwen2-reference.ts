/**
 * An independent Qwen2 forward pass in plain TypeScript, float64 throughout, no ONNX: the
 * reference the extracted residual streams are checked against. It reads the synthetic
 * model's weights in Hugging Face layout (`qwen2Weight`, `[out, in]` linear weights) and
 * follows transformers' `Qwen2DecoderLayer` (RMSNorm, q/k/v with bias, rotate-half RoPE,
 * grouped KV heads, causal softmax attention, o_proj, SwiGLU MLP, two residual adds). One
 * sequence at a time, no padding: the engine's batching and padding are what is under test.
 */
import { qwen2Weight, qwen2WeightShapes } from '../../synthetic/qwen2';
import type { Qwen2Shape } from '../../synthetic/qwen2';

/** Weights as float64, by Hugging Face name. */
export type ReferenceWeights = Map<string, Float64Array>;

/** Loads every weight of a synthetic model (same `seed`) as float64. */
export function referenceWeights(shape: Qwen2Shape, seed: number | string = 0): ReferenceWeights {
  const out: ReferenceWeights = new Map();
  for (const [name, dims] of qwen2WeightShapes(shape, false)) {
    out.set(name, Float64Array.from(qwen2Weight(name, dims, seed)));
  }
  return out;
}

/** Options that deliberately break the reference (to show a test would catch the bug). */
export interface ReferenceFaults {
  /** Let every token attend to the whole sequence (a broken causal or padding mask). */
  attendToFuture?: boolean;
}

/** y[n, out] = x[n, in] · W[out, in]^T (+ b). */
function linear(
  x: Float64Array,
  n: number,
  inDim: number,
  w: Float64Array,
  outDim: number,
  b?: Float64Array,
): Float64Array {
  const y = new Float64Array(n * outDim);
  for (let t = 0; t < n; t++) {
    const xo = t * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let acc = b ? b[o]! : 0;
      for (let i = 0; i < inDim; i++) acc += x[xo + i]! * w[wo + i]!;
      y[t * outDim + o] = acc;
    }
  }
  return y;
}

function rmsnorm(
  x: Float64Array,
  n: number,
  H: number,
  w: Float64Array,
  eps: number,
): Float64Array {
  const y = new Float64Array(n * H);
  for (let t = 0; t < n; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[t * H + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) y[t * H + i] = w[i]! * (x[t * H + i]! * inv);
  }
  return y;
}

/** Applies rotate-half RoPE in place to `[n, heads*D]`. */
function rope(x: Float64Array, n: number, heads: number, D: number, theta: number): void {
  const half = D / 2;
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      const base = t * heads * D + h * D;
      for (let j = 0; j < half; j++) {
        const angle = t * theta ** ((-2 * j) / D);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = x[base + j]!;
        const b = x[base + j + half]!;
        x[base + j] = a * c - b * s;
        x[base + j + half] = b * c + a * s;
      }
    }
  }
}

/**
 * The residual stream after every layer for one token sequence: `out[layer]` is
 * `[n_tokens, hidden]` row-major, float64.
 */
export function referenceResiduals(
  shape: Qwen2Shape,
  weights: ReferenceWeights,
  tokens: ArrayLike<number>,
  faults: ReferenceFaults = {},
): Float64Array[] {
  const H = shape.hiddenSize;
  const heads = shape.numHeads;
  const kvHeads = shape.numKvHeads;
  const D = H / heads;
  const G = heads / kvHeads;
  const I = shape.intermediateSize;
  const eps = shape.rmsNormEps ?? 1e-6;
  const theta = shape.ropeTheta ?? 1e6;
  const n = tokens.length;
  const w = (name: string): Float64Array => {
    const t = weights.get(name);
    if (!t) throw new Error(`no weight ${name}`);
    return t;
  };

  const embed = w('model.embed_tokens.weight');
  let h = new Float64Array(n * H);
  for (let t = 0; t < n; t++) h.set(embed.subarray(tokens[t]! * H, tokens[t]! * H + H), t * H);

  const out: Float64Array[] = [];
  for (let l = 0; l < shape.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const x = rmsnorm(h, n, H, w(`${p}input_layernorm.weight`), eps);
    const q = linear(
      x,
      n,
      H,
      w(`${p}self_attn.q_proj.weight`),
      heads * D,
      w(`${p}self_attn.q_proj.bias`),
    );
    const k = linear(
      x,
      n,
      H,
      w(`${p}self_attn.k_proj.weight`),
      kvHeads * D,
      w(`${p}self_attn.k_proj.bias`),
    );
    const v = linear(
      x,
      n,
      H,
      w(`${p}self_attn.v_proj.weight`),
      kvHeads * D,
      w(`${p}self_attn.v_proj.bias`),
    );
    rope(q, n, heads, D, theta);
    rope(k, n, kvHeads, D, theta);

    const ctx = new Float64Array(n * heads * D);
    const scores = new Float64Array(n);
    for (let hq = 0; hq < heads; hq++) {
      const hk = Math.floor(hq / G);
      for (let i = 0; i < n; i++) {
        const last = faults.attendToFuture ? n - 1 : i;
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++)
            dot += q[i * heads * D + hq * D + d]! * k[j * kvHeads * D + hk * D + d]!;
          scores[j] = dot / Math.sqrt(D);
          max = Math.max(max, scores[j]!);
        }
        let sum = 0;
        for (let j = 0; j <= last; j++) {
          scores[j] = Math.exp(scores[j]! - max);
          sum += scores[j]!;
        }
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j <= last; j++) acc += scores[j]! * v[j * kvHeads * D + hk * D + d]!;
          ctx[i * heads * D + hq * D + d] = acc / sum;
        }
      }
    }
    const attn = linear(ctx, n, heads * D, w(`${p}self_attn.o_proj.weight`), H);
    const mid = new Float64Array(n * H);
    for (let i = 0; i < n * H; i++) mid[i] = h[i]! + attn[i]!;

    const x2 = rmsnorm(mid, n, H, w(`${p}post_attention_layernorm.weight`), eps);
    const gate = linear(x2, n, H, w(`${p}mlp.gate_proj.weight`), I);
    const up = linear(x2, n, H, w(`${p}mlp.up_proj.weight`), I);
    for (let i = 0; i < n * I; i++) gate[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
    const mlp = linear(gate, n, I, w(`${p}mlp.down_proj.weight`), H);
    h = new Float64Array(n * H);
    for (let i = 0; i < n * H; i++) h[i] = mid[i]! + mlp[i]!;
    out.push(h);
  }
  return out;
}
