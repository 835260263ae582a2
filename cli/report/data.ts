/**
 * What `shardline report` shows, gathered from the ledger (every shard with its work units, each
 * unit's history of claims, splits, releases, expiries, failures and completions, and its
 * committed parts with their commit times and holders) and from the outputs (token counts, skipped samples with reasons and
 * per-layer statistics, from the shard and dataset manifests and, for parts no manifest lists
 * yet, from each part's safetensors header). Works the same on a running and a finished run,
 * on the SQLite and the Firestore ledger: everything is read, nothing is written.
 *
 * Times are ms since the epoch. The renderer (cli/report/render.ts) draws this; `--json`
 * prints it.
 */
import { z } from 'zod';

import type { BlobStore } from '../../core/blob/store';
import { shardDirName } from '../../core/dataset/paths';
import { errorCode, toError } from '../../core/errors';
import type {
  Ledger,
  LedgerStatus,
  PartRecord,
  ShardStatusRow,
  UnitStatusRow,
} from '../../core/ledger/ledger';
import { SHARD_EVENT_KINDS } from '../../core/ledger/schema';
import { MANIFEST_FILE } from '../../core/rollup/manifests';
import { mergeStats, summarize } from '../../core/layer-stats';
import { partMetadata } from '../../worker/manifest';

/** The report's format name and version (in the HTML's embedded data and in `--json`). */
export const REPORT_FORMAT = 'shardline.report';
/**
 * Bumped when a field changes meaning. 2: shards with their work units under them
 * (`shards[].units[]`, replacing the flat `units`), `unit` on failures and skipped samples,
 * `units_completed` per worker.
 */
export const REPORT_VERSION = 2;

/** What happened to a shard (the ledger's history kinds). */
export type EventKind = (typeof SHARD_EVENT_KINDS)[number];

/** One event of a work unit's history. */
export interface ReportEvent {
  at: number;
  kind: EventKind;
  worker: string | null;
  epoch: number;
  /** True when it counted a failed attempt. */
  attempt: boolean;
  note: string | null;
}

/** How a holder's time on a unit ended. */
export type ClaimEnd =
  /** The event that ended it: a release, an expiry, a failure, a completion, a reset... */
  | Exclude<EventKind, 'claim' | 'split'>
  /** Still held at `as_of`. */
  | 'open'
  /** The history does not say (older events dropped, or a holder fenced without a record). */
  | 'unknown';

/** One claim's time on a unit, from its claim to what ended it. */
export interface ReportClaim {
  worker: string;
  epoch: number;
  from: number;
  to: number;
  end: ClaimEnd;
  /** The holder's last known sign of life: its last committed part, else its claim. */
  last_seen: number;
  /** A claim after an earlier one (epoch > 1): a reclaim after a kill, release, failure or reset. */
  reclaim: boolean;
}

/** One committed part. */
export interface ReportPart {
  part_index: number;
  name: string;
  worker: string;
  epoch: number;
  committed_at: number;
  first_task_index: number;
  last_task_index: number;
  samples: number;
  /** Tokens (rows of its tensors), from the manifest or the part's header; null if unreadable. */
  tokens: number | null;
  bytes: number;
  /** Skipped samples or tasks recorded in the part; null if unreadable. */
  skipped: number | null;
}

/**
 * One work unit of a shard (docs/architecture.md#work-units): unit 0, the shard's own (the
 * whole shard until a split), or a unit a split cut off another. Each has its own holders,
 * history, attempts and parts.
 */
export interface ReportUnit {
  shard_id: number;
  /** 0: the shard's own; 1, 2… in the order splits made them. */
  unit: number;
  /** The unit it was split from; null for unit 0. */
  split_from: number | null;
  status: UnitStatusRow['status'];
  holder: string | null;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  /** Its range: first task and end (exclusive). */
  unit_start: number;
  unit_end: number;
  /** Tasks of its range covered by committed parts. */
  tasks_done: number;
  /** Older events the ledger let go (its history is bounded). */
  history_dropped: number;
  events: ReportEvent[];
  claims: ReportClaim[];
  parts: ReportPart[];
}

