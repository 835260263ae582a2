/**
 * Phase 2 of a local create copies plain segments by byte range, trusting phase 1's checksums,
 * so the input must not change in between: an input that changes (grows, shrinks, or is
 * rewritten in place) while its chunks are copied is refused and leaves nothing behind, with
 * either line checker and copy (copy_file_range, read/write). Where nothing changes, almost all
 * bytes are copied by range, and the dataset is exact (its checksums those of its bytes).
 */
import { appendFileSync, readdirSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { createLogger } from '../../../core/log';
import type { CreateProgress } from '../../../core/split/create-dataset';
import { createDataset } from '../../../core/split/create-dataset';
import type { SplitEngine } from '../../../core/split/native';
import { sourceFromStore } from '../../../core/split/source';
import { readAndCheckDataset } from '../../support/dataset-check';
import { generateJsonl } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';
import { ENGINES } from './native-support';

const { dir, cleanup } = makeTempDir('local-copy');
afterAll(cleanup);

let runs = 0;

interface Shape {
  lines: number;
  numShards: number;
  chunkSizeMb: number;
  /** Bytes per native scan block (smaller: more segments, fewer bytes routed line by line). */
  blockBytes?: number;
}

/** A create of a clean input; `duringWrite` runs at phase 2's first progress report. */
async function create(
  engine: SplitEngine,
  shape: Shape = { lines: 3000, numShards: 4, chunkSizeMb: 0.1 },
  duringWrite?: (file: string) => void,
) {
  const root = path.join(dir, `run-${++runs}`);
  const store = new LocalBlobStore(root);
  const { input, tasks } = generateJsonl(runs, { lines: shape.lines, bigChance: 0 });
  await store.writeAll('input.jsonl', input);
  const file = store.pathOf('input.jsonl');
  let touched = false;
  const logged: Array<Record<string, unknown>> = [];
  const log = createLogger({
    format: 'json',
    minSeverity: 'DEBUG',
    sink: (line) => logged.push(JSON.parse(line) as Record<string, unknown>),
  });
  const output = new LocalBlobStore(path.join(root, 'ds'));
  const run = createDataset({
    source: await sourceFromStore(store, 'input.jsonl'),
    output,
    datasetId: 'local-copy',
    numShards: shape.numShards,
    chunkSizeMb: shape.chunkSizeMb,
    strict: false,
    clock: systemClock,
    log,
    createdBy: 'test',
    creator: { host: 'test', pid: 1 },
    settings: { engine, threads: 2, ...(shape.blockBytes ? { blockBytes: shape.blockBytes } : {}) },
    onProgress: (p: CreateProgress) => {
      if (p.phase === 'write' && !touched && duringWrite) {
        touched = true;
        duringWrite(file);
      }
    },
  });
  return { run, output, input, tasks, root, logged };
}

const left = (root: string): string[] =>
  readdirSync(path.join(root, 'ds'), { recursive: true, encoding: 'utf8' }).filter((f) =>
    /\.jsonl|metadata/.test(f),
  );

describe.each(ENGINES)('engine %s', (engine) => {
  // Only the blocks where a chunk or shard ends are routed line by line: with native blocks of
  // 16 KiB most bytes are copied by range; the JavaScript scan's blocks are the 2 MiB reads.
  const shape: Shape =
    engine === 'native'
      ? { lines: 3000, numShards: 2, chunkSizeMb: 0.5, blockBytes: 16 << 10 }
      : { lines: 16_000, numShards: 1, chunkSizeMb: 2.5 };
  const share = engine === 'native' ? 0.8 : 0.25;

  test(`at least ${share * 100} % of the bytes are copied by range, and the dataset is exact`, async () => {
    const { run, output, input, tasks, logged } = await create(engine, shape);
    await run;
    const back = await readAndCheckDataset(output);
    expect(back.tasks.map(String)).toEqual(tasks.map(String));
    expect(logged.find((l) => l.message === 'phase 2: copying by range')).toMatchObject({
      threads: 2,
      copy: engine === 'native' ? 'copy_file_range' : 'read/write',
    });
    const wrote = logged.find((l) => l.message === 'wrote the shards');
    expect(wrote!.bytes_copied_by_range as number).toBeGreaterThan(share * input.length);
  });

  test.each([
    ['grows', (f: string) => appendFileSync(f, '{"late":1}\n')],
    ['shrinks', (f: string) => truncateSync(f, 100_000)],
    [
      'is rewritten in place (same size)',
      (f: string) => {
        writeFileSync(f, Buffer.alloc(1000, 0x20), { flag: 'r+' });
        utimesSync(f, new Date(), new Date(Date.now() + 5000));
      },
    ],
  ])('an input that %s during phase 2 is refused, nothing left behind', async (_name, change) => {
    const { run, root } = await create(engine, undefined, change);
    await expect(run).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/change/) as unknown,
    });
    expect(left(root)).toEqual([]);
  });
});
