/**
 * The configuration files beside the scripts: the Firestore indexes cover the queries the code
 * runs, firebase.json is the one source of emulator ports and points at the rules and indexes,
 * and cloudbuild.yaml deploys nothing before every test step has passed.
 */
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';

import { ROOT } from './plan';

interface IndexField {
  fieldPath: string;
  order?: 'ASCENDING' | 'DESCENDING';
  arrayConfig?: 'CONTAINS';
}
interface IndexConfig {
  indexes: { collectionGroup: string; queryScope: string; fields: IndexField[] }[];
  fieldOverrides: { collectionGroup: string; fieldPath: string; indexes: unknown[] }[];
}

const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const indexes = JSON.parse(read('infra/firestore.indexes.json')) as IndexConfig;

function tsFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? tsFiles(path.join(dir, e.name))
      : e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')
        ? [path.join(dir, e.name)]
        : [],
  );
}

/**
 * The filter/order chains of Firestore queries in the server code: runs of `.where('f', 'op', …)`
 * and `.orderBy('f')`, as [field, op] pairs (op `order` for orderBy).
 */
function queryChains(): { file: string; chain: [string, string][] }[] {
  const step = /\.\s*(where|orderBy)\(\s*'([\w.]+)'\s*(?:,\s*'([^']+)')?/g;
  const found: { file: string; chain: [string, string][] }[] = [];
  for (const file of ['core', 'functions', 'worker', 'cli'].flatMap(tsFiles)) {
    const source = read(file);
    let chain: [string, string][] = [];
    let lastEnd = -1;
    for (const m of source.matchAll(step)) {
      // A new chain starts when anything but whitespace, a closing bracket of the previous
      // call's arguments, or a `)` lies between this call and the last.
      const between = lastEnd < 0 ? 'x' : source.slice(lastEnd, m.index);
      if (!/^[^;{}]*$/.test(between) || between.length > 200) {
        if (chain.length > 0) found.push({ file, chain });
        chain = [];
      }
      chain.push([m[2]!, m[1] === 'orderBy' ? 'order' : m[3]!]);
      lastEnd = m.index + m[0].length;
    }
    if (chain.length > 0) found.push({ file, chain });
  }
  return found;
}

describe('infra/firestore.indexes.json', () => {
  test('has the composite indexes the ledger and ingest queries need', () => {
    const has = (group: string, scope: string, fields: string[]) =>
      indexes.indexes.some(
        (ix) =>
          ix.collectionGroup === group &&
          ix.queryScope === scope &&
          ix.fields.map((f) => `${f.fieldPath}:${f.order}`).join(',') === fields.join(','),
      );
    // core/ledger/firestore.ts claimableIds() and reapExpired({datasetId}): one dataset's shards,
    // status == 'in_use' and lease_expires_at <= now (ordered by lease_expires_at).
    expect(has('shards', 'COLLECTION', ['status:ASCENDING', 'lease_expires_at:ASCENDING'])).toBe(
      true,
    );
    // core/ledger/firestore.ts reapExpired(): every dataset's shards (collection group), within
    // one ledger root.
    expect(
      has('shards', 'COLLECTION_GROUP', [
        'ledger_root:ASCENDING',
        'status:ASCENDING',
        'lease_expires_at:ASCENDING',
      ]),
    ).toBe(true);
    // core/ingest/records.ts takeOverStalled(): state == 'running' and heartbeat_at < cutoff.
    expect(has('ingests', 'COLLECTION', ['state:ASCENDING', 'heartbeat_at:ASCENDING'])).toBe(true);
  });

  test('every query that mixes an equality with a range or an order on another field has an index', () => {
    const chains = queryChains();
    expect(chains.length).toBeGreaterThan(0);
    const missing: string[] = [];
    for (const { file, chain } of chains) {
      const equal = chain.filter(([, op]) => op === '==').map(([f]) => f);
      const ranged = [...new Set(chain.filter(([, op]) => op !== '==').map(([f]) => f))];
      if (equal.length === 0 || ranged.length === 0) continue; // single-field indexes serve it
      const covered = indexes.indexes.some((ix) => {
        const fields = ix.fields.map((f) => f.fieldPath);
        const head = fields.slice(0, equal.length);
        return (
          equal.every((f) => head.includes(f)) &&
          fields.slice(equal.length).join(',') === ranged.join(',')
        );
      });
      if (!covered) missing.push(`${file}: ${chain.map(([f, op]) => `${f} ${op}`).join(', ')}`);
    }
    expect(missing).toEqual([]);
  });

  test('exempts from indexing only fields no query filters or orders on', () => {
    const queried = new Set(queryChains().flatMap(({ chain }) => chain.map(([f]) => f)));
    for (const o of indexes.fieldOverrides) {
      expect(o.indexes).toEqual([]);
      expect(queried.has(o.fieldPath)).toBe(false);
    }
  });

  test('is well formed', () => {
    for (const ix of indexes.indexes) {
      expect(['COLLECTION', 'COLLECTION_GROUP']).toContain(ix.queryScope);
      expect(ix.fields.length).toBeGreaterThanOrEqual(2);
      for (const f of ix.fields) expect(Boolean(f.order) !== Boolean(f.arrayConfig)).toBe(true);
    }
    const keys = indexes.indexes.map((ix) => JSON.stringify(ix));
    expect(new Set(keys).size).toBe(keys.length);
  });
});

