/**
 * The shard state machine, shared by both ledgers: pure functions from a shard's state (read
 * inside a transaction) to its next state, or an error. The SQLite and Firestore ledgers only
 * read, call these, and write; so the two cannot drift apart, and transaction callbacks stay
 * free of side effects (they may run more than once).
 *
 * Times here are ms since the epoch; records handed to callers carry ISO strings.
 */
import { createHash } from 'node:crypto';

import type { MasterMetadata, MasterShardEntry, ShardStatus } from '../dataset/metadata';
import { checkDatasetId } from '../dataset/id';
import { ConfigError, LeaseLostError, ShardlineError } from '../errors';
import { isoTime } from '../clock';
import type {
  Claim,
  DatasetRecord,
  ForcedAction,
  LedgerStatus,
  ManifestSummary,
  PartInput,
  PartRecord,
  ShardRecord,
  ShardRef,
  ShardStatusRow,
  StatusTotals,
} from './ledger';
import { DEFAULT_LEASE_MS, MAX_LEASE_MS } from './ledger';
import { withIsoTimes } from './record-schema';
import type { ShardEvent, ShardState } from './schema';
import { MAX_SHARD_HISTORY, SHARD_FIELDS } from './schema';

export type { ShardState };

/** Longest `last_error` kept; longer reasons are cut (a stack trace is not a status). */
export const MAX_ERROR_CHARS = 2000;
/** Longest worker id or operator name accepted. */
export const MAX_WORKER_ID_CHARS = 128;

/** Refuses an empty, overlong or non-printable worker id (or operator name). */
export function checkWorkerId(workerId: string, what = 'worker id'): string {
  if (
    workerId === '' ||
    workerId.length > MAX_WORKER_ID_CHARS ||
    /[\u0000-\u001f\u007f]/.test(workerId)
  ) {
    throw new ConfigError(
      `${what} must be 1-${MAX_WORKER_ID_CHARS} printable characters, got ${JSON.stringify(workerId)}`,
    );
  }
  return workerId;
}

/** Validates a requested lease length; returns the default when absent. */
export function checkLeaseMs(leaseMs: number | undefined): number {
  if (leaseMs === undefined) return DEFAULT_LEASE_MS;
  if (!Number.isInteger(leaseMs) || leaseMs < 1 || leaseMs > MAX_LEASE_MS) {
    throw new ConfigError(
      `leaseMs must be a whole number from 1 to ${MAX_LEASE_MS}, got ${leaseMs}`,
    );
  }
  return leaseMs;
}

/** Validates max attempts (1-100). */
export function checkMaxAttempts(maxAttempts: number): number {
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 100) {
    throw new ConfigError(`maxAttempts must be a whole number from 1 to 100, got ${maxAttempts}`);
  }
  return maxAttempts;
}

function clip(reason: string): string {
  return reason.length > MAX_ERROR_CHARS ? `${reason.slice(0, MAX_ERROR_CHARS)}…` : reason;
}

/**
 * What identifies a dataset's content: its id, shard ranges and source. The same dataset
 * registered again has the same fingerprint; anything else under that id conflicts.
 * `created_at` is left out, so re-creating the same input gives the same fingerprint.
 */
export function datasetFingerprint(master: MasterMetadata): string {
  const identity = {
    dataset_id: master.dataset_id,
    total_tasks: master.total_tasks,
    num_shards: master.num_shards,
    shards: master.shards.map((s) => [
      s.shard_id,
      s.first_task_index,
      s.total_tasks,
      s.num_chunks,
      s.total_bytes,
    ]),
    source: [
      master.source.uri,
      master.source.generation,
      master.source.bytes,
      master.source.crc32c,
    ],
  };
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32);
}

/** Checks that the master lists shards 0..num_shards-1 once each, with consistent task ranges. */
export function checkMasterForRegistration(master: MasterMetadata): void {
  checkDatasetId(master.dataset_id);
  const bad = (why: string): never => {
    throw new ShardlineError(
      'INVALID_INPUT',
      `master metadata of dataset ${master.dataset_id} cannot be registered: ${why}`,
    );
  };
  if (master.shards.length !== master.num_shards)
    bad(`num_shards is ${master.num_shards} but ${master.shards.length} shards are listed`);
  let tasks = 0;
  master.shards.forEach((s, i) => {
    if (s.shard_id !== i) bad(`shard ${i} is listed with shard_id ${s.shard_id}`);
    tasks += s.total_tasks;
  });
  if (tasks !== master.total_tasks)
    bad(`shards hold ${tasks} tasks but total_tasks is ${master.total_tasks}`);
}

