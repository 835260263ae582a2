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
  CompleteOptions,
  DatasetRecord,
  ForcedAction,
  LedgerStatus,
  ManifestSummary,
  PartInput,
  PartRecord,
  ShardRecord,
  ShardRef,
  ShardStatusRow,
  SplitOptions,
  StatusTotals,
  UnitRef,
  UnitStatusRow,
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

/** A shard's work units by unit number (0: the shard's own), as read in one transaction. */
export type ShardUnits = ReadonlyMap<number, ShardState>;

/** What a transition over a shard's units writes: the new state of each unit it changed or created. */
export type UnitWrites = Map<number, ShardState>;

/** `unit 2 of shard 3` or `shard 3`: how messages name a claim's unit. */
function unitWords(ref: UnitRef): string {
  return `${ref.unit ? `unit ${ref.unit} of ` : ''}shard ${ref.shard_id}`;
}

/** A unit's first task: its own once split off, the shard's for unit 0. */
export function unitStart(s: ShardState): number {
  return s.start_task_index ?? s.first_task_index;
}

/** A unit's end (exclusive): where a split put it, else the shard's end. */
export function unitEnd(s: ShardState): number {
  return s.end_task_index ?? s.first_task_index + s.total_tasks;
}

/** The first task boundary at or after everything committed (a part may end inside a task). */
function committedFloor(s: ShardState): number {
  return s.next_task_index + (s.next_sample > 0 ? 1 : 0);
}

/**
 * The lowest task a split may cut at: above everything committed and, while the unit is held
 * (its lease live or expired: an expired holder nobody replaced may still be working), above
 * everything its holder reserved. What the holder has in flight is always below its
 * reservation, so a split never takes work it already started.
 */
export function splitFloor(s: ShardState): number {
  const committed = committedFloor(s);
  return s.status === 'in_use'
    ? Math.max(committed, s.reserved_task_index ?? committed)
    : committed;
}

/** The smallest remainder, in tasks, a split gives each side when nothing measures a part. */
export const DEFAULT_MIN_SPLIT_TASKS = 2;

/**
 * Tasks per part of the unit: its own committed parts' measure (tasks committed over parts,
 * rounded up); before its first part, the measure the unit it was split from passed on at the
 * split (`split_tasks_per_part`); 0 when neither exists (a shard none of whose units in this
 * lineage has committed a part yet).
 */
export function tasksPerPart(s: ShardState): number {
  if (s.parts_committed > 0)
    return Math.ceil(Math.max(1, s.next_task_index - unitStart(s)) / s.parts_committed);
  return s.split_tasks_per_part ?? 0;
}

/**
 * Where a unit may be split now, or null when it is not worth it (docs/decisions.md#work-units-split-the-tail).
 *
 * Only a held unit splits (`in_use`, its lease live or expired); an available one is claimed
 * whole instead. Its free remainder runs from `splitFloor` to its end; the split happens when
 * that holds at least two sides' worth, where a side is the larger of `minTasks` and one part's
 * worth of tasks (`tasksPerPart`: as the unit's own committed parts measure it or, before its
 * first part, as the unit it was split from measured it). So each unit ends with at least one
 * full part, and a unit split off moments ago is not cut again into pieces of a few tasks,
 * each of which would write unit 0 when it is split off and when it completes. The point
 * halves what is left after the committed position (the holder keeps the first half, which
 * holds its work in flight), or sits at the floor when the holder's reservation reaches past
 * the half.
 */
export function splitPoint(s: ShardState, minTasks = DEFAULT_MIN_SPLIT_TASKS): number | null {
  if (s.status !== 'in_use') return null;
  const end = unitEnd(s);
  const floor = splitFloor(s);
  const side = Math.max(1, minTasks, tasksPerPart(s));
  if (end - floor < 2 * side) return null;
  const committed = committedFloor(s);
  return Math.max(floor, committed + Math.ceil((end - committed) / 2));
}

/** One unit a splitter may split, as `splitCandidates` ranks them. */
export interface SplitCandidate {
  shard_id: number;
  unit: number;
  /** The split point `splitPoint` chose. */
  at: number;
  /** Tasks the new unit would get. */
  tasks: number;
}

/**
 * The units of a dataset worth splitting for `workerId`, the one with the most tasks to give
 * first (ties: lower shard, then lower unit). Units the worker holds itself, and units whose
 * committed parts carry another run fingerprint than `options.fingerprint`, are left out.
 */
