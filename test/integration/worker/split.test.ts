/**
 * Work units end to end: three worker processes of the built CLI on two shards of uneven size
 * (one ten times longer than the other), on a generated Qwen2-shaped model. The worker with
 * nothing to claim splits the long shard, and so does the one whose short shard is done. What
 * a researcher gets must not change: the same samples in the same order, the same activations
 * byte for byte, manifests that agree, and the numpy reader sees one ordered stream, exactly as
 * in a run that never split (`--split off`).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { LOCAL_LEDGER_FILE } from '../../../core/dataset/paths';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import type { DatasetManifest, ShardManifest } from '../../../core/rollup/manifests';
import { parseSafetensorsHeader, readTensor } from '../../../core/safetensors';
import { generateArcTasks } from '../../../synthetic/arc-puzzles';
import { cli } from '../../support/cli';
import { pythonTest, runPython } from '../../support/python';
import { makeTempDir } from '../../support/tmp';
import {
  collectSamples,
  makeModel,
  spawnWorker,
  writeUnevenDataset,
} from '../../support/worker-fixtures';

jest.setTimeout(600_000);

const ROOT = path.resolve(__dirname, '..', '..', '..');
const LAYERS = [0, 1];
const SHORT = 12;
const LONG = 120;
const { dir, cleanup } = makeTempDir('split-it');
let model: string;
const lines = generateArcTasks(SHORT + LONG, 23, 4).map((t) => JSON.stringify(t));

const flags = (): string[] => [
  '--model_path',
  model,
  '--layers',
  LAYERS.join(','),
  '--predictions_per_task',
  '2',
  '--part_size_mb',
  '0.05',
  '--threads',
  '1',
];

/** Every sample of an output folder in manifest order: its id and its rows' bytes per layer. */
async function samplesOf(
  out: string,
): Promise<Array<{ id: string; task: number; rows: string[] }>> {
  const store = new LocalBlobStore(out);
  const dataset = JSON.parse((await store.readAll('_MANIFEST.json')).toString()) as DatasetManifest;
  const samples: Array<{ id: string; task: number; rows: string[] }> = [];
  for (const s of dataset.shards) {
    const manifest = JSON.parse((await store.readAll(s.manifest)).toString()) as ShardManifest;
    const shardDir = path.dirname(s.manifest);
    for (const part of manifest.parts) {
      const file = await store.readAll(`${shardDir}/${part.name}.safetensors`);
      const parsed = parseSafetensorsHeader(file);
      const offsets = Array.from(
        readTensor(file, parsed, 'sample_offsets') as BigInt64Array,
        Number,
      );
      const layers = LAYERS.map((l) => readTensor(file, parsed, `resid_post.${l}`) as Uint16Array);
      const hidden = dataset.hidden_size;
      const index = (await store.readAll(`${shardDir}/${part.name}.index.jsonl`))
        .toString()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { sample_id: string; task_index: number });
      index.forEach((r, k) =>
        samples.push({
          id: r.sample_id,
          task: r.task_index,
          rows: layers.map((t) =>
            Buffer.from(
              t.buffer,
              t.byteOffset + offsets[k]! * hidden * 2,
              (offsets[k + 1]! - offsets[k]!) * hidden * 2,
            ).toString('base64'),
          ),
        }),
      );
    }
  }
  return samples;
}

let plainDir: string;
let splitDir: string;
let workerLogs: string[] = [];