/** The dataset record a registration writes. */
export function newDatasetRecord(
  master: MasterMetadata,
  datasetUri: string,
  maxAttempts: number,
  nowMs: number,
): DatasetRecord {
  return {
    dataset_id: master.dataset_id,
    dataset_uri: datasetUri,
    num_shards: master.num_shards,
    total_tasks: master.total_tasks,
    max_attempts: maxAttempts,
    fingerprint: datasetFingerprint(master),
    registered_at: isoTime(nowMs),
  };
}

/** Fails with `DATASET_CONFLICT` unless `existing` is the dataset `master` describes. */
export function checkSameDataset(existing: DatasetRecord, master: MasterMetadata): void {
  const fingerprint = datasetFingerprint(master);
  if (existing.fingerprint !== fingerprint) {
    throw new ShardlineError(
      'DATASET_CONFLICT',
      `dataset ${master.dataset_id} is already registered with different content ` +
        `(registered from ${existing.dataset_uri} at ${existing.registered_at})`,
      {
        details: {
          dataset_id: master.dataset_id,
          registered: existing.fingerprint,
          given: fingerprint,
        },
      },
    );
  }
}

/** A shard with every field empty: null, 0, or the first value of an enum. */
const EMPTY_SHARD: ShardState = Object.fromEntries(
  Object.entries(SHARD_FIELDS).map(([k, spec]) => [
    k,
    'absent' in spec
      ? spec.absent
      : 'nullable' in spec && spec.nullable
        ? null
        : spec.kind === 'enum'
          ? spec.values[0]
          : 0,
  ]),
) as unknown as ShardState;

/** `s` with `event` appended to its history (the oldest dropped past `MAX_SHARD_HISTORY`). */
function logged(
  s: ShardState,
  event: Omit<ShardEvent, 'worker' | 'epoch'> & Partial<Pick<ShardEvent, 'worker' | 'epoch'>>,
): ShardState {
  const e: ShardEvent = {
    ...event,
    worker: event.worker ?? s.assigned_to,
    epoch: event.epoch ?? s.epoch,
    ...(event.note === undefined ? {} : { note: event.note.slice(0, 200) }),
  };
  const history = [...s.history, e];
  const drop = Math.max(0, history.length - MAX_SHARD_HISTORY);
  return {
    ...s,
    history: drop > 0 ? history.slice(drop) : history,
    history_dropped: s.history_dropped + drop,
  };
}

/** A newly registered shard: available, epoch 0, nothing committed. */
export function newShardState(
  entry: MasterShardEntry,
  maxAttempts: number,
  nowMs: number,
): ShardState {
  return {
    ...EMPTY_SHARD,
    status: 'available',
    max_attempts: maxAttempts,
    total_tasks: entry.total_tasks,
    first_task_index: entry.first_task_index,
    num_chunks: entry.num_chunks,
    total_bytes: entry.total_bytes,
    next_task_index: entry.first_task_index,
    updated_at: nowMs,
  };
}

/** True when a registered shard's static fields match the master's entry (same dataset). */
export function sameShardShape(s: ShardState, entry: MasterShardEntry): boolean {
  return (
    s.total_tasks === entry.total_tasks &&
    s.first_task_index === entry.first_task_index &&
    s.num_chunks === entry.num_chunks &&
    s.total_bytes === entry.total_bytes
  );
}

/** True while a holder's lease has run out. */
export function leaseExpired(s: ShardState, nowMs: number): boolean {
  return s.status === 'in_use' && (s.lease_expires_at === null || s.lease_expires_at <= nowMs);
}

/**
 * The backoff after a failed attempt: the shard may be claimed again this long after it. It
 * doubles with each attempt from a base of a tenth of the lease (at least 1 s, at most 60 s:
 * 60 s for the default 10-minute lease) up to 20 times the base: 1, 2, 4… minutes for the
 * default lease. A transient cause gets time to clear, and a shard that fails at once is not
 * taken straight back by the worker that just failed it.
 */
