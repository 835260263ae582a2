/**
 * What `shardline plan` prints for people: the estimates with their intervals, the time and the
 * costs, and how the interval was made.
 */
import type { Estimate } from '../worker/extraction/estimate';
import type { PlanReport } from '../worker/extraction/plan';
import { formatBytes, formatCount, formatDuration, formatTable } from './format';

/** A table row; `exact` only where every task was measured and the interval closed on the value. */
function row(name: string, e: Estimate, f: (n: number) => string, census: boolean): string[] {
  const exact = census && e.low === e.high;
  return [name, f(e.value), exact ? 'exact' : `${f(e.low)} – ${f(e.high)}`];
}

const seconds = (s: number): string => formatDuration(s * 1000);
const usd = (n: number): string =>
  !Number.isFinite(n)
    ? '∞'
    : n > 0 && n < 0.01
      ? `$${n.toPrecision(2)}`
      : `$${n < 10 ? n.toFixed(2) : Math.round(n).toLocaleString('en-US')}`;

/** The plan as a table. */
export function renderPlan(p: PlanReport): string {
  const e = p.estimates;
  const layers = p.settings.layers;
  const layerText =
    layers.length > 1 && layers.every((l, i) => i === 0 || l === layers[i - 1]! + 1)
      ? `${layers[0]}-${layers.at(-1)}`
      : layers.join(',');
  const lines = [
    `Plan for ${p.source.uri}: ${formatCount(p.source.tasks)} tasks in ${p.source.shards} shard(s)${p.source.kind === 'input_file' ? ' (as create would split it)' : ''}`,
    p.sample.census
      ? `Measured every task with the real prompt builder and tokenizer.`
      : `Measured a seeded sample of ${formatCount(p.sample.tasks)} tasks (seed ${p.sample.seed}) with the real prompt builder and tokenizer.`,
    `Output: ${layers.length} layer(s) (${layerText}) × hidden ${p.model.hidden_size}, ${p.settings.dtype} = ${formatBytes(p.model.bytes_per_row)} per stored row; positions ${p.settings.positions}; ${p.settings.predictions_per_task} prompt(s) per test input${p.settings.augment ? '' : ' (no augmentation)'}; max ${p.settings.max_seq_length} tokens.`,
    '',
  ];
  const census = p.sample.census;
  const rows = [
    row('samples (prompts)', e.samples, formatCount, census),
    row('prompt tokens', e.tokens, formatCount, census),
    row('stored rows', e.stored_rows, formatCount, census),
    row('dropped for length', e.dropped_for_length, formatCount, census),
    row('shortened for length', e.shortened_for_length, formatCount, census),
    ...Object.entries(e.skipped_by_reason)
      .filter(([r]) => r !== 'too_long')
      .map(([r, v]) => row(`skipped: ${r}`, v, formatCount, census)),
    row('parts', e.parts, formatCount, census),
    row('output bytes', e.output_bytes, formatBytes, census),
  ];
  lines.push(formatTable(['', 'estimate', '95 % interval'], rows, ['left', 'right', 'right']));
  const t = p.time;
  if (t) {
    lines.push(
      '',
      t.source === 'calibrate'
        ? `Time: ${formatCount(t.tokens_per_second)} tokens/s per worker (calibrated here, model only) + ${(t.build_seconds_per_task * 1000).toFixed(1)} ms of prompt building per task; ${t.load_seconds.toFixed(1)} s model load per worker.`
        : `Time: ${formatCount(t.tokens_per_second)} tokens/s per worker (--tokens_per_second).`,
      formatTable(
        ['', 'estimate', "from the tokens' interval"],
        [
          row('machine time (one worker)', t.machine_seconds, seconds, false),
          row(`wall time, ${t.workers} worker(s)`, t.wall_seconds, seconds, false),
          row('worker-hours', t.worker_hours, (h) => h.toFixed(h < 10 ? 2 : 0), false),
        ],
        ['left', 'right', 'right'],
      ),
    );
  } else {
    lines.push(
      '',
      'Time: not estimated (add --calibrate to run the model here, or --tokens_per_second N).',
    );
  }
  const c = p.cost;
  if (c) {
    lines.push('');
    if (c.storage_per_month)
      lines.push(
        `Storage: ${usd(c.storage_per_month.value)} per month (${usd(c.storage_per_month.low)} – ${usd(c.storage_per_month.high)}) at $${c.price_per_gib_month}/GiB-month.`,
      );
    if (c.compute)
      lines.push(
        `Compute: ${usd(c.compute.value)} (${usd(c.compute.low)} – ${usd(c.compute.high)}) at $${c.price_per_worker_hour}/worker-hour.`,
      );
  }
  lines.push(
    '',
    `Interval: ${p.sample.method}.`,
    ...(t
      ? [
          'Time counts the model, prompt building and model loads, not I/O or workers sharing cores: measured runs took 0.6-2.4× of it (bench/README.md).',
        ]
      : []),
    '',
  );
  return lines.join('\n');
}
