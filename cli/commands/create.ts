/**
 * `shardline create`: the seed's create_sharded_dataset.py, exact and safe to re-run.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';

import type { Location } from '../../core/blob/location';
import { formatLocation, parseLocation, splitParent } from '../../core/blob/location';
import { checkDatasetId, slugDatasetId } from '../../core/dataset/id';
import { REJECTED_FILE } from '../../core/dataset/paths';
import type { LedgerKind, RegisterResult } from '../../core/ledger/ledger';
import { DEFAULT_MAX_ATTEMPTS } from '../../core/ledger/ledger';
import { resolveLedgerKind } from '../../core/ledger/open';
import type { CreateResult } from '../../core/split/create-dataset';
import { createDataset } from '../../core/split/create-dataset';
import { splitSettingsFromEnv } from '../../core/split/settings';
import { sourceFromStore } from '../../core/split/source';
import type { ParsedArgs } from '../args';
import type { Command, CommandContext } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { formatBytes, formatDuration, formatTable } from '../format';
import { ProgressBar } from '../progress';
import { LEDGER_FLAGS, NUM_SHARDS_FLAG, openLedgerFor } from '../wiring';
import { SHARDLINE_VERSION } from '../../core/version';

/**
 * The dataset id when `--dataset_id` is not given: the output folder's name. A Firestore
 * ledger is shared by many datasets, so there a short hash of the full location is added
 * (two folders named `ds` in different places must not collide); a local SQLite ledger holds
 * one dataset, so the plain name is kept.
 */
function defaultDatasetId(outputLoc: Location, ledgerKind: LedgerKind): string {
  const name =
    outputLoc.kind === 'local'
      ? splitParent(outputLoc).name
      : outputLoc.prefix.split('/').pop() || outputLoc.bucket;
  if (ledgerKind === 'sqlite') return slugDatasetId(name);
  const hash = createHash('sha256').update(formatLocation(outputLoc)).digest('hex').slice(0, 8);
  return `${slugDatasetId(name, 54)}-${hash}`;
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: unknown) {
    return (e as { code?: unknown }).code === 'EPERM';
  }
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const input = parseLocation(args.str('input_file'), ctx.cwd);
  const outputLoc = parseLocation(args.str('output_dir'), ctx.cwd);
  const { parent: inputParent, name: inputName } = splitParent(input);
  const ledgerKind = resolveLedgerKind(outputLoc, args.optStr('ledger') as LedgerKind | undefined);
  const datasetId = checkDatasetId(
    args.optStr('dataset_id') ?? defaultDatasetId(outputLoc, ledgerKind),
  );
  const settings = splitSettingsFromEnv(ctx.env);
  const source = await sourceFromStore(ctx.cloud.openStore(inputParent), inputName);
  const output = ctx.cloud.openStore(outputLoc);
  const host = hostname();
  const startedMs = ctx.clock.nowMs();

  const bars = {
    scan: new ProgressBar(ctx.stderr, ctx.clock, 'scan'),
    write: new ProgressBar(ctx.stderr, ctx.clock, 'write'),
  };
  let phase: 'scan' | 'write' = 'scan';
  const result = await createDataset({
    source,
    output,
    datasetId,
    numShards: args.num('num_shards'),
    chunkSizeMb: args.num('chunk_size_mb'),
    strict: args.bool('strict'),
    maxLineBytes: Math.floor(args.num('max_line_mb') * 1024 * 1024),
    clock: ctx.clock,
    log: ctx.log.child({ dataset_id: datasetId }),
    createdBy: `shardline ${SHARDLINE_VERSION}`,
    creator: { host, pid: process.pid },
    // Only a marker from this host can be checked for a live process.
    isCreatorAlive: (m) =>
      m.host === host && outputLoc.kind === 'local' ? isProcessAlive(m.pid) : undefined,
    onProgress: (p) => {
      if (p.phase !== phase) {
        bars[phase].update(p.bytesTotal, p.bytesTotal, true);
        bars[phase].finish();
        phase = p.phase;
      }
      bars[p.phase].update(p.bytesDone, p.bytesTotal);
    },
    signal: ctx.signal,
    settings,
  }).finally(() => {
    bars[phase].finish();
  });
  // Registered only now, after master_metadata.json exists (idempotent on re-runs).
  const ledger = await openLedgerFor(outputLoc, args, ctx);
  let registered: RegisterResult;
  try {
    registered = await ledger.registerDataset(result.master, {
      datasetUri: formatLocation(outputLoc),
      maxAttempts: args.num('max_attempts'),
    });
  } finally {
    await ledger.close();
  }
  const ledgerInfo = {
    kind: ledger.kind,
    location: ledger.location,
    newly_registered: registered.created,
  };
  const elapsedMs = ctx.clock.nowMs() - startedMs;

  if (args.bool('json')) {
    const doc = {
      ...jsonSummary(result, formatLocation(outputLoc), elapsedMs),
      ledger: ledgerInfo,
    };
    ctx.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  } else {
    ctx.stdout.write(
      humanSummary(result, formatLocation(outputLoc), output.uriOf(REJECTED_FILE), elapsedMs),
    );
    ctx.stdout.write(
      `Ledger: ${ledger.kind} (${ledger.location}): ` +
        `${registered.created ? 'dataset registered, every shard available' : 'dataset already registered'}.\n` +
        `Next: shardline status --dataset_dir ${formatLocation(outputLoc)}\n`,
    );
  }
  return EXIT.OK;
}