export function splitCandidates(
  units: ReadonlyArray<{ shard_id: number; unit: number; state: ShardState }>,
  workerId: string,
  options: SplitOptions = {},
): SplitCandidate[] {
  const out: SplitCandidate[] = [];
  for (const { shard_id, unit, state } of units) {
    if (state.assigned_to === workerId) continue;
    if (
      options.fingerprint !== undefined &&
      state.run_fingerprint !== null &&
      state.run_fingerprint !== options.fingerprint
    )
      continue;
    const at = splitPoint(state, options.minTasks);
    if (at !== null) out.push({ shard_id, unit, at, tasks: unitEnd(state) - at });
  }
  return out.sort((a, b) => b.tasks - a.tasks || a.shard_id - b.shard_id || a.unit - b.unit);
}

/**
 * Splits unit `from` of a shard at task `at` for `workerId`: the unit's end moves down to `at`
 * (its holder, if any, keeps its claim, epoch and lease and learns the new end at its next
 * heartbeat or commit), and a new unit for `[at, old end)` is created already held by the
 * splitter (epoch 1, a fresh lease, nothing reserved), inheriting the run fingerprint, the
 * attempt budget and the unit's tasks per part (`split_tasks_per_part`, which sizes the new
 * unit's own splits until it commits a part). The new unit's number is unit 0's `unit_count`,
 * which goes up by one.
 *
 * `units` must hold unit `from` and unit 0. Safety is checked here (the unit is held and
 * `splitFloor <= at < end`); whether the split is worth it is `splitPoint`'s policy.
 */
export function applySplit(
  units: ShardUnits,
  from: number,
  at: number,
  workerId: string,
  nowMs: number,
  leaseMs: number,
): { writes: UnitWrites; unit: number; state: ShardState } {
  const s = units.get(from);
  const unit0 = units.get(0);
  if (!s || !unit0)
    throw new ShardlineError('INTERNAL', `split: unit ${from} or unit 0 was not read`);
  const end = unitEnd(s);
  if (s.status !== 'in_use' || !Number.isSafeInteger(at) || at < splitFloor(s) || at >= end)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `unit ${from} (${s.status}, tasks ${unitStart(s)}-${end - 1}) cannot be split at ${at}: ` +
        `a split point lies from ${splitFloor(s)} (past what is committed and reserved) to ${end - 1}`,
    );
  const id = unit0.unit_count;
  const note = `tasks ${at}-${end - 1} split off to unit ${id} by ${workerId}`;
  const writes: UnitWrites = new Map();
  const moved = logged(
    { ...s, end_task_index: at, updated_at: nowMs },
    { at: nowMs, kind: 'split', worker: workerId, note },
  );
  writes.set(from, from === 0 ? { ...moved, unit_count: id + 1 } : moved);
  if (from !== 0) writes.set(0, { ...unit0, unit_count: id + 1, updated_at: nowMs });
  const created: ShardState = logged(
    logged(
      {
        ...EMPTY_SHARD,
        status: 'in_use',
        assigned_to: workerId,
        started_at: nowMs,
        lease_expires_at: nowMs + leaseMs,
        heartbeat_at: nowMs,
        lease_ms: leaseMs,
        epoch: 1,
        max_attempts: s.max_attempts,
        total_tasks: s.total_tasks,
        first_task_index: s.first_task_index,
        num_chunks: s.num_chunks,
        total_bytes: s.total_bytes,
        start_task_index: at,
        end_task_index: end,
        split_from: from,
        split_tasks_per_part: tasksPerPart(s) || null,
        unit_count: 0,
        next_task_index: at,
        claim_next_task_index: at,
        claim_next_sample: 0,
        run_fingerprint: s.run_fingerprint,
        updated_at: nowMs,
      },
      {
        at: nowMs,
        kind: 'split',
        worker: workerId,
        epoch: 0,
        note: `tasks ${at}-${end - 1} from unit ${from}`,
      },
    ),
    { at: nowMs, kind: 'claim', worker: workerId, epoch: 1 },
  );
  writes.set(id, created);
  return { writes, unit: id, state: created };
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
/** Whether the holder committed a part since its claim (a part may end inside a task). */
function progressed(s: ShardState): boolean {
  if (s.claim_next_task_index === null) return false;
  return (
    s.next_task_index > s.claim_next_task_index ||
    (s.next_task_index === s.claim_next_task_index && s.next_sample > (s.claim_next_sample ?? 0))
  );
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
    claim_next_sample: null,
    reserved_task_index: null,
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
      claim_next_sample: base.next_sample,
      reserved_task_index: null,
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

/** The claim a granted state represents (`unit` only for a split unit, as `UnitRef` allows). */
export function claimOf(ref: UnitRef, s: ShardState): Claim {
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    ...(ref.unit ? { unit: ref.unit } : {}),
    worker_id: s.assigned_to ?? '',
    epoch: s.epoch,
    lease_expires_at: isoTime(s.lease_expires_at ?? 0),
    end_task_index: unitEnd(s),
  };
}

