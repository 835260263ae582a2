/**
 * `shardline verify`'s checks, end to end over a dataset's outputs (docs/architecture.md,
 * "Verifying and reading the outputs"):
 *
 * - What is expected comes from the ledger (the source of truth) and the dataset's metadata:
 *   every completed shard's manifest and the parts it lists, and, while the dataset runs, the
 *   parts committed so far; every task of a completed shard, and of a running shard those its
 *   committed parts passed.
 * - Every part's two files are present with the recorded sizes and read once, streamed, for
 *   their CRC32C (cli/verify-part.ts); each part must agree with itself (cli/verify-facts.ts).
 * - Every task is present exactly once, or recorded as skipped with a reason
 *   (cli/verify-tasks.ts).
 * - Counts (samples, rows, tokens, skipped, parts, bytes) agree between the parts, the shard
 *   manifests, the dataset manifest and the ledger; one run fingerprint throughout; the
 *   manifests' statistics equal the merge of their parts' statistics tensors.
 *
 * Nothing is written. Every problem names the file (URI) it concerns.
 */
import type { BlobInfo, BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import type { MasterMetadata } from '../core/dataset/metadata';
import { shardDirName } from '../core/dataset/paths';
import { toError } from '../core/errors';
import type { LayerStats } from '../core/layer-stats';
import { mergeStats } from '../core/layer-stats';
import type { Ledger, PartRecord, ShardStatusRow } from '../core/ledger/ledger';
import { MANIFEST_FILE, shardManifestKey } from '../core/rollup/manifests';
import type { DatasetManifest, ShardManifest } from '../core/rollup/manifests';
import { collect } from '../core/split/ranges';
import { crc32cBase64 } from '../core/checksum';
import { crc32c } from '@node-rs/crc32';
import { provenanceDiff } from '../worker/extraction/part-writer';
import type { PartFacts } from './verify-facts';
import { partFacts, statsDiff } from './verify-facts';
import { scanPart } from './verify-part';
import type { PartScan } from './verify-part';
import type { ProblemKind, ShardSummary, VerifyProblem, VerifyReport } from './verify-report';
import { checkCoverage } from './verify-tasks';

/**
 * Manifest figures against the merge of their parts' tensors: they are computed the same way,
 * so they agree to the bit; 1e-12 allows a manifest re-serialised by another JSON writer.
 */
export const MANIFEST_STATS_TOLERANCE = 1e-12;
/**
 * A part's statistics against a float64 recomputation from its rows. The writer merges per
 * sample, the recomputation per block of rows: float64 rounding of a different summation
 * order, ~1e-14 relative on the demo; 1e-9 leaves room, while any changed row moves the
 * figures by more.
 */
export const RECOMPUTE_STATS_TOLERANCE = 1e-9;
/** Ledger and manifest lookups at once (small reads; Firestore and Cloud Storage round trips). */
const LOOKUPS_AT_ONCE = 8;
/** Parts read at once by default: enough to hide Cloud Storage's latency, few enough for a disk. */
export const DEFAULT_VERIFY_CONCURRENCY = 4;

/** Progress of the reads. */
export interface VerifyProgress {
  bytesDone: number;
  bytesTotal: number;
  partsDone: number;
  partsTotal: number;
}

/** What `verifyOutputs` needs. */
export interface VerifyDeps {
  /** Where the parts are. */
  output: BlobStore;
  /** The dataset's master metadata. */
  master: MasterMetadata;
  /** Its ledger, open. */
  ledger: Ledger;
  clock: Clock;
  /** Recompute every part's statistics from its rows. */
  recomputeStats: boolean;
  /** Parts read at once; default `DEFAULT_VERIFY_CONCURRENCY`. */
  concurrency?: number;
  /** Called as bytes are read (often; throttle the drawing). */
  onProgress?: (progress: VerifyProgress) => void;
  signal?: AbortSignal;
}

/** One file of a part as recorded: its size (when a manifest says) and checksum(s). */
interface FilePlan {
  key: string;
  bytes: number | null;
  /** CRC32C as recorded by the manifest and the ledger (one entry when they agree). */
  crc32c: string[];
}

/** One part to check. */
interface PartPlan {
  shardId: number;
  name: string;
  partIndex: number;
  /** Listed by the shard manifest (a completed shard) or committed (a running one). */
  listed: boolean;
  manifest: ShardManifest['parts'][number] | null;
  ledger: PartRecord | null;
  safetensors: FilePlan;
  index: FilePlan;
  /** Filled by the read. */
  facts: PartFacts | null;
  /** Bytes of its files present. */
  bytes: number;
  /** How many of its two files are present. */
  filesPresent: number;
}

/** One shard's plan. */
interface ShardPlan {
  row: ShardStatusRow;
  ledgerParts: PartRecord[];
  manifest: ShardManifest | null;
  manifestUri: string;
  parts: PartPlan[];
}

/** Runs `f` over `items`, `n` at a time, in order of start. */
async function pool<T>(
  items: readonly T[],
  n: number,
  f: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await f(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

/** Parses a JSON document, or returns the reason it is not one. */
function parseJson<T>(bytes: Buffer): T | string {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (e: unknown) {
    return `not JSON: ${toError(e).message}`;
  }
}

/** Checks a dataset's outputs (see the file comment); resolves with the report. */
export async function verifyOutputs(deps: VerifyDeps): Promise<VerifyReport> {
  const { output, master, ledger } = deps;
  const startedMs = deps.clock.nowMs();
  const problems: VerifyProblem[] = [];
  const notes: string[] = [];
  const problem: ProblemSink = (uri, kind, message, shardId) => {
    problems.push({ uri, kind, message, ...(shardId === undefined ? {} : { shard_id: shardId }) });
  };
  const ledgerUri = ledger.location;

  // 1. What the ledger says (a snapshot first: parts are written before they are committed,
  //    so every committed part is in the listing taken after it).
  const status = await ledger.status(master.dataset_id);
  const rows = [...status.shards].sort((a, b) => a.shard_id - b.shard_id);
  const shards: ShardPlan[] = rows.map((row) => ({
    row,
    ledgerParts: [],
    manifest: null,
    manifestUri: output.uriOf(shardManifestKey(row.shard_id)),
    parts: [],
  }));
  await pool(shards, LOOKUPS_AT_ONCE, async (s) => {
    if (s.row.parts_committed > 0 || s.row.status === 'completed')
      s.ledgerParts = await ledger.listShardParts({
        dataset_id: master.dataset_id,
        shard_id: s.row.shard_id,
      });
  });
  checkLedger(master, shards, ledgerUri, problem);

  // 2. What the outputs hold.
  const listing = new Map<string, BlobInfo>();
  for await (const info of output.list('shard_')) listing.set(info.key, info);
  const topInfo = await output.stat(MANIFEST_FILE);

  // 3. The manifests.
  await pool(shards, LOOKUPS_AT_ONCE, async (s) => {
    const id = s.row.shard_id;
    const key = shardManifestKey(id);
    const present = listing.has(key);
    if (s.row.status !== 'completed') {
      if (present)
        notes.push(
          `${s.manifestUri} exists while the ledger says shard ${id} is ${s.row.status}: not checked`,
        );
      return;
    }
    if (!present) {
      problem(
        s.manifestUri,
        'missing',
        `shard ${id} is completed in the ledger but has no manifest`,
        id,
      );
      return;
    }
    const parsed = parseJson<ShardManifest>(await output.readAll(key));
    if (typeof parsed === 'string') problem(s.manifestUri, 'format', parsed, id);
    else s.manifest = parsed;
  });
  let dataset: DatasetManifest | null = null;
  const datasetUri = output.uriOf(MANIFEST_FILE);
  const complete = rows.length > 0 && rows.every((r) => r.status === 'completed');
  if (topInfo) {
    const parsed = parseJson<DatasetManifest>(await output.readAll(MANIFEST_FILE));
    if (typeof parsed === 'string') problem(datasetUri, 'format', parsed);
    else dataset = parsed;
    if (!complete) {
      const open = rows.filter((r) => r.status !== 'completed').map((r) => r.shard_id);
      problem(
        datasetUri,
        'manifest',
        `the dataset manifest exists but the ledger has shard(s) ${open.join(', ')} not completed`,
      );
    }
  } else if (complete) {
    problem(datasetUri, 'missing', 'every shard is completed but the dataset manifest is missing');
  }

  // 4. The parts: the manifest's (what readers see) and the ledger's, matched by name.
  for (const s of shards) planParts(s, ledgerUri, problem);
  const allParts = shards.flatMap((s) => s.parts);
  const expected = new Set(allParts.flatMap((p) => [p.safetensors.key, p.index.key]));
  const orphans = [...listing.keys()].filter(
    (k) => /\/part_\d+\.(safetensors|index\.jsonl)$/.test(k) && !expected.has(k),
  );
  if (orphans.length > 0)
    notes.push(
      `${orphans.length} part file(s) not committed in the ledger's snapshot (being written, ` +
        `left by an interrupted attempt, or by a reset --discard_parts), e.g. ${output.uriOf(orphans[0]!)}`,
    );

  // 5. Read every part once.
  const sizeOf = (f: FilePlan): number => listing.get(f.key)?.size ?? 0;
  const progress: VerifyProgress = {
    bytesDone: 0,
    bytesTotal: allParts.reduce((n, p) => n + sizeOf(p.safetensors) + sizeOf(p.index), 0),
    partsDone: 0,
    partsTotal: allParts.length,
  };
  let files = 0;
  await pool(allParts, deps.concurrency ?? DEFAULT_VERIFY_CONCURRENCY, async (part) => {
    const present = (f: FilePlan): boolean => {
      const info = listing.get(f.key);
      if (!info) {
        problem(
          output.uriOf(f.key),
          'missing',
          `part ${part.name} of shard ${part.shardId} lists it; it is not there`,
          part.shardId,
        );
        return false;
      }
      files++;
      part.filesPresent++;
      part.bytes += info.size;
      if (f.bytes !== null && info.size !== f.bytes)
        problem(
          output.uriOf(f.key),
          'size',
          `${info.size} bytes, the manifest records ${f.bytes}`,
          part.shardId,
        );
      return true;
    };
    const checksum = (f: FilePlan, got: string): void => {
      for (const want of f.crc32c)
        if (got !== want) {
          problem(
            output.uriOf(f.key),
            'checksum',
            `CRC32C is ${got}, recorded ${want}`,
            part.shardId,
          );
          break;
        }
    };
    const onBytes = (n: number): void => {
      progress.bytesDone += n;
      deps.onProgress?.(progress);
    };
    let scan: PartScan | null = null;
    if (present(part.safetensors)) {
      scan = await scanPart(output, part.safetensors.key, {
        recomputeStats: deps.recomputeStats,
        onBytes,
        ...(deps.signal ? { signal: deps.signal } : {}),
      });
      checksum(part.safetensors, scan.crc32c);
    }
    let index: Buffer | null = null;
    if (present(part.index)) {
      index = await collect(output.read(part.index.key));
      onBytes(index.length);
      checksum(part.index, crc32cBase64(crc32c(index)));
    }
    const { facts, problems: found } = partFacts(scan, index, {
      uri: output.uriOf(part.safetensors.key),
      indexUri: output.uriOf(part.index.key),
      shardId: part.shardId,
      partIndex: part.partIndex,
      recomputeTolerance: RECOMPUTE_STATS_TOLERANCE,
    });
    part.facts = facts;
    for (const p of found) problem(p.uri, p.kind, p.message, part.shardId);
    progress.partsDone++;
    deps.onProgress?.(progress);
  });

  // 6. Shards: counts, statistics, tasks; then the dataset and the fingerprint.
  const reference = referenceRun(shards, dataset);
  for (const s of shards) checkShard(s, master, output, reference, problem);
  checkFingerprints(shards, dataset, reference, output, ledgerUri, problem);
  if (dataset) checkDatasetManifest(dataset, shards, master, datasetUri, problem);

  const summaries: ShardSummary[] = shards.map((s) => {
    const listed = s.parts.filter((p) => p.listed);
    const sum = (f: (p: PartFacts) => number | null): number =>
      listed.reduce((n, p) => n + (p.facts ? (f(p.facts) ?? 0) : 0), 0);
    return {
      shard_id: s.row.shard_id,
      status: s.row.status,
      parts: listed.length,
      samples: sum((f) => f.samples),
      rows: sum((f) => f.rows),
      tokens: sum((f) => f.tokens),
      skipped: sum((f) => f.skipped),
      bytes: listed.reduce((n, p) => n + p.bytes, 0),
      problems: problems.filter((p) => p.shard_id === s.row.shard_id).length,
    };
  });
  const total = (k: keyof ShardSummary): number =>
    summaries.reduce((n, s) => n + (s[k] as number), 0);
  const seconds = Math.max(1e-3, (deps.clock.nowMs() - startedMs) / 1000);
  return {
    dataset_id: master.dataset_id,
    output_dir: output.root,
    ledger: ledgerUri,
    complete,
    shards_total: rows.length,
    shards_completed: rows.filter((r) => r.status === 'completed').length,
    fingerprint: reference.fingerprint,
    recompute_stats: deps.recomputeStats,
    tolerance: { manifest: MANIFEST_STATS_TOLERANCE, recompute: RECOMPUTE_STATS_TOLERANCE },
    totals: {
      parts: total('parts'),
      files,
      samples: total('samples'),
      rows: total('rows'),
      tokens: total('tokens'),
      skipped: total('skipped'),
      bytes: total('bytes'),
    },
    bytes_read: progress.bytesDone,
    seconds,
    mb_per_s: progress.bytesDone / 1e6 / seconds,
    shards: summaries,
    problems,
    notes,
  };
}

/** Records a problem, with the shard it belongs to when it belongs to one. */
type ProblemSink = (uri: string, kind: ProblemKind, message: string, shardId?: number) => void;

/** The ledger against the dataset's metadata and against itself (counts, part chain). */
function checkLedger(
  master: MasterMetadata,
  shards: readonly ShardPlan[],
  ledgerUri: string,
  problem: ProblemSink,
): void {
  const byId = new Map(master.shards.map((m) => [m.shard_id, m]));
  if (shards.length !== master.num_shards)
    problem(
      ledgerUri,
      'ledger',
      `holds ${shards.length} shards, the dataset has ${master.num_shards}`,
    );
  for (const { row, ledgerParts: parts } of shards) {
    const id = row.shard_id;
    const m = byId.get(id);
    if (!m || m.first_task_index !== row.first_task_index || m.total_tasks !== row.total_tasks)
      problem(
        ledgerUri,
        'ledger',
        `shard ${id}: tasks ${row.first_task_index}+${row.total_tasks} in the ledger, ` +
          `${m ? `${m.first_task_index}+${m.total_tasks}` : 'no such shard'} in master_metadata.json`,
        id,
      );
    const sum = (k: 'samples' | 'bytes'): number => parts.reduce((n, p) => n + p[k], 0);
    if (
      parts.length !== row.parts_committed ||
      sum('samples') !== row.samples_committed ||
      sum('bytes') !== row.bytes_committed
    )
      problem(
        ledgerUri,
        'ledger',
        `shard ${id}: ${parts.length} parts with ${sum('samples')} samples and ${sum('bytes')} bytes listed, ` +
          `the shard counts ${row.parts_committed}, ${row.samples_committed} and ${row.bytes_committed}`,
        id,
      );
    // Each work unit's parts follow one another from the unit's first task, numbered from 0
    // (a shard never split is one unit, unit 0); a completed unit's parts reach its end.
    const units =
      row.units.length > 0
        ? row.units.map((u) => ({
            unit: u.unit,
            start: u.unit_start,
            end: u.unit_end,
            status: u.status,
          }))
        : [
            {
              unit: 0,
              start: row.first_task_index,
              end: row.first_task_index + row.total_tasks,
              status: row.status,
            },
          ];
    for (const u of units) {
      const name = units.length > 1 ? `shard ${id} unit ${u.unit}` : `shard ${id}`;
      const own = parts.filter((p) => (p.unit ?? 0) === u.unit);
      let at = { task: u.start, sample: 0 };
      own.forEach((p, k) => {
        if (p.part_index !== k || p.first_task_index !== at.task || p.first_sample !== at.sample)
          problem(
            ledgerUri,
            'ledger',
            `${name}: part ${p.part_index} (${p.name}) starts at task ${p.first_task_index} sample ${p.first_sample}, ` +
              `the part before it ended at task ${at.task} sample ${at.sample}`,
            id,
          );
        at = { task: p.next_task_index, sample: p.next_sample };
      });
      if (u.status === 'completed' && own.length > 0 && (at.task !== u.end || at.sample !== 0))
        problem(
          ledgerUri,
          'ledger',
          `${name} is completed but its parts end at task ${at.task} sample ${at.sample}, not at task ${u.end}`,
          id,
        );
    }
  }
}

/** Matches a shard's manifest parts with its ledger parts; records what disagrees. */
function planParts(s: ShardPlan, ledgerUri: string, problem: ProblemSink): void {
  const id = s.row.shard_id;
  const dir = shardDirName(id);
  const fromLedger = new Map(s.ledgerParts.map((p) => [p.name, p]));
  const fromManifest = new Map((s.manifest?.parts ?? []).map((p) => [p.name, p]));
  // What readers see: the manifest's parts; while the shard runs (or without a manifest), the ledger's.
  const listedNames = s.manifest ? [...fromManifest.keys()] : [...fromLedger.keys()];
  const names = [...new Set([...listedNames, ...fromLedger.keys()])];
  for (const name of names) {
    const m = fromManifest.get(name) ?? null;
    const l = fromLedger.get(name) ?? null;
    if (s.manifest && !m)
      problem(
        s.manifestUri,
        'manifest',
        `committed part ${name} is not listed in the manifest`,
        id,
      );
    if (m && !l)
      problem(
        s.manifestUri,
        'ledger',
        `lists part ${name}, which the ledger has not committed`,
        id,
      );
    const file = (suffix: string): FilePlan => {
      const fileName = `${name}${suffix}`;
      const crcs = new Set<string>();
      const mc = m?.files[fileName]?.crc32c;
      const lc = l?.checksums[fileName];
      if (mc !== undefined) crcs.add(mc);
      if (lc !== undefined) crcs.add(lc);
      if (mc !== undefined && lc !== undefined && mc !== lc)
        problem(
          s.manifestUri,
          'manifest',
          `records CRC32C ${mc} for ${fileName}, the ledger ${lc}`,
          id,
        );
      if (crcs.size === 0)
        problem(
          m ? s.manifestUri : ledgerUri,
          'manifest',
          `shard ${id}: part ${name} records no checksum for ${fileName}`,
          id,
        );
      return {
        key: `${dir}/${fileName}`,
        bytes: m?.files[fileName]?.bytes ?? null,
        crc32c: [...crcs],
      };
    };
    s.parts.push({
      shardId: id,
      name,
      partIndex: m?.part_index ?? l?.part_index ?? Number(name.replace(/^part_/, '')),
      listed: listedNames.includes(name),
      manifest: m,
      ledger: l,
      safetensors: file('.safetensors'),
      index: file('.index.jsonl'),
      facts: null,
      bytes: 0,
      filesPresent: 0,
    });
  }
  // Task order (a split shard's units each number their parts from 0).
  const firstTask = (p: PartPlan): number =>
    p.manifest?.first_task_index ?? p.ledger?.first_task_index ?? p.partIndex;
  s.parts.sort((a, b) => firstTask(a) - firstTask(b) || a.partIndex - b.partIndex);
}

/** The run every part must come from: the ledger's (most shards), else the manifests'. */
interface Reference {
  fingerprint: string | null;
  /** Metadata of a part of that run (for naming the fields another run differs in). */
  metadata: Record<string, string> | null;
}

function referenceRun(shards: readonly ShardPlan[], dataset: DatasetManifest | null): Reference {
  const votes = new Map<string, number>();
  for (const s of shards)
    if (s.row.run_fingerprint)
      votes.set(s.row.run_fingerprint, (votes.get(s.row.run_fingerprint) ?? 0) + 1);
  let fingerprint: string | null = null;
  for (const [f, n] of votes)
    if (fingerprint === null || n > votes.get(fingerprint)!) fingerprint = f;
  fingerprint ??= dataset?.fingerprint || null;
  const parts = shards.flatMap((s) => s.parts);
  fingerprint ??=
    parts.find((p) => p.facts?.metadata?.fingerprint)?.facts?.metadata?.fingerprint ?? null;
  const metadata =
    parts.find((p) => p.facts?.metadata?.fingerprint === fingerprint)?.facts?.metadata ?? null;
  return { fingerprint, metadata };
}

/** Names the provenance fields in which `theirs` differs from the reference run. */
function differences(reference: Reference, theirs: Record<string, string> | null): string {
  if (!reference.metadata || !theirs) return '';
  const diff = provenanceDiff(reference.metadata, theirs);
  if (diff.length === 0) return '';
  const cut = (v: string): string => (v.length > 40 ? `${v.slice(0, 12)}…` : v);
  return ` (${diff.map(([k, ours, other]) => `${k}: ${cut(other)} here, ${cut(ours)} in the dataset`).join('; ')})`;
}

/** One fingerprint throughout: ledger shards and parts, part files, shard and dataset manifests. */
function checkFingerprints(
  shards: readonly ShardPlan[],
  dataset: DatasetManifest | null,
  reference: Reference,
  output: BlobStore,
  ledgerUri: string,
  problem: ProblemSink,
): void {
  const want = reference.fingerprint;
  if (want === null) return;
  const other = shards.filter((s) => s.row.run_fingerprint && s.row.run_fingerprint !== want);
  for (const s of other)
    problem(
      ledgerUri,
      'fingerprint',
      `shard ${s.row.shard_id}: the ledger's run fingerprint is ${s.row.run_fingerprint}, the dataset's ${want} (most shards)`,
      s.row.shard_id,
    );
  for (const s of shards) {
    for (const p of s.parts) {
      const meta = p.facts?.metadata;
      if (meta && meta.fingerprint !== want)
        problem(
          output.uriOf(p.safetensors.key),
          'fingerprint',
          `written by another run: fingerprint ${meta.fingerprint ?? '(none)'}, the dataset's is ${want}${differences(reference, meta)}`,
          s.row.shard_id,
        );
      if (p.ledger && p.ledger.fingerprint !== want)
        problem(
          ledgerUri,
          'fingerprint',
          `shard ${s.row.shard_id}: part ${p.name} was committed with fingerprint ${p.ledger.fingerprint || '(none)'}, the dataset's is ${want}`,
          s.row.shard_id,
        );
    }
    if (s.manifest && s.manifest.fingerprint !== want)
      problem(
        s.manifestUri,
        'fingerprint',
        `carries fingerprint ${s.manifest.fingerprint || '(none)'}, the dataset's is ${want}`,
        s.row.shard_id,
      );
  }
  if (dataset && dataset.fingerprint !== want)
    problem(
      output.uriOf(MANIFEST_FILE),
      'fingerprint',
      `carries fingerprint ${dataset.fingerprint || '(none: its shards disagreed)'}, the dataset's is ${want}`,
    );
}

/** One shard: its parts against its manifest and ledger records, its statistics, its tasks. */
function checkShard(
  s: ShardPlan,
  master: MasterMetadata,
  output: BlobStore,
  reference: Reference,
  problem: ProblemSink,
): void {
  const id = s.row.shard_id;
  const listed = s.parts.filter((p) => p.listed);
  for (const p of s.parts) {
    const f = p.facts;
    if (!f) continue;
    const uri = output.uriOf(p.safetensors.key);
    if (p.ledger && f.samples !== null && p.ledger.samples !== f.samples)
      problem(
        uri,
        'counts',
        `holds ${f.samples} samples, the ledger committed ${p.ledger.samples}`,
        id,
      );
    const m = p.manifest;
    // With a manifest, each file's size was checked against it: compare the records. Without
    // one (a running shard), the files themselves, when both are there (else that was said).
    const recorded = m ? Object.values(m.files).reduce((n, file) => n + file.bytes, 0) : null;
    if (p.ledger && recorded !== null && recorded !== p.ledger.bytes)
      problem(
        s.manifestUri,
        'counts',
        `part ${p.name}: its files hold ${recorded} bytes in the manifest, ${p.ledger.bytes} in the ledger`,
        id,
      );
    if (p.ledger && recorded === null && p.filesPresent === 2 && p.bytes !== p.ledger.bytes)
      problem(
        uri,
        'counts',
        `part ${p.name}'s files hold ${p.bytes} bytes, the ledger committed ${p.ledger.bytes}`,
        id,
      );
    if (m) {
      const pairs: Array<[string, number, number | null]> = [
        ['samples', m.samples, f.samples],
        ['tokens', m.tokens, f.tokens],
        ['rows', m.rows, f.rows],
        ['skipped', m.skipped, f.skipped],
      ];
      const off = pairs.filter(([, a, b]) => b !== null && a !== b);
      if (off.length > 0)
        problem(
          s.manifestUri,
          'counts',
          `part ${p.name}: ${off.map(([k, a, b]) => `${k} ${a} in the manifest, ${b} in the part`).join('; ')}`,
          id,
        );
    }
  }

  const mergedStats = mergeStats(listed.map((p) => p.facts?.stats));
  if (s.manifest) {
    const mf = s.manifest;
    if (mf.shard_id !== id || mf.dataset_id !== master.dataset_id)
      problem(s.manifestUri, 'manifest', `is shard ${mf.shard_id} of ${mf.dataset_id}`, id);
    if (mf.first_task_index !== s.row.first_task_index || mf.total_tasks !== s.row.total_tasks)
      problem(
        s.manifestUri,
        'manifest',
        `covers tasks ${mf.first_task_index}+${mf.total_tasks}, the shard ${s.row.first_task_index}+${s.row.total_tasks}`,
        id,
      );
    const sum = (k: 'samples' | 'tokens' | 'rows' | 'skipped'): number =>
      mf.parts.reduce((n, p) => n + p[k], 0);
    const bytes = mf.parts.reduce(
      (n, p) => n + Object.values(p.files).reduce((m, f) => m + f.bytes, 0),
      0,
    );
    const totals: Array<[string, number, number]> = [
      ['samples', mf.samples, sum('samples')],
      ['tokens', mf.tokens, sum('tokens')],
      ['rows', mf.rows, sum('rows')],
      ['skipped', mf.skipped, sum('skipped')],
      ['bytes', mf.bytes, bytes],
    ];
    for (const [k, a, b] of totals)
      if (a !== b) problem(s.manifestUri, 'counts', `says ${a} ${k}, its parts add up to ${b}`, id);
    const summary = s.row.manifest;
    if (
      summary &&
      (summary.parts !== mf.parts.length ||
        summary.samples !== mf.samples ||
        summary.bytes !== mf.bytes)
    )
      problem(
        s.manifestUri,
        'counts',
        `lists ${mf.parts.length} parts, ${mf.samples} samples, ${mf.bytes} bytes; the ledger recorded ` +
          `${summary.parts}, ${summary.samples} and ${summary.bytes} when the shard completed`,
        id,
      );
    const run = reference.metadata;
    if (run) {
      const facts: Array<[string, string, string]> = [
        ['layers', JSON.stringify(mf.layers), run.layers ?? ''],
        ['dtype', mf.dtype, run.dtype ?? ''],
        ['positions', mf.positions, run.positions ?? ''],
        ['hidden_size', String(mf.hidden_size), run.hidden_size ?? ''],
      ];
      for (const [k, a, b] of facts)
        if (a !== b) problem(s.manifestUri, 'manifest', `says ${k} ${a}, its parts ${b}`, id);
    }
    if (listed.every((p) => p.facts?.stats))
      compareStats(mf.stats, mergedStats, s.manifestUri, problem, id);
  }

  const meta = reference.metadata;
  const augmentations = meta?.augment === 'false' ? 1 : Number(meta?.predictions_per_task ?? 1);
  const first = s.row.first_task_index;
  const end = first + s.row.total_tasks;
  const last = s.ledgerParts.at(-1);
  const done = s.row.status === 'completed';
  if (!done && listed.length === 0) return;
  // A shard split into work units and still running has gaps between its units' progress:
  // its task coverage is checked once it completes (its parts were checked above).
  if (!done && s.row.units.length > 1) return;
  const problems = checkCoverage({
    shardUri: s.manifest || done ? s.manifestUri : output.uriOf(shardDirName(id)),
    first,
    completeEnd: done ? end : (last?.next_task_index ?? first),
    end: done ? end : Math.min(end, (last?.next_task_index ?? first) + 1),
    augmentations: Number.isSafeInteger(augmentations) && augmentations > 0 ? augmentations : 1,
    samples: listed.flatMap((p) => p.facts?.sampleRefs ?? []),
    skips: listed.flatMap((p) => p.facts?.skipRefs ?? []),
  });
  for (const p of problems) problem(p.uri, p.kind, p.message, id);
}

/** Manifest statistics against the merge of their parts'. */
function compareStats(
  got: Readonly<Record<string, LayerStats>> | undefined,
  want: Record<string, LayerStats>,
  uri: string,
  problem: ProblemSink,
  shardId?: number,
): void {
  const have = got ?? {};
  const layers = [...new Set([...Object.keys(have), ...Object.keys(want)])];
  for (const layer of layers) {
    const a = have[layer];
    const b = want[layer];
    if (!a || !b) {
      problem(
        uri,
        'stats',
        `${a ? 'has' : 'lacks'} statistics of ${layer}, ${b ? 'which' : 'which none of'} its parts have`,
        shardId,
      );
      continue;
    }
    const diff = statsDiff(a, b, MANIFEST_STATS_TOLERANCE);
    if (diff)
      problem(uri, 'stats', `${layer} is not the merge of its parts' statistics: ${diff}`, shardId);
  }
}

/** The dataset manifest against the dataset, the ledger and the shard manifests. */
function checkDatasetManifest(
  d: DatasetManifest,
  shards: readonly ShardPlan[],
  master: MasterMetadata,
  uri: string,
  problem: ProblemSink,
): void {
  if (
    d.dataset_id !== master.dataset_id ||
    d.num_shards !== master.num_shards ||
    d.total_tasks !== master.total_tasks
  )
    problem(
      uri,
      'manifest',
      `is dataset ${d.dataset_id} with ${d.num_shards} shards and ${d.total_tasks} tasks; ` +
        `the dataset is ${master.dataset_id} with ${master.num_shards} and ${master.total_tasks}`,
    );
  const entries = new Map(d.shards.map((e) => [e.shard_id, e]));
  for (const s of shards) {
    const e = entries.get(s.row.shard_id);
    if (!e) {
      problem(uri, 'manifest', `does not list shard ${s.row.shard_id}`, s.row.shard_id);
      continue;
    }
    const m = s.manifest;
    if (!m) continue;
    const off: string[] = [];
    if (e.parts !== m.parts.length) off.push(`parts ${e.parts} vs ${m.parts.length}`);
    for (const k of ['samples', 'rows', 'bytes'] as const)
      if (e[k] !== m[k]) off.push(`${k} ${e[k]} vs ${m[k]}`);
    if (e.manifest !== shardManifestKey(s.row.shard_id))
      off.push(`manifest ${e.manifest} vs ${shardManifestKey(s.row.shard_id)}`);
    if (off.length > 0)
      problem(
        uri,
        'counts',
        `shard ${s.row.shard_id} differs from its manifest: ${off.join('; ')}`,
        s.row.shard_id,
      );
  }
  const manifests = shards.map((s) => s.manifest).filter((m): m is ShardManifest => m !== null);
  if (manifests.length === shards.length) {
    const sum = (k: 'samples' | 'tokens' | 'rows' | 'bytes'): number =>
      manifests.reduce((n, m) => n + m[k], 0);
    const totals: Array<[string, number, number]> = [
      ['parts', d.parts, manifests.reduce((n, m) => n + m.parts.length, 0)],
      ['samples', d.samples, sum('samples')],
      ['tokens', d.tokens, sum('tokens')],
      ['rows', d.rows, sum('rows')],
      ['bytes', d.bytes, sum('bytes')],
    ];
    for (const [k, a, b] of totals)
      if (a !== b) problem(uri, 'counts', `says ${a} ${k}, its shards' manifests add up to ${b}`);
    // Against the parts themselves: each shard's merge (as its manifest should hold), merged in shard order.
    const parts = shards.map((s) => s.parts.filter((p) => p.listed));
    if (parts.every((ps) => ps.every((p) => p.facts?.stats)))
      compareStats(
        d.stats,
        mergeStats(parts.map((ps) => mergeStats(ps.map((p) => p.facts!.stats)))),
        uri,
        problem,
      );
  }
}
