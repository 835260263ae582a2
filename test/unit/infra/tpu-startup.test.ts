/**
 * infra/tpu/startup.sh on a simulated host: a fake metadata server (curl) and a fake Docker
 * record what it would run. Every host of a slice starts the worker image with its own host id
 * and the slice's host count, restarted on failure, with the host's credentials only.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { ROOT, shellWords } from './plan';

const { dir, cleanup } = makeTempDir('tpu-startup');
afterAll(cleanup);

let host = 0;

/** Runs startup.sh with these metadata attributes; returns the `docker` invocations. */
function boot(
  attributes: Record<string, string>,
  env: Record<string, string> = {},
): { status: number | null; stderr: string; docker: string[][]; root: string } {
  const root = path.join(dir, `host-${host++}`);
  const bin = path.join(root, 'bin');
  const md = path.join(root, 'metadata');
  mkdirSync(path.join(md, 'instance', 'attributes'), { recursive: true });
  mkdirSync(path.join(md, 'project'), { recursive: true });
  mkdirSync(path.join(md, 'instance', 'service-accounts', 'default'), { recursive: true });
  mkdirSync(bin, { recursive: true });
  for (const [k, v] of Object.entries(attributes))
    writeFileSync(path.join(md, 'instance', 'attributes', k), v);
  writeFileSync(path.join(md, 'project', 'project-id'), 'demo-tpu');
  writeFileSync(
    path.join(md, 'instance', 'service-accounts', 'default', 'token'),
    '{"access_token":"ya29.fake","expires_in":3599,"token_type":"Bearer"}',
  );
  // curl: serves files under $md for metadata URLs (fails like `curl -f` on a missing one).
  writeFileSync(
    path.join(bin, 'curl'),
    `#!/bin/bash
for a in "$@"; do url=$a; done
case "$url" in
  http://metadata.google.internal/computeMetadata/v1/*) f="${md}/\${url#http://metadata.google.internal/computeMetadata/v1/}" ;;
  *) echo "unexpected curl $url" >&2; exit 7 ;;
esac
[ -f "$f" ] || exit 22
cat "$f"
`,
  );
  const log = path.join(root, 'docker.log');
  writeFileSync(
    path.join(bin, 'docker'),
    `#!/bin/bash
if [ "$1" = login ]; then cat >"${root}/login-password"; fi
printf '%q ' "$@" >>"${log}"; echo >>"${log}"
`,
  );
  for (const tool of ['curl', 'docker']) chmodSync(path.join(bin, tool), 0o755);
  const result = spawnSync('bash', [path.join(ROOT, 'infra/tpu/startup.sh')], {
    encoding: 'utf8',
    env: {
      PATH: `${bin}:/usr/bin:/bin`,
      SHARDLINE_STATE_DIR: path.join(root, 'state'),
      ...env,
    },
  });
  let lines: string[] = [];
  try {
    lines = readFileSync(log, 'utf8').split('\n').filter(Boolean);
  } catch {
    // no docker call
  }
  return {
    status: result.status,
    stderr: result.stderr,
    docker: lines.map((l) => shellWords(l.trim())),
    root,
  };
}

const IMAGE = 'us-central1-docker.pkg.dev/demo-tpu/shardline/worker:latest';
const SLICE = {
  'shardline-image': IMAGE,
  'shardline-dataset-dir': 'gs://demo-tpu-shardline/datasets/arc',
  'shardline-subscription': 'projects/demo-tpu/subscriptions/shardline-work-workers',
  'shardline-model-path': '/models/qwen/model.onnx',
  'shardline-events-topic': 'shardline-events',
  'shardline-work-topic': 'shardline-work',
  'worker-network-endpoints':
    'unknown:unknown:10.0.0.2,unknown:unknown:10.0.0.3,unknown:unknown:10.0.0.4,unknown:unknown:10.0.0.5',
};
const runs = (docker: string[][]) => docker.filter((args) => args[0] === 'run');
const after = (args: string[], name: string) => args[args.indexOf(name) + 1];