/** True when `claim` is the shard's current claim (status, holder and epoch match). */
export function isHolder(s: ShardState, claim: Claim): boolean {
  return s.status === 'in_use' && s.assigned_to === claim.worker_id && s.epoch === claim.epoch;
}

/** The `LeaseLostError` for a claim that is not (or no longer) the shard's current one. */
export function leaseLost(s: ShardState | null, claim: Claim, verb: string): LeaseLostError {
  const where = `${claim.unit ? `unit ${claim.unit} of ` : ''}shard ${claim.shard_id} of dataset ${claim.dataset_id}`;
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
      unit: claim.unit ?? 0,
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

/**
 * Renews the holder's lease from now; with `reserveTo`, raises the holder's reservation to that
 * task (exclusive), clipped to the unit's end: the holder may then read every task below the
 * reservation, and no split will take them (`splitFloor`). A reservation never shrinks during a
 * claim. The holder reads the unit's end in the answer (`claimOf(...).end_task_index`).
 */
export function applyHeartbeat(
  s: ShardState,
  nowMs: number,
  leaseMs?: number,
  reserveTo?: number,
): ShardState {
  const ms = leaseMs === undefined ? (s.lease_ms ?? DEFAULT_LEASE_MS) : checkLeaseMs(leaseMs);
  if (reserveTo !== undefined && !Number.isSafeInteger(reserveTo))
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `reserveTo must be a task index, got ${reserveTo}`,
    );
  const reserved =
    reserveTo === undefined
      ? s.reserved_task_index
      : Math.max(s.reserved_task_index ?? committedFloor(s), Math.min(reserveTo, unitEnd(s)));
  return {
    ...s,
    lease_expires_at: nowMs + ms,
    heartbeat_at: nowMs,
    lease_ms: ms,
    reserved_task_index: reserved,
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
      `part ${part.part_index} of ${unitWords(claim)} is already committed with different content`,
    );
  }
  if (part.part_index > s.parts_committed)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `part ${part.part_index} of ${unitWords(claim)} skips ahead: ${s.parts_committed} parts are committed`,
    );
  if (part.first_task_index !== s.next_task_index || part.first_sample !== s.next_sample)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `part ${part.part_index} starts at task ${part.first_task_index} sample ${part.first_sample}, ${unitWords(claim)} resumes at task ${s.next_task_index} sample ${s.next_sample}`,
    );
  const end = unitEnd(s);
  if (part.next_task_index > end || (part.next_task_index === end && part.next_sample > 0))
    throw new ShardlineError(
      'PAST_END',
      `part ${part.part_index} ends at task ${part.last_task_index}, past the last task ${end - 1} of ${unitWords(claim)}` +
        (end < s.first_task_index + s.total_tasks ? ' (a split moved its end)' : ''),
      { details: { end_task_index: end } },
    );
  if (s.run_fingerprint !== null && part.fingerprint !== s.run_fingerprint)
    throw new ShardlineError(
      'FINGERPRINT_MISMATCH',
      `part ${part.part_index} of ${unitWords(claim)} was extracted with other settings (fingerprint ${part.fingerprint || 'none'}) than the shard's committed parts (${s.run_fingerprint})`,
      { details: { shard_fingerprint: s.run_fingerprint, part_fingerprint: part.fingerprint } },
    );
  const record: PartRecord = {
    ...part,
    checksums: { ...part.checksums },
    dataset_id: claim.dataset_id,
    shard_id: claim.shard_id,
    unit: claim.unit ?? 0,
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
  manifest: ManifestSummary | undefined,
  parts: number,
  shardId: number,
): void {
  if (manifest && manifest.parts !== parts) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `the manifest of shard ${shardId} lists ${manifest.parts} parts, the ledger has ${parts} committed`,
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

/** Unit 0 of `units`, which a shard-level decision needs (it keeps the unit counts). */
function unitZero(units: ShardUnits, verb: string): ShardState {
  const u0 = units.get(0);
  if (!u0) throw new ShardlineError('INTERNAL', `${verb}: the shard's unit 0 was not read`);
  if (units.size < u0.unit_count)
    throw new ShardlineError(
      'INTERNAL',
      `${verb}: read ${units.size} of the shard's ${u0.unit_count} units; every unit must be read`,
    );
  return u0;
}

/** The units' committed parts together. */
function partsOf(units: ShardUnits): number {
  let n = 0;
  for (const u of units.values()) n += u.parts_committed;
  return n;
}

/**
 * Decides `complete` for a claim on one unit, over every unit of its shard as read in the
 * transaction: the states to write and whether the shard is now completed (all its units
 * are), or `null` when the same claim already completed the unit (a retried call: nothing to
 * write), or `LeaseLostError`.
 *
 * The shard's manifest goes with the completion that completes the shard: given then, it must
 * list every unit's committed parts; given earlier (other units not completed), it is refused.
 * Every completion also writes unit 0 (its `units_completed`), so two units completing at once
 * are ordered by the ledger and exactly one of them sees the other completed: the last.
 */
export function applyComplete(
  units: ShardUnits,
  claim: Claim,
  manifest: ManifestSummary | undefined,
  nowMs: number,
  options: CompleteOptions = {},
): { writes: UnitWrites; shardCompleted: boolean } | null {
  const id = claim.unit ?? 0;
  const s = units.get(id) ?? null;
  if (
    s &&
    s.status === 'completed' &&
    s.assigned_to === claim.worker_id &&
    s.epoch === claim.epoch &&
    s.forced_action === null
  )
    return null;
  const held = requireHolder(s, claim, 'complete');
  const unit0 = unitZero(units, 'complete');
  const others = [...units].filter(([u]) => u !== id).map(([, o]) => o);
  const pending = others.filter((o) => o.status !== 'completed').length;
  const last = pending === 0;
  if (manifest && !last)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `the manifest of shard ${claim.shard_id} comes too early: ${pending} of its other units are not completed`,
    );
  checkManifest(manifest, partsOf(units), claim.shard_id);
  if (last && !manifest && options.requireManifest)
    throw new ShardlineError(
      'MANIFEST_REQUIRED',
      `${unitWords(claim)} is the shard's last unit: it completes with the shard's manifest`,
    );
  const done = logged(
    {
      ...held,
      status: 'completed',
      completed_at: nowMs,
      lease_expires_at: null,
      reserved_task_index: null,
      manifest: cleanManifest(manifest),
      updated_at: nowMs,
    },
    { at: nowMs, kind: 'complete' },
  );
  const completed = others.length - pending + 1;
  const writes: UnitWrites = new Map();
  if (id === 0) writes.set(0, { ...done, units_completed: completed });
  else {
    writes.set(id, done);
    writes.set(0, { ...unit0, units_completed: completed, updated_at: nowMs });
  }
  return { writes, shardCompleted: last };
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

/**
 * An operator completes the shard whoever holds its units: every unit not completed becomes
 * completed (recorded in `forced`), and the manifest, if any, goes on unit 0 and must list
 * every unit's parts. Null when every unit is already completed.
 */
export function applyForceComplete(
  units: ShardUnits,
  shardId: number,
  by: string,
  manifest: ManifestSummary | undefined,
  nowMs: number,
): UnitWrites | null {
  const unit0 = unitZero(units, 'forceComplete');
  if ([...units.values()].every((u) => u.status === 'completed')) return null;
  checkManifest(manifest, partsOf(units), shardId);
  const writes: UnitWrites = new Map();
  for (const [id, s] of units) {
    if (s.status === 'completed') continue;
    writes.set(
      id,
      logged(
        {
          ...s,
          status: 'completed',
          assigned_to: s.status === 'in_use' ? s.assigned_to : by,
          completed_at: nowMs,
          lease_expires_at: null,
          reserved_task_index: null,
          manifest: null,
          ...forced('complete', by, nowMs),
          updated_at: nowMs,
        },
        { at: nowMs, kind: 'force-complete', worker: by },
      ),
    );
  }
  writes.set(0, {
    ...(writes.get(0) ?? unit0),
    manifest: cleanManifest(manifest),
    units_completed: units.size,
    updated_at: nowMs,
  });
  return writes;
}

/**
 * An operator fails the shard whoever holds its units: every unit not completed counts a
 * failed attempt (recorded in `forced`); refused when the shard is completed.
 */
export function applyForceFail(
  units: ShardUnits,
  by: string,
  reason: string,
  nowMs: number,
): UnitWrites {
  unitZero(units, 'forceFail');
  const open = [...units].filter(([, s]) => s.status !== 'completed');
  if (open.length === 0)
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'the shard is completed; reset it to run it again',
    );
  return new Map(
    open.map(([id, s]) => [
      id,
      logged(
        { ...failedAttempt(s, reason, nowMs, { backoff: true }), ...forced('fail', by, nowMs) },
        { at: nowMs, kind: 'force-fail', worker: by, attempt: true, note: reason },
      ),
    ]),
  );
}

