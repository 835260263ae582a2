/**
 * The report as one self-contained HTML file: inline CSS, inline SVG drawn here, the data it
 * was drawn from embedded as JSON, and no script at all. A Content-Security-Policy forbids
 * every fetch, so the file shows the same thing from a bucket, a laptop or an air-gapped
 * machine, and can leak nothing when opened.
 *
 * Element ids and classes are stable (the browser test queries them): `#totals`, `#timeline`
 * (a `g.unit` per work unit with `data-shard` and `data-unit`, and `data-split-from` on a unit a
 * split made; `rect.claim`, `rect.silent`, `line.part-tick`, `.event.event-<kind>`,
 * `.event-reclaim`; a split shard also has a `g.shard` row above its units, with
 * `rect.shard-span`), `#throughput` (`path.series-all`, `path.series-worker`), `#workers`,
 * `#failures`, `#attempts`, `#skipped-chart`, `#layer-norms`, `#report-data`.
 */
import { formatBytes, formatCount, formatDuration } from '../format';
import type { ReportClaim, ReportData, ReportShard, ReportUnit } from './data';
import { esc, linear, niceTicks, offsetLabel, px, timeTicks, utc, workerColor } from './svg';

const WIDTH = 1120;
/** Room for row labels: `002 · unit 12 (split from unit 3)` fits. */
const LABEL_W = 220;
const RIGHT = 24;

const CSS = `
:root { --fg: #1d2430; --muted: #5b6575; --line: #d9dee7; --bg: #ffffff; --band: #f4f6fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; padding: 24px 28px 48px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 32px 0 8px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; }
.sub, .note { color: var(--muted); } .note { font-size: 12.5px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px; }
.state-completed { background: #dff3e3; color: #1e6b34; } .state-failed { background: #fde2e1; color: #a4221b; }
.state-in_use { background: #e3ecfb; color: #23509b; } .state-available { background: #eef0f3; color: #4a5361; }
#totals { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 10px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .v { font-size: 19px; font-weight: 650; } .card .k { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 6px 0 10px; font-size: 12.5px; color: var(--muted); }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.sw { width: 12px; height: 12px; border-radius: 2px; display: inline-block; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: var(--fg); }
svg .axis text, svg text.muted { fill: var(--muted); }
svg .grid { stroke: var(--line); stroke-width: 1; }
.warn { color: #8a5a00; }
`;

interface Section {
  id: string;
  title: string;
  body: string;
}

