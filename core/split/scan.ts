/**
 * Phase 1 of a split: read the input once, classify every line, count the tasks, checksum
 * the bytes, and report each rejected line. Nothing is written to the dataset in this phase,
 * so `--strict` can stop at the first bad line with nothing to clean up.
 *
 * Lines are checked a block at a time by the native validator when it is available (see
 * native.ts), else by the JavaScript checker; either way the JavaScript checker names what is
 * wrong with each rejected line, so both give the same result, message for message.
 */
import { isUtf8 } from 'node:buffer';
import type { Readable } from 'node:stream';

import { crc32c } from '@node-rs/crc32';

import { ShardlineError } from '../errors';
import type { RejectedLine } from '../dataset/metadata';
import { classifyLine, previewOf } from './classify';
import { lineBlocks } from './line-blocks';
import { LineNumberList } from './line-numbers';
import type { SplitAddon, SplitEngine } from './native';
import {
  BLOCK_BLANK,
  BLOCK_CR_LINES,
  BLOCK_EXCEPTIONS,
  BLOCK_HEADER,
  BLOCK_LINES,
  BLOCK_STOP,
  BLOCK_TASKS,
  addonFor,
} from './native';

/** The UTF-8 byte-order mark, removed from the first line. */
export const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** Whether `buf` starts with the UTF-8 byte-order mark. */
export const startsWithBom = (buf: Uint8Array): boolean =>
  buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf;

/** Options of `scanLines`. */
export interface ScanOptions {
  /** Longest accepted line in bytes (without `\n`); longer lines are rejected. */
  maxLineBytes: number;
  /** Stop at the first rejected line with an `INVALID_INPUT` error naming it. */
  strict: boolean;
  /** Receives every rejected line, in input order. */
  onRejected: (rejected: RejectedLine) => void | Promise<void>;
  /** Receives the count of input bytes read so far. */
  onProgress?: (bytesRead: number) => void;
  /** Aborts the scan. */
  signal?: AbortSignal;
  /**
   * Where the stream starts in the whole input: the byte offset of a line start (default 0).
   * Reported offsets are absolute; line numbers count from the stream's first line (1), so a
   * scan of a byte range reports lines relative to the range. A BOM is removed only at offset 0.
   */
  startOffset?: number;
  /** Record a checkpoint at most every this many bytes (default 1 MiB). */
  checkpointEveryBytes?: number;
  /** The line checker (default `auto`: native when available). The result is the same. */
  engine?: SplitEngine;
  /** Also return `segments` (for a phase 2 that copies unchanged runs without reading them). */
  recordSegments?: boolean;
}

/** A line start whose counts are known: lets a later reader begin there instead of at 0. */
export interface ScanCheckpoint {
  /** Absolute byte offset of a line start. */
  offset: number;
  /** Lines before it (counted from the stream's start). */
  lines: number;
  /** Tasks before it (counted from the stream's start). */
  tasks: number;
}

/**
 * A run of whole lines as phase 1 saw it. A `plain` one holds only tasks, each ending in
 * `\n` with no `\r` before it (and no byte-order mark): its bytes are exactly what phase 2
 * writes for it, so they can be copied without being read, with the CRC32C recorded here.
 */
export interface ScanSegment extends ScanCheckpoint {
  /** Its length in bytes (up to the next segment, or the end of the input). */
  bytes: number;
  /** Tasks in it. */
  taskCount: number;
  /** CRC32C of its bytes when it is plain (0 otherwise). */
  crc32c: number;
  plain: boolean;
}

/** What phase 1 learned about the input. */
export interface ScanResult {
  /** Bytes read (after decompression). */
  bytes: number;
  /** CRC32C of those bytes. */
  crc32c: number;
  /** Lines, blank and rejected included (a final line without `\n` counts). */
  lines: number;
  /** Whitespace-only lines. */
  blankLines: number;
  /** Lines that are not a JSON object. */
  rejectedLines: number;
  /** Valid tasks. */
  tasks: number;
  /** 1-based numbers of the rejected lines, for phase 2 to skip them without re-checking. */
  rejected: LineNumberList;
  /** Line starts with their counts, about every `checkpointEveryBytes`, the first at the start. */
  checkpoints: ScanCheckpoint[];
  /** Consecutive segments covering the input, when `recordSegments` was asked for. */
  segments?: ScanSegment[];
}