export function retryDelayMs(attempts: number, leaseMs: number | null): number {
  const base = Math.min(60_000, Math.max(1_000, Math.round((leaseMs ?? DEFAULT_LEASE_MS) / 10)));
  return Math.min(20 * base, base * 2 ** Math.max(0, Math.min(attempts, 20) - 1));
}

/**
 * Whether a claim may take the shard now: `claimable`; `expire` when its holder's lease expired
 * and that was the last allowed attempt (write `applyExpiry`, which marks it failed, and move
 * on); or `no` (held, finished, or backing off after a failure).
 */
export function claimability(
  s: ShardState,
  nowMs: number,
  peersLost = 0,
): 'claimable' | 'expire' | 'no' {
  if (s.status === 'available')
    return s.retry_at !== null && s.retry_at > nowMs ? 'no' : 'claimable';
  if (leaseExpired(s, nowMs)) {
    const after = applyExpiry(s, nowMs, peersLost);
    return after.status === 'available' && (after.retry_at === null || after.retry_at <= nowMs)
      ? 'claimable'
      : 'expire';
  }
  return 'no';
}

/** Whether the current holder committed parts since its claim. */
function progressed(s: ShardState): boolean {
  return s.claim_next_task_index !== null && s.next_task_index > s.claim_next_task_index;
}

function expiryReason(s: ShardState): string {
  const at = s.lease_expires_at === null ? 'unknown time' : isoTime(s.lease_expires_at);
  return `lease of ${s.assigned_to ?? 'unknown worker'} (epoch ${s.epoch}) expired at ${at}`;
}

function released(s: ShardState, nowMs: number): ShardState {
  return {
    ...s,
    status: 'available',
    claim_next_task_index: null,
    assigned_to: null,
    started_at: null,
    lease_expires_at: null,
    heartbeat_at: null,
    lease_ms: null,
    retry_at: null,
    updated_at: nowMs,
  };
}

/**
 * A counted failure: attempts + 1, the reason kept; `failed` at max attempts (or at once when
 * `final`: a deterministic failure no retry can fix), else available again, after a backoff
 * (`retry_at`) when `backoff` is set. An expired lease needs none: a lease has passed since its
 * holder's last sign of life, longer than the first steps of `retryDelayMs`.
 */
function failedAttempt(
  s: ShardState,
  reason: string,
  nowMs: number,
  how: { final?: boolean; backoff?: boolean } = {},
): ShardState {
  const attempts = s.attempts + 1;
  const next = { ...released(s, nowMs), attempts, last_error: clip(reason) };
  if (how.final || attempts >= s.max_attempts) return { ...next, status: 'failed' };
  return how.backoff ? { ...next, retry_at: nowMs + retryDelayMs(attempts, s.lease_ms) } : next;
}

/**
 * How far apart two holders may have gone silent (last heartbeat) and still count as lost
 * together: half a lease. A live holder renews every third of its lease, so holders killed at
 * the same moment fall silent within a third of a lease of each other.
 */
export function lostTogetherWindowMs(s: ShardState): number {
  return Math.round((s.lease_ms ?? DEFAULT_LEASE_MS) / 2);
}

/**
 * How many other shards of the dataset lost their holder at the same time as `s` (whose lease
 * expired): shards still held whose holder went silent within the window of `s`'s holder and
 * has missed a renewal since, and shards whose last lost holder (`lost_at`) did. The ledgers
 * pass this count to `applyExpiry`.
 */
export function peersLostWith(
  s: ShardState,
  others: ReadonlyArray<Pick<ShardState, 'status' | 'heartbeat_at' | 'lease_ms' | 'lost_at'>>,
  nowMs: number,
): number {
  const silentAt = s.heartbeat_at;
  if (silentAt === null) return 0;
  const window = lostTogetherWindowMs(s);
  const near = (t: number | null): boolean => t !== null && Math.abs(t - silentAt) <= window;
  let n = 0;
  for (const o of others) {
    // A live holder renews every third of its lease: half a lease without one is a miss.
    const overdue =
      o.status === 'in_use' &&
      o.heartbeat_at !== null &&
      nowMs - o.heartbeat_at > (o.lease_ms ?? DEFAULT_LEASE_MS) / 2;
    if ((overdue && near(o.heartbeat_at)) || near(o.lost_at)) n++;
  }
  return n;
}

