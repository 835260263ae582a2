/**
 * Ingest records in memory (the `IngestRecords` port, core/ingest/records.ts): for unit tests
 * of the ingest, which then run without the Firestore emulator. One process only; every verb
 * is atomic because it runs to completion on the event loop, and it makes the same decisions
 * as the Firestore store (they live in records.ts).
 */
import type { Clock } from '../clock';
import { isoTime } from '../clock';
import { ShardlineError } from '../errors';
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

/** Records kept in maps; copies go in and out, so callers cannot change what is stored. */
export class MemoryIngestRecords implements IngestRecords {
  private readonly records = new Map<string, IngestRecord>();
  private readonly versions = new Map<string, number>();
  private readonly steps = new Map<string, { done: boolean; cursor?: WriteCursor }>();

  constructor(private readonly clock: Clock) {}

  private now(): string {
    return isoTime(this.clock.nowMs());
  }

  private stepKey(id: string, set: StepSet, index: number): string {
    return `${id}/${set}/${index}`;
  }

  private require(id: string): IngestRecord {
    const r = this.records.get(id);
    if (!r) throw new ShardlineError('NOT_FOUND', `no ingest ${id}`);
    return r;
  }

  private put(record: IngestRecord): IngestRecord {
    this.records.set(record.ingest_id, structuredClone(record));
    return structuredClone(record);
  }

  begin(draft: IngestDraft, staleMs: number, maxAttempts: number): Promise<BeginOutcome> {
    const existing = this.records.get(draft.ingest_id);
    if (existing) {
      const outcome = decideExisting(existing, this.clock.nowMs(), staleMs, maxAttempts);
      if (outcome.record !== existing) this.put(outcome.record);
      return Promise.resolve({ ...outcome, record: structuredClone(outcome.record) });
    }
    const key = objectKeyOf({ bucket: draft.bucket, name: draft.object });
    const version = (this.versions.get(key) ?? 0) + 1;
    this.versions.set(key, version);
    const record = this.put(newIngestRecord(draft, version, this.now()));
    return Promise.resolve({ kind: 'started', record });
  }

  get(id: string): Promise<IngestRecord | null> {
    const r = this.records.get(id);
    return Promise.resolve(r ? structuredClone(r) : null);
  }

  recent(limit: number): Promise<IngestRecord[]> {
    return Promise.resolve(
      [...this.records.values()]
        .sort((a, b) => b.started_at.localeCompare(a.started_at))
        .slice(0, limit)
        .map((r) => structuredClone(r)),
    );
  }

  findByDataset(datasetId: string): Promise<IngestRecord[]> {
    return Promise.resolve(
      [...this.records.values()]
        .filter((r) => r.dataset_id === datasetId)
        .sort((a, b) => b.started_at.localeCompare(a.started_at))
        .map((r) => structuredClone(r)),
    );
  }

  private patch(id: string, patch: Partial<IngestRecord>): Promise<void> {
    return Promise.resolve().then(() => {
      this.put({ ...this.require(id), ...structuredClone(patch) });
    });
  }

  update(id: string, patch: Partial<IngestRecord>): Promise<void> {
    const now = this.now();
    return this.patch(id, { ...patch, updated_at: now, heartbeat_at: now });
  }

  fail(id: string, error: string, badLine: BadLine | null): Promise<void> {
    const now = this.now();
    return this.patch(id, {
      state: 'failed',
      error,
      bad_line: badLine,
      updated_at: now,
      finished_at: now,
    });
  }

  complete(id: string, stats: IngestStats): Promise<void> {
    const now = this.now();
    return this.patch(id, {
      state: 'completed',
      phase: 'done',
      stats,
      updated_at: now,
      finished_at: now,
    });
  }

  rangeDone(id: string, range: number): Promise<boolean> {
    return this.stepDone(id, 'ranges', range);
  }

  shardDone(id: string, shard: number): Promise<boolean> {
    return this.stepDone(id, 'shards', shard);
  }

  private stepDone(id: string, set: StepSet, index: number): Promise<boolean> {
    return Promise.resolve().then(() => {
      const key = this.stepKey(id, set, index);
      const step = this.steps.get(key);
      const decision = decideStepDone(this.require(id), set, step?.done === true, this.now());
      if (!decision) return false;
      this.steps.set(key, { ...step, done: true });
      this.put({ ...this.require(id), ...decision.patch });
      return decision.flips;
    });
  }

  isStepDone(id: string, set: StepSet, index: number): Promise<boolean> {
    return Promise.resolve(this.steps.get(this.stepKey(id, set, index))?.done === true);
  }

  async saveCursor(id: string, shard: number, cursor: WriteCursor): Promise<void> {
    const key = this.stepKey(id, 'shards', shard);
    this.steps.set(key, { done: false, ...this.steps.get(key), cursor: structuredClone(cursor) });
    await this.update(id, {});
  }

  getCursor(id: string, shard: number): Promise<WriteCursor | null> {
    const cursor = this.steps.get(this.stepKey(id, 'shards', shard))?.cursor;
    return Promise.resolve(cursor ? structuredClone(cursor) : null);
  }

  takeOverStalled(staleMs: number, maxAttempts: number, limit = 20): Promise<IngestRecord[]> {
    const cutoff = isoTime(this.clock.nowMs() - staleMs);
    const stalled = [...this.records.values()]
      .filter((r) => r.state === 'running' && r.heartbeat_at < cutoff)
      .slice(0, limit);
    const taken: IngestRecord[] = [];
    for (const r of stalled) {
      const outcome = takeOver(r, this.clock.nowMs(), maxAttempts, 'the ingest stalled');
      this.put(outcome.record);
      if (outcome.kind === 'takeover') taken.push(structuredClone(outcome.record));
    }
    return Promise.resolve(taken);
  }
}
