/**
 * `shardline status`: every shard of a dataset as the ledger sees it (the source of truth; the
 * status fields in the metadata files are the creation-time snapshot), and the totals.
 */
import { formatLocation } from '../../core/blob/location';
import { formatShardId } from '../../core/dataset/paths';
import type { LedgerStatus, ShardStatusRow } from '../../core/ledger/ledger';
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import type { IngestRecord } from '../../core/ingest/records';
import type { LedgerKind } from '../../core/ledger/ledger';
import { resolveLedgerKind } from '../../core/ledger/open';
import { INGESTS_COLLECTION_FLAG, describeIngest, ingestRecords } from '../ingest-view';
import { watchStatus } from '../live-status';
import {
  DATASET_DIR_FLAG,
  LEDGER_FLAGS,
  datasetLocation,
  firestoreClient,
  openDatasetSession,
} from '../wiring';

/** `4m 05s`, `2h 03m`, `3d 4h`, `12s`: a duration for people. Negative values are made positive. */
export function formatDuration(ms: number): string {
  const s = Math.floor(Math.abs(ms) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** Lease left as the table shows it: `4m 05s`, `expired 12s ago`, or `-`. */
export function formatLeaseLeft(ms: number | null): string {
  if (ms === null) return '-';
  return ms > 0 ? formatDuration(ms) : `expired ${formatDuration(ms)} ago`;
}

function oneLine(text: string | null, width: number): string {
  if (!text) return '-';
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

function percent(done: number, total: number): string {
  return total === 0 ? '100%' : `${((100 * done) / total).toFixed(done === total ? 0 : 1)}%`;
}

function holderOf(r: ShardStatusRow): string {
  const who = r.assigned_to ?? '-';
  if (!r.forced) return who;
  const mark = `forced ${r.forced.action} by ${r.forced.by}`;
  return who === r.forced.by ? mark : `${who} (${mark})`;
}

/** The table and totals `status` prints. */
export function renderStatus(status: LedgerStatus, ledgerWhere: string): string {
  const header = [
    'Shard',
    'Status',
    'Holder',
    'Tasks',
    'Chunks',
    'Progress',
    'Lease left',
    'Attempts',
    'Last error',
  ];
  const rows = status.shards.map((r) => [
    formatShardId(r.shard_id),
    r.status,
    oneLine(holderOf(r), 48),
    String(r.total_tasks),
    String(r.num_chunks),
    `${r.tasks_done}/${r.total_tasks} ${percent(r.tasks_done, r.total_tasks)}`,
    formatLeaseLeft(r.lease_left_ms),
    `${r.attempts}/${r.max_attempts}`,
    oneLine(r.last_error, 60),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const t = status.totals;
  const ds = status.dataset;
  return [
    `Dataset ${ds.dataset_id}: ${status.state}  (${ds.dataset_uri}; ledger ${ledgerWhere})`,
    '',
    line(header),
    ...rows.map(line),
    '',
    `Totals: ${t.shards} shards: ${t.available} available, ${t.in_use} in_use, ${t.completed} completed, ${t.failed} failed; ` +
      `tasks ${t.tasks_done}/${t.total_tasks} (${percent(t.tasks_done, t.total_tasks)}); ` +
      `${t.parts_committed} parts, ${t.samples_committed} samples committed; ${t.attempts} failed attempts`,
    '',
  ].join('\n');
}

/** `shardline status`. */
export const statusCommand: Command = {
  name: 'status',
  summary: 'show every shard of a dataset: status, holder, progress, lease, attempts, errors',
  usage: '--dataset_dir DIR [--watch] [--json]',
  description:
    'Reads the ledger (the source of truth), not the status fields of the metadata files, which ' +
    'are the creation-time snapshot. Registers the dataset in the ledger if it is not yet.',
  flags: [
    DATASET_DIR_FLAG,
    ...Object.values(LEDGER_FLAGS),
    INGESTS_COLLECTION_FLAG,
    {
      name: 'watch',
      type: 'boolean',
      description:
        'keep a live view (progress, holders, leases, throughput, ETA) until the dataset is done',
    },
    {
      name: 'interval',
      type: 'number',
      default: 2,
      min: 0.1,
      placeholder: 'S',
      description: 'refresh interval of --watch',
    },
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline status --dataset_dir ./sharded_dataset',
    'shardline status --dataset_dir gs://bucket/datasets/arc --json',
    'shardline status --dataset_dir ./sharded_dataset --watch',
  ],
  async run(args, ctx) {
    const location = datasetLocation(args, ctx);
    // A dataset made by an upload has an ingest record: show it, even before the dataset exists.
    let ingest: IngestRecord | undefined;
    if (
      location.kind === 'gcs' &&
      resolveLedgerKind(location, args.optStr('ledger') as LedgerKind | undefined) === 'firestore'
    ) {
      const db = await firestoreClient(args, ctx);
      try {
        const id = location.prefix.split('/').pop() ?? '';
        ingest = (await ingestRecords(db, args).findByDataset(id))[0];
      } finally {
        await db.terminate();
      }
      if (ingest && ingest.state !== 'completed') {
        if (args.bool('json'))
          ctx.stdout.write(
            `${JSON.stringify({ dataset_dir: formatLocation(location), ingest }, null, 2)}\n`,
          );
        else ctx.stdout.write(`${describeIngest(ingest)}\n`);
        return ingest.state === 'failed' ? EXIT.INVALID_INPUT : EXIT.OK;
      }
    }
    const session = await openDatasetSession(args, ctx);
    try {
      if (args.bool('watch')) {
        // Live until every shard is completed or failed (or Ctrl-C), then the full table.
        await watchStatus(session.ledger, session.master.dataset_id, {
          out: ctx.stdout,
          clock: ctx.clock,
          intervalMs: args.num('interval') * 1000,
          signal: ctx.signal,
        });
        ctx.stdout.write('\n');
      }
      const status = await session.ledger.status(session.master.dataset_id);
      if (args.bool('json')) {
        ctx.stdout.write(
          `${JSON.stringify({ ...status, dataset_dir: formatLocation(session.location), ledger: { kind: session.ledger.kind, location: session.ledger.location }, ...(ingest ? { ingest } : {}) }, null, 2)}\n`,
        );
      } else {
        ctx.stdout.write(renderStatus(status, `${session.ledger.kind} ${session.ledger.location}`));
        if (ingest) ctx.stdout.write(`${describeIngest(ingest)}\n`);
      }
      return EXIT.OK;
    } finally {
      await session.close();
    }
  },
};