/**
 * The holder's lease expired (found by the reaper, or by a claim). When that counts an attempt
 * against the shard (docs/decisions.md#when-a-lost-holder-counts-an-attempt):
 *
 * - a holder that committed parts since its claim was doing the work (killed, preempted): no
 *   attempt;
 * - a holder that went silent together with others (`peersLost` > 0: a fleet-wide loss, an
 *   outage of the ledger) tells nothing about this shard: no attempt;
 * - a holder that died alone before committing anything: one attempt, with backoff. A shard
 *   that kills every worker it meets (a task that runs out of memory) makes no progress and
 *   ends `failed` after max attempts.
 */
export function applyExpiry(s: ShardState, nowMs: number, peersLost = 0): ShardState {
  const lost = { lost_at: s.heartbeat_at ?? s.started_at ?? nowMs };
  if (progressed(s) || peersLost > 0) {
    const why = progressed(s)
      ? 'after committing parts'
      : `with ${peersLost} other holder${peersLost === 1 ? '' : 's'} at the same time`;
    return logged(
      {
        ...released(s, nowMs),
        ...lost,
        last_error: clip(`${expiryReason(s)} ${why}; not counted as an attempt`),
      },
      { at: nowMs, kind: 'expire', worker: s.assigned_to, note: why },
    );
  }
  return logged(
    { ...failedAttempt(s, expiryReason(s), nowMs), ...lost },
    {
      at: nowMs,
      kind: 'expire',
      worker: s.assigned_to,
      attempt: true,
      note: 'alone, before any part',
    },
  );
}

/** Grants the shard to `workerId`: epoch + 1, `in_use`, a fresh lease. Check `claimability` first. */
export function applyClaim(
  s: ShardState,
  workerId: string,
  nowMs: number,
  leaseMs: number,
  peersLost = 0,
): ShardState {
  const base = s.status === 'in_use' ? applyExpiry(s, nowMs, peersLost) : s;
  return logged(
    {
      ...base,
      status: 'in_use',
      assigned_to: workerId,
      started_at: nowMs,
      completed_at: null,
      lease_expires_at: nowMs + leaseMs,
      heartbeat_at: nowMs,
      lease_ms: leaseMs,
      claim_next_task_index: base.next_task_index,
      retry_at: null,
      epoch: s.epoch + 1,
      forced_action: null,
      forced_by: null,
      forced_at: null,
      manifest: null,
      updated_at: nowMs,
    },
    { at: nowMs, kind: 'claim', worker: workerId, epoch: s.epoch + 1 },
  );
}

/** The claim a granted state represents. */
export function claimOf(ref: ShardRef, s: ShardState): Claim {
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    worker_id: s.assigned_to ?? '',
    epoch: s.epoch,
    lease_expires_at: isoTime(s.lease_expires_at ?? 0),
  };
}

/** True when `claim` is the shard's current claim (status, holder and epoch match). */
export function isHolder(s: ShardState, claim: Claim): boolean {
  return s.status === 'in_use' && s.assigned_to === claim.worker_id && s.epoch === claim.epoch;
}

/** The `LeaseLostError` for a claim that is not (or no longer) the shard's current one. */
export function leaseLost(s: ShardState | null, claim: Claim, verb: string): LeaseLostError {
  const where = `shard ${claim.shard_id} of dataset ${claim.dataset_id}`;
  const now =
    s === null
      ? 'is not registered'
      : s.status === 'in_use'
        ? `is held by ${s.assigned_to ?? '?'} at epoch ${s.epoch}`
        : `is ${s.status}${s.epoch > claim.epoch ? ` at epoch ${s.epoch}` : ''}`;
  return new LeaseLostError(
    `${verb}: ${claim.worker_id} (epoch ${claim.epoch}) no longer holds ${where}: it ${now}`,
    {
      dataset_id: claim.dataset_id,
      shard_id: claim.shard_id,
      worker_id: claim.worker_id,
      epoch: claim.epoch,
      current_status: s?.status ?? null,
      current_holder: s?.assigned_to ?? null,
      current_epoch: s?.epoch ?? null,
    },
  );
}