/** A shard as the ledger sums it up, with its work units under it (one for a shard never split). */
export interface ReportShard {
  shard_id: number;
  /** Completed when all its units are, failed when one is, in use while one is held. */
  status: ShardStatusRow['status'];
  /** The holder of the unit that speaks for the shard (the ledger's `assigned_to`). */
  holder: string | null;
  /** The most failed attempts of any of its units. */
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  first_task_index: number;
  total_tasks: number;
  tasks_done: number;
  /** Its units in task order. */
  units: ReportUnit[];
}

/** One worker's share. */
export interface WorkerRow {
  worker: string;
  /** Claims it made (a split's new unit comes with one). */
  claims: number;
  /** Units it completed. */
  units_completed: number;
  /** Shards its completion completed (the last unit of a split shard; the shard if never split). */
  shards_completed: number;
  parts: number;
  samples: number;
  tokens: number;
  /** Ms it held units (claim to end). */
  held_ms: number;
  /** Tokens over the time between each of its claims and the claim's last part. */
  tokens_per_second: number;
  expiries: number;
  failures: number;
  releases: number;
}

/** Tokens per second over time. */
export interface Throughput {
  start: number;
  bucket_ms: number;
  /** Tokens/s of all workers in each bucket. */
  all: number[];
  /** Tokens/s of each worker in each bucket. */
  by_worker: Record<string, number[]>;
}

/** A failure, expiry or forced failure, with its reason, and the unit it happened to. */
export type FailureRow = ReportEvent & { shard_id: number; unit: number };

/** One skipped sample or task. */
export interface SkippedRow {
  shard_id: number;
  unit: number;
  part: string;
  task_index: number;
  task_id: string | null;
  reason: string;
  detail: string;
}

/** A layer's statistics (from the manifests' `stats`). */
export interface LayerRow {
  tensor: string;
  layer: number | null;
  rows: number;
  hidden: number;
  mean_norm: number;
  /** `sqrt(hidden) / mean_norm`: what an SAE trainer scales rows by. */
  scaling_factor: number;
  /** Mean over dimensions of the population variance (`m2 / count`). */
  mean_variance: number;
}

/** Everything the report shows. */
export interface ReportData {
  format: typeof REPORT_FORMAT;
  format_version: typeof REPORT_VERSION;
  generated_at: number;
  /** When the ledger was read. */
  as_of: number;
  dataset: {
    dataset_id: string;
    dataset_uri: string;
    num_shards: number;
    total_tasks: number;
    max_attempts: number;
  };
  ledger: { kind: string; location: string };
  output_uri: string;
  /** The dataset's state: `completed`, `failed`, `in_use` (running) or `available`. */
  state: LedgerStatus['state'];
  /** From the first event to the last (or `as_of` while running). */
  span: { start: number; end: number };
  /** Every shard in shard order, its units under it. */
  shards: ReportShard[];
  workers: WorkerRow[];
  throughput: Throughput;
  failures: FailureRow[];
  skipped: { total: number; by_reason: Record<string, number>; examples: SkippedRow[] };
  layers: { from: string; rows: LayerRow[] } | null;
  totals: {
    /** Work units over all shards (as many as shards while nothing was split). */
    units: number;
    shards: number;
    available: number;
    in_use: number;
    completed: number;
    failed: number;
    tasks_done: number;
    total_tasks: number;
    parts: number;
    samples: number;
    tokens: number;
    bytes: number;
    skipped: number;
    attempts: number;
    claims: number;
    reclaims: number;
    /** Units split off held units (each made by one split). */
    splits: number;
    expiries: number;
    failures: number;
    releases: number;
    /** Tokens over the span. */
    tokens_per_second: number;
  };
  /** What could not be read or shown, for the reader to know. */
  warnings: string[];
}

/** How a claim may end: every event but a claim and a split (which leaves the holder working). */
const ENDS = new Set<string>(SHARD_EVENT_KINDS.filter((k) => k !== 'claim' && k !== 'split'));

