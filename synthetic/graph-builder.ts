/**
 * A small ONNX graph builder over `onnx-proto`, naming nodes as the torch.onnx TorchScript
 * exporter (and so optimum) does: `/` + scope path + `/` + op type (+ `_k` for the k-th
 * repeat in a scope), outputs `<node>_output_0`. Initializers are produced lazily at save time,
 * so a multi-gigabyte model is streamed to its external data file one tensor at a time.
 */
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';

import { onnx } from 'onnx-proto';

/** ONNX element types used here (TensorProto.DataType). */
export const ElemType = {
  FLOAT: 1,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
} as const;

/** A typed attribute value (ONNX needs the type; JS numbers do not say int or float). */
export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'string'; value: string };

/** Attribute constructors. */
export const attr = {
  /** An INT attribute. */
  int: (value: number): Attr => ({ kind: 'int', value }),
  /** A FLOAT attribute. */
  float: (value: number): Attr => ({ kind: 'float', value }),
  /** An INTS attribute. */
  ints: (value: number[]): Attr => ({ kind: 'ints', value }),
  /** A STRING attribute. */
  string: (value: string): Attr => ({ kind: 'string', value }),
};

function encodeAttr(name: string, a: Attr): onnx.IAttributeProto {
  switch (a.kind) {
    case 'int':
      return { name, type: onnx.AttributeProto.AttributeType.INT, i: a.value };
    case 'float':
      return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: a.value };
    case 'ints':
      return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: a.value };
    case 'string':
      return {
        name,
        type: onnx.AttributeProto.AttributeType.STRING,
        s: Buffer.from(a.value, 'utf8'),
      };
  }
}

/** An initializer whose bytes are produced when the model is saved. */
interface LazyInitializer {
  name: string;
  dims: number[];
  dataType: number;
  produce: () => ArrayBufferView;
}

/** A graph input or output: name, element type, dims (numbers or symbolic names). */
export interface ValueSpec {
  /** Tensor name. */
  name: string;
  /** Element type (`ElemType`). */
  elemType: number;
  /** Dimensions: a number is fixed, a string is a symbolic dimension. */
  dims: Array<number | string>;
}

/** Builds one graph. */
export class GraphBuilder {
  /** Nodes in topological order (the order they were added). */
  readonly nodes: onnx.INodeProto[] = [];
  private readonly initializers: LazyInitializer[] = [];
  private readonly inputs: ValueSpec[] = [];
  private readonly outputs: ValueSpec[] = [];
  private readonly scopes: string[] = [];
  private readonly counters = new Map<string, number>();
  private constCount = 0;

  /** Runs `fn` with `name` pushed on the scope path (`/model/layers.0/...`). */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** Adds a node; returns its output names (`count` outputs, default 1). */
  op(
    opType: string,
    inputs: string[],
    attrs: Record<string, Attr> = {},
    options: { domain?: string; outputs?: number; outputNames?: string[] } = {},
  ): string[] {
    const prefix = `/${this.scopes.join('/')}${this.scopes.length ? '/' : ''}${opType}`;
    const k = this.counters.get(prefix) ?? 0;
    this.counters.set(prefix, k + 1);
    const name = k === 0 ? prefix : `${prefix}_${k}`;
    const outputs =
      options.outputNames ??
      Array.from({ length: options.outputs ?? 1 }, (_, i) => `${name}_output_${i}`);
    return this.node(name, opType, inputs, outputs, attrs, options.domain);
  }

