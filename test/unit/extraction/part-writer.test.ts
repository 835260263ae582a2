/**
 * The part files on their own (no model): layout a safetensors reader accepts, an index that
 * lines up with the rows, checksums the store agrees with, and identical bytes on a retry.
 */
import { crc32c } from '@node-rs/crc32';

import { LocalBlobStore } from '../../../core/blob/local';
import type { ExtractedBatch } from '../../../worker/extraction/activations';
import { crc32cBase64 } from '../../../core/checksum';
import { PartWriter, partKeys } from '../../../worker/extraction/part-writer';
import type { IndexRecord } from '../../../worker/extraction/part-writer';
import { parseSafetensorsHeader, readTensor } from '../../../core/safetensors';
import type { Sample } from '../../../worker/extraction/samples';
import { makeTempDir } from '../../support/tmp';

const H = 3;

function sample(taskIndex: number, aug: number, tokens: number[]): Sample {
  return {
    sampleId: `${taskIndex}.0.${aug}`,
    taskIndex,
    taskId: `t${taskIndex}`,
    kind: 'arc',
    testIndex: 0,
    augmentation: {
      index: aug,
      hflip: aug >= 4,
      rot90: aug % 4,
      colorMap: [0, 2, 1, 3, 4, 5, 6, 7, 8, 9],
      trainOrder: [1, 0],
    },
    tokenIds: Int32Array.from(tokens),
    trainExamplesTotal: 2,
    trainExamplesUsed: 2,
    truncated: false,
    promptSha256: 'ab'.repeat(32),
  };
}

/** A batch whose value at (row r, column c, layer l) is r*100 + c + l/4, exact in fp32. */
function batchFor(samples: Sample[], firstRow: number, layers: number[]): ExtractedBatch {
  const counts = samples.map((s) => s.tokenIds.length);
  return {
    dtype: 'float32',
    hiddenSize: H,
    layers,
    rowCounts: counts,
    rows: layers.map((_, l) => {
      let row = firstRow;
      return counts.map((n) => {
        const start = row;
        row += n;
        return Float32Array.from(
          { length: n * H },
          (_, i) => (start + Math.floor(i / H)) * 100 + (i % H) + l / 4,
        );
      });
    }),
  };
}

async function writePart(
  root: string,
): Promise<{ store: LocalBlobStore; result: Awaited<ReturnType<PartWriter['finish']>> }> {
  const store = new LocalBlobStore(root);
  const w = new PartWriter({
    shardId: 3,
    partIndex: 12,
    prefix: 'acts',
    layers: [2, 5],
    hiddenSize: H,
    dtype: 'float32',
    metadata: { model: 'm', run: 'r1' },
  });
  const a = [sample(40, 0, [5, 6, 7]), sample(40, 1, [8])];
  const b = [sample(41, 0, [9, 10])];
  w.add(a, batchFor(a, 0, [2, 5]));
  w.add(b, batchFor(b, 4, [2, 5]));
  w.addSkipped([
    {
      taskIndex: 42,
      taskId: null,
      testIndex: null,
      augmentationIndex: null,
      reason: 'invalid_grid',
      detail: 'test[0].input is ragged',
    },
  ]);
  expect(w.samples).toBe(3);
  expect(w.tokens).toBe(6);
  return { store, result: await w.finish(store) };
}

