#!/usr/bin/env node
/**
 * `shardline`: the command line. Parses the verb, builds the context (the composition root of
 * the CLI), runs the command and maps errors to exit codes.
 */
import { systemClock } from '../core/clock';
import { CloudClients } from '../core/cloud-clients';
import { ShardlineError, toError } from '../core/errors';
import { createLogger } from '../core/log';
import { formatFlags, parseArgs } from './args';
import type { Command, CommandContext } from './command';
import { COMMANDS } from './commands';
import { EXIT, EXIT_CODE_HELP } from './exit-codes';
import { cloudSettings } from './wiring';
import { SHARDLINE_VERSION } from '../core/version';

/** `shardline --help`. */
export function topLevelHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4;
  return [
    `shardline ${SHARDLINE_VERSION}: shard a JSONL of tasks, claim shards through a ledger, extract activations.`,
    '',
    'Usage: shardline <command> [flags]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    "Run `shardline <command> --help` for a command's flags and examples.",
    '',
  ].join('\n');
}

/** `shardline COMMAND --help`. */
export function commandHelp(cmd: Command): string {
  const parts = [
    `shardline ${cmd.name}: ${cmd.summary}`,
    '',
    `Usage: shardline ${cmd.name} ${cmd.usage}`,
  ];
  if (cmd.description) parts.push('', cmd.description);
  parts.push('', 'Flags:', formatFlags(cmd.flags), '  -h, --help'.padEnd(36) + 'show this help');
  if (cmd.examples.length) parts.push('', 'Examples:', ...cmd.examples.map((e) => `  ${e}`));
  parts.push('', 'Exit codes:', ...EXIT_CODE_HELP.map((l) => `  ${l}`), '');
  return parts.join('\n');
}

/** Maps an error to an exit code. */
export function exitCodeOf(e: unknown): number {
  if (!(e instanceof ShardlineError)) return EXIT.FAILURE;
  switch (e.code) {
    case 'INVALID_ARGUMENT':
      return EXIT.USAGE;
    case 'INVALID_INPUT':
      return EXIT.INVALID_INPUT;
    case 'DATASET_CONFLICT':
    case 'ALREADY_EXISTS':
    case 'FINGERPRINT_MISMATCH':
      return EXIT.CONFLICT;
    case 'NOTHING_AVAILABLE':
      return EXIT.NOTHING_AVAILABLE;
    case 'LEASE_LOST':
      return EXIT.NOT_HOLDER;
    case 'NOT_FOUND':
    case 'DATASET_INCOMPLETE':
      return EXIT.NOT_FOUND;
    case 'INTERRUPTED':
      return EXIT.INTERRUPTED;
    default:
      return EXIT.FAILURE;
  }
}

/** Runs the CLI with explicit I/O; returns the exit code. Used by tests and by `main`. */
export async function runCli(
  argv: readonly string[],
  io: Pick<CommandContext, 'stdout' | 'stderr' | 'env' | 'cwd'> & { signal?: AbortSignal },
): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === '--help' || verb === '-h' || verb === 'help') {
    io.stdout.write(topLevelHelp());
    return verb === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (verb === '--version' || verb === '-V') {
    io.stdout.write(`${SHARDLINE_VERSION}\n`);
    return EXIT.OK;
  }
  const cmd = COMMANDS.find((c) => c.name === verb);
  if (!cmd) {
    io.stderr.write(`shardline: unknown command "${verb}"\n\n${topLevelHelp()}`);
    return EXIT.USAGE;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(commandHelp(cmd));
    return EXIT.OK;
  }
  const verbose = rest.includes('--verbose') || rest.includes('-v');
  // The logger exists before the flags are parsed (parsing errors are logged), so these two
  // are read here; parseArgs checks them like every other flag.
  const at = rest.findIndex((a) => a === '--log_format' || a === '--log-format');
  const formatFlag =
    at !== -1
      ? rest[at + 1]
      : rest
          .find((a) => a.startsWith('--log_format=') || a.startsWith('--log-format='))
          ?.split('=')[1];
  const format = formatFlag ?? io.env.SHARDLINE_LOG_FORMAT ?? (io.stderr.isTTY ? 'text' : 'json');
  const log = createLogger({
    format: format === 'json' ? 'json' : 'text',
    minSeverity: verbose ? 'DEBUG' : 'INFO',
    sink: (line) => void io.stderr.write(`${line}\n`),
    clock: systemClock,
    fields: { command: cmd.name },
  });
  let cloud: CloudClients | undefined;
  try {
    const args = parseArgs(rest, cmd.flags, io.env);
    cloud = new CloudClients(cloudSettings(args, io.env));
    const ctx: CommandContext = {
      ...io,
      clock: systemClock,
      log,
      signal: io.signal ?? new AbortController().signal,
      cloud,
    };
    return await cmd.run(args, ctx);
  } catch (e: unknown) {
    const err = toError(e);
    const code = exitCodeOf(err);
    io.stderr.write(`shardline ${cmd.name}: ${err.message}\n`);
    if (code === EXIT.USAGE) io.stderr.write(`Run \`shardline ${cmd.name} --help\` for usage.\n`);
    if (code === EXIT.FAILURE && !(err instanceof ShardlineError)) {
      log.error('unexpected failure', { error: err, stack: err.stack });
    }
    return code;
  } finally {
    await cloud?.close().catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      process.stderr.write(`\nshardline: second ${sig}, exiting now\n`);
      process.exit(EXIT.INTERRUPTED);
    }
    controller.abort(new ShardlineError('INTERRUPTED', `interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const code = await runCli(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    signal: controller.signal,
  });
  process.exitCode = code;
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`shardline: ${toError(e).stack ?? String(e)}\n`);
    process.exitCode = EXIT.FAILURE;
  });
}