/** The claims of a unit with how each ended, from its history and parts (see `ReportClaim`). */
export function claimsOf(
  events: readonly ReportEvent[],
  parts: readonly ReportPart[],
  unit: Pick<UnitStatusRow, 'status' | 'assigned_to' | 'epoch'>,
  asOf: number,
): ReportClaim[] {
  const claims: ReportClaim[] = [];
  let open: ReportClaim | null = null;
  const lastPart = (worker: string, epoch: number, from: number): number =>
    parts
      .filter((p) => p.worker === worker && p.epoch === epoch)
      .reduce((t, p) => Math.max(t, p.committed_at), from);
  const close = (h: ReportClaim, to: number, end: ClaimEnd): void => {
    h.to = Math.max(h.from, to);
    h.end = end;
    h.last_seen = Math.min(h.to, lastPart(h.worker, h.epoch, h.from));
    claims.push(h);
  };
  for (const e of events) {
    if (e.kind === 'claim') {
      if (open) close(open, e.at, 'unknown');
      open = {
        worker: e.worker ?? '?',
        epoch: e.epoch,
        from: e.at,
        to: e.at,
        end: 'open',
        last_seen: e.at,
        reclaim: e.epoch > 1,
      };
    } else if (open && ENDS.has(e.kind)) {
      close(open, e.at, e.kind as ClaimEnd);
      open = null;
    }
  }
  if (open) {
    const held =
      unit.status === 'in_use' && unit.assigned_to === open.worker && unit.epoch === open.epoch;
    const seen = lastPart(open.worker, open.epoch, open.from);
    close(open, held ? asOf : seen, held ? 'open' : 'unknown');
  }
  return claims;
}

/** A "nice" bucket width: about `span / target`, rounded up to 1/2/5 × a unit of time. */
export function bucketWidthMs(spanMs: number, target = 60): number {
  const steps = [
    1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3,
    10800e3, 21600e3, 43200e3, 86400e3,
  ];
  const want = Math.max(1, spanMs) / target;
  return steps.find((s) => s >= want) ?? Math.ceil(want / 86400e3) * 86400e3;
}

/**
 * Tokens per second over time: each part's tokens spread evenly over the time its holder spent
 * on it (from its claim, or its previous part, to its commit), summed in buckets.
 */
export function throughputOf(units: readonly ReportUnit[], span: ReportData['span']): Throughput {
  const bucket = bucketWidthMs(span.end - span.start);
  const n = Math.max(1, Math.ceil((span.end - span.start) / bucket));
  const all = new Array<number>(n).fill(0);
  const byWorker: Record<string, number[]> = {};
  const spread = (worker: string, tokens: number, from: number, to: number): void => {
    const series = (byWorker[worker] ??= new Array<number>(n).fill(0));
    const add = (k: number, t: number): void => {
      if (k < 0 || k >= n) return;
      all[k]! += t;
      series[k]! += t;
    };
    if (to <= from) return add(Math.floor((to - span.start) / bucket), tokens);
    const rate = tokens / (to - from);
    for (let k = Math.floor((from - span.start) / bucket); k * bucket + span.start < to; k++) {
      const a = Math.max(from, span.start + k * bucket);
      const b = Math.min(to, span.start + (k + 1) * bucket);
      if (b > a) add(k, rate * (b - a));
    }
  };
  for (const u of units) {
    for (const h of u.claims) {
      let from = h.from;
      const mine = u.parts
        .filter((p) => p.worker === h.worker && p.epoch === h.epoch)
        .sort((a, b) => a.committed_at - b.committed_at);
      for (const p of mine) {
        if (p.tokens !== null) spread(h.worker, p.tokens, from, p.committed_at);
        from = p.committed_at;
      }
    }
  }
  const perSecond = (xs: number[]): number[] => xs.map((t) => t / (bucket / 1000));
  return {
    start: span.start,
    bucket_ms: bucket,
    all: perSecond(all),
    by_worker: Object.fromEntries(Object.entries(byWorker).map(([w, xs]) => [w, perSecond(xs)])),
  };
}

