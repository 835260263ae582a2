/**
 * Graph surgery on a decoder LM's ONNX graph: find the residual stream after each layer,
 * expose the requested layers as outputs (cast to fp16 or fp32 in the graph), and prune
 * everything else (logits / lm head, `present.*`, layers past the last one requested).
 * Pruning matters: onnxruntime computes every node whatever is fetched, and the lm head alone
 * cost ≈25 % of a Qwen2.5-0.5B forward pass (docs/notes/onnx.md §3, §6).
 *
 * Finding the residual stream, in order of preference:
 * 1. `optimum`: torch.onnx / optimum names; the second residual add of layer i is the `Add`
 *    node `…/layers.{i}/Add_1` (prefix-tolerant: `/model/`, `/model/model/`,
 *    `/language_model/model/`).
 * 2. `genai`: the onnxruntime-genai builder fuses residual adds into com.microsoft
 *    `SkipSimplifiedLayerNormalization` nodes; the stream after layer i is `output[3]` of
 *    `…/layers.{i+1}/input_layernorm/SkipLayerNorm`, and after the last layer of
 *    `…/layers.{N}/final_norm_layernorm/SkipLayerNorm`, whose output 3 is not emitted: it is
 *    added.
 * 3. `structural`: walk the residual chain from the token-embedding `Gather` (fed by
 *    `input_ids`): each residual tensor feeds exactly one `Add` (or Skip*Normalization) that
 *    produces the next; two steps per layer.
 * Every method must find exactly `num_hidden_layers` tensors when that is known.
 */
import { onnx } from 'onnx-proto';

import { ShardlineError } from '../../core/errors';
import type { ActivationDtype } from './activations';
import { residTensorName } from './activations';

/** How the residual stream was found. */
export type ResidualMethod = 'optimum' | 'genai' | 'structural';

/** The residual stream of a graph: tensor `tensors[i]` is the stream after layer `i`. */
export interface ResidualStream {
  /** How it was found. */
  method: ResidualMethod;
  /** One tensor name per layer, layer 0 first. */
  tensors: string[];
}

const SKIP_NORMS = new Set(['SkipSimplifiedLayerNormalization', 'SkipLayerNormalization']);

function modelError(message: string, details: Record<string, unknown> = {}): ShardlineError {
  return new ShardlineError('MODEL', message, { details });
}

/** Pads a node's outputs to include output 3 (the residual sum) and returns its name. */
function ensureOutput3(node: onnx.INodeProto): string {
  const outs = [...(node.output ?? [])];
  while (outs.length < 4) outs.push('');
  if (!outs[3]) outs[3] = `${node.name || 'skip_norm'}/output_3`;
  node.output = outs;
  return outs[3];
}

function byOptimumNames(nodes: onnx.INodeProto[]): string[] | null {
  const groups = new Map<string, Map<number, string>>();
  for (const n of nodes) {
    const m = /^(.*?)layers\.(\d+)\/Add_1$/.exec(n.name ?? '');
    if (!m || n.opType !== 'Add' || (n.domain ?? '') !== '' || !n.output?.[0]) continue;
    const prefix = m[1]!;
    if (prefix !== '' && !prefix.endsWith('/')) continue;
    let g = groups.get(prefix);
    if (!g) groups.set(prefix, (g = new Map<number, string>()));
    g.set(Number(m[2]), n.output[0]);
  }
  return pickContiguous([...groups.values()]);
}

function byGenaiNames(nodes: onnx.INodeProto[]): string[] | null {
  const groups = new Map<string, Map<number, onnx.INodeProto>>();
  for (const n of nodes) {
    const m = /^(.*?)layers\.(\d+)\/(input_layernorm|final_norm_layernorm)\/SkipLayerNorm$/.exec(
      n.name ?? '',
    );
    if (!m || !SKIP_NORMS.has(n.opType ?? '')) continue;
    let g = groups.get(m[1]!);
    if (!g) groups.set(m[1]!, (g = new Map<number, onnx.INodeProto>()));
    // Layer k's input norm holds the stream after layer k-1.
    g.set(Number(m[2]) - 1, n);
  }
  let best: Map<number, onnx.INodeProto> | null = null;
  for (const g of groups.values()) {
    if (isContiguous([...g.keys()]) && (!best || g.size > best.size)) best = g;
  }
  if (!best) return null;
  return [...best.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => ensureOutput3(n));
}