describe('PartWriter', () => {
  let dirs: Array<() => void> = [];
  const temp = (): string => {
    const { dir, cleanup } = makeTempDir('part');
    dirs.push(cleanup);
    return dir;
  };
  afterEach(() => {
    dirs.forEach((c) => c());
    dirs = [];
  });

  test('names are deterministic per shard and part', () => {
    expect(partKeys(3, 12, 'acts')).toEqual({
      safetensors: 'acts/shard_003/part_00012.safetensors',
      index: 'acts/shard_003/part_00012.index.jsonl',
    });
    expect(partKeys(0, 0).safetensors).toBe('shard_000/part_00000.safetensors');
  });

  test('writes a valid safetensors file and an index that line up, and reports what the ledger needs', async () => {
    const { store, result } = await writePart(temp());
    const file = await store.readAll(result.safetensors.key);
    const index = (await store.readAll(result.index.key)).toString('utf8');

    expect(result).toMatchObject({
      name: 'part_00012',
      shardId: 3,
      partIndex: 12,
      samples: 3,
      tokens: 6,
      skipped: 1,
      firstTaskIndex: 40,
      lastTaskIndex: 42,
    });
    expect(result.safetensors).toEqual({
      key: 'acts/shard_003/part_00012.safetensors',
      bytes: file.length,
      crc32c: crc32cBase64(crc32c(file)),
    });
    expect((await store.stat(result.safetensors.key))!.size).toBe(file.length);
    expect(result.index.crc32c).toBe(crc32cBase64(crc32c(Buffer.from(index))));

    const parsed = parseSafetensorsHeader(file);
    expect(parsed.dataStart % 8).toBe(0);
    expect([...parsed.tensors.keys()]).toEqual([
      'sample_offsets',
      'sample_task_index',
      'token_positions',
      'token_ids',
      'stats.resid_post.2.mean',
      'stats.resid_post.2.m2',
      'stats.resid_post.2.count_norm',
      'stats.resid_post.5.mean',
      'stats.resid_post.5.m2',
      'stats.resid_post.5.count_norm',
      'resid_post.2',
      'resid_post.5',
    ]);
    // Tensors are back to back, no holes, to the end of the file (the safetensors rule).
    let end = 0;
    for (const t of parsed.tensors.values()) {
      expect(t.data_offsets[0]).toBe(end);
      end = t.data_offsets[1];
    }
    expect(parsed.dataStart + end).toBe(file.length);

    expect(Array.from(readTensor(file, parsed, 'sample_offsets') as BigInt64Array)).toEqual([
      0n,
      3n,
      4n,
      6n,
    ]);
    expect(Array.from(readTensor(file, parsed, 'sample_task_index') as BigInt64Array)).toEqual([
      40n,
      40n,
      41n,
    ]);
    expect(Array.from(readTensor(file, parsed, 'token_ids') as Int32Array)).toEqual([
      5, 6, 7, 8, 9, 10,
    ]);
    // Every token stored: each row's position restarts at 0 with each sample.
    expect(Array.from(readTensor(file, parsed, 'token_positions') as Int32Array)).toEqual([
      0, 1, 2, 0, 0, 1,
    ]);
    // The statistics tensors hold what the result reports (and the manifest will).
    const count = readTensor(file, parsed, 'stats.resid_post.5.count_norm') as Float64Array;
    expect(count[0]).toBe(6);
    expect(count[1]).toBeCloseTo(result.stats['resid_post.5']!.norm_sum, 9);
    expect(Array.from(readTensor(file, parsed, 'stats.resid_post.5.mean') as Float64Array)).toEqual(
      result.stats['resid_post.5']!.mean,
    );
    const l5 = readTensor(file, parsed, 'resid_post.5') as Float32Array;
    expect(parsed.tensors.get('resid_post.5')).toMatchObject({ dtype: 'F32', shape: [6, 3] });
    expect(l5[5 * H + 2]).toBe(502.25);

    expect(parsed.metadata).toMatchObject({
      format: 'shardline.activations',
      format_version: '2',
      hook_point: 'resid_post',
      dtype: 'float32',
      layers: '[2,5]',
      hidden_size: '3',
      n_samples: '3',
      n_tokens: '6',
      n_rows: '6',
      first_task_index: '40',
      last_task_index: '42',
      model: 'm',
      run: 'r1',
    });
    expect(JSON.parse(parsed.metadata['skipped']!)).toEqual([
      {
        task_index: 42,
        task_id: null,
        test_index: null,
        augmentation_index: null,
        reason: 'invalid_grid',
        detail: 'test[0].input is ragged',
      },
    ]);

    const records = index
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as IndexRecord);
    expect(records.map((r) => [r.row, r.sample_id, r.row_offset, r.n_tokens, r.n_rows])).toEqual([
      [0, '40.0.0', 0, 3, 3],
      [1, '40.0.1', 3, 1, 1],
      [2, '41.0.0', 4, 2, 2],
    ]);
    expect(records[1]).toMatchObject({
      task_index: 40,
      task_id: 't40',
      kind: 'arc',
      test_index: 0,
      train_examples_total: 2,
      train_examples_used: 2,
      truncated: false,
      prompt_sha256: 'ab'.repeat(32),
    });
    expect(records[1]!.augmentation).toEqual({
      index: 1,
      hflip: false,
      rot90: 1,
      color_map: [0, 2, 1, 3, 4, 5, 6, 7, 8, 9],
      train_order: [1, 0],
    });
  });

  test('a retry writes byte-identical files', async () => {
    const first = await writePart(temp());
    const second = await writePart(temp());
    expect(second.result).toEqual(first.result);
    expect(
      (await second.store.readAll(second.result.safetensors.key)).equals(
        await first.store.readAll(first.result.safetensors.key),
      ),
    ).toBe(true);
  });

  test('a part whose tasks were all skipped is still a valid, empty part', async () => {
    const store = new LocalBlobStore(temp());
    const w = new PartWriter({
      shardId: 0,
      partIndex: 0,
      layers: [0],
      hiddenSize: H,
      dtype: 'float16',
      metadata: {},
    });
    w.addSkipped([
      {
        taskIndex: 7,
        taskId: 'x',
        testIndex: null,
        augmentationIndex: null,
        reason: 'no_test_input',
        detail: 'no test',
      },
    ]);
    const result = await w.finish(store);
    expect(result).toMatchObject({ samples: 0, tokens: 0, firstTaskIndex: 7, lastTaskIndex: 7 });
    const file = await store.readAll(result.safetensors.key);
    const parsed = parseSafetensorsHeader(file);
    expect(parsed.tensors.get('resid_post.0')).toMatchObject({ dtype: 'F16', shape: [0, 3] });
    expect((await store.readAll(result.index.key)).length).toBe(0);
  });

  test('a batch that does not match its samples or the part is refused', () => {
    const w = new PartWriter({
      shardId: 0,
      partIndex: 0,
      layers: [2, 5],
      hiddenSize: H,
      dtype: 'float32',
      metadata: {},
    });
    const s = [sample(1, 0, [1, 2])];
    expect(() => w.add(s, { ...batchFor(s, 0, [2, 5]), rowCounts: [3, 1] })).toThrow(/sequences/);
    expect(() =>
      w.add(s, {
        ...batchFor(s, 0, [2, 5]),
        rows: batchFor([sample(1, 0, [1, 2, 3])], 0, [2, 5]).rows,
      }),
    ).toThrow(/rows/);
    expect(() => w.add(s, batchFor(s, 0, [2]))).toThrow(/layers/);
    expect(() => w.add(s, { ...batchFor(s, 0, [2, 5]), dtype: 'float16' })).toThrow(/dtype/);
    expect(() => w.add([...s, ...s], batchFor(s, 0, [2, 5]))).toThrow(/sequences/);
    expect(w.samples).toBe(0);
  });
});
