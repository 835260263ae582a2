/**
 * Formatting for people: tables, sizes, durations.
 */

/** `1.5 MB`, `812 B`: decimal units, as `ls -h --si` and cloud consoles show them. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0
    ? `${Math.round(bytes)} B`
    : `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

/** `1,234,567`; `12.3` below 100 when not whole. */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '∞';
  return Math.abs(n) < 100 && !Number.isInteger(n)
    ? n.toFixed(1)
    : Math.round(n).toLocaleString('en-US');
}

/**
 * A duration for people: `0.4s`, `9.5s`, `12s`, `4m 05s`, `2h 03m`, `3d 4h`. Negative values
 * are shown as their size (`expired 12s ago` is the caller's wording); `?` when not a number.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  const abs = Math.abs(ms);
  if (abs < 10_000) return `${(abs / 1000).toFixed(1)}s`;
  const s = Math.floor(abs / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** Column alignment. */
export type Align = 'left' | 'right';

/** A plain-text table: a header row, a rule, the rows. Numbers are right-aligned by `align`. */
export function formatTable(
  headers: readonly string[],
  rows: ReadonlyArray<readonly string[]>,
  align: readonly Align[] = [],
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) =>
        (align[i] ?? 'left') === 'right' ? c.padStart(widths[i]!) : c.padEnd(widths[i]!),
      )
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
