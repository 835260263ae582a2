/**
 * The Python extractor's own tests (worker/jax/tests: config parsing for the three families,
 * RoPE and GQA against hand-checked cases, the forward against a naive float64 model, bucket
 * bounds, the protocol end to end through a child process), run as part of `npm test` with
 * this machine's python3 and numpy. With pytest they run under pytest; without it, under the
 * package's own small runner, which calls the same test functions.
 */
import * as path from 'node:path';

import { probePython, pythonTest, runPython } from '../../support/python';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TESTS = path.join(ROOT, 'worker', 'jax', 'tests');

pythonTest(
  'the Python extractor package passes its tests',
  () => {
    const withPytest = probePython(['numpy', 'pytest']).available;
    const r = withPytest
      ? runPython(['-m', 'pytest', TESTS, '-q', '-p', 'no:cacheprovider'], { cwd: ROOT })
      : runPython([path.join(TESTS, 'run_without_pytest.py')], { cwd: ROOT });
    const out = `${r.stdout}\n${r.stderr}`;
    // A runner that ran nothing would pass vacuously: it must report passed tests.
    expect({ status: r.status, out }).toEqual({
      status: 0,
      out: expect.stringMatching(/passed/) as unknown,
    });
    const passed = Number(/(\d+) passed/.exec(out)?.[1] ?? 0);
    expect(passed).toBeGreaterThanOrEqual(30);
  },
  { timeoutMs: 300_000 },
);
