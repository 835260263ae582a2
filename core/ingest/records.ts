/**
 * Ingest records: one Firestore document per upload (bucket, object, generation), the
 * idempotency record of the ingest function and where `shardline status` finds an ingest's
 * state (running, completed, failed with the error and the bad line).
 *
 * Layout (collection names configurable, so tests namespace themselves):
 *   ingests/{ingest_id}                 IngestRecord
 *   ingests/{ingest_id}/ranges/{r}      a scanned byte range of a fanned-out ingest
 *   ingests/{ingest_id}/shards/{k}      a written shard (or its continuation cursor)
 *   ingest_objects/{object_key}         the version counter of one object name
 *
 * Transactions are pure: they read, write, and return a decision; the caller acts after.
 */
import type { DocumentReference, Firestore } from '@google-cloud/firestore';

import type { Clock } from '../clock';
import { isoTime } from '../clock';
import { ShardlineError, toError } from '../errors';
import type { TxLike } from '../ledger/optimistic';
import { runOptimistic } from '../ledger/optimistic';
import type { ByteSpan } from '../split/ranges';
import type { WriteCursor } from '../split/write';
import { objectKeyOf } from './object';

/** Where an ingest stands. */
export type IngestState = 'running' | 'completed' | 'failed';

/**
 * The step an ingest is at. Direct: split -> register -> announce -> done. Fanned out:
 * scan -> write -> finalize -> register -> announce -> done.
 */
export type IngestPhase =
  'split' | 'scan' | 'write' | 'finalize' | 'register' | 'announce' | 'done';

/** A rejected line worth showing with a failure. */
export interface BadLine {
  line: number;
  reason: string;
  preview: string;
}

/** Counts of a finished split. */
export interface IngestStats {
  total_tasks: number;
  num_shards: number;
  input_lines: number;
  blank_lines: number;
  rejected_lines: number;
  bytes: number;
}

/** One upload's ingest. */
export interface IngestRecord {
  ingest_id: string;
  bucket: string;
  object: string;
  generation: string;
  size: number;
  event_id: string;
  dataset_id: string;
  /** `gs://bucket/datasets/ID`. */
  dataset_uri: string;
  /** 1 for the first upload under this object name, 2 for the next… */
  version: number;
  num_shards: number;
  chunk_size_mb: number;
  state: IngestState;
  phase: IngestPhase;
  mode: 'direct' | 'fanout';
  /** Byte ranges of a fanned-out scan. */
  ranges: ByteSpan[];
  ranges_done: number;
  /** Shards of a fanned-out write (known after the scan). */
  shards: number;
  shards_done: number;
  error: string | null;
  bad_line: BadLine | null;
  stats: IngestStats | null;
  /** Takeovers of a stalled run. */
  attempts: number;
  started_at: string;
  updated_at: string;
  heartbeat_at: string;
  finished_at: string | null;
}

/** What `begin` found. */
export type BeginOutcome =
  /** A new record: this call owns the ingest. */
  | { kind: 'started'; record: IngestRecord }
  /** The ingest is finished (completed or failed): nothing to do. */
  | { kind: 'finished'; record: IngestRecord }
  /** Another invocation is working on it (its heartbeat is fresh). */
  | { kind: 'busy'; record: IngestRecord }
  /** It stalled (no heartbeat for `staleMs`): this call takes it over. */
  | { kind: 'takeover'; record: IngestRecord };

/** The parts of a new record the caller decides (the rest is set by `begin`). */
export type IngestDraft = Pick<
  IngestRecord,
  | 'ingest_id'
  | 'bucket'
  | 'object'
  | 'generation'
  | 'size'
  | 'event_id'
  | 'num_shards'
  | 'chunk_size_mb'
  | 'mode'
> & {
  /** Builds the dataset id and URI from the version number `begin` allocates. */
  name: (version: number) => { dataset_id: string; dataset_uri: string };
};

/** Collection names. */
export interface IngestCollections {
  ingests: string;
  objects: string;
}

/** Default collection names. */
export const DEFAULT_INGEST_COLLECTIONS: IngestCollections = {
  ingests: 'ingests',
  objects: 'ingest_objects',
};

/** The Firestore store of ingest records. */
export class IngestRecords {
  private readonly collections: IngestCollections;

  constructor(
    private readonly db: Firestore,
    private readonly clock: Clock,
    collections: Partial<IngestCollections> = {},
  ) {
    this.collections = { ...DEFAULT_INGEST_COLLECTIONS, ...collections };
  }

  private ref(id: string): DocumentReference {
    return this.db.collection(this.collections.ingests).doc(id);
  }

