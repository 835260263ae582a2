/**
 * A one-line progress bar on a terminal (stderr), redrawn at most 10 times a second.
 * Off a terminal it prints nothing: logs carry the milestones instead.
 */
import type { Clock } from '../core/clock';
import { formatBytes, formatDuration } from './format';

/** A progress bar for work measured in bytes or in items. */
export class ProgressBar {
  private lastDraw = 0;
  private readonly startedMs: number;
  private drawn = false;

  /**
   * @param stream where to draw (usually stderr); nothing is drawn unless it is a TTY
   * @param unit `bytes` shows sizes and MB/s, `items` plain counts and items/s
   */
  constructor(
    private readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
    private readonly clock: Clock,
    private readonly label: string,
    private readonly unit: 'bytes' | 'items' = 'bytes',
  ) {
    this.startedMs = clock.nowMs();
  }

  /** Whether anything will be drawn. */
  get enabled(): boolean {
    return this.stream.isTTY === true;
  }

  /** Redraws with `done` of `total` (total 0 or unknown shows no bar). */
  update(done: number, total: number, force = false): void {
    if (!this.enabled) return;
    const now = this.clock.nowMs();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const elapsed = Math.max(1, now - this.startedMs);
    const rate = (done / elapsed) * 1000;
    const fmt = (n: number): string =>
      this.unit === 'bytes' ? formatBytes(n) : String(Math.round(n));
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = 24;
    const bar = total > 0 ? `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] ` : '';
    const eta =
      total > 0 && rate > 0 ? `  ETA ${formatDuration(((total - done) / rate) * 1000)}` : '';
    const rateText = this.unit === 'bytes' ? `${formatBytes(rate)}/s` : `${rate.toFixed(1)}/s`;
    const text = `${this.label.padEnd(6)} ${bar}${fmt(done)}${total > 0 ? ` / ${fmt(total)}` : ''}  ${rateText}${eta}`;
    const cols = this.stream.columns ?? 100;
    this.stream.write(`\r${text.slice(0, cols - 1).padEnd(Math.min(cols - 1, text.length + 4))}`);
    this.drawn = true;
  }

  /** Ends the line so later output starts clean. */
  finish(): void {
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
