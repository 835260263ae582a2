/**
 * What `shardline report` shows, gathered from the ledger (every shard's history of claims,
 * releases, expiries, failures and completions, and its committed parts with their commit
 * times and holders) and from the outputs (token counts, skipped samples with reasons and
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
import type { Ledger, LedgerStatus, PartRecord, ShardStatusRow } from '../../core/ledger/ledger';
import { SHARD_EVENT_KINDS } from '../../core/ledger/schema';
import { MANIFEST_FILE } from '../../core/rollup/manifests';
import { mergeStats, summarize } from '../../core/layer-stats';
import { partMetadata } from '../../worker/manifest';

/** The report's format name and version (in the HTML's embedded data and in `--json`). */
export const REPORT_FORMAT = 'shardline.report';
/** Bumped when a field changes meaning. */
export const REPORT_VERSION = 1;

/** What happened to a shard (the ledger's history kinds). */
export type EventKind = (typeof SHARD_EVENT_KINDS)[number];

/** One event of a unit's history. */
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
 * A unit of work: a shard, or (when splits exist) a split of one, drawn under its parent.
 * Nothing here assumes one unit per shard.
 */
export interface ReportUnit {
  shard_id: number;
  /** The shard this unit was split from, when the ledger records one. */
  parent_shard_id: number | null;
  status: ShardStatusRow['status'];
  holder: string | null;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  first_task_index: number;
  total_tasks: number;
  tasks_done: number;
  /** Older events the ledger let go (its history is bounded). */
  history_dropped: number;
  events: ReportEvent[];
  claims: ReportClaim[];
  parts: ReportPart[];
}

