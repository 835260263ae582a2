/**
 * Python checks in the jest suite (the README's Python block, the demo's reader, the numpy-only
 * example reader, and Python test suites run through jest): one place that finds `python3`
 * with the modules a check needs and decides what a missing one means.
 *
 * - Present: the test runs.
 * - Missing, and SHARDLINE_REQUIRE_PYTHON unset: the test is declared as a skip whose name says
 *   what is missing, and a warning is printed (a developer's machine: never a silent pass).
 * - Missing, and SHARDLINE_REQUIRE_PYTHON=1 (.ci/run and the Cloud Build test steps set it):
 *   the test fails, naming what is missing.
 *
 * The same switch as SHARDLINE_REQUIRE_SHELLCHECK (test/unit/infra/shellcheck.test.ts).
 */
import type { SpawnSyncOptionsWithStringEncoding, SpawnSyncReturns } from 'node:child_process';
import { spawnSync } from 'node:child_process';

/** The interpreter every Python check runs: `python3` as found on PATH. */
export const PYTHON = 'python3';

/** The modules a check needs unless it says otherwise. */
export const DEFAULT_PYTHON_MODULES: readonly string[] = ['numpy'];

/** What `probePython` found. */
export type PythonProbe =
  { available: true; version: string } | { available: false; reason: string };

/** What a Python test does on this machine: run, fail (required but missing), or skip. */
export type PythonVerdict = 'run' | 'fail' | 'skip';

const probes = new Map<string, PythonProbe>();

/**
 * Whether `python3` on `env.PATH` runs and imports every one of `modules`. Cached per module
 * list for the process's own environment; a given `env` is probed afresh.
 */
export function probePython(
  modules: readonly string[] = DEFAULT_PYTHON_MODULES,
  env?: NodeJS.ProcessEnv,
): PythonProbe {
  const cacheKey = modules.join(',');
  const cached = env === undefined ? probes.get(cacheKey) : undefined;
  if (cached) return cached;
  for (const m of modules)
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(m)) throw new Error(`not a module name: ${m}`);
  const script = [
    'import sys',
    ...modules.map((m) => `import ${m}`),
    'print(sys.version.split()[0])',
  ];
  const r = spawnSync(PYTHON, ['-c', script.join('\n')], {
    encoding: 'utf8',
    env: env ?? process.env,
    timeout: 60_000,
  });
  let probe: PythonProbe;
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    probe = {
      available: false,
      reason: `${PYTHON} could not be run (${code === 'ENOENT' ? 'not on PATH' : r.error.message})`,
    };
  } else if (r.status !== 0) {
    const last = r.stderr.trim().split('\n').pop() ?? '';
    probe = {
      available: false,
      reason: `${PYTHON} cannot import ${modules.join(', ')} (${last || `exit status ${String(r.status)}`})`,
    };
  } else {
    probe = { available: true, version: r.stdout.trim() };
  }
  if (env === undefined) probes.set(cacheKey, probe);
  return probe;
}

/** True when `env` sets SHARDLINE_REQUIRE_PYTHON to anything but empty, `0` or `false`. */
export function pythonRequired(env: NodeJS.ProcessEnv = process.env): boolean {
  return !['', '0', 'false'].includes(env.SHARDLINE_REQUIRE_PYTHON ?? '');
}

/** The decision for one probe: run when present, else fail when required, else skip. */
export function pythonVerdict(probe: PythonProbe, required: boolean): PythonVerdict {
  if (probe.available) return 'run';
  return required ? 'fail' : 'skip';
}

/** Options of `pythonTest`. */
export interface PythonTestOptions {
  /** Modules the test imports; default `DEFAULT_PYTHON_MODULES` (numpy). */
  modules?: readonly string[];
  /** Jest's per-test timeout in ms; default the project's. */
  timeoutMs?: number;
}

/**
 * Declares a jest test that needs `python3` with `options.modules` (see the file comment for
 * what happens when they are missing). Inside, run Python with `runPython`.
 */
export function pythonTest(
  name: string,
  fn: (() => void) | (() => Promise<void>),
  options: PythonTestOptions = {},
): void {
  const modules = options.modules ?? DEFAULT_PYTHON_MODULES;
  const probe = probePython(modules);
  const verdict = pythonVerdict(probe, pythonRequired());
  const reason = probe.available ? '' : probe.reason;
  if (verdict === 'run') {
    test(name, fn, options.timeoutMs);
  } else if (verdict === 'fail') {
    test(name, () => {
      throw new Error(
        `SHARDLINE_REQUIRE_PYTHON is set but ${reason}: install python3 with ${modules.join(', ')} (Debian: apt-get install python3-numpy)`,
      );
    });
  } else {
    console.warn(
      `${reason}: skipping "${name}" (install python3 with ${modules.join(', ')}; set SHARDLINE_REQUIRE_PYTHON=1 to make this a failure)`,
    );
    test.skip(`${name} (skipped: ${reason})`, () => undefined);
  }
}

/**
 * Runs `python3 args` and returns what it did (stdout and stderr as text). For use inside a
 * `pythonTest`, which has made sure the interpreter and its modules are there.
 */
export function runPython(
  args: readonly string[],
  options: Omit<SpawnSyncOptionsWithStringEncoding, 'encoding'> = {},
): SpawnSyncReturns<string> {
  return spawnSync(PYTHON, args, { maxBuffer: 256 << 20, ...options, encoding: 'utf8' });
}
