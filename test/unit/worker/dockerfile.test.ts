/**
 * The worker images' recipe (no Docker engine runs on this machine kind, so the Dockerfile is
 * checked as text): one build stage that holds every folder the build compiles; three targets
 * (cpu, the default; tpu; gpu), each non-root with the CLI as entry point on Node 22; the TPU
 * and GPU targets install the JAX they claim and the worker/jax extractor; no credentials
 * inside; the offline install switch; a build context without local bulk.
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

/** The Dockerfile's stages: name (`AS x`), base, and instruction lines. */
function stages(): { name: string; from: string; lines: string[] }[] {
  const out: { name: string; from: string; lines: string[] }[] = [];
  for (const l of lines) {
    const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(l);
    if (m) out.push({ name: m[2] ?? '', from: m[1]!, lines: [] });
    else out.at(-1)?.lines.push(l);
  }
  return out;
}
const byName = new Map(stages().map((st) => [st.name, st]));
/** A stage's lines with those of the stages it is built FROM (by name). */
function withBases(name: string): string[] {
  const st = byName.get(name)!;
  return [...(byName.has(st.from) ? withBases(st.from) : []), ...st.lines];
}

test('one build stage, then the targets tpu, gpu and cpu; cpu is the default (the last)', () => {
  expect(stages().map((st) => st.name)).toEqual(['build', 'jax-base', 'tpu', 'gpu', 'cpu']);
  for (const st of stages()) if (st.from.startsWith('node:')) expect(st.from).toMatch(/^node:22-/);
  expect(dockerfile).toMatch(/^ARG BASE=node:22-bookworm-slim$/m);
  expect(dockerfile).toContain('https://deb.nodesource.com/setup_22.x');
});

test('the build stage copies every folder that tsconfig.build.json compiles, or the context leaves it out on purpose', () => {
  const include = (
    JSON.parse(readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8')) as {
      include: string[];
    }
  ).include;
  const copied = byName
    .get('build')!
    .lines.filter((l) => /^COPY\s/i.test(l) && !/--from=/.test(l))
    .map((l) => l.split(/\s+/)[1]);
  const ignored = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim());
  // bench/ is compiled by the repository's build but is no part of the worker (nothing imports
  // bench/: a lint rule), so the image leaves it out.
  const missing = include.filter((dir) => !copied.includes(dir) && !ignored.includes(dir));
  expect(missing).toEqual([]);
  expect(include.filter((dir) => !copied.includes(dir))).toEqual(['bench']);
  expect(byName.get('build')!.lines).toContain(
    'RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --no-audit --no-fund',
  );
});

test('each target runs the built CLI as a non-root user, with its templates', () => {
  for (const name of ['tpu', 'gpu', 'cpu']) {
    // What a target inherits from the stages it is built FROM counts: USER, ENTRYPOINT and CMD
    // carry over to a child stage.
    const all = withBases(name);
    for (const what of ['node_modules', 'dist', 'worker/extraction/templates'])
      expect({
        name,
        what,
        copied: all.some((l) => l.startsWith(`COPY --from=build /app/${what} `)),
      }).toEqual({ name, what, copied: true });
    expect({ name, entry: all.filter((l) => l.startsWith('ENTRYPOINT')).at(-1) }).toEqual({
      name,
      entry: 'ENTRYPOINT ["node", "/app/dist/cli/main.js"]',
    });
    // The effective user is the last USER, and nothing runs as root after it.
    const own = byName.get(name)!.lines;
    const user = own.map((l) => /^USER\s/.test(l)).lastIndexOf(true);
    expect({ name, user: own[user] }).toEqual({ name, user: 'USER 1000:1000' });
    expect({ name, after: own.slice(user + 1).filter((l) => /^RUN\s/.test(l)) }).toEqual({
      name,
      after: [],
    });
  }
});

test('the TPU and GPU targets install the JAX they claim, the worker/jax extractor, and put that Python first', () => {
  const base = byName.get('jax-base')!.lines;
  expect(base).toContain('COPY worker/jax /opt/src/shardline-jax');
  expect(base.some((l) => /^ENV PATH=\/opt\/shardline-jax\/bin:\$PATH\b/.test(l))).toBe(true);
  expect(base.some((l) => l.includes('python3 -m venv /opt/shardline-jax'))).toBe(true);
  /** A stage's own instructions as text, continuation lines included. */
  const installs = (name: string) => byName.get(name)!.lines.join('\n');
  expect(installs('tpu')).toMatch(/"jax\[tpu\]==\$\{JAX_VERSION\}" \/opt\/src\/shardline-jax/);
  expect(installs('gpu')).toMatch(/"jax\[cuda12\]==\$\{JAX_VERSION\}" \/opt\/src\/shardline-jax/);
  for (const name of ['tpu', 'gpu']) expect(installs(name)).toContain('import jax, shardline_jax');
  expect(installs('cpu')).not.toMatch(/pip install|jax/);
  // The package being installed is the one in the repository (its pyproject names the module).
  expect(readFileSync(path.join(ROOT, 'worker/jax/pyproject.toml'), 'utf8')).toMatch(
    /packages = \["shardline_jax"\]/,
  );
});
