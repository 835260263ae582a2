/**
 * What a researcher gets from `work`, end to end on one machine (in-process CLI, SQLite ledger,
 * a seeded Qwen2-shaped model): the rows `--positions last|answer` store are exactly the rows
 * of an `--positions all` run at the documented positions; the manifests' statistics are a
 * float64 recomputation of every stored row; a worker with other settings is refused on resume.
 */
import { cpSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import type { LayerStats } from '../../../core/layer-stats';
import type { DatasetManifest, ShardManifest } from '../../../core/rollup/manifests';
import { generateArcTasks } from '../../../synthetic/arc-puzzles';
import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import type { IndexRecord } from '../../../worker/extraction/part-writer';
import { loadTokenizer } from '../../../worker/extraction/tokenizer';
import { cli } from '../../support/cli';
import { readPart } from '../../support/parts';
import { makeTempDir } from '../../support/tmp';
import { makeModel } from '../../support/worker-fixtures';

jest.setTimeout(180_000);

const LAYERS = [0, 1];
const HIDDEN = 32;

let root: string;
let cleanup: () => void;
let model: string;
/** A dataset as `create` left it, copied for each run. */
let pristine: string;

/** Every stored row of a run, by sample id. */
interface SampleRows {
  record: IndexRecord;
  positions: number[];
  tokenIds: number[];
  /** `rows[layer][r]`: one row (fp16 bit patterns). */
  rows: Map<number, number[][]>;
}

async function readRun(outDir: string): Promise<{
  samples: Map<string, SampleRows>;
  dataset: DatasetManifest;
  shards: ShardManifest[];
}> {
  const store = new LocalBlobStore(outDir);
  const dataset = JSON.parse((await store.readAll('_MANIFEST.json')).toString()) as DatasetManifest;
  const samples = new Map<string, SampleRows>();
  const shards: ShardManifest[] = [];
  for (const s of dataset.shards) {
    const manifest = JSON.parse((await store.readAll(s.manifest)).toString()) as ShardManifest;
    shards.push(manifest);
    const dir = path.dirname(s.manifest);
    for (const part of manifest.parts) {
      const read = readPart(
        await store.readAll(`${dir}/${part.name}.safetensors`),
        (await store.readAll(`${dir}/${part.name}.index.jsonl`)).toString(),
      );
      const { offsets, positions, tokenIds: ids, index } = read;
      const layers = LAYERS.map((l) => read.rows(l));
      index.forEach((record, k) => {
        const [a, b] = [offsets[k]!, offsets[k + 1]!];
        const rows = new Map<number, number[][]>();
        LAYERS.forEach((layer, l) =>
          rows.set(
            layer,
            Array.from({ length: b - a }, (_, r) =>
              Array.from(layers[l]!.subarray((a + r) * HIDDEN, (a + r + 1) * HIDDEN)),
            ),
          ),
        );
        samples.set(record.sample_id, {
          record,
          positions: Array.from(positions.subarray(a, b)),
          tokenIds: Array.from(ids.subarray(a, b)),
          rows,
        });
      });
    }
  }
  return { samples, dataset, shards };
}

/** A fresh copy of the dataset, for one run. */
function datasetCopy(name: string): string {
  const dir = path.join(root, name);
  cpSync(pristine, dir, { recursive: true });
  return dir;
}

async function work(dir: string, ...extra: string[]) {
  return workWith(model, dir, ...extra);
}

async function workWith(modelPath: string, dir: string, ...extra: string[]) {
  return cli(
    [
      'work',
      '--sharded_dataset_dir',
      dir,
      '--model_path',
      modelPath,
      '--model_name',
      'synthetic',
      '--layers',
      LAYERS.join(','),
      '--predictions_per_task',
      '2',
      '--threads',
      '1',
      ...extra,
    ],
    { cwd: root },
  );
}

beforeAll(async () => {
  ({ dir: root, cleanup } = makeTempDir('activations-e2e'));
  model = makeModel(path.join(root, 'model'));
  const tasks = [
    ...generateArcTasks(5, 3, 4).map((t) => JSON.stringify(t)),
    JSON.stringify({ task_id: 'prose-1', text: 'The quick brown fox jumps over the lazy dog.' }),
    JSON.stringify({ task_id: 'prose-2', text: 'Activations, positions and statistics.' }),
  ];
  writeFileSync(path.join(root, 'tasks.jsonl'), `${tasks.join('\n')}\n`);
  pristine = path.join(root, 'pristine');
  const made = await cli(
    ['create', '--input_file', 'tasks.jsonl', '--output_dir', pristine, '--num_shards', '2'],
    { cwd: root },
  );
  expect(made.stderr).not.toMatch(/error/i);
  expect(made.code).toBe(0);
});
afterAll(() => cleanup());

describe('--positions', () => {
  let all: Awaited<ReturnType<typeof readRun>>;
  beforeAll(async () => {
    const dir = datasetCopy('all');
    const run = await work(dir);
    expect(run.code).toBe(0);
    all = await readRun(path.join(dir, 'activations'));
  });

  test('all: every prompt token is a row, at positions 0..n-1', () => {
    expect(all.samples.size).toBe(5 * 2 + 2);
    for (const s of all.samples.values()) {
      expect(s.positions).toEqual(Array.from({ length: s.record.n_tokens }, (_, i) => i));
      expect(s.record.n_rows).toBe(s.record.n_tokens);
    }
    expect(all.dataset.positions).toBe('all');
    expect(all.dataset.rows).toBe(all.dataset.tokens);
  });

  test('last: one row per sample, bit for bit the last row of the all run', async () => {
    const dir = datasetCopy('last');
    expect((await work(dir, '--positions', 'last')).code).toBe(0);
    const last = await readRun(path.join(dir, 'activations'));
    expect([...last.samples.keys()].sort()).toEqual([...all.samples.keys()].sort());
    for (const [id, s] of last.samples) {
      const full = all.samples.get(id)!;
      const n = full.record.n_tokens;
      expect({ id, positions: s.positions }).toEqual({ id, positions: [n - 1] });
      expect(s.tokenIds).toEqual([full.tokenIds[n - 1]]);
      for (const layer of LAYERS) expect(s.rows.get(layer)).toEqual([full.rows.get(layer)![n - 1]]);
    }
    expect(last.dataset).toMatchObject({ positions: 'last', rows: 12 });
    // The model saw the same prompts: tokens count the whole prompts in both runs.
    expect(last.dataset.tokens).toBe(all.dataset.tokens);
    expect(last.dataset.bytes).toBeLessThan(all.dataset.bytes);
  });

  test('answer: ARC rows sit on the answer fence, text rows on the last token; both equal the all run', async () => {
    const dir = datasetCopy('answer');
    expect((await work(dir, '--positions', 'answer')).code).toBe(0);
    const answer = await readRun(path.join(dir, 'activations'));
    const fence = loadTokenizer().encode('```', { addSpecialTokens: false });
    expect(fence).toHaveLength(1);
    for (const [id, s] of answer.samples) {
      const full = all.samples.get(id)!;
      expect(s.positions).toHaveLength(1);
      const p = s.positions[0]!;
      if (s.record.kind === 'arc') {
        // The last fence of the prompt: it opens the answer grid, and none follows.
        expect(full.tokenIds[p]).toBe(fence[0]);
        expect(full.tokenIds.slice(p + 1)).not.toContain(fence[0]);
        expect(p).toBeLessThan(full.record.n_tokens - 1);
      } else {
        expect(p).toBe(full.record.n_tokens - 1);
      }
      for (const layer of LAYERS) expect(s.rows.get(layer)).toEqual([full.rows.get(layer)![p]]);
    }
    expect([...answer.samples.values()].filter((s) => s.record.kind === 'text')).toHaveLength(2);
  });

  test('a list: chosen positions from the start and the end, in prompt order', async () => {
    const dir = datasetCopy('list');
    expect((await work(dir, '--positions', '0,2-3,-1')).code).toBe(0);
    const list = await readRun(path.join(dir, 'activations'));
    for (const [id, s] of list.samples) {
      const full = all.samples.get(id)!;
      const n = full.record.n_tokens;
      const want = [...new Set([0, 2, 3, n - 1].filter((p) => p < n))].sort((a, b) => a - b);
      expect({ id, positions: s.positions }).toEqual({ id, positions: want });
      for (const layer of LAYERS)
        expect(s.rows.get(layer)).toEqual(want.map((p) => full.rows.get(layer)![p]));
    }
  });

  test('statistics: the manifests hold a float64 recomputation of every stored row', () => {
    // Recomputed from the rows in sample-id order (not the order the worker saw them): the
    // figures agree to 1e-12 relative, float64 rounding of a different summation order.
    for (const layer of LAYERS) {
      const rows = [...all.samples.values()].flatMap((s) =>
        s.rows.get(layer)!.map((r) => r.map(f16BitsToNumber)),
      );
      const n = rows.length;
      const mean = Array.from(
        { length: HIDDEN },
        (_, d) => rows.reduce((a, r) => a + r[d]!, 0) / n,
      );
      const m2 = Array.from({ length: HIDDEN }, (_, d) =>
        rows.reduce((a, r) => a + (r[d]! - mean[d]!) ** 2, 0),
      );
      const normSum = rows.reduce((a, r) => a + Math.sqrt(r.reduce((b, v) => b + v * v, 0)), 0);
      const check = (got: LayerStats): void => {
        expect(got.count).toBe(n);
        got.mean.forEach((v, d) =>
          expect(Math.abs(v - mean[d]!)).toBeLessThan(1e-12 * (1 + Math.abs(mean[d]!))),
        );
        got.m2.forEach((v, d) => expect(Math.abs(v - m2[d]!)).toBeLessThan(1e-12 * (1 + m2[d]!)));
        expect(Math.abs(got.norm_sum - normSum)).toBeLessThan(1e-12 * normSum);
      };
      check(all.dataset.stats[`resid_post.${layer}`]!);
      // Each shard's figures are its own rows' (the shards split the samples between them).
      expect(all.shards.reduce((a, s) => a + s.stats[`resid_post.${layer}`]!.count, 0)).toBe(n);
    }
  });

  test('stats prints the figures, with the scaling factor sqrt(hidden) / mean norm', async () => {
    const dir = path.join(root, 'all');
    const out = await cli(['stats', '--dataset_dir', dir, '--json'], { cwd: root });
    expect(out.code).toBe(0);
    const doc = JSON.parse(out.stdout) as {
      complete: boolean;
      layers: Array<{
        layer: number;
        rows: number;
        mean_norm: number;
        norm_scaling_factor: number;
        variance: number[];
      }>;
    };
    expect(doc.complete).toBe(true);
    expect(doc.layers.map((l) => l.layer)).toEqual(LAYERS);
    for (const l of doc.layers) {
      const s = all.dataset.stats[`resid_post.${l.layer}`]!;
      expect(l.rows).toBe(s.count);
      expect(l.mean_norm).toBe(s.norm_sum / s.count);
      expect(l.norm_scaling_factor).toBeCloseTo(Math.sqrt(HIDDEN) / l.mean_norm, 12);
      expect(l.variance).toEqual(s.m2.map((v) => v / s.count));
    }
    const text = await cli(['stats', '--dataset_dir', dir, '--layer', '1'], { cwd: root });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/complete: 2 shards/);
    expect(text.stdout).toMatch(/scaling factor/);
    const missing = await cli(['stats', '--dataset_dir', dir, '--layer', '7'], { cwd: root });
    expect(missing.code).toBe(7);
    expect(missing.stderr).toContain('layer 7 was not extracted; the outputs hold layers 0, 1');
  });
});