const LayerStatsSchema = z.record(
  z.string(),
  z.object({
    count: z.number().nonnegative(),
    mean: z.array(z.number()),
    m2: z.array(z.number()),
    norm_sum: z.number(),
  }),
);
/** Per-tensor running statistics as manifests carry them (`stats`). */
export type LayerStats = z.infer<typeof LayerStatsSchema>;

/** The per-layer rows of the report, in layer order. */
export function layerRows(stats: LayerStats): LayerRow[] {
  return Object.entries(stats)
    .map(([tensor, s]) => {
      const m = /\.(\d+)$/.exec(tensor);
      const summary = summarize(s);
      return {
        tensor,
        layer: m ? Number(m[1]) : null,
        rows: s.count,
        hidden: s.mean.length,
        mean_norm: summary.mean_norm,
        scaling_factor: summary.norm_scaling_factor,
        mean_variance: summary.mean_variance,
      };
    })
    .sort(
      (a, b) => (a.layer ?? Infinity) - (b.layer ?? Infinity) || (a.tensor < b.tensor ? -1 : 1),
    );
}

/** Runs `fn` over `items`, at most `limit` at a time, keeping the order of the results. */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

const ShardManifestSchema = z.object({
  parts: z.array(
    z.object({ name: z.string(), tokens: z.number(), skipped: z.number(), samples: z.number() }),
  ),
  stats: LayerStatsSchema.optional(),
});
const DatasetManifestSchema = z.object({ stats: LayerStatsSchema.optional() });

/** Reads and decodes a JSON document, or null when it is absent or not what we expect. */
async function readJson<T>(
  store: BlobStore,
  key: string,
  schema: z.ZodType<T>,
  warnings: string[],
): Promise<T | null> {
  let text: string;
  try {
    text = (await store.readAll(key)).toString('utf8');
  } catch (e: unknown) {
    if (errorCode(e) !== 'NOT_FOUND')
      warnings.push(`could not read ${store.uriOf(key)}: ${toError(e).message}`);
    return null;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data;
    warnings.push(`${store.uriOf(key)} is not a manifest this report reads`);
  } catch (e: unknown) {
    warnings.push(`${store.uriOf(key)} is not JSON: ${toError(e).message}`);
  }
  return null;
}

/** What `buildReportData` reads from. */
export interface ReportSources {
  /**
   * What is read from the ledger: every shard with its units and their histories (`status`),
   * and each shard's parts, every unit's at once (`listShardParts`).
   */
  ledger: Pick<Ledger, 'kind' | 'location' | 'status' | 'listShardParts'>;
  datasetId: string;
  /** The folder of `shard_XXX/` outputs (`--output_dir`, or `DATASET/activations`). */
  output: BlobStore;
  /** Now, in ms (the report's `generated_at`). */
  nowMs: number;
  /** How many part headers are read at once. Default 16. */
  concurrency?: number;
  /** Skipped samples kept as examples. Default 50. */
  maxExamples?: number;
  /** Called as shards are read (done, total). */
  onProgress?: (done: number, total: number) => void;
}

/** One shard read: the shard, and what it adds to the report's skipped samples and statistics. */
interface ShardRead {
  shard: ReportShard;
  byReason: Record<string, number>;
  /** The first skipped entries, in task order (at most `maxExamples`). */
  examples: SkippedRow[];
  skipped: number;
  stats: LayerStats | null;
  warnings: string[];
}

/** How warnings name a unit: the shard alone while it was never split. */
function unitName(shardId: number, unit: number, split: boolean): string {
  return split ? `shard ${shardId} unit ${unit}` : `shard ${shardId}`;
}

/**
 * Reads one shard: its units from its status row, every unit's parts in one listing (each part
 * names its unit; all of them live in the shard's own folder) and their outputs.
 */
