/**
 * `shardline demo` (npm start) end to end at a small size: it finishes, its outputs pass the
 * Python reader, and a second run starts clean and succeeds too.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { CLI } from '../../support/worker-fixtures';

const ROOT = path.resolve(__dirname, '..', '..', '..');

test('the demo runs end to end, twice, and Python reads what it wrote', () => {
  const { dir, cleanup } = makeTempDir('demo');
  try {
    const run = () =>
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
    const first = run();
    if (first.status !== 0)
      throw new Error(`demo failed (${first.status}): ${first.stderr.slice(-2000)}`);
    expect(first.stdout).toContain('3/3 shards done');
    expect(first.stdout).toContain('36 samples from 18 tasks');
    expect(first.stdout).toContain('Read a part in Python');

    const manifest = JSON.parse(
      readFileSync(path.join(dir, '.shardline-demo/dataset/activations/_MANIFEST.json'), 'utf8'),
    ) as { samples: number; shards: Array<{ manifest: string }> };
    expect(manifest.samples).toBe(36);

    if (spawnSync('python3', ['-c', 'import numpy']).status === 0) {
      // The reader's own consistency checks run on load; count every sample it reads.
      let samples = 0;
      for (const s of manifest.shards) {
        const shardManifest = JSON.parse(
          readFileSync(path.join(dir, '.shardline-demo/dataset/activations', s.manifest), 'utf8'),
        ) as { parts: Array<{ name: string }> };
        for (const p of shardManifest.parts) {
          const file = path.join(
            dir,
            '.shardline-demo/dataset/activations',
            path.dirname(s.manifest),
            `${p.name}.safetensors`,
          );
          const out = execFileSync(
            'python3',
            [
              '-c',
              `import sys; sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'examples'))}); from read_activations import load_part\np = load_part(${JSON.stringify(file)})\nprint(p.n_samples, sum(p.sample(k, layer=3).shape[0] for k in range(p.n_samples)), len(p.index))`,
            ],
            { encoding: 'utf8' },
          );
          const [n, tokens, index] = out.trim().split(' ').map(Number);
          expect(n).toBe(index);
          expect(tokens).toBeGreaterThan(0);
          samples += n!;
        }
      }
      expect(samples).toBe(36);
    }

    const second = run();
    expect(second.status).toBe(0);
    expect(second.stdout).toContain('36 samples from 18 tasks');
  } finally {
    cleanup();
  }
});