/**
 * An operator reset of a shard: every unit goes back to `available`, no holder (a holder is
 * fenced), fresh attempts, no `completed_at` or manifest. The split is kept: each unit keeps its
 * range and committed parts, so the next holders resume where each unit stopped, several at
 * once. With `discardParts` every unit forgets its parts (and the run fingerprint they fixed)
 * and restarts at its own first task.
 */
export function applyReset(
  units: ShardUnits,
  by: string,
  nowMs: number,
  discardParts: boolean,
): UnitWrites {
  unitZero(units, 'reset');
  const writes: UnitWrites = new Map();
  for (const [id, s] of units)
    writes.set(
      id,
      logged(
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
          ...(id === 0 ? { units_completed: 0 } : {}),
          ...(discardParts
            ? {
                next_task_index: unitStart(s),
                next_sample: 0,
                run_fingerprint: null,
                split_tasks_per_part: null,
                parts_committed: 0,
                samples_committed: 0,
                bytes_committed: 0,
              }
            : {}),
        },
        {
          at: nowMs,
          kind: 'reset',
          worker: by,
          ...(discardParts ? { note: 'parts discarded' } : {}),
        },
      ),
    );
  return writes;
}

/** The record callers see of one unit: times as ISO strings, `forced` as one object. */
export function toShardRecord(ref: UnitRef, s: ShardState): ShardRecord {
  const { claim_next_task_index, claim_next_sample, forced_action, forced_by, forced_at, ...rest } =
    withIsoTimes(SHARD_FIELDS, s);
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    unit: ref.unit ?? 0,
    ...rest,
    forced:
      forced_action && forced_by !== null && forced_at !== null
        ? { action: forced_action, by: forced_by, at: forced_at }
        : null,
  };
}

