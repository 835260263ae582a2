/**
 * Phase 1 of a split: read the input once, classify every line, count the tasks, checksum
 * the bytes, and report each rejected line. Nothing is written to the dataset in this phase,
 * so `--strict` can stop at the first bad line with nothing to clean up.
 */
import { isUtf8 } from 'node:buffer';
import type { Readable } from 'node:stream';

import { crc32c } from '@node-rs/crc32';

import { ShardlineError } from '../errors';
import type { RejectedLine } from '../dataset/metadata';
import { classifyLine, previewOf } from './classify';
import { lineBlocks } from './line-blocks';
import { LineNumberList } from './line-numbers';

/** The UTF-8 byte-order mark, removed from the first line. */
export const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

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
}

/** Runs phase 1 over a stream of the whole input. */
export async function scanLines(stream: Readable, options: ScanOptions): Promise<ScanResult> {
  let crc = 0;
  let bytes = 0;
  let lines = 0;
  let blank = 0;
  let tasks = 0;
  const rejected = new LineNumberList();
  const startOffset = options.startOffset ?? 0;
  const every = options.checkpointEveryBytes ?? 1 << 20;
  const checkpoints: ScanCheckpoint[] = [];
  const reject = async (
    line: number,
    offset: number,
    length: number,
    head: Uint8Array,
    reason: string,
  ): Promise<void> => {
    if (options.strict) {
      throw new ShardlineError('INVALID_INPUT', `line ${line} is not a valid task: ${reason}`, {
        details: { line, offset, reason, preview: previewOf(head) },
      });
    }
    rejected.push(line);
    await options.onRejected({ line, offset, reason, bytes: length, preview: previewOf(head) });
  };

  const blocks = lineBlocks(stream, {
    maxLineBytes: options.maxLineBytes,
    onChunk: (buf) => {
      crc = crc32c(buf, crc);
      bytes += buf.length;
      options.onProgress?.(bytes);
    },
  });
  for await (const block of blocks) {
    options.signal?.throwIfAborted();
    const at = startOffset + block.offset;
    const lastCheckpoint = checkpoints[checkpoints.length - 1];
    if (!lastCheckpoint || at - lastCheckpoint.offset >= every)
      checkpoints.push({ offset: at, lines, tasks });
    if (block.kind === 'oversized') {
      lines++;
      await reject(
        lines,
        at,
        block.bytes,
        block.head,
        `line is ${block.bytes} bytes, over the ${options.maxLineBytes}-byte limit`,
      );
      continue;
    }
    const { buf } = block;
    const utf8Checked = isUtf8(buf);
    let s = 0;
    if (at === 0 && buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) s = 3;
    while (s < buf.length) {
      let e = buf.indexOf(10, s);
      if (e === -1) e = buf.length;
      lines++;
      const verdict = classifyLine(buf, s, e, options.maxLineBytes, utf8Checked);
      if (verdict === 'task') tasks++;
      else if (verdict === 'blank') blank++;
      else
        await reject(lines, at + s, e - s, buf.subarray(s, Math.min(e, s + 400)), verdict.reason);
      s = e + 1;
    }
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
  };
}