/** Throws `LeaseLostError` unless `claim` is the shard's current claim. */
export function requireHolder(s: ShardState | null, claim: Claim, verb: string): ShardState {
  if (s === null || !isHolder(s, claim)) throw leaseLost(s, claim, verb);
  return s;
}

/** Renews the holder's lease from now. */
export function applyHeartbeat(s: ShardState, nowMs: number, leaseMs?: number): ShardState {
  const ms = leaseMs === undefined ? (s.lease_ms ?? DEFAULT_LEASE_MS) : checkLeaseMs(leaseMs);
  return {
    ...s,
    lease_expires_at: nowMs + ms,
    heartbeat_at: nowMs,
    lease_ms: ms,
    updated_at: nowMs,
  };
}

/** Checks a part's own fields (counts non-negative, range consistent, name safe). */
export function checkPartInput(part: PartInput): void {
  const bad = (why: string): never => {
    throw new ShardlineError('INVALID_ARGUMENT', `part ${part.part_index}: ${why}`);
  };
  const counts: Array<[string, number]> = [
    ['part_index', part.part_index],
    ['first_task_index', part.first_task_index],
    ['first_sample', part.first_sample],
    ['next_task_index', part.next_task_index],
    ['next_sample', part.next_sample],
    ['samples', part.samples],
    ['bytes', part.bytes],
  ];
  for (const [name, v] of counts) {
    if (!Number.isSafeInteger(v) || v < 0) bad(`${name} must be a whole number >= 0, got ${v}`);
  }
  const empty =
    part.next_task_index < part.first_task_index ||
    (part.next_task_index === part.first_task_index && part.next_sample <= part.first_sample);
  if (empty)
    bad(
      `covers nothing (from task ${part.first_task_index} sample ${part.first_sample} to task ${part.next_task_index} sample ${part.next_sample})`,
    );
  const last = part.next_sample > 0 ? part.next_task_index : part.next_task_index - 1;
  if (part.last_task_index !== last)
    bad(
      `last_task_index ${part.last_task_index} must be ${last} (next_task_index ${part.next_task_index}, next_sample ${part.next_sample})`,
    );
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(part.name))
    bad(`invalid name ${JSON.stringify(part.name)}`);
  for (const [file, sum] of Object.entries(part.checksums)) {
    if (typeof sum !== 'string' || file === '')
      bad(`invalid checksum entry ${JSON.stringify(file)}`);
  }
}

function samePart(a: PartInput, b: PartInput): boolean {
  const sums = (p: PartInput): string =>
    JSON.stringify(Object.entries(p.checksums).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
  return (
    a.part_index === b.part_index &&
    a.name === b.name &&
    a.first_task_index === b.first_task_index &&
    a.first_sample === b.first_sample &&
    a.last_task_index === b.last_task_index &&
    a.next_task_index === b.next_task_index &&
    a.next_sample === b.next_sample &&
    a.fingerprint === b.fingerprint &&
    a.samples === b.samples &&
    a.bytes === b.bytes &&
    sums(a) === sums(b)
  );
}

/**
 * Decides a `commitPart` for the holder: the shard's next state and the part to store, or
 * `duplicate` when the same part was committed before (nothing to write but the lease).
 * `existing` is the stored part under `part.part_index`, if any.
 */
export function applyCommitPart(
  s: ShardState,
  claim: Claim,
  part: PartInput,
  existing: PartRecord | null,
  nowMs: number,
): { state: ShardState; record: PartRecord; duplicate: boolean } {
  checkPartInput(part);
  const renewed = applyHeartbeat(s, nowMs);
  if (part.part_index < s.parts_committed) {
    if (existing && samePart(existing, part))
      return { state: renewed, record: existing, duplicate: true };
    throw new ShardlineError(
      'ALREADY_EXISTS',
      `part ${part.part_index} of shard ${claim.shard_id} is already committed with different content`,
    );
  }
  if (part.part_index > s.parts_committed)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `part ${part.part_index} of shard ${claim.shard_id} skips ahead: ${s.parts_committed} parts are committed`,
    );
  if (part.first_task_index !== s.next_task_index || part.first_sample !== s.next_sample)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `part ${part.part_index} starts at task ${part.first_task_index} sample ${part.first_sample}, the shard resumes at task ${s.next_task_index} sample ${s.next_sample}`,
    );
  const end = s.first_task_index + s.total_tasks;
  if (part.next_task_index > end || (part.next_task_index === end && part.next_sample > 0))
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `part ${part.part_index} ends at task ${part.last_task_index}, past the shard's last task ${end - 1}`,
    );
  if (s.run_fingerprint !== null && part.fingerprint !== s.run_fingerprint)
    throw new ShardlineError(
      'FINGERPRINT_MISMATCH',
      `part ${part.part_index} of shard ${claim.shard_id} was extracted with other settings (fingerprint ${part.fingerprint || 'none'}) than the shard's committed parts (${s.run_fingerprint})`,
      { details: { shard_fingerprint: s.run_fingerprint, part_fingerprint: part.fingerprint } },
    );
  const record: PartRecord = {
    ...part,
    checksums: { ...part.checksums },
    dataset_id: claim.dataset_id,
    shard_id: claim.shard_id,
    worker_id: claim.worker_id,
    epoch: claim.epoch,
    committed_at: isoTime(nowMs),
  };
  return {
    state: {
      ...renewed,
      run_fingerprint: s.run_fingerprint ?? (part.fingerprint === '' ? null : part.fingerprint),
      next_task_index: part.next_task_index,
      next_sample: part.next_sample,
      parts_committed: s.parts_committed + 1,
      samples_committed: s.samples_committed + part.samples,
      bytes_committed: s.bytes_committed + part.bytes,
    },
    record,
    duplicate: false,
  };
}

