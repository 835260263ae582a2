/**
 * Every command the README shows is exercised: the local ones are run, in order, in a scratch
 * folder (with a generated model where the README points at one), and must succeed; the cloud
 * ones are parsed against the command's flags (no typo survives); the Python reader block runs
 * on the demo's outputs (a named skip where python3 with numpy is missing, a failure where
 * SHARDLINE_REQUIRE_PYTHON is set: test/support/python.ts).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { parseArgs } from '../../../cli/args';
import { COMMANDS } from '../../../cli/commands';
import { pythonTest, runPython } from '../../support/python';
import { makeTempDir } from '../../support/tmp';
import { CLI, arcJsonl } from '../../support/worker-fixtures';
import { generateQwen2Model } from '../../../synthetic/qwen2';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** Fenced blocks of a language. */
function blocks(lang: string): string[] {
  return [...readme.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map(
    (m) => m[1]!,
  );
}

/** Splits a shell line into words (double quotes kept together). */
function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

const commands = blocks('bash')
  .flatMap((b) => b.split('\n'))
  .map((l) => l.trim())
  .filter((l) => l.startsWith('shardline '));
const isCloud = (line: string): boolean =>
  /gs:\/\/|--subscription|\bBUCKET\b|\bPROJECT\b/.test(line);

test('the README shows every verb of the CLI, in the seed order first', () => {
  const verbs = commands.map((c) => c.split(' ')[1]);
  for (const c of COMMANDS) expect(verbs).toContain(c.name);
  const seedOrder = ['create', 'claim', 'status', 'complete', 'reset', 'work'];
  expect(seedOrder.map((v) => verbs.indexOf(v))).toEqual(
    [...seedOrder.map((v) => verbs.indexOf(v))].sort((a, b) => a - b),
  );
});

test('every README command uses real flags with valid values', () => {
  for (const line of commands) {
    const [, verb, ...rest] = words(line);
    const cmd = COMMANDS.find((c) => c.name === verb);
    expect({ line, known: cmd !== undefined }).toEqual({ line, known: true });
    expect(() => parseArgs(rest, cmd!.flags, {})).not.toThrow();
  }
});

describe('the local README commands, in a scratch folder', () => {
  let dir = '';
  let cleanup = (): void => undefined;
  afterAll(() => cleanup());
  /** Each local command line and how it ended; filled once, by beforeAll. */
  const runs: Array<{ line: string; code: number | null; stderr: string }> = [];
  const local = commands.filter((c) => !isCloud(c));

  beforeAll(() => {
    ({ dir, cleanup } = makeTempDir('readme'));
    writeFileSync(path.join(dir, 'tasks.jsonl'), arcJsonl(16));
    // The README's model path, with the 24 layers its --layers 10-23 asks for (tiny otherwise).
    const modelDir = path.join(dir, 'models/qwen2.5-0.5b/onnx');
    mkdirSync(modelDir, { recursive: true });
    generateQwen2Model({
      dir: modelDir,
      shape: {
        vocabSize: 151936,
        hiddenSize: 16,
        numLayers: 24,
        numHeads: 2,
        numKvHeads: 1,
        intermediateSize: 32,
      },
      seed: 3,
      lmHead: false,
      externalData: true,
    });
    symlinkSync(path.join(ROOT, 'examples'), path.join(dir, 'examples'));
    for (const line of local) {
      const [, ...args] = words(line);
      const extra = args[0] === 'work' ? ['--predictions_per_task', '2', '--threads', '1'] : [];
      const r = spawnSync(process.execPath, [CLI, ...args, ...extra], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, SHARDLINE_LOG_FORMAT: 'json', SHARDLINE_PREEMPTION_NOTICES: 'off' },
        timeout: 600_000,
      });
      runs.push({ line, code: r.status, stderr: r.status === 0 ? '' : r.stderr.slice(-2000) });
      if (r.status !== 0) break; // the later commands build on this one
    }
  }, 900_000);

  test('they run, in order, and succeed', () => {
    expect(local.map((c) => c.split(' ')[1])).toEqual(
      expect.arrayContaining([
        'create',
        'claim',
        'status',
        'complete',
        'reset',
        'fail',
        'work',
        'demo',
      ]),
    );
    expect(runs).toEqual(local.map((line) => ({ line, code: 0, stderr: '' })));
  });

  pythonTest("the README's Python block reads the demo's outputs", () => {
    const python = blocks('python');
    expect(python.length).toBeGreaterThan(0);
    for (const code of python) {
      const out = runPython(['-c', code], { cwd: dir });
      expect({ status: out.status, stderr: out.status === 0 ? '' : out.stderr }).toEqual({
        status: 0,
        stderr: '',
      });
      expect(out.stdout).toMatch(/^\(\d+, 64\) demo_\d{6}_[a-z0-9-]+ \{'index': 0,/);
    }
  });
});
