/**
 * Phase 2 of a split: read the input again and copy every task's bytes, in order, into the
 * chunk files of its shard. Rejected lines (known from phase 1) and blank lines are skipped.
 * Bytes are copied exactly; the only changes are `\r\n` -> `\n`, a missing final `\n`
 * added, and the UTF-8 BOM removed from the first line.
 *
 * Each block of lines is handled in two steps: a synchronous pass decides, line by line,
 * where chunks and shards end and which byte ranges go where (runs of unchanged lines
 * become one view of the read buffer); then the writes are carried out. So an ordinary input
 * costs one `indexOf` per line and a handful of writes per megabyte.
 */
import type { Readable } from 'node:stream';

import { crc32c } from '@node-rs/crc32';

import type { BlobStore, BlobWriter } from '../blob/store';
import type { ChunkInfo, ShardMetadata } from '../dataset/metadata';
import { encodeJson } from '../dataset/metadata';
import { FORMAT_VERSION, chunkFileName, chunkKey, shardMetadataKey } from '../dataset/paths';
import { ShardlineError } from '../errors';
import { crc32cBase64 } from './checksum';
import { lineBlocks } from './line-blocks';
import type { LineNumberList } from './line-numbers';
import type { ShardRange } from './plan';

/** Options of `writeShards`. */
export interface WriteShardsOptions {
  store: BlobStore;
  datasetId: string;
  plan: readonly ShardRange[];
  /** Rejected line numbers from phase 1. */
  rejected: LineNumberList;
  /** Cut a chunk before a line would take it past this many bytes. */
  chunkLimitBytes: number;
  /** Same limit as phase 1. */
  maxLineBytes: number;
  /** Receives the count of input bytes read so far. */
  onProgress?: (bytesRead: number) => void;
  /** Called after each shard's metadata is written. */
  onShard?: (shard: ShardMetadata) => void;
  signal?: AbortSignal;
}

/** A step decided by the synchronous pass. */
type Op =
  | { t: 'bytes'; view: Uint8Array }
  /** The open chunk is complete (it holds `tasks` tasks). */
  | { t: 'endChunk'; tasks: number; firstTask: number }
  /** The open chunk and its shard are complete. */
  | { t: 'endShard'; tasks: number; firstTask: number };

const NEWLINE = Buffer.from('\n');
const hasBom = (buf: Buffer): boolean =>
  buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf;

