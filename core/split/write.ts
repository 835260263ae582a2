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
 *
 * A local input with phase 1's segments (`writeShardsFromFile`) is not streamed at all: a
 * plain segment (only tasks, unchanged bytes) that no chunk or shard ends inside becomes one
 * `range` step, copied file to file by the kernel with the CRC32C phase 1 recorded; only the
 * segments where something happens (a cut, a shard end, a `\r\n`, a blank or rejected line)
 * are read and routed line by line as above. Several shard ranges can be written at once.
 */
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';

import { crc32c } from '@node-rs/crc32';

import type { BlobStore } from '../blob/store';
import type { Clock } from '../clock';
import type { ChunkInfo, ShardMetadata } from '../dataset/metadata';
import { encodeJson } from '../dataset/metadata';
import { FORMAT_VERSION, chunkFileName, chunkKey, shardMetadataKey } from '../dataset/paths';
import { ShardlineError } from '../errors';
import { crc32cBase64, crc32cCombine } from '../checksum';
import { LocalBlobStore } from '../blob/local';
import type { RangeCopier } from './chunk-file';
import { LocalChunkFile } from './chunk-file';
import { lineBlocks } from './line-blocks';
import type { LineNumberList } from './line-numbers';
import type { ShardRange } from './plan';
import type { ScanSegment } from './scan';

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
  /** Bytes copied file to file by range, without being read (writeShardsFromFile). */
  rangeBytes: number;
}

/** A step decided by the synchronous pass. */
type Op =
  | { t: 'bytes'; view: Uint8Array }
  /** Input bytes `[start, end)`, unchanged, whose CRC32C phase 1 recorded (local inputs). */
  | { t: 'range'; start: number; end: number; crc32c: number }
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

/** How a block of lines ended for the router: more wanted, or stop writing (see `cursor`). */
type Routed = 'more' | 'stop';

/**
 * The synchronous pass: decides, line by line (or segment by segment), where chunks and shards
 * end and which bytes go where, as a list of steps for the Executor.
 */
class Router {
  private lineNo: number;
  private taskIndex: number;
  private planIdx: number;
  private shardEnd: number;
  private chunkBytes = 0;
  private chunkTasks = 0;
  private chunkFirst: number;
  private readonly isRejected: { has(line: number): boolean };
  /** Where to continue when the deadline stopped the writing (`chunks` filled in by the caller). */
  cursor: WriteCursor | null = null;

  constructor(
    private readonly options: WriteShardsOptions,
    start: InputPosition,
    private readonly firstTask: number,
    from: number,
    private readonly to: number,
  ) {
    const shard = options.plan[from]!;
    this.lineNo = start.line;
    this.taskIndex = start.task;
    this.planIdx = from;
    this.shardEnd = shard.firstTask + shard.tasks;
    this.chunkFirst = firstTask;
    this.isRejected = options.rejected.cursor();
  }

  /** Tasks routed so far (counted from the input's first). */
  get tasksSeen(): number {
    return this.taskIndex;
  }

  private pastDeadline(): boolean {
    const deadline = this.options.deadline;
    return deadline !== undefined && deadline.clock.nowMs() >= deadline.atMs;
  }

  /** A line over the length limit, which phase 1 must have rejected. */
  oversized(): void {
    this.lineNo++;
    if (!this.isRejected.has(this.lineNo))
      throw changed(`line ${this.lineNo} is over the line limit now`);
  }

  /** Lines that hold no task (phase 1 says so), passed over without being read. */
  skipLines(count: number): void {
    this.lineNo += count;
  }