/** One worker's share. */
export interface WorkerRow {
  worker: string;
  /** Claims it made. */
  claims: number;
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
export type FailureRow = ReportEvent & { shard_id: number };

/** One skipped sample or task. */
export interface SkippedRow {
  shard_id: number;
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
  units: ReportUnit[];
  workers: WorkerRow[];
  throughput: Throughput;
  failures: FailureRow[];
  skipped: { total: number; by_reason: Record<string, number>; examples: SkippedRow[] };
  layers: { from: string; rows: LayerRow[] } | null;
  totals: {
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

/**
 * The shard a unit was split from, if the ledger records one (`parent_shard_id`). Read from the
 * record as stored, so units made by a newer ledger show up under their shard.
 */
export function parentOf(row: ShardStatusRow): number | null {
  const v = (row as unknown as Record<string, unknown>)['parent_shard_id'];
  return typeof v === 'number' && Number.isInteger(v) ? v : null;
}

/** The claims of a unit with how each ended, from its history and parts (see `ReportClaim`). */
export function claimsOf(
  events: readonly ReportEvent[],
  parts: readonly ReportPart[],
  unit: Pick<ShardStatusRow, 'status' | 'assigned_to' | 'epoch'>,
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
  /** What is read from the ledger: every shard with its history, and each shard's parts. */
  ledger: Pick<Ledger, 'kind' | 'location' | 'status' | 'listParts'>;
  datasetId: string;
  /** The folder of `shard_XXX/` outputs (`--output_dir`, or `DATASET/activations`). */
  output: BlobStore;
  /** Now, in ms (the report's `generated_at`). */
  nowMs: number;
  /** How many part headers are read at once. Default 16. */
  concurrency?: number;
  /** Skipped samples kept as examples. Default 50. */
  maxExamples?: number;
  /** Called as units are read (done, total). */
  onProgress?: (done: number, total: number) => void;
}

/** One unit read: the unit, and what it adds to the report's skipped samples and statistics. */
interface UnitRead {
  unit: ReportUnit;
  byReason: Record<string, number>;
  /** The first skipped entries, in part order (at most `maxExamples`). */
  examples: SkippedRow[];
  skipped: number;
  stats: LayerStats | null;
  warnings: string[];
}

/** Reads one shard (or split) record's parts and outputs. */
async function readUnit(
  row: ShardStatusRow,
  src: ReportSources,
  asOf: number,
  maxExamples: number,
): Promise<UnitRead> {
  const warnings: string[] = [];
  const byReason: Record<string, number> = {};
  const examples: SkippedRow[] = [];
  let skippedTotal = 0;
  const parent = parentOf(row);
  const records: PartRecord[] = await src.ledger.listParts(row);
  const dirs = [shardDirName(row.shard_id), ...(parent === null ? [] : [shardDirName(parent)])];
  // Tokens and skipped counts from the shard's manifest when it has one.
  const manifest = row.manifest
    ? await readJson(src.output, `${dirs[0]}/${MANIFEST_FILE}`, ShardManifestSchema, warnings)
    : null;
  const listed = new Map((manifest?.parts ?? []).map((p) => [p.name, p]));
  const read = await mapLimit(records, src.concurrency ?? 16, async (p) => {
    const m = listed.get(p.name);
    let tokens: number | null = m?.tokens ?? null;
    let skipped: number | null = m?.skipped ?? null;
    let list: Array<Record<string, unknown>> = [];
    // The header holds the skipped samples' reasons, and the tokens of unlisted parts.
    if (m === undefined || m.skipped > 0) {
      let meta: Record<string, string> | null = null;
      for (const dir of dirs) {
        try {
          meta = await partMetadata(src.output, `${dir}/${p.name}.safetensors`);
          break;
        } catch (e: unknown) {
          if (dir === dirs.at(-1))
            warnings.push(
              `shard ${row.shard_id} ${p.name}: header not readable (${toError(e).message})`,
            );
        }
      }
      if (meta) {
        tokens = Number(meta['n_tokens']);
        try {
          list = JSON.parse(meta['skipped'] ?? '[]') as Array<Record<string, unknown>>;
        } catch {
          warnings.push(`shard ${row.shard_id} ${p.name}: its skipped list is not JSON`);
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
    return { part, list };
  });
  for (const { part, list } of read) {
    skippedTotal += part.skipped ?? 0;
    for (const k of list) {
      const reason = typeof k['reason'] === 'string' ? k['reason'] : 'unknown';
      byReason[reason] = (byReason[reason] ?? 0) + 1;
      if (examples.length < maxExamples)
        examples.push({
          shard_id: row.shard_id,
          part: part.name,
          task_index: Number(k['task_index']),
          task_id: typeof k['task_id'] === 'string' ? k['task_id'] : null,
          reason,
          detail: typeof k['detail'] === 'string' ? k['detail'] : '',
        });
    }
  }
  const parts = read.map((r) => r.part);
  const events: ReportEvent[] = row.history.map((e) => ({
    at: e.at,
    kind: e.kind,
    worker: e.worker,
    epoch: e.epoch,
    attempt: e.attempt === true,
    note: e.note ?? null,
  }));
  if (row.history_dropped > 0)
    warnings.push(
      `shard ${row.shard_id}: its ${row.history_dropped} oldest events were dropped (the ledger keeps the last ones)`,
    );
  return {
    unit: {
      shard_id: row.shard_id,
      parent_shard_id: parent,
      status: row.status,
      holder: row.assigned_to,
      attempts: row.attempts,
      max_attempts: row.max_attempts,
      last_error: row.last_error,
      first_task_index: row.first_task_index,
      total_tasks: row.total_tasks,
      tasks_done: row.tasks_done,
      history_dropped: row.history_dropped,
      events,
      claims: claimsOf(events, parts, row, asOf),
      parts,
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
  // A few units at a time (each reads its parts' headers `concurrency` at a time).
  const reads = await mapLimit(status.shards, 4, async (row) => {
    const r = await readUnit(row, src, asOf, maxExamples);
    src.onProgress?.(++done, status.shards.length);
    return r;
  });
  const units = reads.map((r) => r.unit);
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
  const ordered = orderUnits(units);
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
    units: ordered,
    workers: workerRows(ordered),
    throughput: throughputOf(ordered, span),
    failures: ordered
      .flatMap((u) =>
        u.events
          .filter((e) => e.kind === 'fail' || e.kind === 'expire' || e.kind === 'force-fail')
          .map((e) => ({ shard_id: u.shard_id, ...e })),
      )
      .sort((a, b) => a.at - b.at),
    skipped: { total: skippedTotal, by_reason: byReason, examples },
    layers,
    totals: totalsOf(status, ordered, skippedTotal, span),
    warnings,
  };
}

/** Units by shard id, each split right after the unit it came from. */
function orderUnits(units: readonly ReportUnit[]): ReportUnit[] {
  const ids = new Set(units.map((u) => u.shard_id));
  const children = new Map<number, ReportUnit[]>();
  for (const u of units)
    if (u.parent_shard_id !== null && ids.has(u.parent_shard_id))
      children.set(u.parent_shard_id, [...(children.get(u.parent_shard_id) ?? []), u]);
  const out: ReportUnit[] = [];
  const visit = (u: ReportUnit): void => {
    out.push(u);
    for (const c of (children.get(u.shard_id) ?? []).sort((a, b) => a.shard_id - b.shard_id))
      visit(c);
  };
  for (const u of [...units].sort((a, b) => a.shard_id - b.shard_id))
    if (u.parent_shard_id === null || !ids.has(u.parent_shard_id)) visit(u);
  return out;
}

function workerRows(units: readonly ReportUnit[]): WorkerRow[] {
  const rows = new Map<string, WorkerRow & { busy: number }>();
  const get = (w: string): WorkerRow & { busy: number } => {
    let r = rows.get(w);
    if (!r) {
      r = {
        worker: w,
        claims: 0,
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
  for (const u of units) {
    for (const h of u.claims) {
      const r = get(h.worker);
      r.claims++;
      r.held_ms += h.to - h.from;
      r.busy += h.last_seen - h.from;
      if (h.end === 'complete') r.shards_completed++;
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
  return [...rows.values()]
    .map(({ busy, ...r }) => ({ ...r, tokens_per_second: busy > 0 ? (r.tokens / busy) * 1000 : 0 }))
    .sort((a, b) => (a.worker < b.worker ? -1 : a.worker > b.worker ? 1 : 0));
}

function totalsOf(
  status: LedgerStatus,
  units: readonly ReportUnit[],
  skipped: number,
  span: ReportData['span'],
): ReportData['totals'] {
  const t = status.totals;
  const parts = units.flatMap((u) => u.parts);
  const events = units.flatMap((u) => u.events);
  const count = (k: EventKind): number => events.filter((e) => e.kind === k).length;
  const tokens = parts.reduce((n, p) => n + (p.tokens ?? 0), 0);
  return {
    units: units.length,
    shards: units.filter((u) => u.parent_shard_id === null).length,
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
    expiries: count('expire'),
    failures: count('fail') + count('force-fail'),
    releases: count('release'),
    tokens_per_second: (tokens / Math.max(1, span.end - span.start)) * 1000,
  };
}
