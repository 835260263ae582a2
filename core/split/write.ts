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
 *
 * The same function writes a whole dataset from the start of the input (`create`), or only
 * some shards from a known position, stopping at a chunk boundary when a deadline passes and
 * returning where to continue (the fanned-out cloud ingest, core/ingest/). The result is the
 * same bytes and the same metadata either way.
 */
import type { Readable } from 'node:stream';

import { crc32c } from '@node-rs/crc32';

import type { BlobStore, BlobWriter } from '../blob/store';
import type { Clock } from '../clock';
import type { ChunkInfo, ShardMetadata } from '../dataset/metadata';
import { encodeJson } from '../dataset/metadata';
import { FORMAT_VERSION, chunkFileName, chunkKey, shardMetadataKey } from '../dataset/paths';
import { ShardlineError } from '../errors';
import { crc32cBase64 } from '../checksum';
import { lineBlocks } from './line-blocks';
import type { LineNumberList } from './line-numbers';
import type { ShardRange } from './plan';

/** A line start in the input with the number of lines and tasks before it. */
export interface InputPosition {
  /** Absolute byte offset of a line start. */
  offset: number;
  /** Lines before it. */
  line: number;
  /** Tasks before it. */
  task: number;
}

/** Where an interrupted write continues: a chunk boundary inside shard `planIndex`. */
export interface WriteCursor {
  /** The first line of the next chunk (or of the next shard). */
  position: InputPosition;
  /** Index into the plan of the shard being written. */
  planIndex: number;
  /** Chunks of that shard already complete. */
  chunks: ChunkInfo[];
}

/** Options of `writeShards`. */
export interface WriteShardsOptions {
  store: BlobStore;
  datasetId: string;
  /** The whole dataset's plan (every shard, for `total_shards`). */
  plan: readonly ShardRange[];
  /** Write shards `[from, to)` of the plan; default all. */
  from?: number;
  to?: number;
  /**
   * Where the stream starts: a line at or before the first task to write (default the
   * input's start). Lines before the first task to write are read and skipped.
   */
  start?: InputPosition;
  /** Continue a shard after its complete chunks (`start` is then the next chunk's first line). */
  resume?: { planIndex: number; chunks: ChunkInfo[] };
  /** Stop at the first chunk boundary after this time (ms since epoch) and return a cursor. */
  deadline?: { atMs: number; clock: Clock };
  /** Rejected line numbers from phase 1 (counted from the input's first line). */
  rejected: LineNumberList;
  /** Cut a chunk before a line would take it past this many bytes. */
  chunkLimitBytes: number;
  /** Same limit as phase 1. */
  maxLineBytes: number;
  /** Receives the count of bytes read so far from this stream. */
  onProgress?: (bytesRead: number) => void;
  /** Called after each shard's metadata is written. */
  onShard?: (shard: ShardMetadata) => void;
  signal?: AbortSignal;
}

/** What `writeShards` wrote, and where to continue if it stopped early. */
export interface WriteResult {
  shards: ShardMetadata[];
  /** Null when every shard asked for is written. */
  cursor: WriteCursor | null;
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

function changed(what: string): ShardlineError {
  return new ShardlineError('INVALID_INPUT', `${what}; did the input change between reads?`);
}

/** Copies tasks into the shard layout; see the module comment. */
export async function writeShards(
  stream: Readable,
  options: WriteShardsOptions,
): Promise<WriteResult> {
  const { store, plan, chunkLimitBytes } = options;
  const from = options.resume?.planIndex ?? options.from ?? 0;
  const to = options.to ?? plan.length;
  const start = options.start ?? { offset: 0, line: 0, task: 0 };
  const firstShard = plan[from];
  const lastShard = plan[to - 1];
  if (from >= to || !firstShard || !lastShard) {
    throw new ShardlineError(
      'INTERNAL',
      `no shards to write in [${from}, ${to}) of ${plan.length}`,
    );
  }
  const firstTask = options.resume ? start.task : firstShard.firstTask;
  const endTask = lastShard.firstTask + lastShard.tasks;
  if (start.task > firstTask)
    throw new ShardlineError('INTERNAL', `start (task ${start.task}) is after task ${firstTask}`);
  const isRejected = options.rejected.cursor();

  // --- state of the synchronous pass ---
  let lineNo = start.line;
  let taskIndex = start.task;
  let planIdx = from;
  let shardEnd = firstShard.firstTask + firstShard.tasks;
  let chunkBytes = 0;
  let chunkTasks = 0;
  let chunkFirst = firstTask;
  let cursor: WriteCursor | null = null;

  // --- state of the writes ---
  const done: ShardMetadata[] = [];
  let execShard = from;
  let chunks: ChunkInfo[] = options.resume ? [...options.resume.chunks] : [];
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

  const pastDeadline = (): boolean =>
    options.deadline !== undefined && options.deadline.clock.nowMs() >= options.deadline.atMs;

  let bytesRead = 0;
  const blocks = lineBlocks(stream, {
    maxLineBytes: options.maxLineBytes,
    onChunk: (buf) => {
      bytesRead += buf.length;
      options.onProgress?.(bytesRead);
    },
  });

  try {
    blockLoop: for await (const block of blocks) {
      options.signal?.throwIfAborted();
      const at = start.offset + block.offset;
      if (block.kind === 'oversized') {
        lineNo++;
        if (!isRejected.has(lineNo)) throw changed(`line ${lineNo} is over the line limit now`);
        continue;
      }
      const { buf } = block;
      const ops: Op[] = [];
      let s = at === 0 && hasBom(buf) ? 3 : 0;
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
        if (taskIndex < firstTask) {
          // Before the first task to write: counted, not copied.
          taskIndex++;
          runStart = runEnd = next;
          s = next;
          continue;
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
          if (pastDeadline()) {
            cursor = {
              position: { offset: at + s, line: lineNo - 1, task: taskIndex },
              planIndex: planIdx,
              chunks: [],
            };
            await execute(ops);
            cursor.chunks = [...chunks];
            break blockLoop;
          }
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
          if (planIdx === to) {
            await execute(ops);
            break blockLoop;
          }
          shardEnd = plan[planIdx]!.firstTask + plan[planIdx]!.tasks;
          if (pastDeadline()) {
            cursor = {
              position: { offset: at + next, line: lineNo, task: taskIndex },
              planIndex: planIdx,
              chunks: [],
            };
            await execute(ops);
            break blockLoop;
          }
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
  if (!cursor && (taskIndex !== endTask || execShard !== to)) {
    await writer?.abort();
    throw changed(
      `the copy found ${taskIndex - start.task} tasks after task ${start.task}, the scan expected ${endTask - start.task}`,
    );
  }
  return { shards: done, cursor };
}
