/**
 * Ingest records on Firestore (the `IngestRecords` port, core/ingest/records.ts).
 *
 * Layout (collection names configurable, so tests namespace themselves):
 *   ingests/{ingest_id}                 IngestRecord
 *   ingests/{ingest_id}/ranges/{r}      a scanned byte range of a fanned-out ingest
 *   ingests/{ingest_id}/shards/{k}      a written shard (or its continuation cursor)
 *   ingest_objects/{object_key}         the version counter of one object name
 *
 * Transactions are optimistic (parallel steps of one ingest update its record at once, and
 * lock-based transactions starve each other under contention: core/ledger/optimistic.ts) and
 * pure: they read, call the port's decision functions, write, and return; the caller acts
 * after.
 */
import type { DocumentReference, Firestore } from '@google-cloud/firestore';

import type { Clock } from '../clock';
import { isoTime } from '../clock';
import { ShardlineError, toError } from '../errors';
import type { TxLike } from '../ledger/optimistic';
import { runOptimistic } from '../ledger/optimistic';
import type { WriteCursor } from '../split/write';
import { objectKeyOf } from './object';
import type {
  BadLine,
  BeginOutcome,
  IngestDraft,
  IngestRecord,
  IngestRecords,
  IngestStats,
  StepSet,
} from './records';
import { decideExisting, decideStepDone, newIngestRecord, takeOver } from './records';

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
export class FirestoreIngestRecords implements IngestRecords {
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

  private step(id: string, set: StepSet, index: number): DocumentReference {
    return this.ref(id).collection(set).doc(String(index));
  }

  private now(): string {
    return isoTime(this.clock.nowMs());
  }

  private async tx<T>(what: string, fn: (tx: TxLike) => Promise<T>): Promise<T> {
    try {
      return await runOptimistic(this.db, fn, { maxAttempts: 20 });
    } catch (e: unknown) {
      if (e instanceof ShardlineError) throw e;
      throw new ShardlineError('LEDGER', `ingest records: ${what}: ${toError(e).message}`, {
        cause: e,
      });
    }
  }

  begin(draft: IngestDraft, staleMs: number, maxAttempts: number): Promise<BeginOutcome> {
    return this.tx('begin', async (tx): Promise<BeginOutcome> => {
      const ref = this.ref(draft.ingest_id);
      const objectRef = this.db
        .collection(this.collections.objects)
        .doc(objectKeyOf({ bucket: draft.bucket, name: draft.object }));
      const [snap, objectSnap] = await Promise.all([tx.get(ref), tx.get(objectRef)]);
      if (snap.exists) {
        const existing = snap.data() as IngestRecord;
        const outcome = decideExisting(existing, this.clock.nowMs(), staleMs, maxAttempts);
        // A changed record (taken over, or failed for good) is written; else nothing.
        if (outcome.record !== existing) tx.set(ref, outcome.record);
        return outcome;
      }
      const version = ((objectSnap.data()?.versions as number | undefined) ?? 0) + 1;
      const record = newIngestRecord(draft, version, this.now());
      tx.create(ref, record);
      tx.set(
        objectRef,
        { bucket: draft.bucket, object: draft.object, versions: version, latest: draft.ingest_id },
        { merge: true },
      );
      return { kind: 'started', record };
    });
  }

  async get(id: string): Promise<IngestRecord | null> {
    const snap = await this.ref(id).get();
    return snap.exists ? (snap.data() as IngestRecord) : null;
  }

  async recent(limit: number): Promise<IngestRecord[]> {
    const snap = await this.db
      .collection(this.collections.ingests)
      .orderBy('started_at', 'desc')
      .limit(limit)
      .get();
    return snap.docs.map((d) => d.data() as IngestRecord);
  }

  async findByDataset(datasetId: string): Promise<IngestRecord[]> {
    const snap = await this.db
      .collection(this.collections.ingests)
      .where('dataset_id', '==', datasetId)
      .get();
    return snap.docs
      .map((d) => d.data() as IngestRecord)
      .sort((a, b) => b.started_at.localeCompare(a.started_at));
  }

  async update(id: string, patch: Partial<IngestRecord>): Promise<void> {
    const now = this.now();
    await this.ref(id).set({ ...patch, updated_at: now, heartbeat_at: now }, { merge: true });
  }

  async fail(id: string, error: string, badLine: BadLine | null): Promise<void> {
    const now = this.now();
    await this.ref(id).set(
      { state: 'failed', error, bad_line: badLine, updated_at: now, finished_at: now },
      { merge: true },
    );
  }

  async complete(id: string, stats: IngestStats): Promise<void> {
    const now = this.now();
    await this.ref(id).set(
      { state: 'completed', phase: 'done', stats, updated_at: now, finished_at: now },
      { merge: true },
    );
  }

  rangeDone(id: string, range: number): Promise<boolean> {
    return this.stepDone(id, 'ranges', range);
  }

  shardDone(id: string, shard: number): Promise<boolean> {
    return this.stepDone(id, 'shards', shard);
  }

  private stepDone(id: string, set: StepSet, index: number): Promise<boolean> {
    return this.tx(`${set} ${index} done`, async (tx) => {
      const ref = this.ref(id);
      const stepRef = this.step(id, set, index);
      const [snap, stepSnap] = await Promise.all([tx.get(ref), tx.get(stepRef)]);
      if (!snap.exists) throw new ShardlineError('NOT_FOUND', `no ingest ${id}`);
      const now = this.now();
      const done = (stepSnap.data() as { done?: boolean } | undefined)?.done === true;
      const decision = decideStepDone(snap.data() as IngestRecord, set, done, now);
      if (!decision) return false;
      tx.set(stepRef, { done: true, at: now }, { merge: true });
      tx.update(ref, decision.patch);
      return decision.flips;
    });
  }

  async isStepDone(id: string, set: StepSet, index: number): Promise<boolean> {
    const snap = await this.step(id, set, index).get();
    return (snap.data() as { done?: boolean } | undefined)?.done === true;
  }

  async saveCursor(id: string, shard: number, cursor: WriteCursor): Promise<void> {
    await this.step(id, 'shards', shard).set({ cursor, at: this.now() }, { merge: true });
    await this.update(id, {});
  }

  async getCursor(id: string, shard: number): Promise<WriteCursor | null> {
    const snap = await this.step(id, 'shards', shard).get();
    return (snap.data() as { cursor?: WriteCursor } | undefined)?.cursor ?? null;
  }

  /** Needs the (state, heartbeat_at) index (infra/firestore.indexes.json). */
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
        const r = (await tx.get(doc.ref)).data() as IngestRecord | undefined;
        if (!r || r.state !== 'running' || r.heartbeat_at >= cutoff) return null;
        const outcome = takeOver(r, this.clock.nowMs(), maxAttempts, 'the ingest stalled');
        tx.set(doc.ref, outcome.record);
        return outcome.kind === 'takeover' ? outcome.record : null;
      });
      if (record) taken.push(record);
    }
    return taken;
  }
}