function isContiguous(keys: number[]): boolean {
  const sorted = [...keys].sort((a, b) => a - b);
  return sorted.length > 0 && sorted.every((k, i) => k === i);
}

function pickContiguous(groups: Array<Map<number, string>>): string[] | null {
  let best: Map<number, string> | null = null;
  for (const g of groups) {
    if (isContiguous([...g.keys()]) && (!best || g.size > best.size)) best = g;
  }
  if (!best) return null;
  return [...best.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t);
}

function byStructure(graph: onnx.IGraphProto): string[] | null {
  const nodes = graph.node ?? [];
  const consumers = new Map<string, onnx.INodeProto[]>();
  for (const n of nodes) {
    for (const i of n.input ?? []) {
      if (!i) continue;
      let list = consumers.get(i);
      if (!list) consumers.set(i, (list = []));
      list.push(n);
    }
  }
  const embed = nodes.find((n) => n.opType === 'Gather' && n.input?.[1] === 'input_ids');
  let current = embed?.output?.[0];
  if (!current) return null;
  const chain: string[] = [];
  for (;;) {
    const next: onnx.INodeProto[] = consumers.get(current) ?? [];
    const adds = next.filter((n) => n.opType === 'Add' && (n.domain ?? '') === '');
    const skips = next.filter(
      (n) =>
        SKIP_NORMS.has(n.opType ?? '') && (n.input?.[0] === current || n.input?.[1] === current),
    );
    if (adds.length === 1 && skips.length === 0) current = adds[0]!.output![0]!;
    else if (skips.length === 1 && adds.length === 0) current = ensureOutput3(skips[0]!);
    else break;
    chain.push(current);
  }
  if (chain.length === 0 || chain.length % 2 !== 0) return null;
  return chain.filter((_, k) => k % 2 === 1);
}

/**
 * Finds the residual stream (see the module comment). With `expectedLayers` (from
 * `config.json`), a method must find exactly that many layers. May add output 3 to a genai
 * final-norm node. Fails with `MODEL` when no method works.
 */
export function findResidualStream(
  graph: onnx.IGraphProto,
  expectedLayers?: number,
): ResidualStream {
  const nodes = graph.node ?? [];
  if (nodes.some((n) => n.opType === 'If' || n.opType === 'Loop')) {
    throw modelError(
      'the model has If/Loop nodes (a legacy merged decoder, e.g. decoder_model_merged.onnx); ' +
        'export a single model.onnx (optimum >= 1.14 default) or use decoder_model.onnx',
    );
  }
  const ok = (t: string[] | null): boolean =>
    t !== null && (expectedLayers === undefined || t.length === expectedLayers);
  const optimum = byOptimumNames(nodes);
  if (optimum && ok(optimum)) return { method: 'optimum', tensors: optimum };
  const genai = byGenaiNames(nodes);
  if (genai && ok(genai)) return { method: 'genai', tensors: genai };
  const structural = byStructure(graph);
  if (structural && ok(structural)) return { method: 'structural', tensors: structural };
  throw modelError('cannot find the residual stream in the model graph', {
    expectedLayers,
    found: {
      optimum: optimum?.length ?? 0,
      genai: genai?.length ?? 0,
      structural: structural?.length ?? 0,
    },
  });
}

/** Options of `rewriteForExtraction`. */
export interface RewriteOptions {
  /** Layers to expose, 0-based; default all. */
  layers?: readonly number[];
  /** Element type of the exposed tensors. */
  dtype: ActivationDtype;
  /** `num_hidden_layers` when known (config.json): every method must agree with it. */
  expectedLayers?: number;
  /** Hidden size when known, for the outputs' declared shape. */
  hiddenSize?: number;
}