beforeAll(async () => {
  model = makeModel(path.join(dir, 'model'));
  plainDir = path.join(dir, 'plain');
  splitDir = path.join(dir, 'split');
  for (const d of [plainDir, splitDir]) writeUnevenDataset(d, 'uneven', lines, [SHORT, LONG], 10);
  // The run that never splits: one worker, in this process.
  const plain = await cli(
    ['work', '--sharded_dataset_dir', plainDir, '--split', 'off', ...flags()],
    {
      cwd: dir,
    },
  );
  expect(plain.code).toBe(0);
  // The run that splits: three workers at once, short leases (so short reservations).
  const workers = ['w0', 'w1', 'w2'].map((id) =>
    spawnWorker(
      ['--sharded_dataset_dir', splitDir, '--worker_id', id, '--lease_seconds', '4', ...flags()],
      { ...process.env },
      dir,
    ),
  );
  const codes = await Promise.all(workers.map((w) => w.exited));
  workerLogs = workers.map((w) => w.stderr());
  expect(codes).toEqual([0, 0, 0]);
});
afterAll(() => cleanup());

test('the idle workers split the long shard: several units, each held by another worker', async () => {
  const splits = workerLogs.flatMap((log) =>
    log
      .split('\n')
      .filter((l) => l.includes('split a unit'))
      .map((l) => JSON.parse(l) as { shard_id: number; worker_id: string; from_holder: string }),
  );
  expect(splits.length).toBeGreaterThanOrEqual(1);
  expect(splits.every((s) => s.shard_id === 1 && s.from_holder !== s.worker_id)).toBe(true);
  const ledger = SqliteLedger.open(path.join(splitDir, LOCAL_LEDGER_FILE), { clock: systemClock });
  try {
    const status = await ledger.status('uneven');
    expect(status.state).toBe('completed');
    const long = status.shards[1]!;
    expect(long.units.length).toBe(splits.length + 1);
    expect(new Set(long.units.map((u) => u.assigned_to)).size).toBeGreaterThanOrEqual(2);
    // The units (listed in task order) cover the shard end to end.
    let next = SHORT;
    for (const u of long.units) {
      expect(u.unit_start).toBe(next);
      next = u.unit_end;
    }
    expect(next).toBe(SHORT + LONG);
    expect(status.shards[0]!.units).toHaveLength(1);
  } finally {
    await ledger.close();
  }
});

test('the same samples in the same order, the activations byte for byte, as the run never split', async () => {
  const plain = await samplesOf(path.join(plainDir, 'activations'));
  const split = await samplesOf(path.join(splitDir, 'activations'));
  expect(plain).toHaveLength((SHORT + LONG) * 2);
  expect(split.map((s) => s.id)).toEqual(plain.map((s) => s.id));
  for (let k = 0; k < plain.length; k++)
    if (split[k]!.rows.join() !== plain[k]!.rows.join())
      throw new Error(`sample ${plain[k]!.id}: its activations differ from the unsplit run's`);
  const ids = await collectSamples(new LocalBlobStore(path.join(splitDir, 'activations')), 2);
  expect(ids.ids).toEqual(plain.map((s) => s.id));
});

test('the manifests agree: the split shard lists every unit’s parts in task order; totals and statistics match', () => {
  const read = <T>(d: string, f: string): T =>
    JSON.parse(readFileSync(path.join(d, 'activations', f), 'utf8')) as T;
  const [plainSet, splitSet] = [plainDir, splitDir].map((d) =>
    read<DatasetManifest>(d, '_MANIFEST.json'),
  );
  for (const k of [
    'samples',
    'tokens',
    'rows',
    'num_shards',
    'total_tasks',
    'fingerprint',
  ] as const)
    expect({ k, v: splitSet![k] }).toEqual({ k, v: plainSet![k] });
  for (const shard of ['shard_000', 'shard_001']) {
    const [a, b] = [plainDir, splitDir].map((d) =>
      read<ShardManifest>(d, `${shard}/_MANIFEST.json`),
    );
    for (const k of [
      'samples',
      'tokens',
      'rows',
      'skipped',
      'first_task_index',
      'total_tasks',
    ] as const)
      expect({ shard, k, v: b![k] }).toEqual({ shard, k, v: a![k] });
    // Parts follow each other without a gap, from the shard's first task to its last (a part
    // may begin inside the task the one before it ended in).
    let last = b!.first_task_index - 1;
    for (const p of b!.parts) {
      expect([last, last + 1]).toContain(p.first_task_index);
      last = p.last_task_index;
    }
    expect(b!.parts[0]!.first_task_index).toBe(b!.first_task_index);
    expect(last).toBe(b!.first_task_index + b!.total_tasks - 1);
    for (const [layer, s] of Object.entries(a!.stats)) {
      const t = b!.stats[layer]!;
      expect(t.count).toBe(s.count);
      expect(Math.abs(t.norm_sum - s.norm_sum)).toBeLessThan(1e-9 * s.norm_sum);
      t.mean.forEach((v, d) => expect(Math.abs(v - s.mean[d]!)).toBeLessThan(1e-9));
    }
  }
  const long = read<ShardManifest>(splitDir, 'shard_001/_MANIFEST.json');
  expect(new Set(long.parts.map((p) => p.unit ?? 0)).size).toBeGreaterThanOrEqual(2);
  expect(
    long.parts.filter((p) => p.unit).every((p) => /^part_u\d+_\d{5}(_to\d+)?$/.test(p.name)),
  ).toBe(true);
});

