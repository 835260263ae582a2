/**
 * The splitter is exact: over many generated inputs, the chunks read in shard and chunk order
 * are exactly the valid input lines in order, and every number in the metadata agrees. Run
 * with each line checker (JavaScript, native) and each path: a local file (scanned in blocks,
 * copied by range, phase 2 on several shard ranges at once) and a stream (as from Cloud Storage).
 */
import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { silentLogger } from '../../../core/log';
import { createDataset } from '../../../core/split/create-dataset';
import type { SplitEngine } from '../../../core/split/native';
import { sourceFromStore } from '../../../core/split/source';
import { readAndCheckDataset } from '../../support/dataset-check';
import { generateJsonl, rng } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';
import { ENGINES } from './native-support';

const { dir, cleanup } = makeTempDir('exact');
afterAll(cleanup);

/** How a split runs: which line checker, and whether the input is a local file or a stream. */
interface Way {
  engine: SplitEngine;
  stream: boolean;
}
const WAYS: Way[] = ENGINES.flatMap((engine) => [
  { engine, stream: false },
  { engine, stream: true },
]);
const nameOf = (w: Way): string => `${w.engine}, ${w.stream ? 'stream' : 'local file'}`;

async function split(
  way: Way,
  input: Buffer,
  name: string,
  numShards: number,
  chunkSizeMb: number,
  maxLineBytes?: number,
) {
  const store = new LocalBlobStore(`${dir}/${name}`);
  await store.writeAll('input.jsonl', input);
  const source = await sourceFromStore(store, 'input.jsonl');
  const result = await createDataset({
    // A stream: what a gs:// input gets (no local path to read in blocks or copy from).
    source: way.stream ? { ...source, localPath: null } : source,
    // Three threads on these small inputs: the local path splits both phases between them.
    settings: { engine: way.engine, threads: 3 },
    output: new LocalBlobStore(`${dir}/${name}/ds`),
    datasetId: 'exact',
    numShards,
    chunkSizeMb,
    strict: false,
    ...(maxLineBytes ? { maxLineBytes } : {}),
    clock: systemClock,
    log: silentLogger,
    createdBy: 'test',
    creator: { host: 'test', pid: 1 },
  });
  return { result, out: new LocalBlobStore(`${dir}/${name}/ds`) };
}

