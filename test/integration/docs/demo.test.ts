/**
 * `shardline demo` (npm start) end to end at a small size: it finishes, a second run starts
 * clean and succeeds too, and its outputs pass the Python reader (a named skip where python3
 * with numpy is missing, a failure where SHARDLINE_REQUIRE_PYTHON is set: test/support/python.ts).
 */
import type { SpawnSyncReturns } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { pythonTest, runPython } from '../../support/python';
import { makeTempDir } from '../../support/tmp';
import { CLI } from '../../support/worker-fixtures';

const ROOT = path.resolve(__dirname, '..', '..', '..');

let dir = '';
let cleanup = (): void => undefined;
let first: SpawnSyncReturns<string>;
let second: SpawnSyncReturns<string>;

const run = (): SpawnSyncReturns<string> =>
  spawnSync(
    process.execPath,
    [
      CLI,
      'demo',
      '--tasks',
      '18',
      '--workers',
      '2',
      '--num_shards',
      '3',
      '--predictions_per_task',
      '2',
    ],
    { cwd: dir, encoding: 'utf8', timeout: 600_000 },
  );

beforeAll(() => {
  ({ dir, cleanup } = makeTempDir('demo'));
  first = run();
  second = run();
}, 1_200_000);
afterAll(() => cleanup());

/** The dataset manifest the demo left, with the folder its paths are relative to. */
function manifest(): { root: string; samples: number; shards: Array<{ manifest: string }> } {
  const root = path.join(dir, '.shardline-demo/dataset/activations');
  const m = JSON.parse(readFileSync(path.join(root, '_MANIFEST.json'), 'utf8')) as {
    samples: number;
    shards: Array<{ manifest: string }>;
  };
  return { root, ...m };
}

test('the demo runs end to end, twice: the second run starts clean and succeeds too', () => {
  for (const r of [first, second]) {
    expect({ status: r.status, stderr: r.status === 0 ? '' : r.stderr.slice(-2000) }).toEqual({
      status: 0,
      stderr: '',
    });
    expect(r.stdout).toContain('3/3 shards done');
    expect(r.stdout).toContain('36 samples from 18 tasks');
  }
  expect(first.stdout).toContain('Read a part in Python');
  expect(manifest().samples).toBe(36);
});

pythonTest('Python reads every part the demo wrote: 36 samples, each with its tokens', () => {
  const { root, shards } = manifest();
  // The reader's own consistency checks run on load; count every sample it reads.
  let samples = 0;
  let parts = 0;
  for (const s of shards) {
    const shardManifest = JSON.parse(readFileSync(path.join(root, s.manifest), 'utf8')) as {
      parts: Array<{ name: string }>;
    };
    for (const p of shardManifest.parts) {
      const file = path.join(root, path.dirname(s.manifest), `${p.name}.safetensors`);
      const out = runPython([
        '-c',
        `import sys; sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'examples'))}); from read_activations import load_part\np = load_part(${JSON.stringify(file)})\nprint(p.n_samples, sum(p.sample(k, layer=3).shape[0] for k in range(p.n_samples)), len(p.index))`,
      ]);
      expect({ status: out.status, stderr: out.status === 0 ? '' : out.stderr }).toEqual({
        status: 0,
        stderr: '',
      });
      const [n, tokens, index] = out.stdout.trim().split(' ').map(Number);
      expect(n).toBe(index);
      expect(tokens).toBeGreaterThan(0);
      samples += n!;
      parts++;
    }
  }
  expect(shards).toHaveLength(3);
  expect(parts).toBeGreaterThanOrEqual(3);
  expect(samples).toBe(36);
});