/** The report as an HTML document (see the module comment). */
export function renderReportHtml(data: ReportData): string {
  const workers = data.workers.map((w) => w.worker);
  const color = (w: string | null): string => {
    const k = w === null ? -1 : workers.indexOf(w);
    return k < 0 ? '#8a8f98' : workerColor(k);
  };
  const sections: Section[] = [
    { id: 'timeline-section', title: 'Timeline per shard', body: timeline(data, color) },
    { id: 'throughput-section', title: 'Throughput', body: throughput(data, color) },
    { id: 'failures-section', title: 'Attempts and failures', body: failures(data) },
    { id: 'skipped-section', title: 'Skipped samples', body: skipped(data) },
    { id: 'layers-section', title: 'Per-layer statistics', body: layers(data) },
  ];
  if (data.warnings.length > 0)
    sections.push({
      id: 'warnings-section',
      title: 'Warnings',
      body: `<ul class="warn">${data.warnings
        .slice(0, 100)
        .map((w) => `<li>${esc(w)}</li>`)
        .join(
          '',
        )}${data.warnings.length > 100 ? `<li>… and ${data.warnings.length - 100} more</li>` : ''}</ul>`,
    });
  const json = JSON.stringify(data).replace(/</g, '\\u003c');
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>shardline report: ${esc(data.dataset.dataset_id)}</title>`,
    `<style>${CSS}</style></head><body>`,
    header(data),
    totals(data),
    ...sections.map((s) => `<section id="${s.id}"><h2>${esc(s.title)}</h2>${s.body}</section>`),
    `<script type="application/json" id="report-data">${json}</script>`,
    '</body></html>',
    '',
  ].join('\n');
}

function header(d: ReportData): string {
  const stateWord = d.state === 'in_use' ? 'running' : d.state;
  return [
    `<header><h1>shardline report: <code>${esc(d.dataset.dataset_id)}</code> <span class="state state-${esc(d.state)}">${esc(stateWord)}</span></h1>`,
    `<p class="sub">Dataset <code>${esc(d.dataset.dataset_uri)}</code>; outputs <code>${esc(d.output_uri)}</code>; ledger ${esc(d.ledger.kind)} <code>${esc(d.ledger.location)}</code>.<br>`,
    `Ledger read at ${esc(utc(d.as_of))}; from ${esc(utc(d.span.start))} to ${esc(utc(d.span.end))} (${esc(formatDuration(d.span.end - d.span.start))}). Times on the charts are offsets from the start.</p></header>`,
  ].join('');
}

function totals(d: ReportData): string {
  const t = d.totals;
  const card = (k: string, v: string, title = ''): string =>
    `<div class="card"${title ? ` title="${esc(title)}"` : ''}><div class="v">${esc(v)}</div><div class="k">${esc(k)}</div></div>`;
  const pct = t.total_tasks > 0 ? `${((100 * t.tasks_done) / t.total_tasks).toFixed(1)} %` : '';
  return [
    '<section id="totals">',
    card(
      'shards completed',
      `${t.completed} / ${t.shards}`,
      `${t.in_use} in use, ${t.available} available, ${t.failed} failed; ${t.units} work units (${t.splits} split off)`,
    ),
    card('tasks done', `${formatCount(t.tasks_done)} / ${formatCount(t.total_tasks)}`, pct),
    card('samples', formatCount(t.samples)),
    card('tokens', formatCount(t.tokens)),
    card('output', formatBytes(t.bytes), `${t.bytes} bytes in ${t.parts} parts`),
    card('parts', formatCount(t.parts)),
    card('tokens/s, all workers', formatCount(t.tokens_per_second), 'tokens over the whole span'),
    card('workers', String(d.workers.length)),
    card(
      'claims / reclaims / splits',
      `${t.claims} / ${t.reclaims} / ${t.splits}`,
      'a split cuts the tail off a held unit: a new work unit, claimed by the splitter',
    ),
    card('expired leases', String(t.expiries), 'holders lost without notice (killed, preempted)'),
    card('failures', String(t.failures), `${t.attempts} failed attempts counted`),
    card('skipped samples', formatCount(t.skipped)),
    '</section>',
  ].join('');
}

/** Horizontal position of a time on the charts. */
function timeScale(d: ReportData): (t: number) => number {
  return linear(d.span.start, d.span.end, LABEL_W, WIDTH - RIGHT);
}

function timeAxis(d: ReportData, x: (t: number) => number, top: number, bottom: number): string {
  const ticks = timeTicks(d.span.end - d.span.start);
  return `<g class="axis">${ticks
    .map((o) => {
      const xx = px(x(d.span.start + o));
      return `<line class="grid" x1="${xx}" x2="${xx}" y1="${top}" y2="${bottom}"/><text x="${xx}" y="${top - 6}" text-anchor="middle">${esc(offsetLabel(o))}</text>`;
    })
    .join('')}</g>`;
}

const pad = (shardId: number): string => String(shardId).padStart(3, '0');

/** A split shard's own row: `shard 002 · 3 units`. */
function shardLabel(s: ReportShard): string {
  return `shard ${pad(s.shard_id)} · ${s.units.length} units`;
}

/**
 * A unit's name: the shard's (`shard 002`) when it was never split, else shard and unit with
 * where it came from (`002 · unit 3 (split from unit 0)`; unit 0 is `002 · unit 0`).
 */
function unitLabel(
  u: Pick<ReportUnit, 'shard_id' | 'unit' | 'split_from'>,
  split: boolean,
): string {
  if (!split) return `shard ${pad(u.shard_id)}`;
  const from = u.split_from === null ? '' : ` (split from unit ${u.split_from})`;
  return `${pad(u.shard_id)} · unit ${u.unit}${from}`;
}

/** The label of every unit by `shard.unit`, for tables that name a unit by its numbers. */
function unitLabels(d: ReportData): (shardId: number, unit: number) => string {
  const labels = new Map<string, string>();
  for (const s of d.shards)
    for (const u of s.units)
      labels.set(`${u.shard_id}.${u.unit}`, unitLabel(u, s.units.length > 1));
  return (shardId, unit) => labels.get(`${shardId}.${unit}`) ?? `${pad(shardId)} · unit ${unit}`;
}

const END_WORDS: Record<ReportClaim['end'], string> = {
  release: 'released',
  expire: 'lease expired (holder lost)',
  fail: 'failed',
  complete: 'completed',
  'force-complete': 'completed by an operator',
  'force-fail': 'failed by an operator',
  reset: 'reset by an operator',
  open: 'still held',
  unknown: 'end not recorded',
};

/** The shape of an event's marker at (x, y): its element name and geometry attributes. */
function shape(kind: string, x: number, y: number, r: number, fill: string): [string, string] {
  const X = px(x);
  const Y = px(y);
  switch (kind) {
    case 'expire':
      return [
        'path',
        `d="M${px(x - r)} ${px(y - r)}L${px(x + r)} ${px(y + r)}M${px(x + r)} ${px(y - r)}L${px(x - r)} ${px(y + r)}" stroke="#d62728" stroke-width="2.4" fill="none"`,
      ];
    case 'fail':
    case 'force-fail':
      return [
        'circle',
        `cx="${X}" cy="${Y}" r="${px(r)}" fill="#d62728" stroke="#fff" stroke-width="1"`,
      ];
    case 'release':
      return [
        'circle',
        `cx="${X}" cy="${Y}" r="${px(r * 0.8)}" fill="#fff" stroke="#6b7280" stroke-width="1.6"`,
      ];
    case 'complete':
    case 'force-complete':
      return [
        'path',
        `d="M${px(x - r)} ${Y}L${px(x - r / 3)} ${px(y + r * 0.8)}L${px(x + r)} ${px(y - r * 0.8)}" stroke="#2ca02c" stroke-width="2.4" fill="none"`,
      ];
    case 'split':
      return [
        'path',
        `d="M${X} ${px(y - r)}L${px(x + r)} ${Y}L${X} ${px(y + r)}L${px(x - r)} ${Y}Z" fill="#ff7f0e" stroke="#fff" stroke-width="1"`,
      ];
    case 'reclaim':
      return [
        'path',
        `d="M${X} ${px(y - r)}L${px(x + r * 1.2)} ${Y}L${X} ${px(y + r)}Z" fill="${fill}" stroke="#1d2430" stroke-width="1"`,
      ];
    default: // reset, and any kind a newer ledger records
      return [
        'rect',
        `x="${px(x - r * 0.7)}" y="${px(y - r * 0.7)}" width="${px(r * 1.4)}" height="${px(r * 1.4)}" fill="#9467bd"`,
      ];
  }
}

/** An event marker: `class="event event-<kind>"`, when and who as data attributes, a tooltip. */
function marker(
  kind: string,
  at: { x: number; y: number; r: number; fill: string },
  data: { at: number; worker: string | null },
  title: string,
): string {
  const [tag, geometry] = shape(kind, at.x, at.y, at.r, at.fill);
  return `<${tag} ${geometry} class="event event-${esc(kind)}" data-at="${data.at}" data-worker="${esc(data.worker ?? '')}"><title>${esc(title)}</title></${tag}>`;
}

/** A timeline row: a unit (the whole shard while never split), or a split shard's own row. */
type TimelineRow =
  { kind: 'unit'; unit: ReportUnit; split: boolean } | { kind: 'shard'; shard: ReportShard };

/** Rows in shard order: a shard never split is one row; a split one, its row and its units'. */
function timelineRows(d: ReportData): TimelineRow[] {
  return d.shards.flatMap((s): TimelineRow[] =>
    s.units.length > 1
      ? [
          { kind: 'shard', shard: s },
          ...s.units.map((unit) => ({ kind: 'unit' as const, unit, split: true })),
        ]
      : s.units.map((unit) => ({ kind: 'unit' as const, unit, split: false })),
  );
}

/**
 * A split shard's row: its label, and one thin bar from its first event to its last (to the
 * time the ledger was read while a unit is held). Its claims, parts and events are on its
 * units' rows, each drawn once.
 */
function shardRow(
  s: ReportShard,
  d: ReportData,
  x: (t: number) => number,
  at: { y0: number; rowH: number },
): string {
  const mid = at.y0 + at.rowH / 2;
  const times = s.units.flatMap((u) => [
    ...u.events.map((e) => e.at),
    ...u.parts.map((p) => p.committed_at),
  ]);
  const out: string[] = [];
  if (at.rowH >= 10)
    out.push(
      `<text x="${LABEL_W - 8}" y="${px(mid + 4)}" text-anchor="end" font-weight="600">${esc(shardLabel(s))}</text>`,
    );
  if (times.length > 0) {
    const from = times.reduce((a, b) => Math.min(a, b));
    const held = s.units.some((u) => u.status === 'in_use');
    const to = held ? d.as_of : times.reduce((a, b) => Math.max(a, b));
    const h = Math.max(2, (at.rowH - 8) / 3);
    out.push(
      `<rect class="shard-span" x="${px(x(from))}" y="${px(mid - h / 2)}" width="${px(Math.max(1, x(to) - x(from)))}" height="${px(h)}" fill="#8a8f98" fill-opacity="0.55" rx="1"/>`,
    );
  }
  const parts = s.units.reduce((n, u) => n + u.parts.length, 0);
  const tip = `${shardLabel(s)}: ${s.status}, tasks ${s.first_task_index}-${s.first_task_index + s.total_tasks - 1} (${s.tasks_done}/${s.total_tasks} done), ${parts} parts; its units are the rows under it`;
  return `<g class="shard shard-${esc(s.status)}" data-shard="${s.shard_id}" data-units="${s.units.length}"><title>${esc(tip)}</title>${out.join('')}</g>`;
}

/** A unit's row: its claims as bars, its parts as ticks, its events as markers. */
function unitRow(
  u: ReportUnit,
  split: boolean,
  x: (t: number) => number,
  color: (w: string | null) => string,
  at: { y0: number; rowH: number; r: number },
): string {
  const { y0, rowH, r } = at;
  const mid = y0 + rowH / 2;
  const barH = Math.max(3, rowH - 8);
  const label = unitLabel(u, split);
  const parts: string[] = [];
  if (rowH >= 10)
    parts.push(
      `<text x="${LABEL_W - 8}" y="${px(mid + 4)}" text-anchor="end"${split ? ' class="muted"' : ''}>${esc(label)}</text>`,
    );
  for (const h of u.claims) {
    const x0 = x(h.from);
    const xSeen = x(h.last_seen);
    const x1 = x(h.to);
    const fill = color(h.worker);
    const tip = `${h.worker} (epoch ${h.epoch}): ${utc(h.from)} to ${utc(h.to)}, ${formatDuration(h.to - h.from)}; ${END_WORDS[h.end]}`;
    const silent = h.end === 'expire' && x1 - xSeen > 0.5;
    const solidEnd = silent ? xSeen : x1;
    parts.push(
      `<rect class="claim claim-${h.end}" data-worker="${esc(h.worker)}" data-epoch="${h.epoch}" x="${px(x0)}" y="${px(mid - barH / 2)}" width="${px(Math.max(1, solidEnd - x0))}" height="${px(barH)}" fill="${fill}" rx="2"><title>${esc(tip)}</title></rect>`,
    );
    if (silent)
      parts.push(
        `<rect class="silent" data-worker="${esc(h.worker)}" x="${px(xSeen)}" y="${px(mid - barH / 2)}" width="${px(x1 - xSeen)}" height="${px(barH)}" fill="url(#silent)" stroke="${fill}" stroke-width="0.8"><title>${esc(`${h.worker}: no sign of life from ${utc(h.last_seen)} (its last part) until its lease was found expired at ${utc(h.to)}`)}</title></rect>`,
      );
    if (h.reclaim)
      parts.push(
        marker(
          'reclaim',
          { x: x0, y: mid, r: r * 0.9, fill },
          { at: h.from, worker: h.worker },
          `reclaimed by ${h.worker} (epoch ${h.epoch}) at ${utc(h.from)}`,
        ),
      );
  }
  for (const p of u.parts) {
    const xx = px(x(p.committed_at));
    parts.push(
      `<line class="part-tick" data-part="${esc(p.name)}" x1="${xx}" x2="${xx}" y1="${px(mid - barH / 2 - 1)}" y2="${px(mid + barH / 2 + 1)}" stroke="#1d2430" stroke-opacity="0.65" stroke-width="1"><title>${esc(`${p.name} committed by ${p.worker} at ${utc(p.committed_at)}: tasks ${p.first_task_index}-${p.last_task_index}, ${p.samples} samples${p.tokens === null ? '' : `, ${p.tokens} tokens`}, ${formatBytes(p.bytes)}`)}</title></line>`,
    );
  }
  for (const e of u.events) {
    if (e.kind === 'claim') continue;
    // A split's event on the unit it made has no claim yet (epoch 0): no epoch to name.
    const who = e.worker ? ` (${e.worker}${e.epoch > 0 ? `, epoch ${e.epoch}` : ''})` : '';
    const what = `${e.kind}${who} at ${utc(e.at)}${e.attempt ? '; counted as a failed attempt' : ''}${e.note ? `: ${e.note}` : ''}`;
    parts.push(marker(e.kind, { x: x(e.at), y: mid, r, fill: color(e.worker) }, e, what));
  }
  const tasks = u.unit_end - u.unit_start;
  const tip = `${label}: ${u.status}, tasks ${u.unit_start}-${u.unit_end - 1} (${u.tasks_done}/${tasks} done), ${u.parts.length} parts, attempts ${u.attempts}/${u.max_attempts}${u.last_error ? `; last error: ${u.last_error}` : ''}${u.history_dropped ? `; ${u.history_dropped} older events dropped` : ''}`;
  const from = u.split_from === null ? '' : ` data-split-from="${u.split_from}"`;
  return `<g class="unit unit-${esc(u.status)}" data-shard="${u.shard_id}" data-unit="${u.unit}"${from}><title>${esc(tip)}</title>${parts.join('')}</g>`;
}

function timeline(d: ReportData, color: (w: string | null) => string): string {
  const list = timelineRows(d);
  if (list.length === 0) return '<p class="note">No shard in the ledger.</p>';
  const rowH = list.length <= 60 ? 22 : list.length <= 300 ? 12 : 6;
  const top = 26;
  const height = top + list.length * rowH + 8;
  const x = timeScale(d);
  const r = Math.max(2.5, Math.min(6, rowH / 3.2));
  const rows = list.map((row, i) => {
    const y0 = top + i * rowH;
    const band =
      i % 2 === 1
        ? `<rect x="0" y="${y0}" width="${WIDTH}" height="${rowH}" fill="var(--band)" class="band"/>`
        : '';
    return (
      band +
      (row.kind === 'shard'
        ? shardRow(row.shard, d, x, { y0, rowH })
        : unitRow(row.unit, row.split, x, color, { y0, rowH, r }))
    );
  });
  const legend = [
    ...d.workers.map(
      (w) =>
        `<span><i class="sw" style="background:${color(w.worker)}"></i>${esc(w.worker)}</span>`,
    ),
    '<span><svg width="8" height="12"><line x1="4" x2="4" y1="0" y2="12" stroke="#1d2430" stroke-width="1.4"/></svg>a part committed</span>',
    '<span><svg width="14" height="12"><path d="M2 1L12 11M12 1L2 11" stroke="#d62728" stroke-width="2.4"/></svg>lease expired (holder lost); hatched: silent since its last part</span>',
    '<span><svg width="14" height="12"><path d="M3 1L12 6L3 11Z" fill="#8a8f98" stroke="#1d2430"/></svg>reclaimed</span>',
    '<span><svg width="12" height="12"><circle cx="6" cy="6" r="4.5" fill="#d62728"/></svg>failed</span>',
    '<span><svg width="12" height="12"><circle cx="6" cy="6" r="4" fill="#fff" stroke="#6b7280" stroke-width="1.6"/></svg>released</span>',
    '<span><svg width="14" height="12"><path d="M2 6L5 10L12 2" stroke="#2ca02c" stroke-width="2.4" fill="none"/></svg>completed</span>',
    '<span><svg width="12" height="12"><path d="M6 0L12 6L6 12L0 6Z" fill="#ff7f0e"/></svg>split</span>',
    '<span><svg width="12" height="12"><rect x="2" y="2" width="8" height="8" fill="#9467bd"/></svg>reset</span>',
  ];
  return [
    '<p class="note">One row per shard. A shard that was split has a row of its own (a grey bar from its first event to its last) with a row per work unit under it: unit 0, the shard\'s own, and each unit a split cut off a held unit. A bar is one claim, in its worker\'s colour, from the claim to what ended it; hover for details.</p>',
    `<div class="legend">${legend.join('')}</div>`,
    `<svg id="timeline" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-label="timeline per shard">`,
    '<defs><pattern id="silent" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d62728" stroke-width="2" stroke-opacity="0.55"/></pattern></defs>',
    timeAxis(d, x, top, height - 4),
    ...rows,
    '</svg>',
  ].join('');
}

/** A step line: each bucket's value held flat from its start to its end. */
function stepPath(
  edges: readonly number[],
  values: readonly number[],
  y: (v: number) => number,
): string {
  return values
    .map((v, k) => `${k === 0 ? 'M' : 'L'}${px(edges[k]!)} ${px(y(v))}H${px(edges[k + 1]!)}`)
    .join('');
}

function throughput(d: ReportData, color: (w: string | null) => string): string {
  const t = d.throughput;
  if (d.totals.tokens === 0)
    return '<p class="note">No part with a known token count yet: nothing to plot.</p>';
  const height = 280;
  const top = 26;
  const bottom = height - 24;
  const x = timeScale(d);
  const max = Math.max(...t.all, 1);
  const ticks = niceTicks(max);
  const y = linear(0, ticks.at(-1)!, bottom, top);
  // Bucket k covers [start + k·width, start + (k+1)·width), the last one cut at the span's end.
  const edges = [...t.all, 0].map((_, k) => x(Math.min(d.span.end, t.start + k * t.bucket_ms)));
  const fewWorkers = d.workers.length <= 10;
  const area = `${stepPath(edges, t.all, y)}L${px(edges.at(-1)!)} ${bottom}L${px(edges[0]!)} ${bottom}Z`;
  const series = fewWorkers
    ? Object.entries(t.by_worker).map(
        ([w, ys]) =>
          `<path class="series-worker" data-worker="${esc(w)}" d="${stepPath(edges, ys, y)}" fill="none" stroke="${color(w)}" stroke-width="1.6"><title>${esc(w)}</title></path>`,
      )
    : [];
  const yAxis = ticks
    .map(
      (v) =>
        `<line class="grid" x1="${LABEL_W}" x2="${WIDTH - RIGHT}" y1="${px(y(v))}" y2="${px(y(v))}"/><text x="${LABEL_W - 8}" y="${px(y(v) + 4)}" text-anchor="end">${esc(formatCount(v))}</text>`,
    )
    .join('');
  const rows = d.workers
    .map(
      (w) =>
        `<tr><td><i class="sw" style="background:${color(w.worker)}"></i> ${esc(w.worker)}</td><td class="n">${w.claims}</td><td class="n">${w.units_completed}</td><td class="n">${w.shards_completed}</td><td class="n">${w.parts}</td><td class="n">${formatCount(w.samples)}</td><td class="n">${formatCount(w.tokens)}</td><td class="n">${esc(formatDuration(w.held_ms))}</td><td class="n">${formatCount(w.tokens_per_second)}</td><td class="n">${w.expiries}</td><td class="n">${w.failures}</td><td class="n">${w.releases}</td></tr>`,
    )
    .join('');
  return [
    `<p class="note">Tokens per second in ${esc(formatDuration(t.bucket_ms))} buckets: each part's tokens spread over the time its holder spent on it. The shaded area is all workers together${fewWorkers ? '; a line per worker' : ` (${d.workers.length} workers: per-worker lines are left out, see the table)`}.</p>`,
    `<svg id="throughput" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-label="tokens per second over time">`,
    `<g class="axis">${yAxis}</g>`,
    timeAxis(d, x, top, bottom),
    `<path class="series-all" d="${area}" fill="#4e79a7" fill-opacity="0.16" stroke="#1d2430" stroke-width="1.8"><title>all workers</title></path>`,
    ...series,
    `<text x="${LABEL_W - 8}" y="12" text-anchor="end" class="muted">tokens/s</text>`,
    '</svg>',
    '<table id="workers"><thead><tr><th>worker</th><th class="n">claims</th><th class="n">units completed</th><th class="n">shards completed</th><th class="n">parts</th><th class="n">samples</th><th class="n">tokens</th><th class="n">time held</th><th class="n">tokens/s (working)</th><th class="n">expired</th><th class="n">failed</th><th class="n">released</th></tr></thead>',
    `<tbody>${rows}</tbody></table>`,
    '<p class="note">tokens/s (working): tokens over the time from each claim to its last part. It is the figure <code>shardline plan --tokens_per_second</code> takes for a run on the same machines.</p>',
  ].join('');
}