describe('infra/tpu/startup.sh', () => {
  test('each host of a slice runs the worker with its own host id and the slice size', () => {
    for (const worker of ['0', '3']) {
      const { status, stderr, docker } = boot({ ...SLICE, 'agent-worker-number': worker });
      expect(stderr).toContain(`host ${worker} of 4`);
      expect(status).toBe(0);
      const [run] = runs(docker);
      expect(run).toBeDefined();
      expect(after(run!, '--host_id')).toBe(worker);
      expect(after(run!, '--num_hosts')).toBe('4');
      expect(after(run!, '--sharded_dataset_dir')).toBe(SLICE['shardline-dataset-dir']);
      expect(after(run!, '--subscription')).toBe(SLICE['shardline-subscription']);
      expect(after(run!, '--model_path')).toBe(SLICE['shardline-model-path']);
      expect(run).toContain('--follow');
      expect(run!.slice(run!.indexOf(IMAGE), run!.indexOf(IMAGE) + 2)).toEqual([IMAGE, 'work']);
    }
  });

  test('the container restarts on failure, uses the host identity and mounts no credentials', () => {
    const { docker, root } = boot({ ...SLICE, 'agent-worker-number': '1' });
    const [run] = runs(docker);
    expect(run).toContain('--restart=on-failure');
    expect(run).toContain('--init');
    expect(run).toContain('GOOGLE_CLOUD_PROJECT=demo-tpu');
    expect(run).toContain('SHARDLINE_EVENTS_TOPIC=shardline-events');
    expect(run!.join(' ')).not.toMatch(/GOOGLE_APPLICATION_CREDENTIALS|\.json|\.config\/gcloud/);
    // The registry login uses the metadata server's short-lived token, for the image's registry.
    const login = docker.find((a) => a[0] === 'login')!;
    expect(login).toEqual([
      'login',
      '-u',
      'oauth2accesstoken',
      '--password-stdin',
      'https://us-central1-docker.pkg.dev',
    ]);
    expect(readFileSync(path.join(root, 'login-password'), 'utf8').trim()).toBe('ya29.fake');
    expect(docker.some((a) => a[0] === 'pull' && a[1] === IMAGE)).toBe(true);
  });

  test('runs several workers per host and passes extra flags through', () => {
    const { docker } = boot({
      ...SLICE,
      'agent-worker-number': '2',
      'shardline-workers-per-host': '3',
      'shardline-worker-args': '--batch_size 8 --layers 12,18',
    });
    const all = runs(docker);
    expect(all.map((r) => after(r, '--name'))).toEqual([
      'shardline-worker-0',
      'shardline-worker-1',
      'shardline-worker-2',
    ]);
    for (const r of all) expect(r.slice(-4)).toEqual(['--batch_size', '8', '--layers', '12,18']);
  });

  test('a VM outside a TPU slice is host 0 of 1 unless its metadata says otherwise', () => {
    const { 'worker-network-endpoints': _endpoints, ...single } = SLICE;
    const alone = runs(boot(single).docker)[0]!;
    expect([after(alone, '--host_id'), after(alone, '--num_hosts')]).toEqual(['0', '1']);
    const numbered = runs(
      boot({ ...single, 'shardline-host-id': '5', 'shardline-num-hosts': '8' }).docker,
    )[0]!;
    expect([after(numbered, '--host_id'), after(numbered, '--num_hosts')]).toEqual(['5', '8']);
  });

  test('refuses to start without its settings, or with a host id outside the slice', () => {
    const { 'shardline-image': _image, ...noImage } = SLICE;
    const missing = boot(noImage);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('metadata shardline-image is not set');
    const outside = boot({ ...SLICE, 'agent-worker-number': '4' });
    expect(outside.status).not.toBe(0);
    expect(outside.stderr).toContain('host id 4 is not below the number of hosts 4');
    expect(runs(outside.docker)).toEqual([]);
  });
});
