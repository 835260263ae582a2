/**
 * The cloud ledger on Firestore (`@google-cloud/firestore`). The `Firestore` client comes from
 * the composition root; this module reads no environment.
 *
 * Layout under a configurable datasets collection (`root`, default `datasets`; tests use their
 * own, so they never see each other):
 *
 *   {root}/{dataset_id}                               the dataset (DatasetRecord fields)
 *   {root}/{dataset_id}/shards/shard_000              one shard (ShardRecord fields + ledger_root)
 *   {root}/{dataset_id}/shards/shard_000/parts/part_00000   one committed part
 *
 * Transactions touch one shard document (plus one part document for commitPart, plus the part
 * documents a `reset --discard_parts` deletes). Claims never run a "first available" query
 * inside a transaction: the server SDK locks what a transaction reads, so that would serialise
 * every claimer on the whole collection. Candidates are read outside, tried in a per-worker
 * order, and each one is confirmed by a transaction that reads only its document
 * (docs/notes/emulators.md §1, "variant B"). Lost races move on to the next candidate, with jittered
 * backoff and a bound on rounds. Transactions that write are optimistic (conditional batch
 * writes, no read locks: core/ledger/optimistic.ts explains the livelock they avoid).
 *
 * Times are Firestore Timestamps, taken from the injected clock (not server time): leases are
 * minutes long, so worker clock skew of a second does not matter.
 */
import type {
  CollectionReference,
  DocumentData,
  DocumentReference,
  Firestore,
  Query,
} from '@google-cloud/firestore';

import type { Clock } from '../clock';
import type { MasterMetadata, MasterShardEntry } from '../dataset/metadata';
import { shardDirName } from '../dataset/paths';
import { ShardlineError, isRetryable, toError } from '../errors';
import { checkDatasetId } from '../dataset/id';
import { candidateOrder } from './candidates';
import type { Decide, DecideUnits } from './verbs';
import { LedgerVerbs, reapedOf, unitOf } from './verbs';
import type { TxLike } from './optimistic';
import { runOptimistic } from './optimistic';
import type {
  Claim,
  ClaimOptions,
  DatasetRecord,
  Ledger,
  LedgerStatus,
  PartInput,
  PartRecord,
  ReapOptions,
  ReapedShard,
  RegisterOptions,
  RegisterResult,
  ShardRecord,
  ShardRef,
  SplitOptions,
  SplitResult,
  UnitRef,
} from './ledger';
import { DEFAULT_LEASE_MS, DEFAULT_MAX_ATTEMPTS } from './ledger';
import { codecOf } from './record-schema';
import type { ShardState } from './schema';
import { DATASET_FIELDS, PART_FIELDS, SHARD_FIELDS } from './schema';
import type { ShardUnits } from './shard-state';
import {
  applyClaim,
  applyCommitPart,
  applyExpiry,
  applySplit,
  buildStatus,
  checkLeaseMs,
  checkMasterForRegistration,
  checkMaxAttempts,
  checkSameDataset,
  checkWorkerId,
  claimOf,
  claimability,
  leaseExpired,
  newDatasetRecord,
  newShardState,
  peersLostWith,
  lostTogetherWindowMs,
  requireHolder,
  sameShardShape,
  splitCandidates,
  toShardRecord,
} from './shard-state';

/** The client type, for modules that pass a client along without using the SDK themselves. */
export type { Firestore };

/** The datasets collection when none is configured. */
export const DEFAULT_FIRESTORE_ROOT = 'datasets';
/**
 * SDK attempts per transaction. The emulator resolves lock conflicts by a hard-coded 2 s
 * timeout and ABORTED (docs/notes/emulators.md §1): 5 attempts failed 1 run in 9 there; 20 never did.
 */
export const DEFAULT_TX_ATTEMPTS = 20;
/** Rounds of "read candidates, try them" before a claim gives up with a retryable error. */
export const DEFAULT_CLAIM_ROUNDS = 8;
/** Shards registered per transaction (Firestore caps a commit at 500 writes). */
const SHARDS_PER_TX = 400;
/** Backoff between contended claim attempts: full jitter up to min(cap, base * 2^n). */
const BACKOFF_BASE_MS = 50;
const BACKOFF_CAP_MS = 2_000;

