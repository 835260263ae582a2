/**
 * One read of one part's safetensors file, as a stream, for `shardline verify`: the CRC32C of
 * every byte, the header with its tensor table checked, the small tensors (offsets, task
 * indexes, positions, statistics) kept, and, on request, each layer's statistics recomputed
 * in float64 from the rows as they pass. Never holds more than the header, the small tensors
 * and one block of rows per layer, whatever the part's size.
 */
import { crc32c } from '@node-rs/crc32';

import type { BlobStore } from '../core/blob/store';
import { crc32cBase64 } from '../core/checksum';
import type { LayerStats } from '../core/layer-stats';
import { DTYPE_BYTES, parseSafetensorsHeader } from '../core/safetensors';
import type { SafetensorsDtype, SafetensorsFile } from '../core/safetensors';
import { HOOK_POINT } from '../worker/extraction/activations';
import { StatsAccumulator } from '../worker/extraction/layer-stats';

/** Headers longer than this are refused (a part's header is a few KB; 100 MB is the safetensors crate's limit). */
const MAX_HEADER_BYTES = 100 << 20;
/** Rows decoded per statistics block: 256 rows of hidden 896 fp16 are 450 KB. */
const ROWS_PER_BLOCK = 256;

/** What one read of a part found. */
export interface PartScan {
  /** Bytes read. */
  bytes: number;
  /** CRC32C of those bytes (Cloud Storage's base64 form). */
  crc32c: string;
  /** The header, when it parsed and its tensor table is sound. */
  header: SafetensorsFile | null;
  /** What is wrong with the file's structure, or null. */
  structure: string | null;
  /** Every tensor but the activations (`resid_post.*`), by name, when the structure is sound. */
  small: Map<string, Buffer>;
  /** Per-layer statistics recomputed from the rows (keyed `resid_post.L`), when asked. */
  recomputed: Record<string, LayerStats> | null;
}

/** Options of `scanPart`. */
export interface PartScanOptions {
  /** Recompute every layer's statistics from its rows (float64). */
  recomputeStats: boolean;
  /** Called with the size of each block read (for progress). */
  onBytes?: (bytes: number) => void;
  /** Stops the read when aborted. */
  signal?: AbortSignal;
}

/** Reads `key` from `store` once and reports what it holds (see the file comment). */
export async function scanPart(
  store: BlobStore,
  key: string,
  options: PartScanOptions,
): Promise<PartScan> {
  const scanner = new PartScanner(options.recomputeStats);
  for await (const chunk of store.read(key)) {
    options.signal?.throwIfAborted();
    const bytes = chunk as Buffer;
    scanner.push(bytes);
    options.onBytes?.(bytes.length);
  }
  return scanner.finish();
}

/** One tensor's byte range in the data, and what to do with its bytes. */
interface Segment {
  name: string;
  begin: number;
  end: number;
  /** Kept whole (small tensors) into this buffer; null for activations. */
  keep: Buffer | null;
  /** Rows fed to statistics (activations, with `recomputeStats`). */
  rows: RowFeeder | null;
}

/** Feeds one layer's rows, in blocks of whole rows, to a statistics accumulator. */
class RowFeeder {
  readonly stats: StatsAccumulator;
  private readonly block: Uint8Array;
  private filled = 0;

  constructor(
    hidden: number,
    private readonly f16: boolean,
  ) {
    this.stats = new StatsAccumulator(hidden);
    // A fresh ArrayBuffer, so typed views over it are aligned.
    this.block = new Uint8Array(new ArrayBuffer(ROWS_PER_BLOCK * hidden * (f16 ? 2 : 4)));
  }

  push(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, this.block.length - this.filled);
      this.block.set(bytes.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === this.block.length) this.flush();
    }
  }

  flush(): void {
    if (this.filled === 0) return;
    const buf = this.block.buffer;
    this.stats.add(
      this.f16
        ? new Uint16Array(buf, 0, this.filled / 2)
        : new Float32Array(buf, 0, this.filled / 4),
      this.f16,
    );
    this.filled = 0;
  }
}

/** The state of one streamed read. */
class PartScanner {
  private crc = 0;
  private total = 0;
  private readonly head: Buffer[] = [];
  private headBytes = 0;
  private headerLength = -1;
  private header: SafetensorsFile | null = null;
  private structure: string | null = null;
  private segments: Segment[] = [];
  private segmentAt = 0;
  /** Position within the data (after the header) of the next byte. */
  private dataPos = 0;
  private dataEnd = 0;

  constructor(private readonly recomputeStats: boolean) {}