/** What one block of lines held. */
export interface BlockTally {
  lines: number;
  tasks: number;
  /** Lines whose last byte (before `\n`) is `\r`. */
  crLines: number;
}

/** Exception entries a native block scan records before it stops and lets the caller catch up. */
export const EXCEPTIONS_PER_CALL = 4096;

/**
 * The counts of a scan, fed block by block in input order: classifies each line (natively
 * when `addon` is set), counts, and reports rejected lines (every one re-checked by the
 * JavaScript checker for its reason).
 */
export class LineTally {
  lines = 0;
  tasks = 0;
  blank = 0;
  readonly rejected = new LineNumberList();
  private out: Float64Array | undefined;

  constructor(
    private readonly options: ScanOptions,
    readonly addon: SplitAddon | null,
  ) {}

  /** A fresh `out` array for `addon.scanBlock`/`scanBlockAsync`. */
  static blockOut(): Float64Array {
    return new Float64Array(BLOCK_HEADER + 3 * EXCEPTIONS_PER_CALL);
  }

  /**
   * Classifies the whole lines of `buf[from, to)`; `at` is the input offset of `buf[0]`.
   * `scanned`: the `out` of a native scan the caller already ran over exactly this range.
   */
  async block(
    buf: Buffer,
    from: number,
    to: number,
    at: number,
    scanned?: Float64Array,
  ): Promise<BlockTally> {
    if (this.addon) return this.nativeBlock(this.addon, buf, from, to, at, scanned);
    const first = { lines: this.lines, tasks: this.tasks };
    let crLines = 0;
    const utf8Checked = isUtf8(buf.subarray(from, to));
    let s = from;
    while (s < to) {
      let e = buf.indexOf(10, s);
      if (e === -1 || e > to) e = to;
      this.lines++;
      if (e > s && buf[e - 1] === 0x0d) crLines++;
      const verdict = classifyLine(buf, s, e, this.options.maxLineBytes, utf8Checked);
      if (verdict === 'task') this.tasks++;
      else if (verdict === 'blank') this.blank++;
      else await this.reject(at + s, e - s, buf.subarray(s, Math.min(e, s + 400)), verdict.reason);
      s = e + 1;
    }
    return { lines: this.lines - first.lines, tasks: this.tasks - first.tasks, crLines };
  }

  private async nativeBlock(
    addon: SplitAddon,
    buf: Buffer,
    from: number,
    to: number,
    at: number,
    scanned: Float64Array | undefined,
  ): Promise<BlockTally> {
    const max = this.options.maxLineBytes;
    const first = { lines: this.lines, tasks: this.tasks };
    let crLines = 0;
    let out = scanned;
    if (!out) {
      out = this.out ??= LineTally.blockOut();
      addon.scanBlock(buf, from, to, -1, max, out);
    }
    for (;;) {
      const before = this.lines;
      let tasks = out[BLOCK_TASKS]!;
      let blank = out[BLOCK_BLANK]!;
      crLines += out[BLOCK_CR_LINES]!;
      const exceptions = out[BLOCK_EXCEPTIONS]!;
      const stop = out[BLOCK_STOP]!;
      this.lines += out[BLOCK_LINES]!;
      for (let k = 0; k < exceptions; k++) {
        const base = BLOCK_HEADER + 3 * k;
        const s = out[base + 1]!;
        const e = out[base + 2]!;
        // The JavaScript checker has the last word (and the reason).
        const verdict = classifyLine(buf, s, e, max, false);
        if (verdict === 'task') tasks++;
        else if (verdict === 'blank') blank++;
        else {
          const line = before + out[base]! + 1;
          await this.rejectLine(
            line,
            at + s,
            e - s,
            buf.subarray(s, Math.min(e, s + 400)),
            verdict.reason,
          );
        }
      }
      this.tasks += tasks;
      this.blank += blank;
      if (stop >= to) break;
      addon.scanBlock(buf, stop, to, -1, max, out);
    }
    return { lines: this.lines - first.lines, tasks: this.tasks - first.tasks, crLines };
  }

