/**
 * A seeded, random, Qwen2-shaped decoder exported the way optimum exports Qwen2 to ONNX:
 * inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key/value`;
 * outputs `logits` (optional) and `present.{i}.key/value`; TorchScript-style node names
 * (`/model/layers.0/self_attn/q_proj/MatMul`, residual adds `/model/layers.{i}/Add` and
 * `/model/layers.{i}/Add_1`). RoPE attention with grouped KV heads, RMSNorm, SwiGLU MLP, qkv
 * bias. Any size, built in milliseconds (tiny) to ≈40 s (Qwen2.5-0.5B-shaped); no model
 * binary is ever committed (docs/notes/onnx.md §2). A `config.json` like Hugging Face's is written
 * beside it.
 *
 * Weights are drawn per tensor from `Prng.fromKey(seed, name)` in Hugging Face layout
 * (`[out, in]` for linear layers), so `qwen2Weight` reproduces any tensor without the file:
 * that is what the independent float64 reference in the tests runs on. MatMul initializers hold
 * the transpose (`[in, out]`), named `onnx::MatMul.<hf name>`.
 *
 * Variants, for testing the surgery: `lmHead: false` (no logits), `externalData` (weights in
 * `model.onnx_data`), `norms: 'fused'` (onnxruntime-genai builder style: residual adds fused into
 * com.microsoft `SkipSimplifiedLayerNormalization`, the residual stream in their `output_3`, the
 * last one not emitted), `anonymous` (no meaningful node names).
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';

import { ConfigError } from '../core/errors';
import { Prng } from '../core/random';
import type { TensorSource } from '../core/safetensors';
import { encodeSafetensorsHeader, safetensorsChunks, safetensorsSize } from '../core/safetensors';
import { ElemType, GraphBuilder, attr } from './graph-builder';

/** Shape of a Qwen2 model, in Hugging Face `config.json` terms. */
export interface Qwen2Shape {
  /** Vocabulary size. */
  vocabSize: number;
  /** Hidden (residual stream) width. */
  hiddenSize: number;
  /** Decoder layers. */
  numLayers: number;
  /** Query heads; `hiddenSize` must be divisible by it. */
  numHeads: number;
  /** Key/value heads; `numHeads` must be divisible by it. */
  numKvHeads: number;
  /** MLP width. */
  intermediateSize: number;
  /** RoPE base. Default 1e6 (Qwen2.5). */
  ropeTheta?: number;
  /** RMSNorm epsilon. Default 1e-6. */
  rmsNormEps?: number;
}

/** A tiny default shape for tests: vocab 1000, hidden 64, 2 layers, 4/2 heads, MLP 128. */
export const TINY_QWEN2: Qwen2Shape = {
  vocabSize: 1000,
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 128,
};

/**
 * The model `shardline demo` generates, and the work-unit bench runs: Qwen's real 151,936-token
 * vocabulary (so the real tokenizer works), tiny everywhere else (4 layers, hidden 64).
 */
export const DEMO_QWEN2: Qwen2Shape = {
  vocabSize: 151936,
  hiddenSize: 64,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 256,
};

/** Qwen2.5-0.5B's shape (with an untied lm head): for the benchmark. */
export const QWEN25_05B: Qwen2Shape = {
  vocabSize: 151936,
  hiddenSize: 896,
  numLayers: 24,
  numHeads: 14,
  numKvHeads: 2,
  intermediateSize: 4864,
};

/** Options of `generateQwen2Model`. */
export interface Qwen2ModelOptions {
  /** Folder to write into (created). Writes `model.onnx`, maybe `model.onnx_data`, `config.json`. */
  dir: string;
  /** Shape. */
  shape: Qwen2Shape;
  /** Weight seed. Default 0. */
  seed?: number | string;
  /** Include the lm head and `logits` output. Default true. */
  lmHead?: boolean;
  /** Write weights to `model.onnx_data` (external data). Default false. */
  externalData?: boolean;
  /** `decomposed` (torch export: Pow/ReduceMean/...) or `fused` (genai builder). Default decomposed. */
  norms?: 'decomposed' | 'fused';
  /** Rename all nodes and intermediate tensors to meaningless names. Default false. */
  anonymous?: boolean;
}

