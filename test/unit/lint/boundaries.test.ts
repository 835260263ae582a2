/**
 * The folder boundaries and the cycle check (eslint.config.mjs) fail on a real violation: each
 * case writes a small module into the folder it tests, lints it with the project's own config
 * (`npm run lint` runs the same), and removes it. A clean module is the control.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const tag = `${process.pid}_${Date.now().toString(36)}`;

interface Fixture {
  file: string;
  source: string;
  /** The rule that must fire; null: none may. */
  rule: string | null;
}

const fixtures: Fixture[] = [
  {
    file: `core/__lint_up_${tag}.ts`,
    source: "import { runCli } from '../cli/main';\nexport const f = runCli;\n",
    rule: 'no-restricted-imports',
  },
  {
    file: `core/__lint_sdk_${tag}.ts`,
    source:
      "import type { Firestore } from '@google-cloud/firestore';\nexport type F = Firestore;\n",
    rule: 'no-restricted-imports',
  },
  {
    file: `worker/__lint_cli_${tag}.ts`,
    source: "import { COMMANDS } from '../cli/commands';\nexport const c = COMMANDS;\n",
    rule: 'no-restricted-imports',
  },
  {
    file: `functions/__lint_cli_${tag}.ts`,
    source: "import { cloudSettings } from '../cli/wiring';\nexport const c = cloudSettings;\n",
    rule: 'no-restricted-imports',
  },
  {
    file: `cli/__lint_bench_${tag}.ts`,
    source: "import * as dataset from '../bench/claims/dataset';\nexport const d = dataset;\n",
    rule: 'no-restricted-imports',
  },
  {
    file: `core/__lint_cycle_a_${tag}.ts`,
    source: `import { b } from './__lint_cycle_b_${tag}';\nexport const a = (): number => b() + 1;\n`,
    rule: 'import-x/no-cycle',
  },
  {
    file: `core/__lint_cycle_b_${tag}.ts`,
    source: `import { a } from './__lint_cycle_a_${tag}';\nexport const b = (): number => (a === undefined ? 0 : 1);\n`,
    rule: 'import-x/no-cycle',
  },
  {
    file: `core/__lint_ok_${tag}.ts`,
    source: "import { toError } from './errors';\nexport const e = toError('x');\n",
    rule: null,
  },
];

interface EslintResult {
  filePath: string;
  messages: Array<{ ruleId: string | null; message: string }>;
}

test('an upward import, a cloud SDK outside an adapter, a bench import and a cycle all fail lint', () => {
  for (const f of fixtures) writeFileSync(path.join(ROOT, f.file), f.source);
  let results: EslintResult[];
  try {
    const out = execFileSync(
      process.execPath,
      [
        path.join(ROOT, 'node_modules', 'eslint', 'bin', 'eslint.js'),
        '--format',
        'json',
        ...fixtures.map((f) => f.file),
      ],
      { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    ).toString();
    results = JSON.parse(out) as EslintResult[];
  } catch (e: unknown) {
    // ESLint exits 1 when it finds problems, which is the point; its report is on stdout.
    const stdout = (e as { stdout?: string }).stdout;
    if (!stdout) throw e;
    results = JSON.parse(stdout) as EslintResult[];
  } finally {
    for (const f of fixtures) rmSync(path.join(ROOT, f.file), { force: true });
  }
  expect(results).toHaveLength(fixtures.length);
  for (const f of fixtures) {
    const r = results.find((x) => x.filePath === path.join(ROOT, f.file));
    const rules = (r?.messages ?? []).map((m) => m.ruleId);
    // The file is in the expectation, so a failure names the fixture that passed lint.
    if (f.rule === null) expect({ file: f.file, rules }).toEqual({ file: f.file, rules: [] });
    else
      expect({ file: f.file, fired: rules.includes(f.rule) }).toEqual({
        file: f.file,
        fired: true,
      });
  }
});
