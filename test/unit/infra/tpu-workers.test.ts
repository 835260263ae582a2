/**
 * infra/tpu/workers.sh --dry-run: TPU hosts run the TPU image with the JAX backend on their
 * chips by default (one worker per host, since it uses every chip), or the CPU image with
 * onnxruntime when asked.
 */
import type { PlanCommand } from './plan';
import { flag, parsePlan, runScript, startsWith } from './plan';

const PROJECT = 'demo-infra-tpu';
const BASE = ['create', '--dry-run', '--project', PROJECT, '--dataset-id', 'ds'];

/** The metadata entries of the TPU VM create command. */
function metadataOf(args: string[]): Record<string, string> {
  const run = runScript('infra/tpu/workers.sh', [...BASE, ...args]);
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  const create = parsePlan(run.stdout).find((c: PlanCommand) =>
    startsWith(c, 'gcloud', 'compute', 'tpus', 'tpu-vm', 'create'),
  )!;
  return Object.fromEntries(
    flag(create, 'metadata')!
      .replace(/^\^\|\^/, '')
      .split('|')
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

const images = `us-central1-docker.pkg.dev/${PROJECT}/shardline`;

test('by default the hosts run the TPU image with the JAX backend on their chips', () => {
  const md = metadataOf(['--model-path', '/models']);
  expect(md['shardline-image']).toBe(`${images}/worker-tpu:latest`);
  expect(md['shardline-backend']).toBe('jax');
  expect(md['shardline-accelerator']).toBe('tpu');
  expect(md['shardline-model-path']).toBe('/models');
});

test('--backend onnx runs the CPU image on the host CPUs, several workers per host if asked', () => {
  const md = metadataOf([
    '--backend',
    'onnx',
    '--model-path',
    '/models/onnx/model.onnx',
    '--workers-per-host',
    '3',
  ]);
  expect(md['shardline-image']).toBe(`${images}/worker:latest`);
  expect(md['shardline-backend']).toBe('onnx');
  expect(md['shardline-accelerator']).toBeUndefined();
  expect(md['shardline-workers-per-host']).toBe('3');
});

test('refuses several JAX workers per host, and a backend hidden in --worker-args', () => {
  const several = runScript('infra/tpu/workers.sh', [
    ...BASE,
    '--model-path',
    '/models',
    '--workers-per-host',
    '2',
  ]);
  expect(several.status).toBe(2);
  expect(several.stderr).toMatch(/--backend jax runs one worker per host/);
  const hidden = runScript('infra/tpu/workers.sh', [
    ...BASE,
    '--model-path',
    '/models',
    '--worker-args',
    '--backend onnx',
  ]);
  expect(hidden.status).toBe(2);
  expect(hidden.stderr).toMatch(/give the backend with --backend/);
});