function failures(d: ReportData): string {
  const label = unitLabels(d);
  const troubled = d.shards
    .flatMap((s) => s.units)
    .filter((u) => u.attempts > 0 || u.status === 'failed' || u.last_error);
  const eventRows = d.failures
    .map(
      (f) =>
        `<tr class="failure failure-${esc(f.kind)}" data-shard="${f.shard_id}" data-unit="${f.unit}"><td>${esc(label(f.shard_id, f.unit))}</td><td>${esc(utc(f.at))}</td><td>${esc(f.kind)}</td><td>${esc(f.worker ?? '')}</td><td class="n">${f.epoch}</td><td>${f.attempt ? 'yes' : 'no'}</td><td>${esc(f.note ?? '')}</td></tr>`,
    )
    .join('');
  const shardRows = troubled
    .map(
      (u) =>
        `<tr><td>${esc(label(u.shard_id, u.unit))}</td><td>${esc(u.status)}</td><td class="n">${u.attempts}/${u.max_attempts}</td><td>${esc(u.last_error ?? '')}</td></tr>`,
    )
    .join('');
  return [
    `<p class="note">${d.totals.expiries} expired lease(s), ${d.totals.failures} failure(s), ${d.totals.releases} release(s); ${d.totals.attempts} failed attempt(s) counted. An expiry counts an attempt only when its holder died alone before committing anything.</p>`,
    d.failures.length
      ? `<table id="failures"><thead><tr><th>unit</th><th>when</th><th>what</th><th>worker</th><th class="n">epoch</th><th>attempt counted</th><th>reason</th></tr></thead><tbody>${eventRows}</tbody></table>`
      : '<p id="failures" class="note">No failure and no expired lease.</p>',
    troubled.length
      ? `<h3>Units with attempts or errors</h3><table id="attempts"><thead><tr><th>unit</th><th>status</th><th class="n">attempts</th><th>last error</th></tr></thead><tbody>${shardRows}</tbody></table>`
      : '',
  ].join('');
}