function checkManifest(
  s: ShardState,
  manifest: ManifestSummary | undefined,
  shardId: number,
): void {
  if (manifest && manifest.parts !== s.parts_committed) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `the manifest of shard ${shardId} lists ${manifest.parts} parts, the ledger has ${s.parts_committed} committed`,
    );
  }
}

function cleanManifest(m: ManifestSummary | undefined): ManifestSummary | null {
  if (!m) return null;
  return {
    parts: m.parts,
    samples: m.samples,
    bytes: m.bytes,
    ...(m.uri === undefined ? {} : { uri: m.uri }),
    ...(m.checksum === undefined ? {} : { checksum: m.checksum }),
  };
}

/**
 * Decides `complete` for a claim: the completed state, `null` when the same claim already
 * completed it (a retried call: nothing to write), or `LeaseLostError`.
 */
export function applyComplete(
  s: ShardState | null,
  claim: Claim,
  manifest: ManifestSummary | undefined,
  nowMs: number,
): ShardState | null {
  if (
    s &&
    s.status === 'completed' &&
    s.assigned_to === claim.worker_id &&
    s.epoch === claim.epoch &&
    s.forced_action === null
  )
    return null;
  const held = requireHolder(s, claim, 'complete');
  checkManifest(held, manifest, claim.shard_id);
  return logged(
    {
      ...held,
      status: 'completed',
      completed_at: nowMs,
      lease_expires_at: null,
      manifest: cleanManifest(manifest),
      updated_at: nowMs,
    },
    { at: nowMs, kind: 'complete' },
  );
}

/**
 * `fail` by the holder: a counted failed attempt with `reason`; with `final` (a deterministic
 * failure: a chunk that fails its checksum, inputs the model cannot run) the shard is `failed`
 * at once.
 */
export function applyFail(
  s: ShardState | null,
  claim: Claim,
  reason: string,
  nowMs: number,
  final = false,
): ShardState {
  const held = requireHolder(s, claim, 'fail');
  return logged(failedAttempt(held, reason, nowMs, { final, backoff: true }), {
    at: nowMs,
    kind: 'fail',
    worker: claim.worker_id,
    epoch: claim.epoch,
    attempt: true,
    note: reason,
  });
}

/** `release` by the holder: available, no attempt counted. */
export function applyRelease(s: ShardState | null, claim: Claim, nowMs: number): ShardState {
  return logged(released(requireHolder(s, claim, 'release'), nowMs), {
    at: nowMs,
    kind: 'release',
    worker: claim.worker_id,
    epoch: claim.epoch,
  });
}

function forced(
  action: ForcedAction['action'],
  by: string,
  nowMs: number,
): Pick<ShardState, 'forced_action' | 'forced_by' | 'forced_at'> {
  return { forced_action: action, forced_by: by, forced_at: nowMs };
}