/** Options of `FirestoreLedger`. */
export interface FirestoreLedgerOptions {
  clock: Clock;
  /** Path of the datasets collection; default `datasets`. */
  root?: string;
  /** SDK attempts per transaction; default 20 (see `DEFAULT_TX_ATTEMPTS`). */
  maxTxAttempts?: number;
  /** Claim rounds before giving up; default 8. */
  claimRounds?: number;
  /** Jitter source in [0, 1); default Math.random. */
  random?: () => number;
  /** How to wait between attempts; default a timer. */
  sleep?: (ms: number) => Promise<void>;
  /** Terminate the client on `close()` (when the ledger's opener created it). Default false. */
  closeClient?: boolean;
}

const shardCodec = codecOf(SHARD_FIELDS, 'firestore');
const datasetCodec = codecOf(DATASET_FIELDS, 'firestore');
const partCodec = codecOf(PART_FIELDS, 'firestore');

/** A Timestamp's ms, or null (absent, null, or not a Timestamp). */
function millisOf(v: unknown): number | null {
  return typeof (v as { toMillis?: unknown } | null)?.toMillis === 'function'
    ? (v as { toMillis(): number }).toMillis()
    : null;
}

/** Document id of a part: `part_00000`. */
export function partDocId(partIndex: number): string {
  return `part_${String(partIndex).padStart(5, '0')}`;
}

/**
 * Document id of a work unit, in the shards collection beside its shard: `shard_003` for unit
 * 0 (the shard's own document, as before splits existed), `shard_003.u2` for unit 2. Units
 * share the collection so the claim, reaper and status queries (and their indexes) see them.
 */
export function unitDocId(shardId: number, unit: number): string {
  return unit === 0 ? shardDirName(shardId) : `${shardDirName(shardId)}.u${unit}`;
}

/** The unit ref of a shard or unit document. */
function unitRefOf(d: { get(field: string): unknown }): Required<UnitRef> {
  return {
    dataset_id: d.get('dataset_id') as string,
    shard_id: d.get('shard_id') as number,
    unit: (d.get('unit') as number | undefined) ?? 0,
  };
}

type Attempt =
  { kind: 'claimed'; claim: Claim } | { kind: 'taken' } | { kind: 'contended'; error: unknown };

/** A claimable unit as the candidate query found it. */
interface Candidate {
  shard_id: number;
  unit: number;
}