/**
 * A shard's status from its units': `completed` when all are, `failed` when one is (the shard
 * cannot complete until it is reset), `in_use` while one is held, `available` otherwise.
 */
export function shardStatusOf(units: Iterable<ShardState>): ShardState['status'] {
  let completed = true;
  let inUse = false;
  for (const u of units) {
    if (u.status === 'failed') return 'failed';
    if (u.status !== 'completed') completed = false;
    if (u.status === 'in_use') inUse = true;
  }
  return completed ? 'completed' : inUse ? 'in_use' : 'available';
}

/** Tasks a unit has done: all of its range once completed, else up to its resume point. */
function unitTasksDone(s: ShardState): number {
  return s.status === 'completed' ? unitEnd(s) - unitStart(s) : s.next_task_index - unitStart(s);
}

/**
 * The shard as callers see it, from its units (docs/architecture.md#work-units): for a shard
 * never split, its one unit's record. For a split one: unit 0's record with the status of the
 * whole (`shardStatusOf`); the committed counts summed over the units; the holder, lease and
 * epoch of the unit that speaks for the shard (unit 0 while held, else the first held unit;
 * once completed, the unit whose completion completed the shard); the most attempts of any
 * unit; and the manifest, `completed_at` and run fingerprint of the whole.
 */
export function shardRecordOf(ref: ShardRef, units: ShardUnits): ShardRecord {
  const unit0 = unitZero(units, 'status');
  if (units.size === 1) return toShardRecord(ref, unit0);
  const all = [...units].sort(([a], [b]) => a - b);
  const status = shardStatusOf(units.values());
  const completer =
    all.find(([, u]) => u.manifest !== null) ??
    [...all].sort(([, a], [, b]) => (b.completed_at ?? 0) - (a.completed_at ?? 0))[0];
  const v: ShardState =
    status === 'completed'
      ? (completer?.[1] ?? unit0)
      : unit0.status === 'in_use'
        ? unit0
        : (all.find(([, u]) => u.status === 'in_use')?.[1] ?? unit0);
  const sum = (k: 'parts_committed' | 'samples_committed' | 'bytes_committed'): number =>
    all.reduce((n, [, u]) => n + u[k], 0);
  const available = all.filter(([, u]) => u.status === 'available').map(([, u]) => u.retry_at);
  const merged: ShardState = {
    ...unit0,
    status,
    assigned_to: v.assigned_to,
    started_at: v.started_at,
    lease_expires_at: v.lease_expires_at,
    heartbeat_at: v.heartbeat_at,
    lease_ms: v.lease_ms,
    epoch: v.epoch,
    forced_action: v.forced_action,
    forced_by: v.forced_by,
    forced_at: v.forced_at,
    completed_at:
      status === 'completed' ? Math.max(...all.map(([, u]) => u.completed_at ?? 0)) : null,
    attempts: Math.max(...all.map(([, u]) => u.attempts)),
    last_error: v.last_error ?? all.find(([, u]) => u.last_error !== null)?.[1].last_error ?? null,
    retry_at:
      status === 'available' && !available.includes(null)
        ? Math.min(...available.map((t) => t ?? 0))
        : null,
    run_fingerprint: all.find(([, u]) => u.run_fingerprint !== null)?.[1].run_fingerprint ?? null,
    manifest: all.find(([, u]) => u.manifest !== null)?.[1].manifest ?? null,
    parts_committed: sum('parts_committed'),
    samples_committed: sum('samples_committed'),
    bytes_committed: sum('bytes_committed'),
    units_completed: all.filter(([, u]) => u.status === 'completed').length,
  };
  return toShardRecord(ref, merged);
}