function isBlank(buf: Buffer, s: number, e: number): boolean {
  for (let i = s; i < e; i++) {
    const c = buf[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
}

/** Copies the input's tasks into the shard layout; returns each shard's metadata. */
export async function writeShards(
  stream: Readable,
  options: WriteShardsOptions,
): Promise<ShardMetadata[]> {
  const { store, plan, chunkLimitBytes } = options;
  const last = plan[plan.length - 1];
  const totalTasks = last ? last.firstTask + last.tasks : 0;
  const isRejected = options.rejected.cursor();

  // --- state of the synchronous pass ---
  let lineNo = 0;
  let taskIndex = 0;
  let planIdx = 0;
  let shardEnd = plan[0] ? plan[0].tasks : 0;
  let chunkBytes = 0;
  let chunkTasks = 0;
  let chunkFirst = 0;

  // --- state of the writes ---
  const done: ShardMetadata[] = [];
  let execShard = 0;
  let chunks: ChunkInfo[] = [];
  let writer: BlobWriter | undefined;
  let writerKey = '';
  let writtenBytes = 0;
  let crc = 0;

  const execute = async (ops: Op[]): Promise<void> => {
    for (const op of ops) {
      const range = plan[execShard]!;
      if (op.t === 'bytes') {
        if (!writer) {
          writerKey = chunkKey(range.shardId, chunks.length);
          writer = store.writer(writerKey, { contentType: 'application/x-ndjson' });
          writtenBytes = 0;
          crc = 0;
        }
        crc = crc32c(op.view, crc);
        writtenBytes += op.view.byteLength;
        await writer.write(op.view);
        continue;
      }
      if (!writer)
        throw new ShardlineError('INTERNAL', 'a chunk ended before any byte was written');
      const info = await writer.close();
      writer = undefined;
      const crcText = crc32cBase64(crc);
      if (info.size !== writtenBytes || (info.crc32c !== undefined && info.crc32c !== crcText)) {
        throw new ShardlineError(
          'STORAGE',
          `${store.uriOf(writerKey)} was stored as ${info.size} bytes, crc32c ${info.crc32c ?? '?'}; expected ${writtenBytes}, ${crcText}`,
        );
      }
      chunks.push({
        chunk_id: chunks.length,
        file: chunkFileName(chunks.length),
        num_tasks: op.tasks,
        size_mb: writtenBytes / 1048576,
        bytes: writtenBytes,
        crc32c: crcText,
        first_task_index: op.firstTask,
      });
      if (op.t === 'endShard') {
        const meta: ShardMetadata = {
          shard_id: range.shardId,
          total_shards: plan.length,
          status: 'available',
          total_tasks: range.tasks,
          num_chunks: chunks.length,
          chunks,
          assigned_to: null,
          started_at: null,
          completed_at: null,
          format_version: FORMAT_VERSION,
          dataset_id: options.datasetId,
          first_task_index: range.firstTask,
          total_bytes: chunks.reduce((n, c) => n + c.bytes, 0),
        };
        await store.writeAll(shardMetadataKey(range.shardId), encodeJson(meta), {
          contentType: 'application/json',
        });
        done.push(meta);
        options.onShard?.(meta);
        chunks = [];
        execShard++;
      }
    }
  };

  let bytesRead = 0;
  const blocks = lineBlocks(stream, {
    maxLineBytes: options.maxLineBytes,
    onChunk: (buf) => {
      bytesRead += buf.length;
      options.onProgress?.(bytesRead);
    },
  });

  try {
    for await (const block of blocks) {
      options.signal?.throwIfAborted();
      if (block.kind === 'oversized') {
        lineNo++;
        if (!isRejected.has(lineNo)) {
          throw new ShardlineError(
            'INVALID_INPUT',
            `line ${lineNo} changed between the two reads of the input`,
          );
        }
        continue;
      }
      const { buf } = block;
      const ops: Op[] = [];
      let s = block.offset === 0 && hasBom(buf) ? 3 : 0;
      let runStart = s; // [runStart, runEnd): unchanged lines not yet turned into an op
      let runEnd = s;
      const endRun = (): void => {
        if (runEnd > runStart) ops.push({ t: 'bytes', view: buf.subarray(runStart, runEnd) });
        runStart = runEnd;
      };
      while (s < buf.length) {
        let e = buf.indexOf(10, s);
        const terminated = e !== -1;
        if (!terminated) e = buf.length;
        const next = e + 1;
        lineNo++;
        if (isRejected.has(lineNo) || isBlank(buf, s, e)) {
          endRun();
          runStart = runEnd = next;
          s = next;
          continue;
        }
        if (taskIndex >= totalTasks) {
          throw new ShardlineError(
            'INVALID_INPUT',
            `line ${lineNo}: more tasks than the first read counted; did the input change?`,
          );
        }
        const cr = e > s && buf[e - 1] === 0x0d;
        const contentEnd = cr ? e - 1 : e;
        const outLen = contentEnd - s + 1;
        if (chunkTasks > 0 && chunkBytes + outLen > chunkLimitBytes) {
          endRun();
          ops.push({ t: 'endChunk', tasks: chunkTasks, firstTask: chunkFirst });
          chunkBytes = 0;
          chunkTasks = 0;
          chunkFirst = taskIndex;
        }
        if (!cr && terminated) {
          if (runEnd !== s) {
            endRun();
            runStart = s;
          }
          runEnd = next;
        } else {
          endRun();
          ops.push(
            { t: 'bytes', view: buf.subarray(s, contentEnd) },
            { t: 'bytes', view: NEWLINE },
          );
          runStart = runEnd = next;
        }
        chunkBytes += outLen;
        chunkTasks++;
        taskIndex++;
        if (taskIndex === shardEnd) {
          endRun();
          runStart = runEnd = next;
          ops.push({ t: 'endShard', tasks: chunkTasks, firstTask: chunkFirst });
          chunkBytes = 0;
          chunkTasks = 0;
          chunkFirst = taskIndex;
          planIdx++;
          const p = plan[planIdx];
          if (p) shardEnd = p.firstTask + p.tasks;
        }
        s = next;
      }
      endRun();
      await execute(ops);
    }
  } catch (e: unknown) {
    await writer?.abort();
    throw e;
  }
  if (taskIndex !== totalTasks || execShard !== plan.length) {
    await writer?.abort();
    throw new ShardlineError(
      'INVALID_INPUT',
      `the second read of the input found ${taskIndex} tasks, the first ${totalTasks}; did the input change?`,
    );
  }
  return done;
}
