/**
 * The numpy-only dataset reader (examples/shardline_dataset.py) on real outputs (created and
 * extracted in-process): by sample it streams the dataset in task order with exactly the values
 * the TypeScript side wrote; in batches of one layer, every row once, in order or shuffled
 * through a buffer (the same multiset of rows; the same seed, the same order).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import type { DatasetManifest, ShardManifest } from '../../../core/rollup/manifests';
import { createDataset, extract, mixedTaskLines } from '../../support/extracted';
import { readPart } from '../../support/parts';
import { probePython, pythonTest, runPython } from '../../support/python';
import { makeTempDir } from '../../support/tmp';
import { makeModel } from '../../support/worker-fixtures';

jest.setTimeout(180_000);

const EXAMPLES = path.resolve(__dirname, '..', '..', '..', 'examples');
const LAYERS = [0, 1];
const HIDDEN = 32;

/** One sample as the TypeScript side reads it back from the parts. */
interface WrittenSample {
  sample_id: string;
  task_index: number;
  positions: number[];
  token_ids: number[];
  /** SHA-256 (hex) of each layer's rows, as stored. */
  sha256: Record<string, string>;
  /** SHA-1 (hex, 16 digits) of each stored row of layer 1. */
  rowHashes: string[];
}

let cleanup: () => void = () => undefined;
let outputs = '';
let written: WrittenSample[] = [];

const rowHash = (bytes: Uint8Array): string =>
  createHash('sha1').update(bytes).digest('hex').slice(0, 16);

/** Every sample of `outputs`, in the manifests' order (shards by id, parts by index). */
function readWritten(dir: string): WrittenSample[] {
  const dataset = JSON.parse(
    readFileSync(path.join(dir, '_MANIFEST.json'), 'utf8'),
  ) as DatasetManifest;
  const out: WrittenSample[] = [];
  for (const s of [...dataset.shards].sort((a, b) => a.shard_id - b.shard_id)) {
    const shard = JSON.parse(readFileSync(path.join(dir, s.manifest), 'utf8')) as ShardManifest;
    for (const part of [...shard.parts].sort((a, b) => a.part_index - b.part_index)) {
      const base = path.join(dir, path.dirname(s.manifest), part.name);
      const read = readPart(
        readFileSync(`${base}.safetensors`),
        readFileSync(`${base}.index.jsonl`, 'utf8'),
      );
      const layers = LAYERS.map((l) => read.rows(l));
      const { offsets, positions, tokenIds: ids, index } = read;
      index.forEach((record, k) => {
        const [a, b] = [offsets[k]!, offsets[k + 1]!];
        const bytesOf = (l: number, r0: number, r1: number): Uint8Array => {
          const v = layers[l]!.subarray(r0 * HIDDEN, r1 * HIDDEN);
          return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
        };
        out.push({
          sample_id: record.sample_id,
          task_index: record.task_index,
          positions: Array.from(positions.subarray(a, b)),
          token_ids: Array.from(ids.subarray(a, b)),
          sha256: Object.fromEntries(
            LAYERS.map((layer, l) => [
              String(layer),
              createHash('sha256')
                .update(bytesOf(l, a, b))
                .digest('hex'),
            ]),
          ),
          rowHashes: Array.from({ length: b - a }, (_, r) => rowHash(bytesOf(1, a + r, a + r + 1))),
        });
      });
    }
  }
  return out;
}

/** Runs Python with the examples importable; returns its JSON output. */
function python<T>(code: string): T {
  const r = runPython([
    '-c',
    `import sys; sys.path.insert(0, ${JSON.stringify(EXAMPLES)})\n${code}`,
  ]);
  expect({ status: r.status, stderr: r.status === 0 ? '' : r.stderr }).toEqual({
    status: 0,
    stderr: '',
  });
  return JSON.parse(r.stdout) as T;
}

/** Layer 1's rows in batches, as `[sample_id, position, row hash, sample]`, and the batch sizes. */
function batches(options: string): {
  rows: Array<[string, number, string, number]>;
  sizes: number[];
} {
  return python(`
import hashlib, json
from shardline_dataset import open_dataset
rows, sizes = [], []
for b in open_dataset(${JSON.stringify(outputs)}).batches(layer=1, batch_size=300${options}):
    sizes.append(len(b.x))
    assert b.x.dtype.name == "float16" and b.x.shape[1] == ${HIDDEN}
    for k in range(len(b.x)):
        rows.append([str(b.sample_id[k]), int(b.position[k]), hashlib.sha1(b.x[k].tobytes()).hexdigest()[:16], int(b.sample[k])])
print(json.dumps({"rows": rows, "sizes": sizes}))
`);
}

beforeAll(async () => {
  if (!probePython().available) return; // the tests below are declared as skips
  let root: string;
  ({ dir: root, cleanup } = makeTempDir('dataset-reader'));
  const model = makeModel(path.join(root, 'model'));
  const dir = await createDataset(root, 'dataset', mixedTaskLines());
  const run = await extract(root, dir, model, '--layers', LAYERS.join(','));
  expect(run.code).toBe(0);
  outputs = path.join(dir, 'activations');
  written = readWritten(outputs);
});
afterAll(() => cleanup());