  /**
   * Takes a plain segment whole when no chunk or shard ends inside it: one `range` step.
   * Returns false (nothing taken) otherwise; the caller then routes its lines.
   */
  span(seg: ScanSegment, ops: Op[]): boolean {
    const { chunkLimitBytes } = this.options;
    if (
      !seg.plain ||
      seg.taskCount === 0 ||
      this.taskIndex < this.firstTask ||
      this.chunkBytes + seg.bytes > chunkLimitBytes ||
      this.taskIndex + seg.taskCount >= this.shardEnd
    )
      return false;
    if (seg.lines !== this.lineNo || seg.tasks !== this.taskIndex) {
      throw new ShardlineError(
        'INTERNAL',
        `segment at ${seg.offset} starts at line ${seg.lines}, task ${seg.tasks}; the copy is at line ${this.lineNo}, task ${this.taskIndex}`,
      );
    }
    ops.push({ t: 'range', start: seg.offset, end: seg.offset + seg.bytes, crc32c: seg.crc32c });
    this.chunkBytes += seg.bytes;
    this.chunkTasks += seg.taskCount;
    this.taskIndex += seg.taskCount;
    this.lineNo += seg.taskCount;
    return true;
  }

  /** Routes the lines of `buf` (whole lines; `at`: its input offset). */
  lines(buf: Buffer, at: number, ops: Op[]): Routed {
    const { plan, chunkLimitBytes } = this.options;
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
      this.lineNo++;
      if (this.isRejected.has(this.lineNo) || isBlank(buf, s, e)) {
        endRun();
        runStart = runEnd = next;
        s = next;
        continue;
      }
      if (this.taskIndex < this.firstTask) {
        // Before the first task to write: counted, not copied.
        this.taskIndex++;
        runStart = runEnd = next;
        s = next;
        continue;
      }
      const cr = e > s && buf[e - 1] === 0x0d;
      const contentEnd = cr ? e - 1 : e;
      const outLen = contentEnd - s + 1;
      if (this.chunkTasks > 0 && this.chunkBytes + outLen > chunkLimitBytes) {
        endRun();
        ops.push({ t: 'endChunk', tasks: this.chunkTasks, firstTask: this.chunkFirst });
        this.chunkBytes = 0;
        this.chunkTasks = 0;
        this.chunkFirst = this.taskIndex;
        if (this.pastDeadline()) {
          this.cursor = {
            position: { offset: at + s, line: this.lineNo - 1, task: this.taskIndex },
            planIndex: this.planIdx,
            chunks: [],
          };
          return 'stop';
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
        ops.push({ t: 'bytes', view: buf.subarray(s, contentEnd) }, { t: 'bytes', view: NEWLINE });
        runStart = runEnd = next;
      }
      this.chunkBytes += outLen;
      this.chunkTasks++;
      this.taskIndex++;
      if (this.taskIndex === this.shardEnd) {
        endRun();
        runStart = runEnd = next;
        ops.push({ t: 'endShard', tasks: this.chunkTasks, firstTask: this.chunkFirst });
        this.chunkBytes = 0;
        this.chunkTasks = 0;
        this.chunkFirst = this.taskIndex;
        this.planIdx++;
        if (this.planIdx === this.to) return 'stop';
        const shard = plan[this.planIdx]!;
        this.shardEnd = shard.firstTask + shard.tasks;
        if (this.pastDeadline()) {
          this.cursor = {
            position: { offset: at + next, line: this.lineNo, task: this.taskIndex },
            planIndex: this.planIdx,
            chunks: [],
          };
          return 'stop';
        }
      }
      s = next;
    }
    endRun();
    return 'more';
  }
}

/** A chunk being written: a blob writer, and for a local input and output, kernel copies. */
interface ChunkSink {
  write(data: Uint8Array): Promise<void>;
  /** Copies input bytes `[start, end)` after what was written so far (LocalChunkFile). */
  copyRange?(start: number, end: number): Promise<void>;
  close(): Promise<{ size: number; crc32c?: string }>;
  abort(): Promise<void>;
}

/** Carries out the Router's steps: chunk files, their checksums, and shard metadata. */
class Executor {
  private shard: number;
  /** Complete chunks of the shard being written. */
  chunks: ChunkInfo[];
  /** Shards whose metadata is written. */
  readonly done: ShardMetadata[] = [];
  private writer: ChunkSink | undefined;
  private writerKey = '';
  private writtenBytes = 0;
  private crc = 0;
  /** Input bytes to copy next, merged while the ranges are adjacent. */
  private range: { start: number; end: number } | null = null;
  /** Bytes copied by range so far. */
  rangeBytes = 0;