function bars(
  id: string,
  items: ReadonlyArray<[string, number]>,
  fmt: (v: number) => string,
): string {
  const rowH = 22;
  const height = 10 + items.length * rowH;
  const max = Math.max(...items.map(([, v]) => v), 1);
  const w = linear(0, max, 0, WIDTH - LABEL_W - 120);
  return `<svg id="${id}" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img">${items
    .map(([k, v], i) => {
      const y0 = 5 + i * rowH;
      return `<g class="bar-row"><text x="${LABEL_W - 8}" y="${y0 + 15}" text-anchor="end">${esc(k)}</text><rect class="bar" data-key="${esc(k)}" x="${LABEL_W}" y="${y0 + 3}" width="${px(Math.max(1, w(v)))}" height="${rowH - 6}" fill="#4e79a7"><title>${esc(`${k}: ${fmt(v)}`)}</title></rect><text x="${px(LABEL_W + Math.max(1, w(v)) + 6)}" y="${y0 + 15}">${esc(fmt(v))}</text></g>`;
    })
    .join('')}</svg>`;
}

function skipped(d: ReportData): string {
  const s = d.skipped;
  if (s.total === 0) return '<p class="note">No sample was skipped (in the parts read so far).</p>';
  const items = Object.entries(s.by_reason).sort((a, b) => b[1] - a[1]);
  const label = unitLabels(d);
  const examples = s.examples
    .map(
      (e) =>
        `<tr><td>${esc(label(e.shard_id, e.unit))}</td><td>${esc(e.part)}</td><td class="n">${e.task_index}</td><td>${esc(e.task_id ?? '')}</td><td>${esc(e.reason)}</td><td>${esc(e.detail)}</td></tr>`,
    )
    .join('');
  return [
    `<p class="note">${formatCount(s.total)} skipped sample(s) or task(s), by reason, from the parts' metadata (<code>too_long</code>: even the shortest prompt is over <code>--max_seq_length</code>).</p>`,
    bars('skipped-chart', items, formatCount),
    `<h3>The first ${s.examples.length}</h3><table id="skipped"><thead><tr><th>unit</th><th>part</th><th class="n">task</th><th>task id</th><th>reason</th><th>detail</th></tr></thead><tbody>${examples}</tbody></table>`,
  ].join('');
}

