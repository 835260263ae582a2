/**
 * The status table for people: what `status` prints, and what `demo` and `reset` show. A
 * shard split into work units has a row for each unit under its own.
 */
import { formatShardId } from '../core/dataset/paths';
import type { LedgerStatus, ShardRecord, UnitStatusRow } from '../core/ledger/ledger';
import { formatDuration } from './format';

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

function holderOf(r: ShardRecord): string {
  const who = r.assigned_to ?? '-';
  if (!r.forced) return who;
  const mark = `forced ${r.forced.action} by ${r.forced.by}`;
  return who === r.forced.by ? mark : `${who} (${mark})`;
}

/** The status word, with when a shard backing off after a failure may be claimed again. */
export function statusOf(r: ShardRecord, asOfMs: number): string {
  const retryMs = r.retry_at === null ? 0 : Date.parse(r.retry_at) - asOfMs;
  return r.status === 'available' && retryMs > 0
    ? `available (retry in ${formatDuration(retryMs)})`
    : r.status;
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
  const asOf = Date.parse(status.as_of);
  const unitRow = (u: UnitStatusRow): string[] => {
    const size = u.unit_end - u.unit_start;
    return [
      `  └ unit ${u.unit}`,
      statusOf(u, asOf),
      oneLine(holderOf(u), 48),
      `${u.unit_start}-${u.unit_end - 1}`,
      '',
      `${u.tasks_done}/${size} ${percent(u.tasks_done, size)}`,
      formatLeaseLeft(u.lease_left_ms),
      `${u.attempts}/${u.max_attempts}`,
      oneLine(u.last_error, 60),
    ];
  };
  const rows = status.shards.flatMap((r) => [
    [
      formatShardId(r.shard_id),
      statusOf(r, asOf),
      oneLine(r.units.length > 1 ? `${r.units.length} units` : holderOf(r), 48),
      String(r.total_tasks),
      String(r.num_chunks),
      `${r.tasks_done}/${r.total_tasks} ${percent(r.tasks_done, r.total_tasks)}`,
      r.units.length > 1 ? '' : formatLeaseLeft(r.lease_left_ms),
      `${r.attempts}/${r.max_attempts}`,
      oneLine(r.last_error, 60),
    ],
    ...(r.units.length > 1 ? r.units.map(unitRow) : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const t = status.totals;
  const ds = status.dataset;
  const units = status.shards.reduce((n, r) => n + r.units.length, 0);
  return [
    `Dataset ${ds.dataset_id}: ${status.state}  (${ds.dataset_uri}; ledger ${ledgerWhere})`,
    '',
    line(header),
    ...rows.map(line),
    '',
    `Totals: ${t.shards} shards: ${t.available} available, ${t.in_use} in_use, ${t.completed} completed, ${t.failed} failed; ` +
      `tasks ${t.tasks_done}/${t.total_tasks} (${percent(t.tasks_done, t.total_tasks)}); ` +
      `${t.parts_committed} parts, ${t.samples_committed} samples committed; ${t.attempts} failed attempts` +
      (units > t.shards ? `; ${units - t.shards} work units split off` : ''),
    '',
  ].join('\n');
}