function jsonSummary(
  r: CreateResult,
  outputDir: string,
  elapsedMs: number,
): Record<string, unknown> {
  return {
    outcome: r.outcome,
    output_dir: outputDir,
    dataset_id: r.master.dataset_id,
    total_tasks: r.master.total_tasks,
    num_shards: r.master.num_shards,
    requested_num_shards: r.master.requested_num_shards,
    chunk_size_mb: r.master.chunk_size_mb,
    input_lines: r.master.input_lines,
    blank_lines: r.master.blank_lines,
    rejected_lines: r.master.rejected_lines,
    source: r.master.source,
    elapsed_ms: elapsedMs,
    shards: r.master.shards,
    rejected_sample: r.rejectedSample,
  };
}

function humanSummary(
  r: CreateResult,
  outputDir: string,
  rejectedUri: string,
  elapsedMs: number,
): string {
  const m = r.master;
  const lines: string[] = [];
  if (r.outcome === 'unchanged') {
    lines.push(
      `✓ Dataset "${m.dataset_id}" in ${outputDir} is already up to date (same input, same settings); nothing written.`,
    );
  } else {
    const rate = elapsedMs > 0 ? `, ${formatBytes((m.source.bytes / elapsedMs) * 1000)}/s` : '';
    lines.push(
      `✓ Created dataset "${m.dataset_id}" in ${outputDir} (${formatDuration(elapsedMs)}${rate})`,
    );
  }
  lines.push(
    `  ${m.total_tasks} tasks from ${m.input_lines} lines of ${m.source.uri} (${formatBytes(m.source.bytes)})` +
      `; ${m.blank_lines} blank, ${m.rejected_lines} rejected`,
  );
  if (m.num_shards < m.requested_num_shards) {
    lines.push(
      `  ${m.num_shards} shards, not ${m.requested_num_shards}: there are only ${m.total_tasks} tasks, and no shard is left empty`,
    );
  }
  lines.push('');
  const rows = m.shards.map((s) => [
    String(s.shard_id).padStart(3, '0'),
    String(s.total_tasks),
    `${s.first_task_index}-${s.first_task_index + s.total_tasks - 1}`,
    String(s.num_chunks),
    formatBytes(s.total_bytes),
    s.directory,
  ]);
  lines.push(
    formatTable(['shard', 'tasks', 'task range', 'chunks', 'size', 'directory'], rows, [
      'left',
      'right',
      'right',
      'right',
      'right',
      'left',
    ]),
  );
  if (m.rejected_lines > 0) {
    lines.push(
      '',
      `${m.rejected_lines} rejected line(s), listed with their reasons in ${rejectedUri}:`,
    );
    for (const rej of r.rejectedSample.slice(0, 5)) lines.push(`  line ${rej.line}: ${rej.reason}`);
    if (m.rejected_lines > 5) lines.push(`  … and ${m.rejected_lines - 5} more`);
  }
  lines.push('');
  return lines.join('\n');
}

/** The `create` command. */
export const createCommand: Command = {
  name: 'create',
  summary: 'split one JSONL of tasks into shard folders of ~100 MB chunks (local or gs://)',
  usage: '--input_file PATH --output_dir DIR [flags]',
  description: [
    'Reads the input twice, streaming: first to validate and count the tasks (every line must be a',
    'JSON object; blank lines are skipped, other bad lines go to rejected.jsonl with their line number',
    'and reason), then to copy each task, byte for byte, into the chunk files of its shard. Shard k',
    'holds tasks [floor(k*N/S), floor((k+1)*N/S)): nothing is dropped and counts differ by at most one.',
    'With fewer tasks than shards, each task gets its own shard (no shard is ever empty).',
    '',
    'master_metadata.json is written last. Re-running over an identical finished dataset changes',
    'nothing; over a different one it refuses (exit 4). Inputs ending in .gz are decompressed.',
  ].join('\n'),
  flags: [
    {
      name: 'input_file',
      type: 'string',
      required: true,
      placeholder: 'PATH',
      description: 'the JSONL (or .jsonl.gz) of tasks: a local path or gs://bucket/object',
    },
    {
      name: 'output_dir',
      type: 'string',
      required: true,
      placeholder: 'DIR',
      description: 'where the dataset goes: a local folder or gs://bucket/prefix',
    },
    NUM_SHARDS_FLAG,
    {
      name: 'chunk_size_mb',
      type: 'number',
      default: 100,
      min: 0.000001,
      placeholder: 'MB',
      description: 'cut a chunk before a task would take it past this size (MiB)',
    },
    {
      name: 'dataset_id',
      type: 'string',
      placeholder: 'ID',
      description: "the dataset's id; default derived from the output folder name",
    },
    {
      name: 'strict',
      type: 'boolean',
      description: 'stop at the first line that is not a JSON object (nothing is written)',
    },
    {
      name: 'max_attempts',
      type: 'int',
      default: DEFAULT_MAX_ATTEMPTS,
      min: 1,
      max: 100,
      placeholder: 'N',
      description:
        "failed attempts a shard may have before it is failed for good (the ledger's max_attempts)",
    },
    {
      name: 'max_line_mb',
      type: 'number',
      default: 64,
      min: 0.001,
      placeholder: 'MB',
      description: 'reject lines longer than this instead of holding them in memory',
    },
    ...Object.values(LEDGER_FLAGS),
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline create --input_file tasks.jsonl --output_dir sharded_dataset --num_shards 8 --chunk_size_mb 100',
    'shardline create --input_file gs://my-bucket/tasks.jsonl.gz --output_dir gs://my-bucket/datasets/tasks --json',
  ],
  run,
};
