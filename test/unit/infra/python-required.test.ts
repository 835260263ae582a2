/**
 * The switch that makes the Python checks required (test/support/python.ts): where python3 or
 * numpy is missing, a Python check is a named skip on a developer's machine and a failure
 * where SHARDLINE_REQUIRE_PYTHON is set (.ci/run and the Cloud Build test steps set it).
 * Shown end to end: jest runs this file's own Python check in a child process whose PATH has
 * a python3 that cannot import numpy, once with the switch and once without.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import {
  probePython,
  pythonRequired,
  pythonTest,
  pythonVerdict,
  runPython,
} from '../../support/python';
import { makeTempDir } from '../../support/tmp';
import { ROOT } from './plan';

const CHECK = 'python3 imports numpy and computes with it';

pythonTest(CHECK, () => {
  const r = runPython(['-c', 'import numpy; print(int(numpy.arange(4).sum()))']);
  expect({ status: r.status, stdout: r.stdout.trim() }).toEqual({ status: 0, stdout: '6' });
});

describe('SHARDLINE_REQUIRE_PYTHON', () => {
  let dir = '';
  let cleanup = (): void => undefined;
  /** PATH folders: one whose python3 has no numpy, one with no python3 at all. */
  let noNumpy = '';
  let noPython = '';
  beforeAll(() => {
    ({ dir, cleanup } = makeTempDir('python-required'));
    noNumpy = path.join(dir, 'no-numpy');
    noPython = path.join(dir, 'no-python');
    mkdirSync(noNumpy);
    mkdirSync(noPython);
    // A python3 on which numpy is not installed: its import fails as Python reports it.
    writeFileSync(
      path.join(noNumpy, 'python3'),
      [
        '#!/bin/sh',
        'echo "Traceback (most recent call last):" >&2',
        'echo "ModuleNotFoundError: No module named \'numpy\'" >&2',
        'exit 1',
        '',
      ].join('\n'),
    );
    chmodSync(path.join(noNumpy, 'python3'), 0o755);
  });
  afterAll(() => cleanup());

  /** The environment of a child: PATH replaced, the switch set or removed. */
  const childEnv = (pathDir: string, required: boolean): NodeJS.ProcessEnv => {
    // Only the one folder: node is started by its absolute path, and nothing else is needed.
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: pathDir };
    delete env.SHARDLINE_REQUIRE_PYTHON;
    if (required) env.SHARDLINE_REQUIRE_PYTHON = '1';
    return env;
  };

  test('is on when set to anything but empty, 0 or false', () => {
    expect(pythonRequired({})).toBe(false);
    for (const off of ['', '0', 'false'])
      expect(pythonRequired({ SHARDLINE_REQUIRE_PYTHON: off })).toBe(false);
    for (const on of ['1', 'true', 'yes'])
      expect(pythonRequired({ SHARDLINE_REQUIRE_PYTHON: on })).toBe(true);
  });

  test('the verdict: run when present; when missing, fail if required, else skip', () => {
    const present = { available: true, version: '3.11.2' } as const;
    const missing = { available: false, reason: 'python3 could not be run (not on PATH)' } as const;
    expect([
      pythonVerdict(present, false),
      pythonVerdict(present, true),
      pythonVerdict(missing, false),
      pythonVerdict(missing, true),
    ]).toEqual(['run', 'run', 'skip', 'fail']);
  });

  test('the probe tells a python3 without numpy, and no python3 at all, apart', () => {
    expect(probePython(['numpy'], childEnv(noNumpy, true))).toEqual({
      available: false,
      reason: "python3 cannot import numpy (ModuleNotFoundError: No module named 'numpy')",
    });
    expect(probePython(['numpy'], childEnv(noPython, true))).toEqual({
      available: false,
      reason: 'python3 could not be run (not on PATH)',
    });
    expect(() => probePython(['numpy; import os'])).toThrow(/not a module name/);
  });

  test('end to end: jest fails the Python check when it is required and numpy is missing, and names the skip when it is not', () => {
    const jest = path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');
    const runJest = (required: boolean) => {
      const r = spawnSync(
        process.execPath,
        [
          jest,
          '--selectProjects',
          'unit',
          '--ci',
          '--no-watchman',
          '--json',
          '--testNamePattern',
          CHECK,
          path.relative(ROOT, __filename),
        ],
        { cwd: ROOT, env: childEnv(noNumpy, required), encoding: 'utf8', timeout: 120_000 },
      );
      const report = JSON.parse(r.stdout) as {
        testResults: Array<{
          assertionResults: Array<{ title: string; status: string; failureMessages: string[] }>;
        }>;
      };
      const checks = report.testResults
        .flatMap((f) => f.assertionResults)
        .filter((a) => a.title.startsWith(CHECK))
        .map((a) => ({
          title: a.title,
          status: a.status,
          failure: a.failureMessages.join('\n').split('\n')[0] ?? '',
        }));
      return { status: r.status, checks, stderr: r.stderr };
    };
    const reason = "python3 cannot import numpy (ModuleNotFoundError: No module named 'numpy')";

    const required = runJest(true);
    expect({ status: required.status, checks: required.checks }).toEqual({
      status: 1,
      checks: [
        {
          title: CHECK,
          status: 'failed',
          failure: expect.stringContaining(
            `SHARDLINE_REQUIRE_PYTHON is set but ${reason}: install python3 with numpy`,
          ) as unknown,
        },
      ],
    });

    const optional = runJest(false);
    expect({ status: optional.status, checks: optional.checks }).toEqual({
      status: 0,
      checks: [{ title: `${CHECK} (skipped: ${reason})`, status: 'pending', failure: '' }],
    });
    // Loudly: the reason and the switch are printed too.
    expect(optional.stderr).toContain(`${reason}: skipping "${CHECK}"`);
    expect(optional.stderr).toContain('set SHARDLINE_REQUIRE_PYTHON=1 to make this a failure');
  });
});
