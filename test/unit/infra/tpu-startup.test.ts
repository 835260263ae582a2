/**
 * infra/tpu/startup.sh on a simulated host: a fake metadata server (curl), a fake Docker and a
 * fake systemctl record what it would run; each worker service's start command is then run
 * against the fake Docker. Every host of a slice starts the worker image with its own host id
 * and the slice's host count, under a systemd service that caps restarts, never restarts after
 * exit 2 or 8, and logs why a worker stopped; with the host's credentials only; TPU and GPU
 * hosts give the container their accelerators (a GPU only once its driver answers).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { ROOT, shellWords } from './plan';

const { dir, cleanup } = makeTempDir('tpu-startup');
afterAll(cleanup);

let host = 0;

interface Boot {
  status: number | null;
  stderr: string;
  /** Docker calls: the script's own, then those of each started service's start command. */
  docker: string[][];
  /** systemctl calls. */
  systemctl: string[][];
  /** Unit files written, by name. */
  units: Map<string, string>;
  root: string;
  bin: string;
}

/**
 * Runs startup.sh with these metadata attributes, then the start command of every service it
 * restarted (as systemd would); returns what Docker and systemctl were asked.
 */
function boot(
  attributes: Record<string, string>,
  env: Record<string, string> = {},
  tools: Record<string, string> = {},
): Boot {
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
if [ "$1" = logs ]; then printf 'line one\\nline two\\n'; fi
printf '%q ' "$@" >>"${log}"; echo >>"${log}"
`,
  );
  const sysLog = path.join(root, 'systemctl.log');
  writeFileSync(
    path.join(bin, 'systemctl'),
    `#!/bin/bash\nprintf '%q ' "$@" >>"${sysLog}"; echo >>"${sysLog}"\n`,
  );
  for (const [tool, script] of Object.entries(tools)) writeFileSync(path.join(bin, tool), script);
  for (const tool of ['curl', 'docker', 'systemctl', ...Object.keys(tools)])
    chmodSync(path.join(bin, tool), 0o755);
  const units = path.join(root, 'units');
  mkdirSync(units, { recursive: true });
  const processEnv = {
    PATH: `${bin}:/usr/bin:/bin`,
    SHARDLINE_STATE_DIR: path.join(root, 'state'),
    SHARDLINE_SYSTEMD_DIR: units,
    SHARDLINE_CONSOLE: path.join(root, 'console'),
    ...env,
  };
  const result = spawnSync('bash', [path.join(ROOT, 'infra/tpu/startup.sh')], {
    encoding: 'utf8',
    env: processEnv,
  });
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8').split('\n').filter(Boolean);
    } catch {
      return []; // no call
    }
  };
  const systemctl = read(sysLog).map((l) => shellWords(l.trim()));
  const unitFiles = new Map(
    readdirSync(units).map((f) => [f, readFileSync(path.join(units, f), 'utf8')]),
  );
  // systemd's part: run each restarted service's ExecStart.
  for (const [verb, unit] of systemctl) {
    if (verb !== 'restart') continue;
    const exec = /^ExecStart=(.*)$/m.exec(unitFiles.get(unit!) ?? '')?.[1];
    if (exec) spawnSync('bash', ['-c', exec], { encoding: 'utf8', env: processEnv });
  }
  return {
    status: result.status,
    stderr: result.stderr,
    docker: read(log).map((l) => shellWords(l.trim())),
    systemctl,
    units: unitFiles,
    root,
    bin,
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

  test('the container uses the host identity and mounts no credentials', () => {
    const { docker, root } = boot({ ...SLICE, 'agent-worker-number': '1' });
    const [run] = runs(docker);
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

  test('each worker is a systemd service that caps restarts and never restarts after exit 2 or 8', () => {
    const { units, systemctl, docker } = boot({
      ...SLICE,
      'agent-worker-number': '0',
      'shardline-workers-per-host': '2',
    });
    expect([...units.keys()].sort()).toEqual([
      'shardline-worker-0.service',
      'shardline-worker-1.service',
    ]);
    for (const unit of units.values()) {
      expect(unit).toMatch(/^Restart=on-failure$/m);
      expect(unit).toMatch(/^StartLimitBurst=5$/m);
      expect(unit).toMatch(/^StartLimitIntervalSec=1800$/m);
      // 2: bad usage (the settings are wrong); 8: the worker left failed shards (cli/exit-codes.ts).
      expect(/^RestartPreventExitStatus=(.*)$/m.exec(unit)?.[1]?.split(' ').sort()).toEqual([
        '2',
        '8',
      ]);
      expect(unit).toMatch(
        /^ExecStopPost=\/bin\/bash \S+\/worker-exit\.sh \d shardline-worker-\d \S+$/m,
      );
    }
    expect(systemctl.filter((c) => c[0] === 'restart').map((c) => c[1])).toEqual([
      'shardline-worker-0.service',
      'shardline-worker-1.service',
    ]);
    expect(systemctl[0]).toEqual(['daemon-reload']);
    // Docker restarts nothing itself: systemd owns the restarts.
    for (const r of runs(docker)) expect(r.join(' ')).not.toMatch(/--restart|\s-d\s/);
  });

  test('a stopped worker is logged with its exit status, what it means and its last lines', () => {
    const { units, root, bin } = boot({ ...SLICE, 'agent-worker-number': '0' });
    const post = /^ExecStopPost=(.*)$/m.exec(units.get('shardline-worker-0.service')!)![1]!;
    for (const [status, meaning] of [
      ['8', 'the worker left failed shards (not restarted'],
      ['2', 'bad usage: fix the instance metadata (not restarted)'],
      ['1', 'unexpected failure (restarted)'],
    ]) {
      const r = spawnSync('bash', ['-c', post], {
        encoding: 'utf8',
        env: { PATH: `${bin}:/usr/bin:/bin`, EXIT_STATUS: status, SERVICE_RESULT: 'exit-code' },
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(
        `shardline-worker-0: the worker exited with status ${status} (${meaning}`,
      );
      expect(r.stdout).toContain('shardline-worker-0| line two');
    }
    // The same lines reach the serial console.
    expect(readFileSync(path.join(root, 'console'), 'utf8')).toContain(
      'exited with status 8 (the worker left failed shards',
    );
  });

  test('a TPU host gives the container the chips and the backend', () => {
    const { docker } = boot({
      ...SLICE,
      'agent-worker-number': '0',
      'shardline-accelerator': 'tpu',
      'shardline-backend': 'jax',
    });
    const [run] = runs(docker);
    expect(run).toContain('--privileged');
    expect(run).toContain('--net=host');
    expect(after(run!, '--backend')).toBe('jax');
    const cpu = runs(boot({ ...SLICE, 'agent-worker-number': '0' }).docker)[0]!;
    expect(cpu).not.toContain('--privileged');
    expect(cpu).not.toContain('--backend');
  });

  test('a GPU host starts its workers only once the NVIDIA driver answers', () => {
    // nvidia-smi fails twice (the driver is still installing), then answers.
    const nvidiaSmi = (failures: number) => `#!/bin/bash
n=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n + 1)) >"$0.count"
[ "$n" -ge ${failures} ]
`;
    const ready = boot(
      { ...SLICE, 'agent-worker-number': '0', 'shardline-accelerator': 'gpu' },
      { SHARDLINE_GPU_POLL_SECONDS: '0' },
      { 'nvidia-smi': nvidiaSmi(2) },
    );
    expect(ready.status).toBe(0);
    expect(readFileSync(path.join(ready.bin, 'nvidia-smi.count'), 'utf8').trim()).toBe('3');
    expect(ready.stderr).toContain('NVIDIA driver ready');
    const [run] = runs(ready.docker);
    expect(run!.slice(run!.indexOf('--gpus'), run!.indexOf('--gpus') + 2)).toEqual([
      '--gpus',
      'all',
    ]);
    // A driver that never answers: no worker starts, and the log says why.
    const never = boot(
      {
        ...SLICE,
        'agent-worker-number': '0',
        'shardline-accelerator': 'gpu',
        'shardline-gpu-wait-seconds': '30',
      },
      { SHARDLINE_GPU_POLL_SECONDS: '10' },
      { 'nvidia-smi': nvidiaSmi(1000), sleep: '#!/bin/sh\nexit 0\n' },
    );
    expect(never.status).not.toBe(0);
    expect(never.stderr).toContain('the NVIDIA driver did not answer (nvidia-smi) within 30 s');
    expect(never.systemctl).toEqual([]);
    expect(runs(never.docker)).toEqual([]);
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
