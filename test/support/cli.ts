/** Runs the CLI in-process with captured output. */
import { Writable } from 'node:stream';

import { runCli } from '../../cli/main';

/** The outcome of one CLI run. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

class Capture extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** `shardline ...args` with `cwd` and extra environment; never touches the real stdout. */
export async function cli(
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<CliRun> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(args, {
    stdout,
    stderr,
    cwd: options.cwd,
    // No test watches a metadata server unless it says so (a CI host may be a Compute Engine VM).
    env: {
      SHARDLINE_LOG_FORMAT: 'json',
      SHARDLINE_PREEMPTION_NOTICES: 'off',
      ...(options.env ?? {}),
    },
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}
