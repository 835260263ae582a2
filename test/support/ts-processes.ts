/**
 * Runs TypeScript scripts of test/support as separate OS processes, released at the same
 * moment, for tests that show a property holds across processes and not only within one (the
 * SQLite ledger's claims, the local blob store's generations). The children run the sources
 * through a tiny require hook over @swc/core (the compiler jest already uses), so the unit
 * tier needs no `npm run build` first.
 *
 * The protocol: a child prints `ready` once set up, waits for `go` on stdin, does its work and
 * prints its result as one JSON line (`{ "error": message }` when it failed).
 *
 * `writeTsLauncher` makes a TypeScript script a program of its own, for tests that hand a
 * command line to the code under test (the worker's `--backend_command`).
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

/** A require hook that compiles each required .ts file with swc, as jest.config.js does. */
const SWC_HOOK = `
const swc = require(${JSON.stringify(require.resolve('@swc/core'))});
const fs = require('node:fs');
require.extensions['.ts'] = (module, filename) => {
  const out = swc.transformSync(fs.readFileSync(filename, 'utf8'), {
    filename, sourceMaps: false,
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' },
  });
  module._compile(out.code, filename);
};
`;

// Runs the script in argv[1] under the hook.
const BOOT = `${SWC_HOOK}\nrequire(process.argv[1]);\n`;

/**
 * Writes `dir/NAME.cjs`, a plain JavaScript file that `node` runs as a program: it loads the
 * TypeScript `script` and calls its export `entry` with the command-line arguments. For tests
 * that hand the worker a command line (`--backend_command "node FILE ARGS"`). Returns the path.
 */
export function writeTsLauncher(dir: string, name: string, script: string, entry: string): string {
  const file = path.join(dir, `${name}.cjs`);
  writeFileSync(
    file,
    `${SWC_HOOK}\nrequire(${JSON.stringify(path.resolve(script))})[${JSON.stringify(entry)}](process.argv.slice(2));\n`,
  );
  return file;
}

/**
 * Starts `script` once per argument (passed as JSON in argv[2]), waits until every child is
 * ready, releases them together and returns their results in argument order. Fails if any
 * child fails; `label` names a child in errors.
 */
export async function runInProcesses<T>(
  script: string,
  args: readonly unknown[],
  label: (index: number) => string,
): Promise<T[]> {
  const children = args.map((arg, index) => {
    const child = spawn(process.execPath, ['-e', BOOT, script, JSON.stringify(arg)], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const name = label(index);
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const ready = new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (out.startsWith('ready\n')) resolve();
      };
      child.stdout.on('data', check);
      child.on('exit', (code) =>
        reject(new Error(`${name} exited (${code}) before ready: ${err}`)),
      );
    });
    const done = new Promise<T>((resolve, reject) => {
      child.on('exit', (code) => {
        const last = out.trim().split('\n').pop() ?? '';
        try {
          const parsed = JSON.parse(last) as T & { error?: string };
          if (code === 0 && parsed.error === undefined) resolve(parsed);
          else reject(new Error(`${name} failed (${code}): ${parsed.error ?? err}`));
        } catch {
          reject(new Error(`${name} failed (${code}): ${out} ${err}`));
        }
      });
    });
    return { child, ready, done };
  });
  try {
    await Promise.all(children.map((c) => c.ready));
  } catch (e: unknown) {
    for (const c of children) c.child.kill();
    await Promise.allSettled(children.map((c) => c.done));
    throw e;
  }
  for (const c of children) c.child.stdin.end('go\n');
  return Promise.all(children.map((c) => c.done));
}
