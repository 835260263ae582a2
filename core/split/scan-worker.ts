/**
 * One thread of a parallel phase 1 (see parallel-scan.ts): scans the byte range
 * `[start, end)` of a local file and posts back its counts and rejected lines.
 */
import { createReadStream } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

import type { RejectedLine } from '../dataset/metadata';
import { ShardlineError } from '../errors';
import type { SplitEngine } from './native';
import { toRangeScan, type RangeScan } from './ranges';
import { scanLines } from './scan';

/** What the thread is given. */
export interface ScanJob {
  file: string;
  start: number;
  end: number;
  maxLineBytes: number;
  strict: boolean;
  /** Stop and report `overflow` after this many rejected lines (memory stays bounded). */
  maxRejected: number;
  engine: SplitEngine;
  recordSegments: boolean;
}

/** What the thread posts: progress while it runs, then exactly one final message. */
export type ScanMessage =
  | { kind: 'progress'; bytes: number }
  | { kind: 'done'; scan: RangeScan; rejected: RejectedLine[] }
  | { kind: 'overflow' }
  | { kind: 'invalid'; line: number; offset: number; reason: string; preview: string }
  | { kind: 'error'; message: string };

class Overflow extends Error {}

async function main(job: ScanJob, post: (m: ScanMessage) => void): Promise<void> {
  const rejected: RejectedLine[] = [];
  let reported = 0;
  try {
    const scan = await scanLines(
      createReadStream(job.file, { start: job.start, end: job.end - 1, highWaterMark: 1 << 20 }),
      {
        maxLineBytes: job.maxLineBytes,
        strict: job.strict,
        startOffset: job.start,
        engine: job.engine,
        recordSegments: job.recordSegments,
        onRejected: (r) => {
          if (rejected.length >= job.maxRejected) throw new Overflow();
          rejected.push(r);
        },
        onProgress: (bytes) => {
          if (bytes - reported >= 8 << 20) {
            reported = bytes;
            post({ kind: 'progress', bytes });
          }
        },
      },
    );
    post({ kind: 'progress', bytes: scan.bytes });
    post({ kind: 'done', scan: toRangeScan({ start: job.start, end: job.end }, scan), rejected });
  } catch (e: unknown) {
    if (e instanceof Overflow) post({ kind: 'overflow' });
    else if (e instanceof ShardlineError && e.code === 'INVALID_INPUT' && 'line' in e.details) {
      // --strict stopped at a bad line (numbered from the range's first line).
      const d = e.details as { line: number; offset: number; reason: string; preview: string };
      post({
        kind: 'invalid',
        line: d.line,
        offset: d.offset,
        reason: d.reason,
        preview: d.preview,
      });
    } else post({ kind: 'error', message: e instanceof Error ? e.message : String(e) });
  }
}

if (parentPort) {
  const port = parentPort;
  void main(workerData as ScanJob, (m) => port.postMessage(m));
}