describe('provenance', () => {
  test('a worker with another model, --layers or --positions is refused on resume; the same settings resume', async () => {
    const dir = datasetCopy('resume');
    const first = await work(dir, '--max_shards', '1');
    expect(first.code).toBe(0);
    const other = makeModel(path.join(root, 'model-2'), 12);
    const refusals: Array<[string, string[], string]> = [
      [model, ['--layers', '0'], 'layers'],
      [model, ['--positions', 'last'], 'positions'],
      [other, [], 'model_sha256'],
    ];
    for (const [modelPath, flags, field] of refusals) {
      const run = await workWith(modelPath, dir, ...flags);
      expect({ flags, code: run.code }).toEqual({ flags, code: 4 });
      expect(run.stderr).toContain(`${field}:`);
      expect(run.stderr).toContain('reset --discard_parts');
    }
    const status = await cli(['status', '--dataset_dir', dir, '--json'], { cwd: root });
    const shards = (JSON.parse(status.stdout) as { shards: Array<{ status: string }> }).shards;
    expect(shards.map((s) => s.status).sort()).toEqual(['available', 'completed']);
    const resumed = await work(dir);
    expect(resumed.code).toBe(0);
    const run = await readRun(path.join(dir, 'activations'));
    expect(run.shards.map((s) => s.fingerprint)).toEqual([
      run.dataset.fingerprint,
      run.dataset.fingerprint,
    ]);
  });
});
