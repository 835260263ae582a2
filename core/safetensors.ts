/**
 * safetensors, written by hand (the format is ≈40 lines; npm's `safetensors` is a stub):
 * an 8-byte little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`
 * padded with spaces so the data starts at a multiple of 8, then the tensors' bytes back to
 * back with no holes (https://github.com/huggingface/safetensors, "Format").
 *
 * Output is deterministic: tensors appear in the order given, metadata keys sorted, no
 * timestamps, so the same input always gives the same bytes.
 */
import { endianness } from 'node:os';

import { ShardlineError } from './errors';

/** Tensor element types shardline writes. */
export type SafetensorsDtype = 'F16' | 'F32' | 'F64' | 'I32' | 'I64';

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F16: 2,
  F32: 4,
  F64: 8,
  I32: 4,
  I64: 8,
};

/** A tensor to write: its bytes may come in several pieces (e.g. one per batch). */
export interface TensorSource {
  /** Tensor name. */
  name: string;
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Shape; the product times the dtype size must equal the pieces' total bytes. */
  shape: number[];
  /** The data, in order, little-endian. */
  pieces: ArrayBufferView[];
}

/** One tensor's entry as read back. */
export interface TensorEntry {
  /** Element type. */
  dtype: string;
  /** Shape. */
  shape: number[];
  /** `[begin, end)` byte offsets relative to the start of the data. */
  data_offsets: [number, number];
}

/** A parsed safetensors file. */
export interface SafetensorsFile {
  /** `__metadata__`, or `{}`. */
  metadata: Record<string, string>;
  /** Entries by name, in header order. */
  tensors: Map<string, TensorEntry>;
  /** Absolute offset of the data in the file. */
  dataStart: number;
}

const viewBytes = (v: ArrayBufferView): number => v.byteLength;

/**
 * The header block (8-byte length prefix + JSON padded with spaces to a multiple of 8) for
 * `tensors`. Fails with `INVALID_ARGUMENT` when a tensor's bytes do not match its shape.
 */
export function encodeSafetensorsHeader(
  tensors: readonly TensorSource[],
  metadata: Readonly<Record<string, string>>,
): Buffer {
  if (endianness() !== 'LE') {
    throw new ShardlineError('INTERNAL', 'safetensors writer supports little-endian hosts only');
  }
  const header: Record<string, unknown> = {};
  const keys = Object.keys(metadata).sort();
  if (keys.length > 0)
    header['__metadata__'] = Object.fromEntries(keys.map((k) => [k, metadata[k]]));
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in header) {
      throw new ShardlineError('INVALID_ARGUMENT', `duplicate or reserved tensor name ${t.name}`);
    }
    const bytes = t.pieces.reduce((n, p) => n + viewBytes(p), 0);
    const expected = t.shape.reduce((n, d) => n * d, 1) * DTYPE_BYTES[t.dtype];
    if (bytes !== expected) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `tensor ${t.name}: ${bytes} bytes given, shape [${t.shape.join(', ')}] ${t.dtype} needs ${expected}`,
      );
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/** Total bytes of a file with this header and these tensors. */
export function safetensorsSize(header: Buffer, tensors: readonly TensorSource[]): number {
  return tensors.reduce(
    (n, t) => n + t.pieces.reduce((m, p) => m + viewBytes(p), 0),
    header.length,
  );
}

/** The byte views of a file in order (header, then each tensor's pieces): write them as they come. */
export function* safetensorsChunks(
  header: Buffer,
  tensors: readonly TensorSource[],
): Generator<Uint8Array> {
  yield header;
  for (const t of tensors) {
    for (const p of t.pieces) {
      if (p.byteLength > 0) yield new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
    }
  }
}

/** Parses the header of a safetensors file (the whole file or at least its header). */
export function parseSafetensorsHeader(file: Uint8Array): SafetensorsFile {
  const bad = (why: string): never => {
    throw new ShardlineError('INVALID_INPUT', `not a safetensors file: ${why}`);
  };
  if (file.length < 8) bad('shorter than 8 bytes');
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (8 + n > file.length) bad(`header length ${n} exceeds the file`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(file.buffer, file.byteOffset + 8, n).toString('utf8'));
  } catch {
    bad('header is not JSON');
  }
  if (typeof json !== 'object' || json === null) bad('header is not an object');
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') metadata = value as Record<string, string>;
    else tensors.set(name, value as TensorEntry);
  }
  return { metadata, tensors, dataStart: 8 + n };
}

/** A copy of one tensor's bytes from a whole file, as a typed array of its dtype. */
export function readTensor(
  file: Uint8Array,
  parsed: SafetensorsFile,
  name: string,
): Uint16Array | Float32Array | Float64Array | Int32Array | BigInt64Array {
  const entry = parsed.tensors.get(name);
  if (!entry) throw new ShardlineError('NOT_FOUND', `no tensor ${name}`);
  const [b, e] = entry.data_offsets;
  // A fresh, aligned copy (`Buffer#slice` would be a view into a shared pool).
  const bytes = new Uint8Array(e - b);
  bytes.set(file.subarray(parsed.dataStart + b, parsed.dataStart + e));
  switch (entry.dtype) {
    case 'F16':
      return new Uint16Array(bytes.buffer, 0, (e - b) / 2);
    case 'F32':
      return new Float32Array(bytes.buffer, 0, (e - b) / 4);
    case 'F64':
      return new Float64Array(bytes.buffer, 0, (e - b) / 8);
    case 'I32':
      return new Int32Array(bytes.buffer, 0, (e - b) / 4);
    case 'I64':
      return new BigInt64Array(bytes.buffer, 0, (e - b) / 8);
    default:
      throw new ShardlineError(
        'INVALID_INPUT',
        `tensor ${name} has unsupported dtype ${entry.dtype}`,
      );
  }
}
