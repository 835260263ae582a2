/**
 * Runs SQLite claimers as separate OS processes (test/support/ledger-claimer.ts), released at
 * the same moment, to show that the file's locking holds across processes and not only within
 * one. The children run the TypeScript sources through a tiny require hook over @swc/core (the
 * compiler jest already uses), so the unit tier needs no `npm run build` first.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';

import type { Claim } from '../../core/ledger/ledger';

const ROOT = path.resolve(__dirname, '..', '..');
const CLAIMER = path.join(__dirname, 'ledger-claimer.ts');

// Compiles each required .ts file with swc, as jest.config.js does, then runs the script in argv[1].
const BOOT = `
const swc = require('@swc/core');
const fs = require('node:fs');
require.extensions['.ts'] = (module, filename) => {
  const out = swc.transformSync(fs.readFileSync(filename, 'utf8'), {
    filename, sourceMaps: false,
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' },
  });
  module._compile(out.code, filename);
};
require(process.argv[1]);
`;

/** What one claimer process reported. */
export interface ClaimerResult {
  claim: Claim | null;
  /** Claim latency inside the process, ms. */
  ms: number;
}

/**
 * Starts one process per worker id, waits until all have opened the ledger, releases them
 * together and returns their results in worker order. Fails if any process fails.
 */
export async function claimInProcesses(options: {
  file: string;
  datasetId: string;
  workerIds: readonly string[];
  nowMs: number;
  leaseMs: number;
}): Promise<ClaimerResult[]> {
  const children = options.workerIds.map((workerId) => {
    const child = spawn(
      process.execPath,
      [
        '-e',
        BOOT,
        CLAIMER,
        JSON.stringify({
          file: options.file,
          datasetId: options.datasetId,
          workerId,
          nowMs: options.nowMs,
          leaseMs: options.leaseMs,
        }),
      ],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
    );
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
        reject(new Error(`claimer ${workerId} exited (${code}) before ready: ${err}`)),
      );
    });
    const done = new Promise<ClaimerResult>((resolve, reject) => {
      child.on('exit', (code) => {
        const last = out.trim().split('\n').pop() ?? '';
        try {
          const parsed = JSON.parse(last) as ClaimerResult & { error?: string };
          if (code === 0 && parsed.error === undefined) resolve(parsed);
          else reject(new Error(`claimer ${workerId} failed (${code}): ${parsed.error ?? err}`));
        } catch {
          reject(new Error(`claimer ${workerId} failed (${code}): ${out} ${err}`));
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