function layers(d: ReportData): string {
  if (!d.layers || d.layers.rows.length === 0)
    return '<p class="note">No per-layer statistics in the manifests of this run.</p>';
  const rows = d.layers.rows
    .map(
      (l) =>
        `<tr><td>${esc(l.tensor)}</td><td class="n">${formatCount(l.rows)}</td><td class="n">${l.hidden}</td><td class="n">${l.mean_norm.toPrecision(5)}</td><td class="n">${l.scaling_factor.toPrecision(5)}</td><td class="n">${l.mean_variance.toPrecision(5)}</td></tr>`,
    )
    .join('');
  return [
    `<p class="note">From ${esc(d.layers.from)}. Scaling factor: <code>sqrt(hidden) / mean L2 norm</code>, what an SAE trainer multiplies rows by; variance: mean over dimensions of the population variance.</p>`,
    bars(
      'layer-norms',
      d.layers.rows.map((l) => [l.tensor, l.mean_norm] as [string, number]),
      (v) => v.toPrecision(4),
    ),
    `<table id="layers"><thead><tr><th>tensor</th><th class="n">rows</th><th class="n">hidden</th><th class="n">mean L2 norm</th><th class="n">scaling factor</th><th class="n">mean variance</th></tr></thead><tbody>${rows}</tbody></table>`,
  ].join('');
}