/** Runs a Python `script` (one line per sample) on both outputs: it succeeds, and prints the same. */
function expectOneStream(script: string): void {
  const [plain, split] = [plainDir, splitDir].map((d) =>
    runPython(['-c', script, path.join(d, 'activations')]),
  );
  for (const r of [plain, split])
    expect({ status: r!.status, stderr: r!.status === 0 ? '' : r!.stderr }).toEqual({
      status: 0,
      stderr: '',
    });
  expect(plain!.stdout.trim().split('\n')).toHaveLength((SHORT + LONG) * 2);
  expect(split!.stdout).toBe(plain!.stdout);
}

pythonTest('the numpy reader walks both outputs into one and the same ordered stream', () => {
  const script = `
import hashlib, json, os, sys
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'examples'))})
from read_activations import load_part
root = sys.argv[1]
ds = json.load(open(os.path.join(root, "_MANIFEST.json")))
for s in ds["shards"]:
    m = json.load(open(os.path.join(root, s["manifest"])))
    d = os.path.join(root, os.path.dirname(s["manifest"]))
    for p in m["parts"]:
        part = load_part(os.path.join(d, p["name"] + ".safetensors"))
        for k in range(part.n_samples):
            h = hashlib.sha256()
            for layer in (${LAYERS.join(', ')}):
                h.update(part.sample(k, layer=layer).tobytes())
            print(part.index[k]["sample_id"], h.hexdigest())
`;
  expectOneStream(script);
});

test('verify finds both outputs whole, and the split one has each unit its own parts', async () => {
  for (const d of [plainDir, splitDir]) {
    const r = await cli(['verify', '--dataset_dir', d, '--recompute_stats', '--json'], {
      cwd: dir,
    });
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    const report = JSON.parse(r.stdout) as {
      problems: unknown[];
      shards: Array<{ shard_id: number; parts: number; samples: number }>;
    };
    expect(report.problems).toEqual([]);
    const manifests = [0, 1].map(
      (k) =>
        JSON.parse(
          readFileSync(path.join(d, 'activations', `shard_00${k}`, '_MANIFEST.json'), 'utf8'),
        ) as ShardManifest,
    );
    expect(report.shards.map((s) => s.parts)).toEqual(manifests.map((m) => m.parts.length));
    expect(report.shards.reduce((n, s) => n + s.samples, 0)).toBe((SHORT + LONG) * 2);
  }
});

pythonTest('the dataset reader streams the split output exactly as the unsplit one', () => {
  const script = `
import hashlib, sys
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'examples'))})
from shardline_dataset import Dataset
for s in Dataset(sys.argv[1]).samples():
    h = hashlib.sha256()
    for layer in (${LAYERS.join(', ')}):
        h.update(s.activations[layer].tobytes())
    print(s.sample, s.record["sample_id"], h.hexdigest())
`;
  expectOneStream(script);
});