async function readShard(
  row: ShardStatusRow,
  src: ReportSources,
  asOf: number,
  maxExamples: number,
): Promise<ShardRead> {
  const warnings: string[] = [];
  const byReason: Record<string, number> = {};
  const examples: SkippedRow[] = [];
  let skippedTotal = 0;
  const split = row.units.length > 1;
  const dir = shardDirName(row.shard_id);
  const records: PartRecord[] = await src.ledger.listShardParts(row);
  // Tokens and skipped counts from the shard's manifest when it has one (it lists every unit's parts).
  const manifest = row.manifest
    ? await readJson(src.output, `${dir}/${MANIFEST_FILE}`, ShardManifestSchema, warnings)
    : null;
  const listed = new Map((manifest?.parts ?? []).map((p) => [p.name, p]));
  const read = await mapLimit(records, src.concurrency ?? 16, async (p) => {
    const m = listed.get(p.name);
    let tokens: number | null = m?.tokens ?? null;
    let skipped: number | null = m?.skipped ?? null;
    let list: Array<Record<string, unknown>> = [];
    const where = `${unitName(row.shard_id, p.unit, split)} ${p.name}`;
    // The header holds the skipped samples' reasons, and the tokens of unlisted parts.
    if (m === undefined || m.skipped > 0) {
      let meta: Record<string, string> | null = null;
      try {
        meta = await partMetadata(src.output, `${dir}/${p.name}.safetensors`);
      } catch (e: unknown) {
        warnings.push(`${where}: header not readable (${toError(e).message})`);
      }
      if (meta) {
        tokens = Number(meta['n_tokens']);
        try {
          list = JSON.parse(meta['skipped'] ?? '[]') as Array<Record<string, unknown>>;
        } catch {
          warnings.push(`${where}: its skipped list is not JSON`);
        }
        skipped = list.length;
      }
    }
    const part: ReportPart = {
      part_index: p.part_index,
      name: p.name,
      worker: p.worker_id,
      epoch: p.epoch,
      committed_at: Date.parse(p.committed_at),
      first_task_index: p.first_task_index,
      last_task_index: p.last_task_index,
      samples: p.samples,
      tokens: Number.isFinite(tokens) ? tokens : null,
      bytes: p.bytes,
      skipped,
    };
    return { unit: p.unit, part, list };
  });
  const known = new Set(row.units.map((u) => u.unit));
  const partsOf = new Map<number, ReportPart[]>();
  for (const { unit, part, list } of read) {
    // Status and parts are two reads: a split between them makes a unit the status has not seen.
    if (!known.has(unit)) {
      warnings.push(
        `shard ${row.shard_id} unit ${unit} ${part.name}: its unit was split off after the ledger was read; left out`,
      );
      continue;
    }
    partsOf.set(unit, [...(partsOf.get(unit) ?? []), part]);
    skippedTotal += part.skipped ?? 0;
    for (const k of list) {
      const reason = typeof k['reason'] === 'string' ? k['reason'] : 'unknown';
      byReason[reason] = (byReason[reason] ?? 0) + 1;
      if (examples.length < maxExamples)
        examples.push({
          shard_id: row.shard_id,
          unit,
          part: part.name,
          task_index: Number(k['task_index']),
          task_id: typeof k['task_id'] === 'string' ? k['task_id'] : null,
          reason,
          detail: typeof k['detail'] === 'string' ? k['detail'] : '',
        });
    }
  }
  const units = row.units.map((u): ReportUnit => {
    const parts = (partsOf.get(u.unit) ?? []).sort((a, b) => a.part_index - b.part_index);
    const events: ReportEvent[] = u.history.map((e) => ({
      at: e.at,
      kind: e.kind,
      worker: e.worker,
      epoch: e.epoch,
      attempt: e.attempt === true,
      note: e.note ?? null,
    }));
    if (u.history_dropped > 0)
      warnings.push(
        `${unitName(row.shard_id, u.unit, split)}: its ${u.history_dropped} oldest events were dropped (the ledger keeps the last ones)`,
      );
    return {
      shard_id: row.shard_id,
      unit: u.unit,
      split_from: u.split_from,
      status: u.status,
      holder: u.assigned_to,
      attempts: u.attempts,
      max_attempts: u.max_attempts,
      last_error: u.last_error,
      unit_start: u.unit_start,
      unit_end: u.unit_end,
      tasks_done: u.tasks_done,
      history_dropped: u.history_dropped,
      events,
      claims: claimsOf(events, parts, u, asOf),
      parts,
    };
  });
  return {
    shard: {
      shard_id: row.shard_id,
      status: row.status,
      holder: row.assigned_to,
      attempts: row.attempts,
      max_attempts: row.max_attempts,
      last_error: row.last_error,
      first_task_index: row.first_task_index,
      total_tasks: row.total_tasks,
      tasks_done: row.tasks_done,
      units,
    },
    byReason,
    examples,
    skipped: skippedTotal,
    stats: manifest?.stats ?? null,
    warnings,
  };
}

