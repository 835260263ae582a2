/**
 * The worker image's recipe (no Docker engine runs on this machine kind, so the Dockerfile is
 * checked as text): non-root, no credentials inside, the CLI as entry point, the offline
 * install switch, and a build context without local bulk.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const dockerfile = readFileSync(path.join(ROOT, 'worker/Dockerfile'), 'utf8');
const lines = dockerfile.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
const lastStage = lines.slice(lines.map((l) => /^FROM\s/i.test(l)).lastIndexOf(true));

test('the final stage runs as a non-root user, set before the entry point', () => {
  const users = lastStage.filter((l) => /^USER\s/i.test(l));
  expect(users.length).toBeGreaterThan(0);
  const user = users
    .at(-1)!
    .replace(/^USER\s+/i, '')
    .trim();
  expect(user.split(':')[0]).not.toMatch(/^(0|root)$/);
  expect(lastStage.findIndex((l) => /^USER\s/i.test(l))).toBeLessThan(
    lastStage.findIndex((l) => /^ENTRYPOINT\s/i.test(l)),
  );
});

test('no credentials are baked into the image', () => {
  expect(dockerfile).not.toMatch(/GOOGLE_APPLICATION_CREDENTIALS/);
  for (const l of lines.filter((x) => /^(COPY|ADD)\s/i.test(x))) {
    expect(l).not.toMatch(/credential|key\.json|\.pem|\.p12|gcloud/i);
  }
});

test('the entry point is the shardline CLI, and the install skips the CUDA download unless asked', () => {
  expect(
    lastStage.some((l) => /^ENTRYPOINT\s+\["node",\s*"\/app\/dist\/cli\/main\.js"\]/.test(l)),
  ).toBe(true);
  expect(dockerfile).toMatch(/ARG ONNXRUNTIME_NODE_INSTALL=skip/);
  expect(dockerfile).toMatch(/npm ci/);
});

test('the build context leaves out local bulk and secrets', () => {
  const ignored = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim());
  for (const entry of ['node_modules', 'dist', 'bench', '.git', 'infra/shardline.env'])
    expect(ignored).toContain(entry);
});