describe('firebase.json', () => {
  const config = JSON.parse(read('firebase.json')) as {
    firestore: { rules: string; indexes: string };
    emulators: Record<string, { port?: number; host?: string }>;
  };

  test('points at the rules and indexes in infra/', () => {
    expect(config.firestore.rules).toBe('infra/firestore.rules');
    expect(config.firestore.indexes).toBe('infra/firestore.indexes.json');
  });

  test('holds a distinct port for every emulator test/emulators/with-emulators.sh reads', () => {
    const script = read('test/emulators/with-emulators.sh');
    const names = [...script.matchAll(/\$\(port (\w+)\)/g)].map((m) => m[1]!);
    expect(names.sort()).toEqual(['firestore', 'hub', 'logging', 'pubsub', 'storage']);
    const ports = names.map((n) => config.emulators[n]?.port);
    for (const p of ports) expect(Number.isInteger(p)).toBe(true);
    expect(new Set(ports).size).toBe(ports.length);
  });
});

/** cloudbuild.yaml's steps: id, waitFor (undefined: all previous steps), and the step text. */
function cloudbuildSteps(): { id: string; waitFor?: string[]; text: string }[] {
  const source = read('cloudbuild.yaml');
  const body = source.slice(source.indexOf('\nsteps:\n'));
  return body
    .split(/\n  - id: /)
    .slice(1)
    .map((block) => {
      const id = block.split('\n')[0]!.trim();
      const wait = /\n    waitFor: \[([^\]]*)\]/.exec(block);
      return {
        id,
        ...(wait ? { waitFor: wait[1]!.split(',').map((s) => s.trim()) } : {}),
        text: block,
      };
    });
}

describe('cloudbuild.yaml', () => {
  const steps = cloudbuildSteps();
  const byId = new Map(steps.map((s, i) => [s.id, { ...s, index: i }]));
  /** Every step a step waits for, directly or not. */
  const before = (id: string): Set<string> => {
    const step = byId.get(id)!;
    const direct = step.waitFor ?? steps.slice(0, step.index).map((s) => s.id);
    const all = new Set<string>();
    for (const d of direct) {
      if (d === '-') continue;
      all.add(d);
      for (const t of before(d)) all.add(t);
    }
    return all;
  };
  const tests = ['lint', 'typecheck', 'test-unit', 'test-integration'];

  test('installs, lints, type-checks and runs both test tiers (the emulators in the step image)', () => {
    expect(byId.get('install')!.text).toMatch(/args: \[ci\b/);
    expect(byId.get('lint')!.text).toMatch(/args: \[run, lint\]/);
    expect(byId.get('typecheck')!.text).toMatch(/args: \[run, typecheck\]/);
    expect(byId.get('test-unit')!.text).toMatch(/args: \[run, test:unit\]/);
    expect(byId.get('test-unit')!.text).toMatch(/SHARDLINE_REQUIRE_SHELLCHECK=1/);
    expect(byId.get('test-integration')!.text).toMatch(/args: \[run, test:integration\]/);
    for (const t of tests) expect(before(t)).toContain('install');
    const dockerfile = read('infra/builder/Dockerfile');
    for (const needed of [
      'openjdk-17',
      'google-cloud-cli-firestore-emulator',
      'google-cloud-cli-pubsub-emulator',
      'shellcheck',
      'python3 python3-numpy',
      'FROM node:22',
    ])
      expect(dockerfile).toContain(needed);
  });

  test('both test steps require python3 with numpy (a missing one fails them, never skips)', () => {
    for (const id of ['test-unit', 'test-integration'])
      expect({ id, text: byId.get(id)!.text }).toEqual({
        id,
        text: expect.stringMatching(/\n    env: \[[^\]]*\bSHARDLINE_REQUIRE_PYTHON=1\b/) as unknown,
      });
    expect(read('infra/builder/Dockerfile')).toMatch(/^\s+SHARDLINE_REQUIRE_PYTHON=1$/m);
    // .ci/run requires it too, and checks for it before installing anything.
    const ci = read('.ci/run');
    expect(ci).toMatch(/^export SHARDLINE_REQUIRE_PYTHON=1$/m);
    expect(ci.indexOf('import sys, numpy')).toBeGreaterThan(0);
    expect(ci.indexOf('import sys, numpy')).toBeLessThan(ci.indexOf('npm ci'));
  });

  test('pushes the worker image and deploys the functions only after every test step', () => {
    for (const id of ['worker-image', 'deploy-functions']) {
      const waits = before(id);
      for (const t of tests) expect(waits).toContain(t);
    }
    expect(byId.get('worker-image')!.text).toMatch(/docker build -f worker\/Dockerfile --target/);
    expect(read('cloudbuild.yaml')).toMatch(/^  _WORKER_TARGETS: cpu,tpu$/m);
    expect(byId.get('deploy-functions')!.text).toMatch(
      /args: \[infra\/deploy\.sh, --only, functions\]/,
    );
    // Nothing that pushes or deploys runs before the tests.
    for (const s of steps.filter((s) => !['worker-image', 'deploy-functions'].includes(s.id))) {
      expect(s.text).not.toMatch(/deploy\.sh|functions deploy|docker push --all-tags/);
    }
  });
});
