/** One output part read back whole, for tests that compare what was written. */
import { parseSafetensorsHeader, readTensor } from '../../core/safetensors';
import type { IndexRecord } from '../../worker/extraction/part-writer';

/** A part's tensors and index lines. */
export interface PartContents {
  /** Sample k is rows `[offsets[k], offsets[k + 1])`. */
  offsets: number[];
  /** Each row's position in its prompt. */
  positions: Int32Array;
  /** Each row's token id. */
  tokenIds: Int32Array;
  /** Line k describes sample k. */
  index: IndexRecord[];
  /** A layer's rows, `[n_rows * hidden]` fp16 bit patterns. */
  rows: (layer: number) => Uint16Array;
}

/** Reads a part from its safetensors file's bytes and its index file's text. */
export function readPart(safetensors: Uint8Array, indexText: string): PartContents {
  const header = parseSafetensorsHeader(safetensors);
  return {
    offsets: Array.from(readTensor(safetensors, header, 'sample_offsets') as BigInt64Array, Number),
    positions: readTensor(safetensors, header, 'token_positions') as Int32Array,
    tokenIds: readTensor(safetensors, header, 'token_ids') as Int32Array,
    index: indexText
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as IndexRecord),
    rows: (layer) => readTensor(safetensors, header, `resid_post.${layer}`) as Uint16Array,
  };
}