pythonTest('by sample: the whole dataset in task order, exactly as written', () => {
  const read = python<
    Array<{
      sample: number;
      sample_id: string;
      task_index: number;
      positions: number[];
      token_ids: number[];
      sha256: Record<string, string>;
    }>
  >(`
import hashlib, json
from shardline_dataset import open_dataset
out = []
# The dataset folder itself: the reader finds activations/_MANIFEST.json.
for s in open_dataset(${JSON.stringify(path.dirname(outputs))}).samples():
    out.append({
        "sample": s.sample, "sample_id": s.record["sample_id"], "task_index": s.record["task_index"],
        "positions": s.positions.tolist(), "token_ids": s.token_ids.tolist(),
        "sha256": {str(l): hashlib.sha256(a.tobytes()).hexdigest() for l, a in s.activations.items()},
    })
print(json.dumps(out))
`);
  expect(written.length).toBeGreaterThan(10);
  expect(read.map((s) => s.sample)).toEqual(written.map((_, k) => k));
  expect(read.map(({ sample: _, ...rest }) => rest)).toEqual(
    written.map(({ rowHashes: _, ...rest }) => rest),
  );
  // Task order across shards and parts.
  const tasks = read.map((s) => s.task_index);
  expect(tasks).toEqual([...tasks].sort((a, b) => a - b));
  expect(new Set(tasks).size).toBeGreaterThan(5);
});

pythonTest('in batches: every row of the layer once, in task order, cut to the batch size', () => {
  const plain = batches('');
  const expected = written.flatMap((s, k) =>
    s.positions.map((p, r): [string, number, string, number] => [
      s.sample_id,
      p,
      s.rowHashes[r]!,
      k,
    ]),
  );
  expect(plain.rows).toEqual(expected);
  expect(plain.sizes.slice(0, -1).every((n) => n === 300)).toBe(true);
  expect(plain.sizes.reduce((a, b) => a + b, 0)).toBe(expected.length);
  expect(batches(', drop_last=True').sizes.every((n) => n === 300)).toBe(true);
});

pythonTest('shuffled through a buffer: the same rows once each; a seed fixes the order', () => {
  const key = (r: [string, number, string, number]): string => r.join('|');
  const plain = batches('').rows;
  // A buffer smaller than the dataset: rows stream through it.
  const options = ', shuffle_buffer=1000, seed=7';
  expect(plain.length).toBeGreaterThan(3000);
  const a = batches(options);
  expect(a.rows.map(key).sort()).toEqual(plain.map(key).sort());
  expect(a.rows).not.toEqual(plain);
  expect(a.sizes.slice(0, -1).every((n) => n === 300)).toBe(true);
  expect(batches(options).rows).toEqual(a.rows);
  const other = batches(', shuffle_buffer=1000, seed=8').rows;
  expect(other).not.toEqual(a.rows);
  expect(other.map(key).sort()).toEqual(plain.map(key).sort());
  // A buffer larger than the dataset: one permutation at the end.
  expect(batches(', shuffle_buffer=100000, seed=7').rows.map(key).sort()).toEqual(
    plain.map(key).sort(),
  );
});

pythonTest('n readers (DataLoader workers) share the parts: together every row once', () => {
  const key = (r: [string, number, string, number]): string => r.join('|');
  const plain = batches('').rows.map(key);
  const shares = [0, 1, 2].map((i) =>
    batches(`, shuffle_buffer=500, seed=${i}, worker=(${i}, 3)`).rows.map(key),
  );
  expect(shares.every((rows) => rows.length > 0)).toBe(true);
  expect(shares.flat().sort()).toEqual([...plain].sort());
});

pythonTest('what the reader refuses, and says why', () => {
  const errors = python<Record<string, string>>(`
import json
from shardline_dataset import open_dataset
out = {}
def fails(name, f):
    try:
        f()
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
fails("layer", lambda: next(open_dataset(${JSON.stringify(outputs)}).batches(layer=5, batch_size=10)))
fails("incomplete", lambda: open_dataset(${JSON.stringify(path.dirname(path.dirname(outputs)))}))
fails("shard", lambda: open_dataset(${JSON.stringify(path.join(outputs, 'shard_000'))}))
print(json.dumps(out))
`);
  expect(errors.layer).toBe(
    'ValueError: layer(s) [5] were not extracted; the dataset has layers [0, 1]',
  );
  expect(errors.incomplete).toMatch(
    /^FileNotFoundError: .*_MANIFEST\.json does not exist: the dataset is not complete yet/,
  );
  expect(errors.shard).toMatch(
    /^ValueError: .*shard_000\/_MANIFEST\.json is not a dataset manifest \(format 'shardline\.shard-manifest'\)/,
  );
});

if (!probePython(['numpy', 'google.cloud.storage']).available)
  pythonTest('gs:// without google-cloud-storage: a message that says what to install', () => {
    const r = runPython([
      '-c',
      `import sys; sys.path.insert(0, ${JSON.stringify(EXAMPLES)})\nfrom shardline_dataset import open_dataset\nopen_dataset("gs://bucket/datasets/x")`,
    ]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(
      'reading gs://bucket/datasets/x needs the google-cloud-storage package (pip install google-cloud-storage)',
    );
  });