  /** Adds a node with an exact name and exact output names (empty string: optional, absent). */
  node(
    name: string,
    opType: string,
    inputs: string[],
    outputs: string[],
    attrs: Record<string, Attr> = {},
    domain?: string,
  ): string[] {
    this.nodes.push({
      name,
      opType,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([n, a]) => encodeAttr(n, a)),
      ...(domain ? { domain } : {}),
    });
    return outputs;
  }

  /** Adds a single-output node and returns its output name. */
  op1(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, domain?: string): string {
    return this.op(opType, inputs, attrs, domain ? { domain } : {})[0]!;
  }

  /** Adds an initializer produced at save time; returns its name. */
  initializer(
    name: string,
    dims: number[],
    dataType: number,
    produce: () => ArrayBufferView,
  ): string {
    this.initializers.push({ name, dims, dataType, produce });
    return name;
  }

  /** A float32 constant (an initializer named `const.N`). */
  constF32(values: number[], dims: number[] = [values.length]): string {
    const data = Float32Array.from(values);
    return this.initializer(`const.${this.constCount++}`, dims, ElemType.FLOAT, () => data);
  }

  /** An int64 constant (an initializer named `const.N`); `dims` `[]` makes a scalar. */
  constI64(values: number[], dims: number[] = [values.length]): string {
    const data = BigInt64Array.from(values, (v) => BigInt(v));
    return this.initializer(`const.${this.constCount++}`, dims, ElemType.INT64, () => data);
  }

  /** Declares a graph input. */
  input(spec: ValueSpec): string {
    this.inputs.push(spec);
    return spec.name;
  }

  /** Declares a graph output. */
  output(spec: ValueSpec): void {
    this.outputs.push(spec);
  }

  /**
   * Renames every node to `node_N` and every intermediate tensor to `t_N` (graph inputs,
   * outputs and initializers keep their names): a graph whose names say nothing, for testing
   * the surgery's structural fallback.
   */
  anonymize(): void {
    const keep = new Set([
      ...this.inputs.map((i) => i.name),
      ...this.outputs.map((o) => o.name),
      ...this.initializers.map((i) => i.name),
      '',
    ]);
    const rename = new Map<string, string>();
    const mapName = (t: string): string => {
      if (keep.has(t)) return t;
      let r = rename.get(t);
      if (r === undefined) {
        r = `t_${rename.size}`;
        rename.set(t, r);
      }
      return r;
    };
    this.nodes.forEach((n, k) => {
      n.name = `node_${k}`;
      n.input = (n.input ?? []).map(mapName);
      n.output = (n.output ?? []).map(mapName);
    });
  }

  /**
   * Writes the model. With `externalDataFile` (a file name, written beside the model),
   * initializers of at least 1024 bytes go there, each at a 4096-aligned offset, as
   * `onnx.save_model(..., save_as_external_data=True)` lays them out. Returns the bytes written.
   */
  save(
    modelPath: string,
    options: { externalDataFile?: string; producer?: string; opsets?: Record<string, number> } = {},
  ): { modelBytes: number; dataBytes: number } {
    const tensors: onnx.ITensorProto[] = [];
    let fd: number | null = null;
    let offset = 0;
    if (options.externalDataFile) {
      fd = openSync(path.join(path.dirname(modelPath), options.externalDataFile), 'w');
    }
    try {
      for (const init of this.initializers) {
        const data = init.produce();
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        if (fd !== null && bytes.length >= 1024) {
          offset = Math.ceil(offset / 4096) * 4096;
          let written = 0;
          while (written < bytes.length) {
            written += writeSync(fd, bytes, written, bytes.length - written, offset + written);
          }
          tensors.push({
            name: init.name,
            dims: init.dims,
            dataType: init.dataType,
            dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
            externalData: [
              { key: 'location', value: options.externalDataFile },
              { key: 'offset', value: String(offset) },
              { key: 'length', value: String(bytes.length) },
            ],
          });
          offset += bytes.length;
        } else {
          tensors.push({
            name: init.name,
            dims: init.dims,
            dataType: init.dataType,
            rawData: Buffer.from(bytes),
          });
        }
      }
    } finally {
      if (fd !== null) closeSync(fd);
    }
    const valueInfo = (v: ValueSpec): onnx.IValueInfoProto => ({
      name: v.name,
      type: {
        tensorType: {
          elemType: v.elemType,
          shape: {
            dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })),
          },
        },
      },
    });
    const opsets = options.opsets ?? { '': 17 };
    const model: onnx.IModelProto = {
      irVersion: 8,
      producerName: options.producer ?? 'shardline-synthetic',
      opsetImport: Object.entries(opsets).map(([domain, version]) => ({ domain, version })),
      graph: {
        name: 'main_graph',
        node: this.nodes,
        initializer: tensors,
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
      },
    };
    const encoded = onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
    writeFileSync(modelPath, encoded);
    return { modelBytes: encoded.length, dataBytes: offset };
  }
}