  private async tx<T>(what: string, fn: (tx: TxLike) => Promise<T>): Promise<T> {
    try {
      // Optimistic: parallel steps of one ingest update its record at once, and lock-based
      // transactions starve each other under contention (core/ledger/optimistic.ts).
      return await runOptimistic(this.db, fn, { maxAttempts: 20 });
    } catch (e: unknown) {
      if (e instanceof ShardlineError) throw e;
      throw new ShardlineError('LEDGER', `ingest records: ${what}: ${toError(e).message}`, {
        cause: e,
      });
    }
  }

  /**
   * Creates the record of an upload, or finds it: the idempotency check of the ingest
   * function. A new record gets the next version number of its object name.
   */
  begin(draft: IngestDraft, staleMs: number, maxAttempts: number): Promise<BeginOutcome> {
    const { name, ...fields } = draft;
    return this.tx('begin', async (tx): Promise<BeginOutcome> => {
      const now = isoTime(this.clock.nowMs());
      const ref = this.ref(draft.ingest_id);
      const objectRef = this.db
        .collection(this.collections.objects)
        .doc(objectKeyOf({ bucket: draft.bucket, name: draft.object }));
      const [snap, objectSnap] = await Promise.all([tx.get(ref), tx.get(objectRef)]);
      if (snap.exists) {
        const record = snap.data() as IngestRecord;
        if (record.state !== 'running') return { kind: 'finished', record };
        const quietMs = this.clock.nowMs() - Date.parse(record.heartbeat_at);
        if (quietMs < staleMs) return { kind: 'busy', record };
        if (record.attempts + 1 >= maxAttempts) {
          const failed: IngestRecord = {
            ...record,
            state: 'failed',
            error: `gave up after ${record.attempts + 1} attempts; the last one stopped without finishing (${record.phase})`,
            updated_at: now,
            finished_at: now,
          };
          tx.set(ref, failed);
          return { kind: 'finished', record: failed };
        }
        const taken: IngestRecord = {
          ...record,
          attempts: record.attempts + 1,
          heartbeat_at: now,
          updated_at: now,
        };
        tx.set(ref, taken);
        return { kind: 'takeover', record: taken };
      }
      const version = ((objectSnap.data()?.versions as number | undefined) ?? 0) + 1;
      const record: IngestRecord = {
        ...fields,
        ...name(version),
        version,
        state: 'running',
        phase: draft.mode === 'direct' ? 'split' : 'scan',
        ranges: [],
        ranges_done: 0,
        shards: 0,
        shards_done: 0,
        error: null,
        bad_line: null,
        stats: null,
        attempts: 0,
        started_at: now,
        updated_at: now,
        heartbeat_at: now,
        finished_at: null,
      };
      tx.create(ref, record);
      tx.set(
        objectRef,
        { bucket: draft.bucket, object: draft.object, versions: version, latest: draft.ingest_id },
        { merge: true },
      );
      return { kind: 'started', record };
    });
  }

  /** The record, or null. */
  async get(id: string): Promise<IngestRecord | null> {
    const snap = await this.ref(id).get();
    return snap.exists ? (snap.data() as IngestRecord) : null;
  }

  /** The most recent records, newest first. */
  async recent(limit: number): Promise<IngestRecord[]> {
    const snap = await this.db
      .collection(this.collections.ingests)
      .orderBy('started_at', 'desc')
      .limit(limit)
      .get();
    return snap.docs.map((d) => d.data() as IngestRecord);
  }

  /** The records of a dataset (normally one), newest first. */
  async findByDataset(datasetId: string): Promise<IngestRecord[]> {
    const snap = await this.db
      .collection(this.collections.ingests)
      .where('dataset_id', '==', datasetId)
      .get();
    return snap.docs
      .map((d) => d.data() as IngestRecord)
      .sort((a, b) => b.started_at.localeCompare(a.started_at));
  }

  /** Updates fields (and the heartbeat). */
  async update(id: string, patch: Partial<IngestRecord>): Promise<void> {
    const now = isoTime(this.clock.nowMs());
    await this.ref(id).set({ ...patch, updated_at: now, heartbeat_at: now }, { merge: true });
  }

  /** Marks the ingest failed for good, with its error and bad line. */
  async fail(id: string, error: string, badLine: BadLine | null): Promise<void> {
    const now = isoTime(this.clock.nowMs());
    await this.ref(id).set(
      { state: 'failed', error, bad_line: badLine, updated_at: now, finished_at: now },
      { merge: true },
    );
  }