/** The Firestore implementation of the `Ledger` port. */
export class FirestoreLedger extends LedgerVerbs implements Ledger {
  readonly kind = 'firestore' as const;
  readonly location: string;
  /** The datasets collection path. */
  readonly root: string;
  private readonly clock: Clock;
  private readonly datasets: CollectionReference;
  private readonly maxTxAttempts: number;
  private readonly claimRounds: number;
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  /** @param db a client from the composition root (it honours FIRESTORE_EMULATOR_HOST itself) */
  constructor(
    private readonly db: Firestore,
    private readonly options: FirestoreLedgerOptions,
  ) {
    super();
    this.root = options.root ?? DEFAULT_FIRESTORE_ROOT;
    this.datasets = db.collection(this.root);
    this.location = `firestore:${this.root}`;
    this.clock = options.clock;
    this.maxTxAttempts = options.maxTxAttempts ?? DEFAULT_TX_ATTEMPTS;
    this.claimRounds = options.claimRounds ?? DEFAULT_CLAIM_ROUNDS;
    this.random = options.random ?? Math.random;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  private datasetRef(datasetId: string): DocumentReference {
    return this.datasets.doc(checkDatasetId(datasetId));
  }

  private shardsOf(datasetId: string): CollectionReference {
    return this.datasetRef(datasetId).collection('shards');
  }

  private shardRef(ref: UnitRef): DocumentReference {
    const unit = unitOf(ref);
    if (!Number.isSafeInteger(ref.shard_id) || ref.shard_id < 0)
      throw new ShardlineError('INVALID_ARGUMENT', `invalid shard id ${ref.shard_id}`);
    if (!Number.isSafeInteger(unit) || unit < 0)
      throw new ShardlineError('INVALID_ARGUMENT', `invalid unit ${unit}`);
    return this.shardsOf(ref.dataset_id).doc(unitDocId(ref.shard_id, unit));
  }

  private partRef(ref: UnitRef, partIndex: number): DocumentReference {
    return this.shardRef(ref).collection('parts').doc(partDocId(partIndex));
  }

  private shardDoc(ref: UnitRef, s: ShardState): DocumentData {
    return {
      dataset_id: ref.dataset_id,
      shard_id: ref.shard_id,
      unit: unitOf(ref),
      ledger_root: this.root,
      ...shardCodec.encode(s),
    };
  }

  private stateOf(data: DocumentData | undefined, ref: UnitRef): ShardState {
    return shardCodec.decode(
      data,
      `${ref.unit ? `unit ${ref.unit} of ` : ''}shard ${ref.shard_id} of ${ref.dataset_id}`,
    );
  }

  /** The query for every unit of a shard. */
  private unitsQuery(ref: ShardRef): Query {
    return this.shardsOf(ref.dataset_id).where('shard_id', '==', ref.shard_id);
  }

  private datasetOf(data: DocumentData | undefined, datasetId: string): DatasetRecord {
    return datasetCodec.decode(data, `dataset ${datasetId}`);
  }

  private partOf(data: DocumentData | undefined): PartRecord {
    return partCodec.decode(data, 'part');
  }

  /**
   * Runs one transaction: an optimistic one for verbs that write (core/ledger/optimistic.ts
   * says why), a read-only snapshot for `status`. Our own errors pass through, client errors
   * become `LEDGER` errors.
   */
  private async tx<T>(fn: (tx: TxLike) => Promise<T>, readOnly = false): Promise<T> {
    try {
      return readOnly
        ? await this.db.runTransaction((t) => fn(t as unknown as TxLike), { readOnly: true })
        : await runOptimistic(this.db, fn, {
            maxAttempts: this.maxTxAttempts,
            random: this.random,
          });
    } catch (e: unknown) {
      throw this.wrap(e);
    }
  }

  private wrap(e: unknown): Error {
    if (e instanceof ShardlineError) return e;
    const err = toError(e);
    return new ShardlineError('LEDGER', `Firestore ${this.root}: ${err.message}`, { cause: err });
  }

  private async getOrWrap<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e: unknown) {
      throw this.wrap(e);
    }
  }

  async registerDataset(master: MasterMetadata, options: RegisterOptions): Promise<RegisterResult> {
    checkMasterForRegistration(master);
    const maxAttempts = checkMaxAttempts(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
    const datasetRef = this.datasetRef(master.dataset_id);
    const existing = await this.getOrWrap(() => datasetRef.get());
    if (existing.exists) {
      const dataset = this.datasetOf(existing.data(), master.dataset_id);
      checkSameDataset(dataset, master);
      return { created: false, dataset };
    }
    // Shards first, the dataset document last: its presence marks the registration complete,
    // and `claim` refuses a dataset without it. A dataset of up to 400 shards is one
    // transaction; a larger one is several, each idempotent, so a retried registration resumes.
    const batches: MasterShardEntry[][] = [];
    for (let i = 0; i < master.shards.length; i += SHARDS_PER_TX)
      batches.push(master.shards.slice(i, i + SHARDS_PER_TX));
    if (batches.length === 0) batches.push([]);
    const last = batches.length - 1;
    let result: RegisterResult | undefined;
    for (const [i, batch] of batches.entries()) {
      result = await this.tx(async (tx) => {
        const withDataset = i === last;
        const dsSnap = withDataset ? await tx.get(datasetRef) : null;
        const refs = batch.map((e) =>
          this.shardRef({ dataset_id: master.dataset_id, shard_id: e.shard_id }),
        );
        const snaps = refs.length > 0 ? await tx.getAll(...refs) : [];
        if (dsSnap?.exists) {
          const dataset = this.datasetOf(dsSnap.data(), master.dataset_id);
          checkSameDataset(dataset, master);
          return { created: false, dataset };
        }
        const now = this.clock.nowMs();
        batch.forEach((entry, j) => {
          const snap = snaps[j]!;
          const ref = { dataset_id: master.dataset_id, shard_id: entry.shard_id };
          if (snap.exists) {
            if (!sameShardShape(this.stateOf(snap.data(), ref), entry))
              throw new ShardlineError(
                'DATASET_CONFLICT',
                `shard ${entry.shard_id} of dataset ${master.dataset_id} is registered with a different task range`,
              );
            return;
          }
          tx.create(refs[j]!, this.shardDoc(ref, newShardState(entry, maxAttempts, now)));
        });
        const dataset = newDatasetRecord(master, options.datasetUri, maxAttempts, now);
        if (withDataset) tx.create(datasetRef, datasetCodec.encode(dataset));
        return { created: true, dataset };
      });
    }
    return result!;
  }

  async getDataset(datasetId: string): Promise<DatasetRecord | null> {
    const snap = await this.getOrWrap(() => this.datasetRef(datasetId).get());
    return snap.exists ? this.datasetOf(snap.data(), datasetId) : null;
  }

  async getShard(datasetId: string, shardId: number, unit = 0): Promise<ShardRecord | null> {
    const ref = { dataset_id: datasetId, shard_id: shardId, unit };
    const snap = await this.getOrWrap(() => this.shardRef(ref).get());
    return snap.exists ? toShardRecord(ref, this.stateOf(snap.data(), ref)) : null;
  }

  /** Units that look claimable now, read outside any transaction (they are re-checked inside). */
  private async claimableIds(datasetId: string): Promise<Candidate[]> {
    const shards = this.shardsOf(datasetId);
    const now = new Date(this.clock.nowMs());
    const idOf = (d: { get(field: string): unknown }): Candidate => ({
      shard_id: d.get('shard_id') as number,
      unit: (d.get('unit') as number | undefined) ?? 0,
    });
    const [available, expired] = await this.getOrWrap(() =>
      Promise.all([
        // Units backing off (`retry_at` ahead) are left out here rather than in the query:
        // "no retry_at, or one passed" is two conditions Firestore would need an OR for.
        shards
          .where('status', '==', 'available')
          .select('shard_id', 'unit', 'retry_at')
          .get()
          .then((snap) =>
            snap.docs.filter((d) => (millisOf(d.get('retry_at')) ?? 0) <= now.getTime()).map(idOf),
          ),
        shards
          .where('status', '==', 'in_use')
          .where('lease_expires_at', '<=', now)
          .select('shard_id', 'unit')
          .get()
          .then((snap) => snap.docs.map(idOf)),
      ]),
    );
    return [...available, ...expired];
  }

  /**
   * Other units of the dataset whose holder was lost with `s`'s (shard-state.ts
   * `peersLostWith`): the held units, and those whose last lost holder went silent in the
   * window. Read without locks inside the claim's or the reaper's transaction callback (they
   * write only `s`'s document).
   */
  private async peersLost(ref: UnitRef, s: ShardState, nowMs: number): Promise<number> {
    const shards = this.shardsOf(ref.dataset_id);
    const fields = ['shard_id', 'unit', 'status', 'heartbeat_at', 'lease_ms', 'lost_at'] as const;
    const queries = [
      shards
        .where('status', '==', 'in_use')
        .select(...fields)
        .get(),
    ];
    if (s.heartbeat_at !== null)
      queries.push(
        shards
          .where('lost_at', '>=', new Date(s.heartbeat_at - lostTogetherWindowMs(s)))
          .select(...fields)
          .get(),
      );
    const others = new Map<string, Parameters<typeof peersLostWith>[1][number]>();
    for (const snap of await Promise.all(queries))
      for (const d of snap.docs) {
        const id = d.get('shard_id') as number;
        const unit = (d.get('unit') as number | undefined) ?? 0;
        if (id === ref.shard_id && unit === unitOf(ref)) continue;
        others.set(`${id}.${unit}`, {
          status: d.get('status') as ShardState['status'],
          heartbeat_at: millisOf(d.get('heartbeat_at')),
          lease_ms: (d.get('lease_ms') as number | null | undefined) ?? null,
          lost_at: millisOf(d.get('lost_at')),
        });
      }
    return peersLostWith(s, [...others.values()], nowMs);
  }

  /** Confirms one candidate in a transaction that reads only its document. */
  private async tryClaim(ref: UnitRef, workerId: string, leaseMs: number): Promise<Attempt> {
    const doc = this.shardRef(ref);
    try {
      return await runOptimistic(
        this.db,
        async (tx): Promise<Attempt> => {
          const snap = await tx.get(doc);
          if (!snap.exists) return { kind: 'taken' };
          const state = this.stateOf(snap.data(), ref);
          const now = this.clock.nowMs();
          const peers = leaseExpired(state, now) ? await this.peersLost(ref, state, now) : 0;
          const verdict = claimability(state, now, peers);
          if (verdict === 'expire') tx.set(doc, this.shardDoc(ref, applyExpiry(state, now, peers)));
          if (verdict !== 'claimable') return { kind: 'taken' };
          const next = applyClaim(state, workerId, now, leaseMs, peers);
          tx.set(doc, this.shardDoc(ref, next));
          return { kind: 'claimed', claim: claimOf(ref, next) };
        },
        { maxAttempts: this.maxTxAttempts, random: this.random },
      );
    } catch (e: unknown) {
      if (!isRetryable(e)) throw this.wrap(e);
      return { kind: 'contended', error: e };
    }
  }

  private pause(n: number): Promise<void> {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(n, 10));
    return this.sleep(Math.floor(this.random() * ceiling));
  }

  async claim(
    datasetId: string,
    workerId: string,
    options: ClaimOptions = {},
  ): Promise<Claim | null> {
    checkWorkerId(workerId);
    const leaseMs = checkLeaseMs(options.leaseMs);
    const dataset = await this.getDataset(datasetId);
    if (!dataset)
      throw new ShardlineError(
        'NOT_FOUND',
        `dataset ${datasetId} is not registered in ${this.location}`,
      );
    const preferred = options.preferredShardId;
    let skip: number | undefined;
    let contended = 0;
    let lastContention: unknown;
    if (
      preferred !== undefined &&
      Number.isSafeInteger(preferred) &&
      preferred >= 0 &&
      preferred < dataset.num_shards
    ) {
      const first = await this.tryClaim(
        { dataset_id: datasetId, shard_id: preferred },
        workerId,
        leaseMs,
      );
      if (first.kind === 'claimed') return first.claim;
      if (first.kind === 'taken') skip = preferred;
      else {
        lastContention = first.error;
        await this.pause(++contended);
      }
    }
    for (let round = 0; round < this.claimRounds; round++) {
      const found = (await this.claimableIds(datasetId)).filter(
        (c) => round > 0 || c.shard_id !== skip || c.unit !== 0,
      );
      if (found.length === 0) return null;
      const byShard = new Map<number, number[]>();
      for (const c of found) byShard.set(c.shard_id, [...(byShard.get(c.shard_id) ?? []), c.unit]);
      let lostRace = false;
      const order = candidateOrder(
        [...byShard.keys()],
        workerId,
        preferred,
        round,
        options.avoidShardIds,
      );
      for (const id of order) {
        for (const unit of byShard.get(id)!.sort((a, b) => a - b)) {
          const attempt = await this.tryClaim(
            { dataset_id: datasetId, shard_id: id, unit },
            workerId,
            leaseMs,
          );
          if (attempt.kind === 'claimed') return attempt.claim;
          if (attempt.kind === 'contended') {
            lostRace = true;
            lastContention = attempt.error;
            await this.pause(++contended);
          }
        }
      }
      if (lostRace) await this.pause(round + 1);
    }
    throw new ShardlineError(
      'LEDGER',
      `claim in dataset ${datasetId}: gave up after ${this.claimRounds} rounds of contention; try again`,
      { cause: lastContention, details: { contended: true } },
    );
  }

  /**
   * Held units read outside any transaction and ranked (shard-state.ts `splitCandidates`);
   * each candidate is then re-read with its whole shard in a transaction and split only if
   * it is still worth it there (the same ranking of the fresh state), so of concurrent splitters
   * of one unit one wins and the others see what is left.
   */
  async split(
    datasetId: string,
    workerId: string,
    options: SplitOptions = {},
  ): Promise<SplitResult | null> {
    checkWorkerId(workerId);
    const leaseMs = checkLeaseMs(options.leaseMs ?? DEFAULT_LEASE_MS);
    const held = await this.getOrWrap(() =>
      this.shardsOf(datasetId).where('status', '==', 'in_use').get(),
    );
    const ranked = splitCandidates(
      held.docs.map((d) => {
        const ref = unitRefOf(d);
        return { shard_id: ref.shard_id, unit: ref.unit, state: this.stateOf(d.data(), ref) };
      }),
      workerId,
      options,
    );
    for (const c of ranked) {
      const ref = { dataset_id: datasetId, shard_id: c.shard_id };
      const done = await this.shardVerb(ref, (units, now) => {
        const fresh = units.get(c.unit);
        const at = fresh
          ? (splitCandidates([{ ...c, state: fresh }], workerId, options)[0]?.at ?? null)
          : null;
        if (!fresh || at === null) return { writes: new Map<number, ShardState>(), result: null };
        const split = applySplit(units, c.unit, at, workerId, now, leaseMs);
        return {
          writes: split.writes,
          result: {
            claim: claimOf({ ...ref, unit: split.unit }, split.state),
            from: { ...ref, unit: c.unit, holder: fresh.assigned_to, end_task_index: at },
          } satisfies SplitResult,
        };
      });
      if (done) return done;
    }
    return null;
  }

  protected holderVerb(claim: Claim, decide: Decide): Promise<ShardRecord> {
    const doc = this.shardRef(claim);
    return this.tx(async (tx) => {
      const snap = await tx.get(doc);
      const s = snap.exists ? this.stateOf(snap.data(), claim) : null;
      const next = decide(s, this.clock.nowMs());
      if (next) tx.set(doc, this.shardDoc(claim, next));
      return toShardRecord(claim, (next ?? s)!);
    });
  }

  commitPart(claim: Claim, part: PartInput): Promise<PartRecord> {
    const doc = this.shardRef(claim);
    const partDoc = this.partRef(claim, part.part_index);
    return this.tx(async (tx) => {
      const [snap, partSnap] = await tx.getAll(doc, partDoc);
      const s = requireHolder(
        snap!.exists ? this.stateOf(snap!.data(), claim) : null,
        claim,
        'commitPart',
      );
      const existing = partSnap!.exists ? this.partOf(partSnap!.data()) : null;
      const now = this.clock.nowMs();
      const decision = applyCommitPart(s, claim, part, existing, now);
      tx.set(doc, this.shardDoc(claim, decision.state));
      if (!decision.duplicate) tx.create(partDoc, partCodec.encode(decision.record));
      return decision.record;
    });
  }

  /**
   * Reads every unit of the shard with one query inside the transaction, so each write is
   * conditioned on the unit it replaces (a new unit is a create); with `discardParts`, deletes
   * every unit's part documents in the same commit.
   */
  protected shardVerb<T>(ref: ShardRef, decide: DecideUnits<T>): Promise<T> {
    return this.tx(async (tx) => {
      const snap = await tx.get(this.unitsQuery(ref));
      const read = new Map<number, ShardState>();
      for (const d of snap.docs) {
        const at = unitRefOf(d);
        read.set(at.unit, this.stateOf(d.data(), at));
      }
      if (!read.has(0))
        throw new ShardlineError(
          'NOT_FOUND',
          `dataset ${ref.dataset_id} has no shard ${ref.shard_id} in ${this.location}`,
        );
      const units: ShardUnits = read;
      const decision = decide(units, this.clock.nowMs());
      const parts = decision.discardParts
        ? await Promise.all(
            [...read.keys()].map((unit) =>
              tx.get(this.shardRef({ ...ref, unit }).collection('parts')),
            ),
          )
        : [];
      for (const [unit, state] of decision.writes) {
        const at = { ...ref, unit };
        if (read.has(unit)) tx.set(this.shardRef(at), this.shardDoc(at, state));
        else tx.create(this.shardRef(at), this.shardDoc(at, state));
      }
      for (const p of parts) p.docs.forEach((d) => tx.delete(d.ref));
      return decision.result;
    });
  }

  /**
   * One query for expired leases (across datasets: a collection-group query on `shards` within
   * this root, which holds every unit), then one transaction per unit that re-checks and frees it.
   */
  async reapExpired(nowMs?: number, options: ReapOptions = {}): Promise<ReapedShard[]> {
    const now = nowMs ?? this.clock.nowMs();
    const cutoff = new Date(now);
    const base =
      options.datasetId === undefined
        ? this.db.collectionGroup('shards').where('ledger_root', '==', this.root)
        : this.shardsOf(options.datasetId);
    const query = base
      .where('status', '==', 'in_use')
      .where('lease_expires_at', '<=', cutoff)
      .orderBy('lease_expires_at')
      .limit(options.limit ?? 500);
    const snap = await this.getOrWrap(() => query.get());
    const reaped: ReapedShard[] = [];
    for (const found of snap.docs) {
      const ref = unitRefOf(found);
      const one = await this.tx(async (tx): Promise<ReapedShard | null> => {
        const fresh = await tx.get(found.ref);
        if (!fresh.exists) return null;
        const s = this.stateOf(fresh.data(), ref);
        if (!leaseExpired(s, now)) return null;
        const next = applyExpiry(s, now, await this.peersLost(ref, s, now));
        tx.set(found.ref, this.shardDoc(ref, next));
        return reapedOf(ref, s, next);
      });
      if (one) reaped.push(one);
    }
    return reaped;
  }

  /** A read-only transaction: the dataset and all its units in one snapshot, without locks. */
  status(datasetId: string): Promise<LedgerStatus> {
    const datasetRef = this.datasetRef(datasetId);
    return this.tx(async (tx) => {
      const [dsSnap, shardsSnap] = await Promise.all([
        tx.get(datasetRef),
        tx.get(datasetRef.collection('shards')),
      ]);
      if (!dsSnap.exists)
        throw new ShardlineError(
          'NOT_FOUND',
          `dataset ${datasetId} is not registered in ${this.location}`,
        );
      const dataset = this.datasetOf(dsSnap.data(), datasetId);
      const units = shardsSnap.docs.map((d) => {
        const ref = unitRefOf(d);
        return { shard_id: ref.shard_id, unit: ref.unit, state: this.stateOf(d.data(), ref) };
      });
      return buildStatus(dataset, units, this.clock.nowMs());
    }, true);
  }

  async listParts(ref: UnitRef): Promise<PartRecord[]> {
    const snap = await this.getOrWrap(() =>
      this.shardRef(ref).collection('parts').orderBy('part_index').get(),
    );
    return snap.docs.map((d) => this.partOf(d.data()));
  }

  async listShardParts(ref: ShardRef): Promise<PartRecord[]> {
    const units = await this.getOrWrap(() => this.unitsQuery(ref).select('unit').get());
    const lists = await Promise.all(
      units.docs.map((d) => this.listParts({ ...ref, unit: unitRefOf(d).unit })),
    );
    return lists
      .flat()
      .sort(
        (a, b) =>
          a.first_task_index - b.first_task_index ||
          a.first_sample - b.first_sample ||
          a.unit - b.unit ||
          a.part_index - b.part_index,
      );
  }

  async close(): Promise<void> {
    if (this.options.closeClient) await this.db.terminate();
  }
}
