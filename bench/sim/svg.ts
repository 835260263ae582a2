/**
 * The completion plot: one panel per fleet size, the fraction of tasks committed over time,
 * one line per policy, the ideal makespan as a dashed line. Plain SVG written here (no
 * plotting dependency), so a browser or any image viewer shows it.
 */

/** One policy's line in one panel. */
export interface Series {
  name: string;
  /** [ms, fraction done]. */
  points: ReadonlyArray<readonly [number, number]>;
}

/** One panel: a fleet size. */
export interface Panel {
  title: string;
  idealMs: number;
  series: Series[];
}

const COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const W = 360;
const H = 260;
const M = { left: 52, right: 12, top: 30, bottom: 42 };

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A tick step for an axis spanning `span`: 1, 2 or 5 times a power of ten, ~5 ticks. */
function tickStep(span: number): number {
  const raw = span / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : 5) * p;
}

/** The rows of panels: all of the run, then its last 20 % (the tail) magnified. */
const ROWS = [
  { yMin: 0, note: '' },
  { yMin: 0.8, note: ', last 20 %' },
];

/** The plot as an SVG document; the legend names the series of the first panel. */
export function completionSvg(title: string, panels: readonly Panel[]): string {
  const width = W * panels.length;
  const legendH = 22;
  const top = 24;
  const height = top + H * ROWS.length + legendH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${esc(title)}</text>`,
  ];
  ROWS.forEach((row, r) =>
    panels.forEach((panel, i) => drawPanel(out, panel, i * W, top + r * H, row.yMin, row.note)),
  );
  const names = panels[0]?.series.map((s) => s.name) ?? [];
  const ly = height - 8;
  let lx = M.left;
  names.forEach((name, j) => {
    out.push(
      `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="${COLORS[j % COLORS.length]}" stroke-width="2.5"/>`,
      `<text x="${lx + 27}" y="${ly}">${esc(name)}</text>`,
    );
    lx += 40 + name.length * 6.5;
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function drawPanel(
  out: string[],
  panel: Panel,
  left: number,
  top: number,
  yMin: number,
  note: string,
): void {
  const x0 = left + M.left;
  const y0 = top + M.top;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const maxMs = Math.max(
    panel.idealMs,
    ...panel.series.map((s) => s.points.at(-1)?.[0] ?? 0).filter(Number.isFinite),
  );
  // The magnified row starts where the first line reaches its floor.
  const reached = panel.series.map((s) => s.points.find(([, f]) => f >= yMin)?.[0] ?? 0);
  const fromHours = yMin > 0 ? Math.min(...reached) / 3_600_000 : 0;
  const step = tickStep(maxMs / 3_600_000 - fromHours);
  const from = Math.floor(fromHours / step) * step;
  const span = Math.ceil(maxMs / 3_600_000 / step) * step - from;
  const xOf = (ms: number): number => x0 + ((ms / 3_600_000 - from) / span) * pw;
  const yOf = (f: number): number => y0 + ph - ((Math.max(f, yMin) - yMin) / (1 - yMin)) * ph;
  out.push(
    `<text x="${x0 + pw / 2}" y="${y0 - 10}" text-anchor="middle">${esc(panel.title + note)}</text>`,
    `<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
  );
  const yStep = (1 - yMin) / 4;
  for (let k = 0; k <= 4; k++) {
    const f = yMin + k * yStep;
    const y = yOf(f);
    out.push(
      `<line x1="${x0}" y1="${y}" x2="${x0 + pw}" y2="${y}" stroke="#eee"/>`,
      `<text x="${x0 - 4}" y="${y + 4}" text-anchor="end">${Math.round(f * 100)}%</text>`,
    );
  }
  for (let h = from; h <= from + span + 1e-9; h += step) {
    const x = xOf(h * 3_600_000);
    out.push(
      `<line x1="${x}" y1="${y0 + ph}" x2="${x}" y2="${y0 + ph + 4}" stroke="#888"/>`,
      `<text x="${x}" y="${y0 + ph + 16}" text-anchor="middle">${+h.toFixed(2)}</text>`,
    );
  }
  const xi = xOf(panel.idealMs);
  out.push(
    `<text x="${x0 + pw / 2}" y="${y0 + ph + 32}" text-anchor="middle">hours</text>`,
    `<line x1="${xi}" y1="${y0}" x2="${xi}" y2="${y0 + ph}" stroke="#444" stroke-dasharray="4 3"/>`,
    `<text x="${xi - 3}" y="${y0 + ph - 6}" fill="#444" text-anchor="end">ideal</text>`,
  );
  panel.series.forEach((s, j) => {
    // From the last point below the floor on (the line enters the panel from its bottom edge).
    const firstIn = s.points.findIndex(([, f]) => f >= yMin);
    const d = s.points
      .slice(Math.max(0, firstIn - 1))
      .filter(([t]) => Number.isFinite(t))
      .map(([t, f], k) => `${k === 0 ? 'M' : 'L'}${xOf(t).toFixed(1)},${yOf(f).toFixed(1)}`)
      .join('');
    out.push(
      `<path d="${d}" fill="none" stroke="${COLORS[j % COLORS.length]}" stroke-width="1.6"><title>${esc(s.name)}</title></path>`,
    );
  });
}