/** What `generateQwen2Model` wrote. */
export interface GeneratedModel {
  /** `DIR/model.onnx`. */
  modelPath: string;
  /** `DIR/model.onnx_data`, or null. */
  dataPath: string | null;
  /** `DIR/config.json`. */
  configPath: string;
  /** Bytes of `model.onnx` and of the data file. */
  modelBytes: number;
  /** Bytes of the external data file (0 without one). */
  dataBytes: number;
}

/** Resolved shape with defaults. */
function full(shape: Qwen2Shape): Required<Qwen2Shape> & { headDim: number } {
  const s = { ropeTheta: 1e6, rmsNormEps: 1e-6, ...shape };
  const positive = (name: string, v: number): void => {
    if (!Number.isSafeInteger(v) || v < 1)
      throw new ConfigError(`${name} must be a positive integer, got ${v}`);
  };
  positive('vocabSize', s.vocabSize);
  positive('hiddenSize', s.hiddenSize);
  positive('numLayers', s.numLayers);
  positive('numHeads', s.numHeads);
  positive('numKvHeads', s.numKvHeads);
  positive('intermediateSize', s.intermediateSize);
  if (s.hiddenSize % s.numHeads !== 0)
    throw new ConfigError('hiddenSize must be divisible by numHeads');
  if (s.numHeads % s.numKvHeads !== 0)
    throw new ConfigError('numHeads must be divisible by numKvHeads');
  const headDim = s.hiddenSize / s.numHeads;
  if (headDim % 2 !== 0) throw new ConfigError('head dim (hiddenSize / numHeads) must be even');
  return { ...s, headDim };
}

/** Hugging Face names and shapes (`[out, in]` for linear weights) of every weight. */
export function qwen2WeightShapes(shape: Qwen2Shape, lmHead = true): Map<string, number[]> {
  const s = full(shape);
  const H = s.hiddenSize;
  const q = s.numHeads * s.headDim;
  const kv = s.numKvHeads * s.headDim;
  const out = new Map<string, number[]>();
  out.set('model.embed_tokens.weight', [s.vocabSize, H]);
  for (let i = 0; i < s.numLayers; i++) {
    const p = `model.layers.${i}.`;
    out.set(`${p}input_layernorm.weight`, [H]);
    out.set(`${p}self_attn.q_proj.weight`, [q, H]);
    out.set(`${p}self_attn.q_proj.bias`, [q]);
    out.set(`${p}self_attn.k_proj.weight`, [kv, H]);
    out.set(`${p}self_attn.k_proj.bias`, [kv]);
    out.set(`${p}self_attn.v_proj.weight`, [kv, H]);
    out.set(`${p}self_attn.v_proj.bias`, [kv]);
    out.set(`${p}self_attn.o_proj.weight`, [H, q]);
    out.set(`${p}post_attention_layernorm.weight`, [H]);
    out.set(`${p}mlp.gate_proj.weight`, [s.intermediateSize, H]);
    out.set(`${p}mlp.up_proj.weight`, [s.intermediateSize, H]);
    out.set(`${p}mlp.down_proj.weight`, [H, s.intermediateSize]);
  }
  out.set('model.norm.weight', [H]);
  if (lmHead) out.set('lm_head.weight', [s.vocabSize, H]);
  return out;
}

/**
 * One weight in Hugging Face layout, drawn from (`seed`, `name`): linear weights uniform with
 * variance 1/fan_in (so every sublayer moves the residual stream by O(1) and a wrong mask or
 * rotary embedding shows up clearly), biases ±0.5, norm scales 1 ± 0.2, embeddings variance 1.
 */
export function qwen2Weight(
  name: string,
  dims: readonly number[],
  seed: number | string = 0,
): Float32Array {
  const n = dims.reduce((a, b) => a * b, 1);
  const rng = Prng.fromKey('shardline/synthetic-qwen2/v1', seed, name);
  const out = new Float32Array(n);
  if (name.endsWith('norm.weight')) {
    rng.fillUniform(out, 0.2);
    for (let i = 0; i < n; i++) out[i]! += 1;
    return out;
  }
  if (name.endsWith('.bias')) return rng.fillUniform(out, 0.5);
  if (name === 'model.embed_tokens.weight') return rng.fillUniform(out, Math.sqrt(3));
  const fanIn = dims[dims.length - 1]!;
  return rng.fillUniform(out, Math.sqrt(3 / fanIn));
}

