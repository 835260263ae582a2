/**
 * Splitting one input into byte ranges that can be scanned independently (in parallel, or in
 * separate function invocations), and putting their scans back together.
 *
 * Range boundaries sit just after a `\n`, so every range holds whole lines. The combined
 * result is exactly what one scan of the whole input gives: the same counts, the same
 * rejected line numbers, the same CRC32C (combined without re-reading, see crc32cCombine).
 */
import type { Readable } from 'node:stream';

import { crc32cCombine } from '../checksum';
import { LineNumberList } from './line-numbers';
import type { ScanCheckpoint, ScanResult, ScanSegment } from './scan';

/** A half-open byte range `[start, end)` of the input. */
export interface ByteSpan {
  start: number;
  end: number;
}

/** Reads the input's bytes `[start, end)` (a blob store's ranged read, collected). */
export type ReadSpan = (start: number, end: number) => Promise<Buffer>;

/** Collects a readable into one buffer (for small ranged reads). */
export async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/**
 * Cuts `[0, size)` into ranges of about `rangeBytes`, each boundary moved forward to just after
 * the next `\n` (found by reading a small window there). Ranges that would be empty are merged.
 */
export async function alignedRanges(
  size: number,
  rangeBytes: number,
  read: ReadSpan,
  windowBytes = 64 << 10,
): Promise<ByteSpan[]> {
  const bounds = [0];
  for (let nominal = rangeBytes; nominal < size; nominal += rangeBytes) {
    const prev = bounds[bounds.length - 1]!;
    if (nominal <= prev) continue;
    // The boundary is the first line start at or after `nominal`.
    let at = nominal - 1;
    let found = -1;
    while (found === -1 && at < size) {
      const window = await read(at, Math.min(size, at + windowBytes));
      const nl = window.indexOf(10);
      if (nl !== -1) found = at + nl + 1;
      else at += window.length;
    }
    if (found === -1 || found >= size) break;
    if (found > prev) bounds.push(found);
  }
  bounds.push(size);
  const spans: ByteSpan[] = [];
  for (let i = 0; i + 1 < bounds.length; i++)
    spans.push({ start: bounds[i]!, end: bounds[i + 1]! });
  return spans.filter((s) => s.end > s.start);
}

/** One range's scan in a form that can be stored as JSON and combined later. */
export interface RangeScan {
  span: ByteSpan;
  bytes: number;
  crc32c: number;
  lines: number;
  blankLines: number;
  rejectedLines: number;
  tasks: number;
  /** Rejected line numbers, relative to the range (1 = its first line). */
  rejected: number[];
  /** Checkpoints with counts relative to the range. */
  checkpoints: ScanCheckpoint[];
  /** Segments with counts relative to the range, when the scan recorded them. */
  segments?: ScanSegment[];
}

/** Turns a scan of one range into its storable form. */
export function toRangeScan(span: ByteSpan, scan: ScanResult): RangeScan {
  const rejected: number[] = [];
  for (let i = 0; i < scan.rejected.length; i++) rejected.push(scan.rejected.at(i)!);
  return {
    span,
    bytes: scan.bytes,
    crc32c: scan.crc32c,
    lines: scan.lines,
    blankLines: scan.blankLines,
    rejectedLines: scan.rejectedLines,
    tasks: scan.tasks,
    rejected,
    checkpoints: scan.checkpoints,
    ...(scan.segments ? { segments: scan.segments } : {}),
  };
}

/** The scans of consecutive ranges combined into the scan of the whole input. */
export function combineScans(scans: readonly RangeScan[]): ScanResult & { lineOffsets: number[] } {
  const rejected = new LineNumberList();
  const checkpoints: ScanCheckpoint[] = [];
  const segments: ScanSegment[] | undefined = scans.every((s) => s.segments) ? [] : undefined;
  const lineOffsets: number[] = [];
  let crc = 0;
  let bytes = 0;
  let lines = 0;
  let blank = 0;
  let tasks = 0;
  for (const s of scans) {
    if (s.span.start !== bytes)
      throw new Error(`ranges are not consecutive: ${s.span.start} after ${bytes}`);
    lineOffsets.push(lines);
    for (const line of s.rejected) rejected.push(lines + line);
    for (const c of s.checkpoints)
      checkpoints.push({ offset: c.offset, lines: lines + c.lines, tasks: tasks + c.tasks });
    for (const g of s.segments ?? [])
      segments?.push({ ...g, lines: lines + g.lines, tasks: tasks + g.tasks });
    crc = bytes === 0 ? s.crc32c : crc32cCombine(crc, s.crc32c, s.bytes);
    bytes += s.bytes;
    lines += s.lines;
    blank += s.blankLines;
    tasks += s.tasks;
  }
  return {
    bytes,
    crc32c: crc >>> 0,
    lines,
    blankLines: blank,
    rejectedLines: rejected.length,
    tasks,
    rejected,
    checkpoints,
    ...(segments ? { segments } : {}),
    lineOffsets,
  };
}

/** The last checkpoint with at most `task` tasks before it: where a reader of that task starts. */
export function checkpointBefore(
  checkpoints: readonly ScanCheckpoint[],
  task: number,
): ScanCheckpoint {
  let best: ScanCheckpoint = { offset: 0, lines: 0, tasks: 0 };
  for (const c of checkpoints) {
    if (c.tasks <= task && c.offset >= best.offset) best = c;
  }
  return best;
}