describe.each(WAYS.map((w) => [nameOf(w), w] as const))('%s', (label, way) => {
  const at = (name: string): string => `${label.replace(/[^a-z]+/g, '-')}-${name}`;

  test('randomized inputs: tasks in order, nothing lost, nothing extra, metadata true', async () => {
    const r = rng(20261128);
    let cases = 0;
    for (let seed = 1; seed <= 60; seed++) {
      const numShards = 1 + Math.floor(r() * 16);
      // Tiny chunks force many cuts and one-task chunks; large ones a single chunk per shard.
      const chunkSizeMb = [0.0001, 0.001, 0.005, 0.05, 1, 100][Math.floor(r() * 6)]!;
      const maxLines = chunkSizeMb <= 0.001 ? 400 : 3000; // (a file per task: keep the test quick)
      const lines = Math.min(
        maxLines,
        [0, 1, 2, 3, 7, 16, 50, 200, 1000, 3000][Math.floor(r() * 10)]!,
      );
      const { input, tasks } = generateJsonl(seed, {
        lines,
        blankRate: r() * 0.2,
        badRate: r() * 0.2,
        crlfRate: r() < 0.3 ? r() : 0,
        bom: r() < 0.2,
        finalNewline: r() < 0.7,
        bigChance: 0.02,
      });
      if (tasks.length === 0) {
        await expect(
          split(way, input, at(`case${seed}`), numShards, chunkSizeMb),
        ).rejects.toMatchObject({
          code: 'INVALID_INPUT',
        });
        continue;
      }
      const { result, out } = await split(way, input, at(`case${seed}`), numShards, chunkSizeMb);
      const back = await readAndCheckDataset(out);
      const context = { seed, lines, numShards, chunkSizeMb };
      expect({ ...context, tasks: back.tasks.length }).toEqual({ ...context, tasks: tasks.length });
      back.tasks.forEach((t, i) => {
        if (!t.equals(tasks[i]!))
          throw new Error(
            `seed ${seed}: task ${i} differs: ${t.toString()} vs ${tasks[i]!.toString()}`,
          );
      });
      expect(result.master.num_shards).toBe(Math.min(numShards, tasks.length));
      expect(result.master.input_lines).toBe(lines);
      expect(
        result.master.total_tasks + result.master.blank_lines + result.master.rejected_lines,
      ).toBe(lines);
      cases++;
    }
    expect(cases).toBeGreaterThan(40);
  });

  test('a line larger than the chunk size gets a chunk of its own', async () => {
    const big = JSON.stringify({ text: 'x'.repeat(5000) });
    const small = JSON.stringify({ text: 'y' });
    const input = Buffer.from([small, small, big, small, small].join('\n') + '\n');
    const { out } = await split(way, input, at('bigline'), 1, 0.001);
    const back = await readAndCheckDataset(out);
    const chunks = back.shards[0]!.chunks;
    expect(chunks.map((c) => c.num_tasks)).toEqual([2, 1, 2]);
    expect(chunks[1]!.bytes).toBe(big.length + 1);
    expect(chunks[1]!.bytes).toBeGreaterThan(0.001 * 1024 * 1024);
  });

  test('a line over the line limit is rejected, not held in memory, and the rest is kept', async () => {
    const huge = JSON.stringify({ text: 'z'.repeat(300_000) });
    const input = Buffer.from(
      [JSON.stringify({ a: 1 }), huge, JSON.stringify({ b: 2 })].join('\n'),
    );
    const { result, out } = await split(way, input, at('oversized'), 2, 100, 100_000);
    expect(result.master.rejected_lines).toBe(1);
    expect(result.rejectedSample[0]).toMatchObject({
      line: 2,
      reason: expect.stringContaining('over the 100000-byte limit') as unknown,
    });
    const back = await readAndCheckDataset(out);
    expect(back.tasks.map((t) => t.toString())).toEqual(['{"a":1}', '{"b":2}']);
  });
});

describe.each(WAYS.map((w) => [nameOf(w), w] as const))(
  '%s: lines longer than a read block',
  (label, way) => {
    test('a 5 MiB task, a 5 MiB bad line, a 6 MiB line over the limit, a BOM on a 5 MiB first line', async () => {
      const MiB = 1 << 20;
      // `bytes` long: a task, or (closing quote missing) a line with an unterminated string.
      const big = (bytes: number, tail = '"}') =>
        Buffer.from(`{"t":"${'a'.repeat(bytes - 6 - tail.length)}${tail}`);
      const small = Buffer.from('{"s":[[1,2],[3,4]]}');
      const first = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), big(5 * MiB)]);
      const lines = [
        first,
        small,
        big(5 * MiB),
        small,
        big(5 * MiB, '}'),
        small,
        big(6 * MiB),
        small,
      ];
      const input = Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])).subarray(0, -1);
      const { result, out } = await split(
        way,
        input,
        `${label.replace(/[^a-z]+/g, '-')}-long`,
        3,
        4,
        Math.floor(5.5 * MiB),
      );
      const back = await readAndCheckDataset(out);
      const want = [first.subarray(3), small, big(5 * MiB), small, small, small];
      expect(back.tasks.length).toBe(want.length);
      back.tasks.forEach((t, i) => expect(t.equals(want[i]!)).toBe(true));
      expect(result.master.rejected_lines).toBe(2);
      expect(result.rejectedSample.map((r) => [r.line, r.reason])).toEqual([
        [5, expect.stringContaining('unterminated string') as unknown],
        [7, `line is ${6 * MiB} bytes, over the ${Math.floor(5.5 * MiB)}-byte limit`],
      ]);
      expect(result.master.source.bytes).toBe(input.length);
    });
  },
);