/** The transpose of a row-major `[rows, cols]` matrix. */
function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(m.length);
  const B = 64;
  for (let r0 = 0; r0 < rows; r0 += B) {
    for (let c0 = 0; c0 < cols; c0 += B) {
      const r1 = Math.min(rows, r0 + B);
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) t[c * rows + r] = m[r * cols + c]!;
      }
    }
  }
  return t;
}

/** The Hugging Face `config.json` of a shape. */
export function qwen2Config(shape: Qwen2Shape, lmHead = true): Record<string, unknown> {
  const s = full(shape);
  return {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_act: 'silu',
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    num_hidden_layers: s.numLayers,
    num_attention_heads: s.numHeads,
    num_key_value_heads: s.numKvHeads,
    head_dim: s.headDim,
    vocab_size: s.vocabSize,
    rms_norm_eps: s.rmsNormEps,
    rope_theta: s.ropeTheta,
    max_position_embeddings: 32768,
    tie_word_embeddings: false,
    torch_dtype: 'float32',
    use_cache: true,
    shardline_synthetic: { lm_head: lmHead },
  };
}

/**
 * Writes a random Qwen2-shaped ONNX model and its `config.json` into `options.dir`.
 * Synchronous (it is CPU and disk work with nothing to overlap).
 */
export function generateQwen2Model(options: Qwen2ModelOptions): GeneratedModel {
  const s = full(options.shape);
  const seed = options.seed ?? 0;
  const lmHead = options.lmHead ?? true;
  const fused = (options.norms ?? 'decomposed') === 'fused';
  const H = s.hiddenSize;
  const D = s.headDim;
  const heads = s.numHeads;
  const kvHeads = s.numKvHeads;
  const groups = heads / kvHeads;
  const shapes = qwen2WeightShapes(s, lmHead);
  const g = new GraphBuilder();

  /** A weight as stored (Hugging Face layout). */
  const plain = (name: string): string =>
    g.initializer(name, shapes.get(name)!, ElemType.FLOAT, () =>
      qwen2Weight(name, shapes.get(name)!, seed),
    );
  /** A linear weight, transposed for MatMul. */
  const matmulWeight = (name: string): string => {
    const [out, inp] = shapes.get(name)! as [number, number];
    return g.initializer(`onnx::MatMul.${name}`, [inp, out], ElemType.FLOAT, () =>
      transpose(qwen2Weight(name, [out, inp], seed), out, inp),
    );
  };
  const linear = (scopeName: string, x: string, weight: string, bias?: string): string =>
    g.scope(scopeName, () => {
      const y = g.op1('MatMul', [x, matmulWeight(weight)]);
      return bias ? g.op1('Add', [plain(bias), y]) : y;
    });

  const batch = 'batch_size';
  const inputIds = g.input({
    name: 'input_ids',
    elemType: ElemType.INT64,
    dims: [batch, 'sequence_length'],
  });
  const attentionMask = g.input({
    name: 'attention_mask',
    elemType: ElemType.INT64,
    dims: [batch, 'total_sequence_length'],
  });
  const positionIds = g.input({
    name: 'position_ids',
    elemType: ElemType.INT64,
    dims: [batch, 'sequence_length'],
  });
  const past: Array<{ key: string; value: string }> = [];
  for (let i = 0; i < s.numLayers; i++) {
    const spec = (kind: string): string =>
      g.input({
        name: `past_key_values.${i}.${kind}`,
        elemType: ElemType.FLOAT,
        dims: [batch, kvHeads, 'past_sequence_length', D],
      });
    past.push({ key: spec('key'), value: spec('value') });
  }

  let normConsts: { one: string; two: string; eps: string } | null = null;
  const rmsnorm = (scopeName: string, x: string, weight: string): string =>
    g.scope(scopeName, () => {
      normConsts ??= {
        one: g.constF32([1], []),
        two: g.constF32([2], []),
        eps: g.constF32([s.rmsNormEps], []),
      };
      const { one, two, eps } = normConsts;
      const sq = g.op1('Pow', [x, two]);
      const mean = g.op1('ReduceMean', [sq], { axes: attr.ints([-1]), keepdims: attr.int(1) });
      const std = g.op1('Sqrt', [g.op1('Add', [mean, eps])]);
      const inv = g.op1('Div', [one, std]);
      return g.op1('Mul', [plain(weight), g.op1('Mul', [x, inv])]);
    });
  const epsAttr = { epsilon: attr.float(s.rmsNormEps) };
  /** genai-style fused `residual + delta` and its RMSNorm: returns [normed, residual sum]. */
  const skipNorm = (
    name: string,
    delta: string,
    residual: string,
    weight: string,
  ): [string, string] => {
    const outs = g.node(
      name,
      'SkipSimplifiedLayerNormalization',
      [delta, residual, plain(weight)],
      [`${name}/output_0`, '', '', `${name}/output_3`],
      epsAttr,
      'com.microsoft',
    );
    return [outs[0]!, outs[3]!];
  };

  let h = '';
  let finalNorm = '';
  let bias5 = '';
  let cos = '';
  let sin = '';
  g.scope('model', () => {
    h = g.scope('embed_tokens', () =>
      g.op1('Gather', [plain('model.embed_tokens.weight'), inputIds]),
    );

    // Additive attention mask [B,1,1,S,T]: causal (query i sees keys j <= i + past) and padding.
    g.scope('mask', () => {
      const idx1 = g.constI64([1], []);
      const zero = g.constI64([0], []);
      const step = g.constI64([1], []);
      const S = g.op1('Gather', [g.op1('Shape', [inputIds]), idx1], { axis: attr.int(0) });
      const T = g.op1('Gather', [g.op1('Shape', [attentionMask]), idx1], { axis: attr.int(0) });
      const offset = g.op1('Sub', [T, S]);
      const rows = g.op1('Add', [g.op1('Range', [zero, S, step]), offset]);
      const cols = g.op1('Range', [zero, T, step]);
      const causal = g.op1('LessOrEqual', [
        g.op1('Unsqueeze', [cols, g.constI64([0])]),
        g.op1('Unsqueeze', [rows, g.constI64([1])]),
      ]);
      const keep = g.op1('Unsqueeze', [
        g.op1('Cast', [attentionMask], { to: attr.int(ElemType.BOOL) }),
        g.constI64([1, 2]),
      ]);
      const allowed = g.op1('And', [causal, keep]);
      const bias = g.op1('Where', [allowed, g.constF32([0], []), g.constF32([-1e9], [])]);
      bias5 = g.op1('Unsqueeze', [bias, g.constI64([1])]);
    });

    // Rotary tables [B,1,S,D].
    g.scope('rotary_emb', () => {
      const invFreq = Array.from({ length: D / 2 }, (_, j) => 1 / s.ropeTheta ** ((2 * j) / D));
      const pos = g.op1('Unsqueeze', [
        g.op1('Cast', [positionIds], { to: attr.int(ElemType.FLOAT) }),
        g.constI64([-1]),
      ]);
      const freqs = g.op1('Mul', [pos, g.constF32(invFreq)]);
      const emb = g.op1('Concat', [freqs, freqs], { axis: attr.int(-1) });
      cos = g.op1('Unsqueeze', [g.op1('Cos', [emb]), g.constI64([1])]);
      sin = g.op1('Unsqueeze', [g.op1('Sin', [emb]), g.constI64([1])]);
    });

    const scale = g.constF32([1 / Math.sqrt(D)], []);
    const half = D / 2;
    const rotate = (x: string): string => {
      const lo = g.op1('Slice', [x, g.constI64([0]), g.constI64([half]), g.constI64([3])]);
      const hi = g.op1('Slice', [x, g.constI64([half]), g.constI64([D]), g.constI64([3])]);
      const rotated = g.op1('Concat', [g.op1('Neg', [hi]), lo], { axis: attr.int(-1) });
      return g.op1('Add', [g.op1('Mul', [x, cos]), g.op1('Mul', [rotated, sin])]);
    };
    const headsFirst = (x: string, n: number): string =>
      g.op1('Transpose', [g.op1('Reshape', [x, g.constI64([0, 0, n, D])])], {
        perm: attr.ints([0, 2, 1, 3]),
      });

    // In fused mode, `pendingDelta` is the sublayer output not yet added to `h`.
    let pendingDelta: string | null = null;
    for (let i = 0; i < s.numLayers; i++) {
      const p = `model.layers.${i}.`;
      g.scope(`layers.${i}`, () => {
        let normed: string;
        if (!fused) {
          normed = rmsnorm('input_layernorm', h, `${p}input_layernorm.weight`);
        } else if (pendingDelta === null) {
          const name = `/model/layers.${i}/input_layernorm/LayerNorm`;
          normed = g.node(
            name,
            'SimplifiedLayerNormalization',
            [h, plain(`${p}input_layernorm.weight`)],
            [`${name}/output_0`],
            { axis: attr.int(-1), ...epsAttr, stash_type: attr.int(1) },
          )[0]!;
        } else {
          [normed, h] = skipNorm(
            `/model/layers.${i}/input_layernorm/SkipLayerNorm`,
            pendingDelta,
            h,
            `${p}input_layernorm.weight`,
          );
        }

        const attnOut = g.scope('self_attn', () => {
          const q = headsFirst(
            linear('q_proj', normed, `${p}self_attn.q_proj.weight`, `${p}self_attn.q_proj.bias`),
            heads,
          );
          const k = headsFirst(
            linear('k_proj', normed, `${p}self_attn.k_proj.weight`, `${p}self_attn.k_proj.bias`),
            kvHeads,
          );
          const v = headsFirst(
            linear('v_proj', normed, `${p}self_attn.v_proj.weight`, `${p}self_attn.v_proj.bias`),
            kvHeads,
          );
          const qr = rotate(q);
          const kr = rotate(k);
          const K = g.op1('Concat', [past[i]!.key, kr], { axis: attr.int(2) });
          const V = g.op1('Concat', [past[i]!.value, v], { axis: attr.int(2) });
          g.op('Identity', [K], {}, { outputNames: [`present.${i}.key`] });
          g.op('Identity', [V], {}, { outputNames: [`present.${i}.value`] });
          // Grouped-query attention as a 5-D broadcast MatMul: [B,kv,G,S,D] x [B,kv,1,D,T].
          const q5 = g.op1('Reshape', [qr, g.constI64([0, kvHeads, groups, -1, D])]);
          const kT = g.op1('Transpose', [g.op1('Unsqueeze', [K, g.constI64([2])])], {
            perm: attr.ints([0, 1, 2, 4, 3]),
          });
          const scores = g.op1('Add', [g.op1('Mul', [g.op1('MatMul', [q5, kT]), scale]), bias5]);
          const probs = g.op1('Softmax', [scores], { axis: attr.int(-1) });
          const ctx5 = g.op1('MatMul', [probs, g.op1('Unsqueeze', [V, g.constI64([2])])]);
          const ctx = g.op1('Reshape', [
            g.op1('Transpose', [g.op1('Reshape', [ctx5, g.constI64([0, heads, -1, D])])], {
              perm: attr.ints([0, 2, 1, 3]),
            }),
            g.constI64([0, 0, heads * D]),
          ]);
          return linear('o_proj', ctx, `${p}self_attn.o_proj.weight`);
        });

        let normed2: string;
        if (!fused) {
          h = g.op1('Add', [h, attnOut]);
          normed2 = rmsnorm('post_attention_layernorm', h, `${p}post_attention_layernorm.weight`);
        } else {
          [normed2, h] = skipNorm(
            `/model/layers.${i}/post_attention_layernorm/SkipLayerNorm`,
            attnOut,
            h,
            `${p}post_attention_layernorm.weight`,
          );
        }

        const mlpOut = g.scope('mlp', () => {
          const gate = linear('gate_proj', normed2, `${p}mlp.gate_proj.weight`);
          const up = linear('up_proj', normed2, `${p}mlp.up_proj.weight`);
          const act = g.scope('act_fn', () => g.op1('Mul', [gate, g.op1('Sigmoid', [gate])]));
          return linear('down_proj', g.op1('Mul', [act, up]), `${p}mlp.down_proj.weight`);
        });
        if (!fused) h = g.op1('Add', [h, mlpOut]);
        else pendingDelta = mlpOut;
      });
    }

    let final: string;
    if (!fused) {
      final = rmsnorm('norm', h, 'model.norm.weight');
    } else {
      // genai's final norm: the residual sum (output 3) is not emitted.
      const name = `/model/layers.${s.numLayers}/final_norm_layernorm/SkipLayerNorm`;
      final = g.node(
        name,
        'SkipSimplifiedLayerNormalization',
        [pendingDelta!, h, plain('model.norm.weight')],
        [`${name}/output_0`],
        epsAttr,
        'com.microsoft',
      )[0]!;
    }
    if (lmHead) {
      g.scope('lm_head', () => {
        const [out, inp] = shapes.get('lm_head.weight')! as [number, number];
        const w = g.initializer('onnx::MatMul.lm_head.weight', [inp, out], ElemType.FLOAT, () =>
          transpose(qwen2Weight('lm_head.weight', [out, inp], seed), out, inp),
        );
        g.op('MatMul', [final, w], {}, { outputNames: ['logits'] });
      });
    }
    finalNorm = final;
  });

  if (lmHead) {
    g.output({
      name: 'logits',
      elemType: ElemType.FLOAT,
      dims: [batch, 'sequence_length', s.vocabSize],
    });
  }
  for (let i = 0; i < s.numLayers; i++) {
    for (const kind of ['key', 'value']) {
      g.output({
        name: `present.${i}.${kind}`,
        elemType: ElemType.FLOAT,
        dims: [batch, kvHeads, 'total_sequence_length', D],
      });
    }
  }
  if (!lmHead) {
    // Without a head the final norm would feed nothing; expose it, as optimum's head-less
    // export does (`last_hidden_state`).
    g.node('/model/norm/Identity', 'Identity', [finalNorm], ['last_hidden_state']);
    g.output({
      name: 'last_hidden_state',
      elemType: ElemType.FLOAT,
      dims: [batch, 'sequence_length', H],
    });
  }
  if (options.anonymous) g.anonymize();

  mkdirSync(options.dir, { recursive: true });
  const modelPath = path.join(options.dir, 'model.onnx');
  const dataFile = options.externalData ? 'model.onnx_data' : undefined;
  const { modelBytes, dataBytes } = g.save(modelPath, {
    ...(dataFile ? { externalDataFile: dataFile } : {}),
    opsets: fused ? { '': 17, 'com.microsoft': 1 } : { '': 17 },
  });
  const configPath = path.join(options.dir, 'config.json');
  writeFileSync(configPath, `${JSON.stringify(qwen2Config(s, lmHead), null, 2)}\n`);
  return {
    modelPath,
    dataPath: dataFile ? path.join(options.dir, dataFile) : null,
    configPath,
    modelBytes,
    dataBytes,
  };
}