/** Reads the ledger and the outputs and puts the report together (see the module comment). */
export async function buildReportData(src: ReportSources): Promise<ReportData> {
  const status = await src.ledger.status(src.datasetId);
  const asOf = Date.parse(status.as_of);
  const maxExamples = src.maxExamples ?? 50;
  let done = 0;
  // A few shards at a time (each reads its parts' headers `concurrency` at a time).
  const reads = await mapLimit(status.shards, 4, async (row) => {
    const r = await readShard(row, src, asOf, maxExamples);
    src.onProgress?.(++done, status.shards.length);
    return r;
  });
  const shards = reads.map((r) => r.shard);
  const units = shards.flatMap((s) => s.units);
  const warnings = reads.flatMap((r) => r.warnings);
  const byReason: Record<string, number> = {};
  for (const r of reads)
    for (const [k, n] of Object.entries(r.byReason)) byReason[k] = (byReason[k] ?? 0) + n;
  const examples = reads.flatMap((r) => r.examples).slice(0, maxExamples);
  const skippedTotal = reads.reduce((n, r) => n + r.skipped, 0);
  const withStats = reads.filter((r) => r.stats !== null);
  const stats = withStats.length ? mergeStats(withStats.map((r) => r.stats)) : null;
  const statsShards = withStats.length;

  // The dataset manifest's statistics, when the run is finished and it carries them.
  let layers: ReportData['layers'] = null;
  const datasetManifest =
    status.state === 'completed'
      ? await readJson(src.output, MANIFEST_FILE, DatasetManifestSchema, warnings)
      : null;
  if (datasetManifest?.stats)
    layers = { from: 'the dataset manifest', rows: layerRows(datasetManifest.stats) };
  else if (stats)
    layers = {
      from: `${statsShards} of ${status.shards.length} shard manifests, merged`,
      rows: layerRows(stats),
    };

  const times = units.flatMap((u) => [
    ...u.events.map((e) => e.at),
    ...u.parts.map((p) => p.committed_at),
  ]);
  const running = status.state === 'in_use';
  const start = times.reduce((a, b) => Math.min(a, b), times.length ? Infinity : asOf);
  const last = times.reduce((a, b) => Math.max(a, b), times.length ? -Infinity : asOf);
  const span = { start, end: Math.max(start + 1000, running ? asOf : last) };
  return {
    format: REPORT_FORMAT,
    format_version: REPORT_VERSION,
    generated_at: src.nowMs,
    as_of: asOf,
    dataset: {
      dataset_id: status.dataset.dataset_id,
      dataset_uri: status.dataset.dataset_uri,
      num_shards: status.dataset.num_shards,
      total_tasks: status.dataset.total_tasks,
      max_attempts: status.dataset.max_attempts,
    },
    ledger: { kind: src.ledger.kind, location: src.ledger.location },
    output_uri: src.output.root,
    state: status.state,
    span,
    shards,
    workers: workerRows(shards),
    throughput: throughputOf(units, span),
    failures: units
      .flatMap((u) =>
        u.events
          .filter((e) => e.kind === 'fail' || e.kind === 'expire' || e.kind === 'force-fail')
          .map((e) => ({ shard_id: u.shard_id, unit: u.unit, ...e })),
      )
      .sort((a, b) => a.at - b.at),
    skipped: { total: skippedTotal, by_reason: byReason, examples },
    layers,
    totals: totalsOf(status, shards, skippedTotal, span),
    warnings,
  };
}

