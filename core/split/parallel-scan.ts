/**
 * Phase 1 on several threads: a local, uncompressed input is cut into line-aligned byte
 * ranges (ranges.ts), each scanned by a worker thread, and the scans are combined into exactly
 * what one sequential scan gives (same counts, rejected line numbers, CRC32C, checkpoints).
 *
 * Validation is the expensive part of a split (the copy is mostly the kernel's), so this is
 * where a second core pays. Whenever the threads cannot give the exact answer cheaply (more
 * rejected lines than it is worth holding, a read error), the caller falls back to the
 * sequential scan, which stays the one source of truth for messages and errors.
 */
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import type { RejectedLine } from '../dataset/metadata';
import { ShardlineError } from '../errors';
import { alignedRanges, combineScans } from './ranges';
import type { ScanOptions, ScanResult } from './scan';
import type { ScanJob, ScanMessage } from './scan-worker';

/** Inputs smaller than this are scanned on the calling thread (threads cost ~30 ms to start). */
export const PARALLEL_SCAN_MIN_BYTES = 64 << 20;
/** Rejected lines a thread holds before the scan gives up and falls back (bounded memory). */
const MAX_REJECTED_PER_THREAD = 20_000;

/** The compiled worker script; absent when running from TypeScript sources (unit tests). */
const WORKER_SCRIPT = path.join(__dirname, 'scan-worker.js');

/**
 * How many threads to scan `bytes` with: `forced` when set (from `SHARDLINE_SCAN_THREADS`,
 * see settings.ts; tests use it to force threads on small inputs), else one per core up to 3
 * for inputs of at least PARALLEL_SCAN_MIN_BYTES, else 1.
 */
export function scanThreads(bytes: number, forced?: number): number {
  if (forced !== undefined) return Math.max(1, forced);
  if (bytes < PARALLEL_SCAN_MIN_BYTES) return 1;
  // Each scan thread adds ~40 MB of resident memory; 3 keep a create under 256 MB (bench/split).
  return Math.max(1, Math.min(3, availableParallelism()));
}

/** Whether worker threads can run here (the compiled worker script exists). */
export function canScanOnThreads(): boolean {
  return existsSync(WORKER_SCRIPT);
}

/**
 * Scans the local file `file` (`bytes` long) on `threads` threads. Returns null when the
 * caller should scan sequentially instead (see the module comment). Rejected lines reach
 * `options.onRejected` in input order, after the threads finish; `--strict` fails with the
 * same error, naming the same line, as the sequential scan.
 */
export async function scanFileParallel(
  file: string,
  bytes: number,
  threads: number,
  options: ScanOptions,
): Promise<ScanResult | null> {
  const handle = await open(file, 'r');
  let spans;
  try {
    spans = await alignedRanges(bytes, Math.ceil(bytes / threads), async (start, end) => {
      const buf = Buffer.alloc(end - start);
      const { bytesRead } = await handle.read(buf, 0, buf.length, start);
      return buf.subarray(0, bytesRead);
    });
  } finally {
    await handle.close();
  }
  const done = new Array<number>(spans.length).fill(0);
  const workers: Worker[] = [];
  const stopAll = (): void => void workers.forEach((w) => void w.terminate());
  options.signal?.addEventListener('abort', stopAll, { once: true });
  try {
    const results = await Promise.all(
      spans.map(
        (span, k) =>
          new Promise<ScanMessage>((resolve, reject) => {
            const job: ScanJob = {
              file,
              start: span.start,
              end: span.end,
              maxLineBytes: options.maxLineBytes,
              strict: options.strict,
              maxRejected: MAX_REJECTED_PER_THREAD,
              engine: options.engine ?? 'auto',
              recordSegments: options.recordSegments ?? false,
            };
            const worker = new Worker(WORKER_SCRIPT, { workerData: job });
            workers.push(worker);
            let final: ScanMessage | null = null;
            worker.on('message', (m: ScanMessage) => {
              if (m.kind === 'progress') {
                done[k] = m.bytes;
                options.onProgress?.(done.reduce((a, b) => a + b, 0));
              } else final = m;
            });
            worker.on('error', reject);
            worker.on('exit', (code) => {
              if (final) resolve(final);
              else if (options.signal?.aborted) {
                const reason: unknown = options.signal.reason;
                reject(reason instanceof Error ? reason : new Error('the scan was aborted'));
              } else reject(new Error(`scan thread ${k} exited with code ${code} and no result`));
            });
          }),
      ),
    );
    options.signal?.throwIfAborted();
    if (results.some((r) => r.kind === 'overflow' || r.kind === 'error')) return null;

    // --strict: the first bad line of the file is the first of the lowest range that has one;
    // the ranges before it were scanned whole, so their line counts number it.
    let linesBefore = 0;
    for (const r of results) {
      if (r.kind === 'invalid') {
        const line = linesBefore + r.line;
        throw new ShardlineError('INVALID_INPUT', `line ${line} is not a valid task: ${r.reason}`, {
          details: { line, offset: r.offset, reason: r.reason, preview: r.preview },
        });
      }
      if (r.kind === 'done') linesBefore += r.scan.lines;
    }

    const scans = results.map((r) => (r as Extract<ScanMessage, { kind: 'done' }>).scan);
    const combined = combineScans(scans);
    for (let k = 0; k < results.length; k++) {
      const r = results[k] as Extract<ScanMessage, { kind: 'done' }>;
      for (const rej of r.rejected) {
        const renumbered: RejectedLine = { ...rej, line: combined.lineOffsets[k]! + rej.line };
        await options.onRejected(renumbered);
      }
    }
    const { lineOffsets: _lineOffsets, ...scan } = combined;
    return scan;
  } finally {
    options.signal?.removeEventListener('abort', stopAll);
    stopAll();
  }
}