/** What `writeHfCheckpoint` wrote. */
export interface HfCheckpoint {
  /** The folder: `config.json` and `model.safetensors`. */
  dir: string;
  /** Bytes of `model.safetensors`. */
  weightsBytes: number;
}

/**
 * Writes the same weights as `generateQwen2Model` (same shape and seed) as a Hugging Face
 * checkpoint folder: `config.json` and `model.safetensors` (float32, Hugging Face names and
 * `[out, in]` layout), which the JAX extractor (worker/jax) loads. The two backends then run
 * one model, and their activations can be compared.
 */
export function writeHfCheckpoint(
  dir: string,
  shape: Qwen2Shape,
  seed: number | string = 0,
  lmHead = true,
): HfCheckpoint {
  mkdirSync(dir, { recursive: true });
  const tensors: TensorSource[] = [...qwen2WeightShapes(shape, lmHead)].map(([name, dims]) => ({
    name,
    dtype: 'F32',
    shape: dims,
    pieces: [qwen2Weight(name, dims, seed)],
  }));
  const header = encodeSafetensorsHeader(tensors, { format: 'pt' });
  const file = path.join(dir, 'model.safetensors');
  const fd = openSync(file, 'w');
  try {
    for (const chunk of safetensorsChunks(header, tensors)) writeSync(fd, chunk);
  } finally {
    closeSync(fd);
  }
  writeFileSync(
    path.join(dir, 'config.json'),
    `${JSON.stringify(qwen2Config(shape, lmHead), null, 2)}\n`,
  );
  return { dir, weightsBytes: safetensorsSize(header, tensors) };
}