/** What `rewriteForExtraction` did. */
export interface RewriteResult {
  /** How the residual stream was found. */
  method: ResidualMethod;
  /** Layers in the model. */
  numLayers: number;
  /** Layers exposed, ascending. */
  layers: number[];
  /** Output names, in `layers` order (`resid_post.{layer}`). */
  outputNames: string[];
  /** Nodes before and after pruning. */
  nodes: { before: number; after: number };
  /** Initializers before and after pruning. */
  initializers: { before: number; after: number };
}

/**
 * Rewrites `model` in place: exposes `resid_post.{layer}` for each requested layer (through a
 * `Cast` to the requested type), makes those the only graph outputs, and removes every node,
 * initializer and input they do not depend on. `past_key_values.*` inputs of kept layers stay
 * (their Concat still reads them); feed them empty. Fails with `MODEL` or `INVALID_ARGUMENT`.
 */
export function rewriteForExtraction(
  model: onnx.IModelProto,
  options: RewriteOptions,
): RewriteResult {
  const graph = model.graph;
  if (!graph) throw modelError('the model has no graph');
  const stream = findResidualStream(graph, options.expectedLayers);
  const numLayers = stream.tensors.length;
  const layers = [...new Set(options.layers ?? stream.tensors.map((_, i) => i))].sort(
    (a, b) => a - b,
  );
  if (layers.length === 0) throw new ShardlineError('INVALID_ARGUMENT', 'no layers requested');
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= numLayers) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `layer ${l} does not exist: the model has layers 0-${numLayers - 1}`,
      );
    }
  }
  const before = { nodes: graph.node?.length ?? 0, inits: graph.initializer?.length ?? 0 };
  const elemType =
    options.dtype === 'float16'
      ? onnx.TensorProto.DataType.FLOAT16
      : onnx.TensorProto.DataType.FLOAT;
  const outputNames = layers.map((l) => residTensorName(l));
  const nodes = [...(graph.node ?? [])];
  layers.forEach((l, k) => {
    nodes.push({
      name: `/shardline/${outputNames[k]}/Cast`,
      opType: 'Cast',
      input: [stream.tensors[l]!],
      output: [outputNames[k]!],
      attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: elemType }],
    });
  });
  graph.node = nodes;
  graph.output = outputNames.map((name) => ({
    name,
    type: {
      tensorType: {
        elemType,
        shape: {
          dim: [
            { dimParam: 'batch_size' },
            { dimParam: 'sequence_length' },
            options.hiddenSize ? { dimValue: options.hiddenSize } : { dimParam: 'hidden_size' },
          ],
        },
      },
    },
  }));
  prune(graph);
  return {
    method: stream.method,
    numLayers,
    layers,
    outputNames,
    nodes: { before: before.nodes, after: graph.node.length },
    initializers: { before: before.inits, after: graph.initializer?.length ?? 0 },
  };
}

/**
 * Keeps only what the graph outputs depend on: nodes (walking backwards over the
 * topologically ordered node list), initializers, inputs and value_info entries.
 */
export function prune(graph: onnx.IGraphProto): void {
  const needed = new Set((graph.output ?? []).map((o) => o.name ?? ''));
  const nodes = graph.node ?? [];
  const kept: onnx.INodeProto[] = [];
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if ((n.output ?? []).some((o) => o !== '' && needed.has(o))) {
      kept.push(n);
      for (const i of n.input ?? []) if (i) needed.add(i);
    }
  }
  graph.node = kept.reverse();
  graph.initializer = (graph.initializer ?? []).filter((t) => needed.has(t.name ?? ''));
  graph.input = (graph.input ?? []).filter((i) => needed.has(i.name ?? ''));
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => needed.has(v.name ?? ''));
}