/** An operator completes the shard whoever holds it; null when it is already completed. */
export function applyForceComplete(
  s: ShardState,
  shardId: number,
  by: string,
  manifest: ManifestSummary | undefined,
  nowMs: number,
): ShardState | null {
  if (s.status === 'completed') return null;
  checkManifest(s, manifest, shardId);
  return logged(
    {
      ...s,
      status: 'completed',
      assigned_to: s.status === 'in_use' ? s.assigned_to : by,
      completed_at: nowMs,
      lease_expires_at: null,
      manifest: cleanManifest(manifest),
      ...forced('complete', by, nowMs),
      updated_at: nowMs,
    },
    { at: nowMs, kind: 'force-complete', worker: by },
  );
}

/** An operator fails the shard whoever holds it (a counted attempt); refused when completed. */
export function applyForceFail(
  s: ShardState,
  by: string,
  reason: string,
  nowMs: number,
): ShardState {
  if (s.status === 'completed')
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'the shard is completed; reset it to run it again',
    );
  return logged(
    { ...failedAttempt(s, reason, nowMs, { backoff: true }), ...forced('fail', by, nowMs) },
    { at: nowMs, kind: 'force-fail', worker: by, attempt: true, note: reason },
  );
}

/** An operator reset: available, no holder, fresh attempts; optionally forget committed parts. */
export function applyReset(
  s: ShardState,
  by: string,
  nowMs: number,
  discardParts: boolean,
): ShardState {
  return logged(
    {
      ...released(s, nowMs),
      completed_at: null,
      attempts: 0,
      last_error: null,
      forced_action: null,
      forced_by: null,
      forced_at: null,
      manifest: null,
      reset_by: by,
      reset_at: nowMs,
      ...(discardParts
        ? {
            next_task_index: s.first_task_index,
            parts_committed: 0,
            samples_committed: 0,
            bytes_committed: 0,
          }
        : {}),
    },
    { at: nowMs, kind: 'reset', worker: by, ...(discardParts ? { note: 'parts discarded' } : {}) },
  );
}

/** The record callers see: times as ISO strings, `forced` as one object. */
export function toShardRecord(ref: ShardRef, s: ShardState): ShardRecord {
  const { claim_next_task_index, forced_action, forced_by, forced_at, ...rest } = withIsoTimes(
    SHARD_FIELDS,
    s,
  );
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    ...rest,
    forced:
      forced_action && forced_by !== null && forced_at !== null
        ? { action: forced_action, by: forced_by, at: forced_at }
        : null,
  };
}

/** Builds `status` from the dataset and its shards' states read in one snapshot. */
export function buildStatus(
  dataset: DatasetRecord,
  shards: ReadonlyArray<{ shard_id: number; state: ShardState }>,
  nowMs: number,
): LedgerStatus {
  const rows: ShardStatusRow[] = [...shards]
    .sort((a, b) => a.shard_id - b.shard_id)
    .map(({ shard_id, state }) => ({
      ...toShardRecord({ dataset_id: dataset.dataset_id, shard_id }, state),
      lease_left_ms:
        state.status === 'in_use' && state.lease_expires_at !== null
          ? state.lease_expires_at - nowMs
          : null,
      tasks_done:
        state.status === 'completed'
          ? state.total_tasks
          : state.next_task_index - state.first_task_index,
    }));
  const totals: StatusTotals = {
    shards: rows.length,
    available: 0,
    in_use: 0,
    completed: 0,
    failed: 0,
    total_tasks: 0,
    tasks_done: 0,
    parts_committed: 0,
    samples_committed: 0,
    bytes_committed: 0,
    attempts: 0,
  };
  for (const r of rows) {
    totals[r.status]++;
    totals.total_tasks += r.total_tasks;
    totals.tasks_done += r.tasks_done;
    totals.parts_committed += r.parts_committed;
    totals.samples_committed += r.samples_committed;
    totals.bytes_committed += r.bytes_committed;
    totals.attempts += r.attempts;
  }
  const state: ShardStatus =
    totals.completed === totals.shards
      ? 'completed'
      : totals.in_use > 0
        ? 'in_use'
        : totals.available > 0
          ? 'available'
          : 'failed';
  return { dataset, as_of: isoTime(nowMs), state, shards: rows, totals };
}
