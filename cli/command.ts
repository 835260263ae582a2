/**
 * What a `shardline` command is: its flags, its help, and a `run` that parses nothing itself.
 */
import type { Clock } from '../core/clock';
import type { CloudClients } from '../core/cloud-clients';
import type { Logger } from '../core/log';
import type { FlagSpec, ParsedArgs } from './args';

/** Everything a command may touch from the outside world, passed in by `cli/main.ts`. */
export interface CommandContext {
  /** Results for people or, with `--json`, for scripts. */
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Progress, warnings and logs. */
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** The environment, read only here and in flag parsing. */
  env: Readonly<Record<string, string | undefined>>;
  /** Directory relative paths are resolved against. */
  cwd: string;
  clock: Clock;
  log: Logger;
  /** Aborted on SIGINT / SIGTERM; long commands stop cleanly when it fires. */
  signal: AbortSignal;
  /**
   * The Google Cloud clients, built from the command's ledger flags and the environment,
   * each on first use; `cli/main.ts` closes them after the command.
   */
  cloud: CloudClients;
}

/** One verb of the command line. */
export interface Command {
  name: string;
  /** One line, shown in `shardline --help`. */
  summary: string;
  /** The usage line after `shardline NAME`. */
  usage: string;
  /** Paragraphs shown in `--help` after the usage. */
  description?: string;
  flags: readonly FlagSpec[];
  /** Shell lines shown under "Examples". */
  examples: readonly string[];
  /** Runs the command; resolves with the exit code (see exit-codes.ts). */
  run(args: ParsedArgs, ctx: CommandContext): Promise<number>;
}

/** Flags many commands share. */
export const COMMON_FLAGS = {
  json: {
    name: 'json',
    type: 'boolean',
    description: 'print one JSON document on stdout instead of tables',
  },
  verbose: {
    name: 'verbose',
    short: 'v',
    type: 'boolean',
    description: 'log every step (debug level) on stderr',
  },
  log_format: {
    name: 'log_format',
    type: 'string',
    choices: ['text', 'json'],
    env: 'SHARDLINE_LOG_FORMAT',
    description: 'log line format on stderr; default text on a terminal, json otherwise',
  },
} as const satisfies Record<string, FlagSpec>;