  /** Marks the ingest completed. */
  async complete(id: string, stats: IngestStats): Promise<void> {
    const now = isoTime(this.clock.nowMs());
    await this.ref(id).set(
      { state: 'completed', phase: 'done', stats, updated_at: now, finished_at: now },
      { merge: true },
    );
  }

  /**
   * Records that byte range `range` was scanned. Returns true for exactly one caller: the
   * one whose range was the last missing, which moves the ingest to `write`.
   */
  rangeDone(id: string, range: number): Promise<boolean> {
    return this.stepDone(
      id,
      'ranges',
      range,
      'ranges_done',
      (r) => r.ranges.length,
      'scan',
      'write',
    );
  }

  /** Records that shard `shard` was written; true for the one caller that completes the set. */
  shardDone(id: string, shard: number): Promise<boolean> {
    return this.stepDone(id, 'shards', shard, 'shards_done', (r) => r.shards, 'write', 'finalize');
  }

  private stepDone(
    id: string,
    sub: 'ranges' | 'shards',
    index: number,
    counter: 'ranges_done' | 'shards_done',
    total: (r: IngestRecord) => number,
    from: IngestPhase,
    to: IngestPhase,
  ): Promise<boolean> {
    return this.tx(`${sub} ${index} done`, async (tx) => {
      const ref = this.ref(id);
      const stepRef = ref.collection(sub).doc(String(index));
      const [snap, stepSnap] = await Promise.all([tx.get(ref), tx.get(stepRef)]);
      if (!snap.exists) throw new ShardlineError('NOT_FOUND', `no ingest ${id}`);
      const record = snap.data() as IngestRecord;
      if ((stepSnap.data() as { done?: boolean } | undefined)?.done || record.phase !== from)
        return false;
      const now = isoTime(this.clock.nowMs());
      const done = record[counter] + 1;
      tx.set(stepRef, { done: true, at: now }, { merge: true });
      const flips = done === total(record);
      tx.update(ref, {
        [counter]: done,
        updated_at: now,
        heartbeat_at: now,
        ...(flips ? { phase: to } : {}),
      });
      return flips;
    });
  }

  /** Whether step `index` of `sub` is recorded done. */
  async isStepDone(id: string, sub: 'ranges' | 'shards', index: number): Promise<boolean> {
    const snap = await this.ref(id).collection(sub).doc(String(index)).get();
    return (snap.data() as { done?: boolean } | undefined)?.done === true;
  }

  /** Saves where an interrupted shard write continues. */
  async saveCursor(id: string, shard: number, cursor: WriteCursor): Promise<void> {
    await this.ref(id)
      .collection('shards')
      .doc(String(shard))
      .set({ cursor, at: isoTime(this.clock.nowMs()) }, { merge: true });
    await this.update(id, {});
  }

  /** Where an interrupted shard write continues, or null to start it. */
  async getCursor(id: string, shard: number): Promise<WriteCursor | null> {
    const snap = await this.ref(id).collection('shards').doc(String(shard)).get();
    return (snap.data() as { cursor?: WriteCursor } | undefined)?.cursor ?? null;
  }

  /**
   * Running ingests whose heartbeat is older than `staleMs`, each taken over (attempts + 1,
   * heartbeat now) in its own transaction, or failed when out of attempts. Returns the ones
   * taken over, for the caller to drive on. Needs the (state, heartbeat_at) index.
   */
  async takeOverStalled(staleMs: number, maxAttempts: number, limit = 20): Promise<IngestRecord[]> {
    const cutoff = isoTime(this.clock.nowMs() - staleMs);
    const snap = await this.db
      .collection(this.collections.ingests)
      .where('state', '==', 'running')
      .where('heartbeat_at', '<', cutoff)
      .limit(limit)
      .get();
    const taken: IngestRecord[] = [];
    for (const doc of snap.docs) {
      const record = await this.tx('take over', async (tx) => {
        const fresh = await tx.get(doc.ref);
        const r = fresh.data() as IngestRecord | undefined;
        if (!r || r.state !== 'running' || r.heartbeat_at >= cutoff) return null;
        const now = isoTime(this.clock.nowMs());
        if (r.attempts + 1 >= maxAttempts) {
          tx.update(doc.ref, {
            state: 'failed',
            error: `gave up after ${r.attempts + 1} attempts; the ingest stalled at ${r.phase}`,
            updated_at: now,
            finished_at: now,
          });
          return null;
        }
        const next: IngestRecord = {
          ...r,
          attempts: r.attempts + 1,
          heartbeat_at: now,
          updated_at: now,
        };
        tx.set(doc.ref, next);
        return next;
      });
      if (record) taken.push(record);
    }
    return taken;
  }
}