/**
 * The worker whose completion completed the shard: the last completion among its units (a
 * shard never split has one unit), or null when an operator completed it or the history no
 * longer says.
 */
function shardCompleter(shard: ReportShard): string | null {
  if (shard.status !== 'completed') return null;
  const last = shard.units
    .flatMap((u) => u.events)
    .filter((e) => e.kind === 'complete' || e.kind === 'force-complete')
    .reduce<ReportEvent | null>((a, e) => (a === null || e.at >= a.at ? e : a), null);
  return last?.kind === 'complete' ? last.worker : null;
}

function workerRows(shards: readonly ReportShard[]): WorkerRow[] {
  const rows = new Map<string, WorkerRow & { busy: number }>();
  const get = (w: string): WorkerRow & { busy: number } => {
    let r = rows.get(w);
    if (!r) {
      r = {
        worker: w,
        claims: 0,
        units_completed: 0,
        shards_completed: 0,
        parts: 0,
        samples: 0,
        tokens: 0,
        held_ms: 0,
        tokens_per_second: 0,
        expiries: 0,
        failures: 0,
        releases: 0,
        busy: 0,
      };
      rows.set(w, r);
    }
    return r;
  };
  for (const s of shards) {
    const completer = shardCompleter(s);
    if (completer !== null) get(completer).shards_completed++;
    for (const u of s.units) {
      for (const h of u.claims) {
        const r = get(h.worker);
        r.claims++;
        r.held_ms += h.to - h.from;
        r.busy += h.last_seen - h.from;
        if (h.end === 'complete') r.units_completed++;
        if (h.end === 'expire') r.expiries++;
        if (h.end === 'fail') r.failures++;
        if (h.end === 'release') r.releases++;
      }
      for (const p of u.parts) {
        const r = get(p.worker);
        r.parts++;
        r.samples += p.samples;
        r.tokens += p.tokens ?? 0;
      }
    }
  }
  return [...rows.values()]
    .map(({ busy, ...r }) => ({ ...r, tokens_per_second: busy > 0 ? (r.tokens / busy) * 1000 : 0 }))
    .sort((a, b) => (a.worker < b.worker ? -1 : a.worker > b.worker ? 1 : 0));
}

function totalsOf(
  status: LedgerStatus,
  shards: readonly ReportShard[],
  skipped: number,
  span: ReportData['span'],
): ReportData['totals'] {
  const t = status.totals;
  const units = shards.flatMap((s) => s.units);
  const parts = units.flatMap((u) => u.parts);
  const events = units.flatMap((u) => u.events);
  const count = (k: EventKind): number => events.filter((e) => e.kind === k).length;
  const tokens = parts.reduce((n, p) => n + (p.tokens ?? 0), 0);
  return {
    units: units.length,
    shards: shards.length,
    available: t.available,
    in_use: t.in_use,
    completed: t.completed,
    failed: t.failed,
    tasks_done: t.tasks_done,
    total_tasks: t.total_tasks,
    parts: parts.length,
    samples: parts.reduce((n, p) => n + p.samples, 0),
    tokens,
    bytes: parts.reduce((n, p) => n + p.bytes, 0),
    skipped,
    attempts: t.attempts,
    claims: count('claim'),
    reclaims: units.reduce((n, u) => n + u.claims.filter((h) => h.reclaim).length, 0),
    splits: units.filter((u) => u.split_from !== null).length,
    expiries: count('expire'),
    failures: count('fail') + count('force-fail'),
    releases: count('release'),
    tokens_per_second: (tokens / Math.max(1, span.end - span.start)) * 1000,
  };
}
