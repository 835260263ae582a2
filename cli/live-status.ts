/**
 * A live view of a dataset in the ledger: per-shard status, holder, progress, lease time left,
 * attempts; totals, throughput and ETA. Redrawn in place on a terminal; off a terminal, one
 * line per change.
 */
import type { Clock } from '../core/clock';
import type { Ledger, LedgerStatus } from '../core/ledger/ledger';
import { formatDuration } from './format';

/** Throughput and ETA from two snapshots. */
export interface Rate {
  tasksPerSecond: number;
  etaMs: number | null;
}

/** Tasks per second since `first`, and the time left at that pace. */
export function rateOf(
  first: { atMs: number; tasksDone: number },
  now: { atMs: number; tasksDone: number; totalTasks: number },
): Rate {
  const seconds = (now.atMs - first.atMs) / 1000;
  const tasksPerSecond = seconds > 0 ? (now.tasksDone - first.tasksDone) / seconds : 0;
  const left = now.totalTasks - now.tasksDone;
  return {
    tasksPerSecond,
    etaMs: tasksPerSecond > 0 ? (left / tasksPerSecond) * 1000 : left === 0 ? 0 : null,
  };
}

function bar(done: number, total: number, width = 16): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  return `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}]`;
}

/** The compact live view: one line per shard and a totals line. */
export function renderLive(status: LedgerStatus, rate: Rate): string[] {
  const lines = status.shards.map((s) => {
    const lease =
      s.lease_left_ms === null
        ? ''
        : s.lease_left_ms > 0
          ? `  lease ${formatDuration(s.lease_left_ms)}`
          : '  lease expired';
    const holder =
      s.status === 'in_use' || s.status === 'completed' ? `  ${s.assigned_to ?? ''}` : '';
    const tries = s.attempts > 0 ? `  attempts ${s.attempts}/${s.max_attempts}` : '';
    // A split shard: its units' holders, each with its share done.
    const held = s.units.filter((u) => u.status === 'in_use');
    const who =
      s.units.length > 1
        ? `  ${s.units.length} units${held.length ? `: ${held.map((u) => `${u.assigned_to ?? '?'} ${u.tasks_done}/${u.unit_end - u.unit_start}`).join(', ')}` : ''}`
        : `${holder}${lease}`;
    return `  shard ${String(s.shard_id).padStart(3, '0')} ${bar(s.tasks_done, s.total_tasks)} ${String(s.tasks_done).padStart(5)}/${String(s.total_tasks).padEnd(5)} ${s.status.padEnd(9)}${who}${tries}`;
  });
  const t = status.totals;
  const eta =
    rate.etaMs === null ? '' : rate.etaMs === 0 ? '' : `  ETA ${formatDuration(rate.etaMs)}`;
  lines.push(
    `  total     ${bar(t.tasks_done, t.total_tasks)} ${String(t.tasks_done).padStart(5)}/${String(t.total_tasks).padEnd(5)} ` +
      `${t.completed}/${t.shards} shards done, ${t.in_use} in use, ${t.failed} failed; ${t.samples_committed} samples; ${rate.tasksPerSecond.toFixed(1)} tasks/s${eta}`,
  );
  return lines;
}

/** Options of `watchStatus`. */
export interface WatchOptions {
  out: NodeJS.WritableStream & { isTTY?: boolean };
  clock: Clock;
  intervalMs: number;
  signal: AbortSignal;
  /** Keep watching while this is true (checked after each refresh); default: until no shard is available or in use. */
  until?: (s: LedgerStatus) => boolean;
}

/** Redraws the live view until the dataset is finished (or `until` says stop, or aborted). */
export async function watchStatus(
  ledger: Ledger,
  datasetId: string,
  o: WatchOptions,
): Promise<LedgerStatus> {
  const done = o.until ?? ((s: LedgerStatus) => s.totals.available === 0 && s.totals.in_use === 0);
  let first: { atMs: number; tasksDone: number } | undefined;
  let drawn = 0;
  let lastKey = '';
  let lastLineMs = 0;
  for (;;) {
    const status = await ledger.status(datasetId);
    const now = o.clock.nowMs();
    first ??= { atMs: now, tasksDone: status.totals.tasks_done };
    const lines = renderLive(
      status,
      rateOf(first, {
        atMs: now,
        tasksDone: status.totals.tasks_done,
        totalTasks: status.totals.total_tasks,
      }),
    );
    if (o.out.isTTY) {
      // Move up over the previous drawing and overwrite it.
      o.out.write(
        `${drawn > 0 ? `\x1b[${drawn}F` : ''}${lines.map((l) => `${l}\x1b[K`).join('\n')}\n`,
      );
      drawn = lines.length;
    } else {
      // Off a terminal: a line when a shard changes state, else at most every 5 s.
      const key = status.shards.map((s) => s.status).join(',');
      if (key !== lastKey || now - lastLineMs >= 5000) {
        o.out.write(`${lines.at(-1)!.trim()}\n`);
        lastLineMs = now;
      }
      lastKey = key;
    }
    if (done(status) || o.signal.aborted) return status;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, o.intervalMs);
      o.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
  }
}