  constructor(
    private readonly options: WriteShardsOptions,
    from: number,
    private readonly openChunk: (key: string) => ChunkSink,
  ) {
    this.shard = from;
    this.chunks = options.resume ? [...options.resume.chunks] : [];
  }

  /** The shard index after the last one completed. */
  get nextShard(): number {
    return this.shard;
  }

  private sink(): ChunkSink {
    if (!this.writer) {
      const range = this.options.plan[this.shard]!;
      this.writerKey = chunkKey(range.shardId, this.chunks.length);
      this.writer = this.openChunk(this.writerKey);
      this.writtenBytes = 0;
      this.crc = 0;
    }
    return this.writer;
  }

  private async flushRange(): Promise<void> {
    const r = this.range;
    if (!r) return;
    this.range = null;
    await this.sink().copyRange!(r.start, r.end);
  }

  async run(ops: readonly Op[]): Promise<void> {
    const { store, plan } = this.options;
    for (const op of ops) {
      if (op.t === 'bytes') {
        await this.flushRange();
        const writer = this.sink();
        this.crc = crc32c(op.view, this.crc);
        this.writtenBytes += op.view.byteLength;
        await writer.write(op.view);
        continue;
      }
      if (op.t === 'range') {
        const length = op.end - op.start;
        this.sink();
        this.crc = this.writtenBytes === 0 ? op.crc32c : crc32cCombine(this.crc, op.crc32c, length);
        this.writtenBytes += length;
        this.rangeBytes += length;
        if (this.range && this.range.end === op.start) this.range.end = op.end;
        else {
          await this.flushRange();
          this.range = { start: op.start, end: op.end };
        }
        continue;
      }
      await this.flushRange();
      const range = plan[this.shard]!;
      const writer = this.writer;
      if (!writer)
        throw new ShardlineError('INTERNAL', 'a chunk ended before any byte was written');
      const info = await writer.close();
      this.writer = undefined;
      const crcText = crc32cBase64(this.crc);
      if (
        info.size !== this.writtenBytes ||
        (info.crc32c !== undefined && info.crc32c !== crcText)
      ) {
        throw new ShardlineError(
          'STORAGE',
          `${store.uriOf(this.writerKey)} was stored as ${info.size} bytes, crc32c ${info.crc32c ?? '?'}; expected ${this.writtenBytes}, ${crcText}`,
        );
      }
      this.chunks.push({
        chunk_id: this.chunks.length,
        file: chunkFileName(this.chunks.length),
        num_tasks: op.tasks,
        size_mb: this.writtenBytes / 1048576,
        bytes: this.writtenBytes,
        crc32c: crcText,
        first_task_index: op.firstTask,
      });
      if (op.t === 'endShard') {
        const meta: ShardMetadata = {
          shard_id: range.shardId,
          total_shards: plan.length,
          status: 'available',
          total_tasks: range.tasks,
          num_chunks: this.chunks.length,
          chunks: this.chunks,
          assigned_to: null,
          started_at: null,
          completed_at: null,
          format_version: FORMAT_VERSION,
          dataset_id: this.options.datasetId,
          first_task_index: range.firstTask,
          total_bytes: this.chunks.reduce((n, c) => n + c.bytes, 0),
        };
        await store.writeAll(shardMetadataKey(range.shardId), encodeJson(meta), {
          contentType: 'application/json',
        });
        this.done.push(meta);
        this.options.onShard?.(meta);
        this.chunks = [];
        this.shard++;
      }
    }
  }

  async abort(): Promise<void> {
    this.range = null;
    await this.writer?.abort();
  }
}

/** The shard range and starting point of a write, checked. */
function writeBounds(options: WriteShardsOptions) {
  const { plan } = options;
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
  return { from, to, start, firstTask, endTask };
}

