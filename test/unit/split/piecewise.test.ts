/**
 * The pieces the cloud ingest fans out (scans of byte ranges, shards written one at a time
 * and interrupted at every chunk boundary) give exactly the dataset of one direct run.
 */
import { crc32c } from '@node-rs/crc32';
import { randomBytes } from 'node:crypto';

import { LocalBlobStore } from '../../../core/blob/local';
import type { ShardMetadata } from '../../../core/dataset/metadata';
import { systemClock } from '../../../core/clock';
import { silentLogger } from '../../../core/log';
import { crc32cCombine } from '../../../core/checksum';
import { createDataset } from '../../../core/split/create-dataset';
import { planShards } from '../../../core/split/plan';
import {
  alignedRanges,
  checkpointBefore,
  collect,
  combineScans,
  toRangeScan,
} from '../../../core/split/ranges';
import { scanLines } from '../../../core/split/scan';
import { sourceFromStore } from '../../../core/split/source';
import type { WriteCursor } from '../../../core/split/write';
import { writeShards } from '../../../core/split/write';
import { readAndCheckDataset } from '../../support/dataset-check';
import { generateJsonl } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('piecewise');
afterAll(cleanup);

test('crc32cCombine gives the checksum of the concatenation', () => {
  for (let i = 0; i < 30; i++) {
    const a = randomBytes(Math.floor(Math.random() * 3000));
    const b = randomBytes(Math.floor(Math.random() * 3000));
    expect(crc32cCombine(crc32c(a), crc32c(b), b.length)).toBe(crc32c(Buffer.concat([a, b])));
  }
});

test.each([
  [1, 5, 0.002, 3000],
  [2, 3, 0.0005, 1000],
  [3, 8, 0.01, 20_000],
  [4, 1, 0.001, 700],
])(
  'seed %i: %i shards, %f MB chunks, %i-byte ranges: same files as a direct create',
  async (seed, numShards, chunkSizeMb, rangeBytes) => {
    const { input } = generateJsonl(seed, {
      lines: 600,
      blankRate: 0.1,
      badRate: 0.1,
      crlfRate: 0.3,
      bom: seed === 2,
      finalNewline: seed !== 3,
    });
    const store = new LocalBlobStore(`${dir}/s${seed}`);
    await store.writeAll('in.jsonl', input);
    const chunkLimitBytes = Math.floor(chunkSizeMb * 1024 * 1024);
    const maxLineBytes = 1 << 20;

    const direct = await createDataset({
      source: await sourceFromStore(store, 'in.jsonl'),
      output: new LocalBlobStore(`${dir}/s${seed}/direct`),
      datasetId: 'ds',
      numShards,
      chunkSizeMb,
      strict: false,
      clock: systemClock,
      log: silentLogger,
      createdBy: 'test',
      creator: { host: 'h', pid: 1 },
    });

    // Scan byte ranges independently, then combine.
    const spans = await alignedRanges(input.length, rangeBytes, (s, e) =>
      collect(store.read('in.jsonl', { start: s, end: e })),
    );
    expect(spans.length).toBeGreaterThan(1);
    const scans = [];
    for (const span of spans) {
      const scan = await scanLines(store.read('in.jsonl', span), {
        maxLineBytes,
        strict: false,
        onRejected: () => undefined,
        startOffset: span.start,
        checkpointEveryBytes: 512,
      });
      scans.push(toRangeScan(span, scan));
    }
    const whole = combineScans(scans);
    expect({
      tasks: whole.tasks,
      lines: whole.lines,
      blank: whole.blankLines,
      rejected: whole.rejectedLines,
      bytes: whole.bytes,
    }).toEqual({
      tasks: direct.scan.tasks,
      lines: direct.scan.lines,
      blank: direct.scan.blankLines,
      rejected: direct.scan.rejectedLines,
      bytes: direct.scan.bytes,
    });
    expect(whole.crc32c).toBe(direct.scan.crc32c);

    // Write each shard on its own, from the nearest checkpoint, stopping at every chunk boundary.
    const plan = planShards(whole.tasks, numShards);
    const out = new LocalBlobStore(`${dir}/s${seed}/pieces`);
    const shards: ShardMetadata[] = [];
    let interruptions = 0;
    for (let k = 0; k < plan.length; k++) {
      const c = checkpointBefore(whole.checkpoints, plan[k]!.firstTask);
      let position = { offset: c.offset, line: c.lines, task: c.tasks };
      let cursor: WriteCursor | null = null;
      do {
        const result = await writeShards(store.read('in.jsonl', { start: position.offset }), {
          store: out,
          datasetId: 'ds',
          plan,
          from: k,
          to: k + 1,
          start: position,
          ...(cursor ? { resume: { planIndex: cursor.planIndex, chunks: cursor.chunks } } : {}),
          deadline: { atMs: 0, clock: systemClock },
          rejected: whole.rejected,
          chunkLimitBytes,
          maxLineBytes,
        });
        shards.push(...result.shards);
        cursor = result.cursor;
        if (cursor) {
          interruptions++;
          expect(cursor.planIndex).toBe(k);
          position = cursor.position;
        }
      } while (cursor);
    }
    expect(interruptions).toBeGreaterThan(0);
    expect(shards).toEqual(direct.shards);
    const a = await readAndCheckDataset(new LocalBlobStore(`${dir}/s${seed}/direct`));
    for (const [key, bytes] of a.files) {
      expect({ key, same: (await out.readAll(key)).equals(bytes) }).toEqual({ key, same: true });
    }
  },
);