  push(chunk: Buffer): void {
    this.crc = crc32c(chunk, this.crc);
    this.total += chunk.length;
    if (this.structure !== null) return; // only the checksum is still of use
    if (this.header === null) {
      this.head.push(chunk);
      this.headBytes += chunk.length;
      if (this.headerLength < 0 && this.headBytes >= 8) {
        const n = this.joinedHead().readBigUInt64LE(0);
        if (n > BigInt(MAX_HEADER_BYTES) || n < 2n) {
          this.structure = `header length ${n} is not that of a safetensors file`;
          return;
        }
        this.headerLength = Number(n);
      }
      if (this.headerLength < 0 || this.headBytes < 8 + this.headerLength) return;
      const all = this.joinedHead();
      this.head.length = 0;
      if (!this.parseHeader(all.subarray(0, 8 + this.headerLength))) return;
      this.data(all.subarray(8 + this.headerLength));
      return;
    }
    this.data(chunk);
  }

  /** The blocks read so far as one (the first block usually holds the whole header: no copy). */
  private joinedHead(): Buffer {
    if (this.head.length > 1) this.head.splice(0, this.head.length, Buffer.concat(this.head));
    return this.head[0]!;
  }

  /** Parses and checks the header; sets up the segments. False (with `structure`) when unsound. */
  private parseHeader(bytes: Buffer): boolean {
    let parsed: SafetensorsFile;
    try {
      parsed = parseSafetensorsHeader(bytes);
    } catch (e: unknown) {
      this.structure = (e as Error).message;
      return false;
    }
    const entries = [...parsed.tensors].sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
    let expected = 0;
    for (const [name, t] of entries) {
      const size = DTYPE_BYTES[t.dtype as SafetensorsDtype] as number | undefined;
      const [begin, end] = Array.isArray(t.data_offsets) ? t.data_offsets : [NaN, NaN];
      const count = Array.isArray(t.shape)
        ? t.shape.reduce((n, d) => (Number.isSafeInteger(d) && d >= 0 ? n * d : NaN), 1)
        : NaN;
      const why =
        size === undefined
          ? `has dtype ${String(t.dtype)}`
          : begin !== expected
            ? `starts at data offset ${begin}, expected ${expected}`
            : !(end - begin === count * size)
              ? `spans ${end - begin} bytes, its shape [${String(t.shape)}] needs ${count * size}`
              : null;
      if (why !== null) {
        this.structure = `tensor ${name} ${why}`;
        return false;
      }
      expected = end;
      const isRows = name.startsWith(`${HOOK_POINT}.`);
      this.segments.push({
        name,
        begin,
        end,
        keep: isRows ? null : Buffer.alloc(end - begin),
        rows:
          isRows &&
          this.recomputeStats &&
          t.shape.length === 2 &&
          (t.dtype === 'F16' || t.dtype === 'F32')
            ? new RowFeeder(t.shape[1]!, t.dtype === 'F16')
            : null,
      });
    }
    this.header = parsed;
    this.dataEnd = expected;
    return true;
  }

  /** Routes data bytes (starting at `dataPos`) to the segments they belong to. */
  private data(bytes: Buffer): void {
    let at = 0;
    while (at < bytes.length) {
      const seg = this.segments[this.segmentAt];
      if (seg === undefined) {
        this.dataPos += bytes.length - at; // past the last tensor: reported by finish()
        return;
      }
      const n = Math.min(bytes.length - at, seg.end - this.dataPos);
      const piece = bytes.subarray(at, at + n);
      if (seg.keep) piece.copy(seg.keep, this.dataPos - seg.begin);
      else seg.rows?.push(piece);
      this.dataPos += n;
      at += n;
      if (this.dataPos === seg.end) this.segmentAt++;
    }
  }

  finish(): PartScan {
    const scan: PartScan = {
      bytes: this.total,
      crc32c: crc32cBase64(this.crc),
      header: null,
      structure: this.structure,
      small: new Map(),
      recomputed: null,
    };
    if (scan.structure !== null) return scan;
    if (this.header === null) {
      scan.structure =
        this.total < 8 ? 'shorter than 8 bytes' : 'the file ends inside its safetensors header';
      return scan;
    }
    if (this.dataPos < this.dataEnd) {
      const inside = this.segments[this.segmentAt]?.name ?? '?';
      scan.structure = `the file ends inside tensor ${inside} (${this.dataEnd - this.dataPos} bytes short)`;
      return scan;
    }
    if (this.dataPos > this.dataEnd) {
      scan.structure = `${this.dataPos - this.dataEnd} bytes follow the last tensor`;
      return scan;
    }
    scan.header = this.header;
    for (const seg of this.segments) if (seg.keep) scan.small.set(seg.name, seg.keep);
    if (this.recomputeStats) {
      scan.recomputed = {};
      for (const seg of this.segments) {
        if (!seg.rows) continue;
        seg.rows.flush();
        scan.recomputed[seg.name] = seg.rows.stats.toJSON();
      }
    }
    return scan;
  }
}