/** The end of a write: the tasks found must be the tasks expected. */
async function finish(
  router: Router,
  executor: Executor,
  bounds: ReturnType<typeof writeBounds>,
): Promise<WriteResult> {
  const { start, endTask, to } = bounds;
  if (router.cursor) {
    router.cursor.chunks = [...executor.chunks];
    return { shards: executor.done, cursor: router.cursor, rangeBytes: executor.rangeBytes };
  }
  if (router.tasksSeen !== endTask || executor.nextShard !== to) {
    await executor.abort();
    throw changed(
      `the copy found ${router.tasksSeen - start.task} tasks after task ${start.task}, the scan expected ${endTask - start.task}`,
    );
  }
  return { shards: executor.done, cursor: null, rangeBytes: executor.rangeBytes };
}

/** Copies tasks into the shard layout; see the module comment. */
export async function writeShards(
  stream: Readable,
  options: WriteShardsOptions,
): Promise<WriteResult> {
  const bounds = writeBounds(options);
  const router = new Router(options, bounds.start, bounds.firstTask, bounds.from, bounds.to);
  const executor = new Executor(options, bounds.from, (key) =>
    options.store.writer(key, { contentType: 'application/x-ndjson' }),
  );
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
        router.oversized();
        continue;
      }
      const ops: Op[] = [];
      const routed = router.lines(block.buf, bounds.start.offset + block.offset, ops);
      await executor.run(ops);
      if (routed === 'stop') break;
    }
  } catch (e: unknown) {
    await executor.abort();
    throw e;
  }
  return finish(router, executor, bounds);
}

/** A local, uncompressed input and what phase 1 recorded about it. */
export interface LocalInput {
  /** The file. */
  path: string;
  /** Phase 1's segments, covering the file. */
  segments: readonly ScanSegment[];
  /** Lines in the file (phase 1's count). */
  lines: number;
  /** Copies file ranges (the native `copy_file_range`, or big-block reads and writes). */
  copy: RangeCopier;
}

/**
 * `writeShards` over a local file, segment by segment (see the module comment). The output
 * store must be a LocalBlobStore; `options.start` must be a segment's start.
 */
export async function writeShardsFromFile(
  input: LocalInput,
  options: WriteShardsOptions,
): Promise<WriteResult> {
  const { store } = options;
  if (!(store instanceof LocalBlobStore))
    throw new ShardlineError('INTERNAL', 'writeShardsFromFile writes to a local folder only');
  const bounds = writeBounds(options);
  const { segments } = input;
  let index = segments.findIndex((g) => g.offset === bounds.start.offset);
  if (index === -1 && segments.length > 0)
    throw new ShardlineError('INTERNAL', `no segment starts at ${bounds.start.offset}`);
  const handle = await open(input.path, 'r');
  const router = new Router(options, bounds.start, bounds.firstTask, bounds.from, bounds.to);
  const executor = new Executor(
    options,
    bounds.from,
    (key) => new LocalChunkFile(store, key, handle.fd, input.copy),
  );
  let bytesDone = 0;
  try {
    for (; index !== -1 && index < segments.length; index++) {
      options.signal?.throwIfAborted();
      const seg = segments[index]!;
      const ops: Op[] = [];
      let routed: Routed = 'more';
      if (seg.taskCount === 0) {
        router.skipLines((segments[index + 1]?.lines ?? input.lines) - seg.lines);
      } else if (!router.span(seg, ops)) {
        const buf = Buffer.allocUnsafe(seg.bytes);
        const { bytesRead } = await handle.read(buf, 0, seg.bytes, seg.offset);
        if (bytesRead !== seg.bytes) throw changed(`${input.path} is shorter than it was`);
        routed = router.lines(buf, seg.offset, ops);
      }
      await executor.run(ops);
      bytesDone += seg.bytes;
      options.onProgress?.(bytesDone);
      if (routed === 'stop') break;
    }
    return await finish(router, executor, bounds);
  } catch (e: unknown) {
    await executor.abort();
    throw e;
  } finally {
    await handle.close();
  }
}
