/**
 * The few drawing tools the report needs, written here rather than taken from a plotting
 * library: the report must be one file that opens anywhere with no network and no script, and
 * its charts are rectangles, lines and ticks. Escaping, scales, "nice" axis ticks, the worker
 * palette.
 */

/** Text or an attribute value made safe for HTML and SVG. */
export function esc(text: unknown): string {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** A coordinate with at most one decimal (smaller files, same picture). */
export function px(v: number): string {
  return String(Math.round(v * 10) / 10);
}

/** A linear map from `[d0, d1]` to `[r0, r1]` (a zero-width domain maps to `r0`). */
export function linear(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return (v) => r0 + (v - d0) * k;
}

/** About `count` round values (1, 2 or 5 × a power of ten) covering `[0, max]`, 0 first. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(Math.round(v / pow) * pow);
  if (ticks.at(-1)! < max) ticks.push(ticks.at(-1)! + step);
  return ticks;
}

/** Round durations for a time axis, in ms. */
const TIME_STEPS = [
  1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3,
  10800e3, 21600e3, 43200e3, 86400e3, 172800e3, 604800e3,
];

/** Offsets from the start (ms) where a time axis over `spanMs` puts about `count` ticks. */
export function timeTicks(spanMs: number, count = 8): number[] {
  const want = Math.max(1, spanMs) / count;
  const step = TIME_STEPS.find((s) => s >= want) ?? Math.ceil(want / 604800e3) * 604800e3;
  const ticks: number[] = [];
  for (let t = 0; t <= spanMs; t += step) ticks.push(t);
  return ticks;
}

/** `+0s`, `+30s`, `+4m`, `+1h 30m`, `+2d`: an offset on a time axis. */
export function offsetLabel(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `+${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `+${m}m${s % 60 ? ` ${s % 60}s` : ''}`;
  const h = Math.floor(m / 60);
  if (h < 48) return `+${h}h${m % 60 ? ` ${m % 60}m` : ''}`;
  return `+${Math.floor(h / 24)}d${h % 24 ? ` ${h % 24}h` : ''}`;
}

/** A UTC time for people: `2026-11-29 17:15:48Z`. */
export function utc(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}

/**
 * Worker colours: distinguishable, none of them the red, green, grey and purple the timeline
 * keeps for its events (Tableau 10 without those, and a second, darker set after it).
 */
const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#76b7b2',
  '#edc948',
  '#ff9da7',
  '#9c755f',
  '#2f4b7c',
  '#a05d00',
  '#3b8a84',
  '#b39b1e',
  '#c06c84',
  '#6b4c3b',
];

/** The colour of the `k`-th worker (in the report's worker order). */
export function workerColor(k: number): string {
  return PALETTE[k % PALETTE.length]!;
}