  /** The scan's result from these counts and what the caller recorded. */
  result(
    bytes: number,
    crc: number,
    checkpoints: ScanCheckpoint[],
    segments: ScanSegment[] | undefined,
  ): ScanResult {
    return {
      bytes,
      crc32c: crc >>> 0,
      lines: this.lines,
      blankLines: this.blank,
      rejectedLines: this.rejected.length,
      tasks: this.tasks,
      rejected: this.rejected,
      checkpoints,
      ...(segments ? { segments } : {}),
    };
  }

  /** A line over the length limit, reported without its bytes (`head`: its first ones). */
  async oversized(at: number, bytes: number, head: Uint8Array): Promise<void> {
    this.lines++;
    await this.rejectLine(
      this.lines,
      at,
      bytes,
      head,
      `line is ${bytes} bytes, over the ${this.options.maxLineBytes}-byte limit`,
    );
  }

  private async reject(offset: number, length: number, head: Uint8Array, reason: string) {
    await this.rejectLine(this.lines, offset, length, head, reason);
  }

  private async rejectLine(
    line: number,
    offset: number,
    length: number,
    head: Uint8Array,
    reason: string,
  ): Promise<void> {
    if (this.options.strict) {
      throw new ShardlineError('INVALID_INPUT', `line ${line} is not a valid task: ${reason}`, {
        details: { line, offset, reason, preview: previewOf(head) },
      });
    }
    this.rejected.push(line);
    await this.options.onRejected({
      line,
      offset,
      reason,
      bytes: length,
      preview: previewOf(head),
    });
  }
}

/** Whether a block's bytes are what phase 2 writes for it (see ScanSegment). */
export function isPlainBlock(buf: Uint8Array, from: number, to: number, t: BlockTally): boolean {
  return from === 0 && to > 0 && buf[to - 1] === 10 && t.tasks === t.lines && t.crLines === 0;
}

/** Sets each segment's `bytes` from where the next one starts (the last: from `endOffset`). */
export function closeSegments(segments: ScanSegment[], endOffset: number): void {
  for (let i = 0; i < segments.length; i++) {
    const next = segments[i + 1];
    segments[i]!.bytes = (next ? next.offset : endOffset) - segments[i]!.offset;
  }
}

/** Runs phase 1 over a stream of the whole input. */
export async function scanLines(stream: Readable, options: ScanOptions): Promise<ScanResult> {
  const tally = new LineTally(options, addonFor(options.engine ?? 'auto'));
  const checksum = tally.addon ? tally.addon.crc32c.bind(tally.addon) : crc32c;
  let crc = 0;
  let bytes = 0;
  const startOffset = options.startOffset ?? 0;
  const every = options.checkpointEveryBytes ?? 1 << 20;
  const checkpoints: ScanCheckpoint[] = [];
  const segments: ScanSegment[] | undefined = options.recordSegments ? [] : undefined;

  const blocks = lineBlocks(stream, {
    maxLineBytes: options.maxLineBytes,
    onChunk: (buf) => {
      crc = checksum(buf, crc);
      bytes += buf.length;
      options.onProgress?.(bytes);
    },
  });
  for await (const block of blocks) {
    options.signal?.throwIfAborted();
    const at = startOffset + block.offset;
    const lastCheckpoint = checkpoints[checkpoints.length - 1];
    const here = { offset: at, lines: tally.lines, tasks: tally.tasks };
    if (!lastCheckpoint || at - lastCheckpoint.offset >= every) checkpoints.push(here);
    if (block.kind === 'oversized') {
      await tally.oversized(at, block.bytes, block.head);
      segments?.push({ ...here, bytes: 0, taskCount: 0, crc32c: 0, plain: false });
      continue;
    }
    const { buf } = block;
    const from = at === 0 && startsWithBom(buf) ? 3 : 0;
    const t = await tally.block(buf, from, buf.length, at);
    if (segments) {
      const plain = isPlainBlock(buf, from, buf.length, t);
      const blockCrc = plain ? checksum(buf, 0) >>> 0 : 0;
      segments.push({ ...here, bytes: 0, taskCount: t.tasks, crc32c: blockCrc, plain });
    }
  }
  if (segments) closeSegments(segments, startOffset + bytes);
  return tally.result(bytes, crc, checkpoints, segments);
}