/** One unit's `status` row. */
function unitRow(ref: UnitRef, s: ShardState, nowMs: number): UnitStatusRow {
  return {
    ...toShardRecord(ref, s),
    lease_left_ms:
      s.status === 'in_use' && s.lease_expires_at !== null ? s.lease_expires_at - nowMs : null,
    tasks_done: unitTasksDone(s),
    unit_start: unitStart(s),
    unit_end: unitEnd(s),
  };
}

/**
 * Builds `status` from the dataset and every unit of its shards, read in one snapshot: one row
 * per shard (`shardRecordOf`), its units under it in task order.
 */
export function buildStatus(
  dataset: DatasetRecord,
  units: ReadonlyArray<{ shard_id: number; unit: number; state: ShardState }>,
  nowMs: number,
): LedgerStatus {
  const byShard = new Map<number, Map<number, ShardState>>();
  for (const { shard_id, unit, state } of units) {
    const m = byShard.get(shard_id) ?? new Map<number, ShardState>();
    m.set(unit, state);
    byShard.set(shard_id, m);
  }
  const rows: ShardStatusRow[] = [...byShard]
    .sort(([a], [b]) => a - b)
    .map(([shard_id, us]) => {
      const ref = { dataset_id: dataset.dataset_id, shard_id };
      const record = shardRecordOf(ref, us);
      const unitRows = [...us]
        .map(([unit, s]) => unitRow({ ...ref, unit }, s, nowMs))
        .sort((a, b) => a.unit_start - b.unit_start);
      const speaker =
        unitRows.find(
          (u) =>
            u.status === 'in_use' &&
            u.assigned_to === record.assigned_to &&
            u.epoch === record.epoch,
        ) ?? null;
      return {
        ...record,
        lease_left_ms: record.status === 'in_use' ? (speaker?.lease_left_ms ?? null) : null,
        tasks_done:
          record.status === 'completed'
            ? record.total_tasks
            : unitRows.reduce((n, u) => n + u.tasks_done, 0),
        units: unitRows,
      };
    });
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
    totals.attempts += r.units.reduce((n, u) => n + u.attempts, 0);
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
