/**
 * Ingest records, the port: one record per upload (bucket, object, generation), the
 * idempotency record of the ingest function and where `shardline status` finds an ingest's
 * state (running, completed, failed with the error and the bad line). Two implementations
 * pass one contract suite (test/support/ingest-records-contract.ts): Firestore
 * (core/ingest/firestore-records.ts, the cloud) and in memory (core/ingest/memory-records.ts,
 * unit tests). The decisions both make live here, pure, so the two cannot drift apart.
 */
import type { ByteSpan } from '../split/ranges';
import type { WriteCursor } from '../split/write';

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
  /**
   * The attempt budget the dataset's shards are registered with (the upload's
   * `shardline-max-attempts`, or the deployment's default). Records written before it existed
   * lack it: the ledger's default then.
   */
  max_attempts?: number;
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
  | 'max_attempts'
  | 'mode'
> & {
  /** Builds the dataset id and URI from the version number `begin` allocates. */
  name: (version: number) => { dataset_id: string; dataset_uri: string };
};

/** Which set a fanned-out step belongs to. */
export type StepSet = 'ranges' | 'shards';

/** The store of ingest records. Every verb that decides is one transaction. */
export interface IngestRecords {
  /**
   * Creates the record of an upload, or finds it: the idempotency check of the ingest
   * function. A new record gets the next version number of its object name.
   */
  begin(draft: IngestDraft, staleMs: number, maxAttempts: number): Promise<BeginOutcome>;
  /** The record, or null. */
  get(id: string): Promise<IngestRecord | null>;
  /** The most recent records, newest first. */
  recent(limit: number): Promise<IngestRecord[]>;
  /** The records of a dataset (normally one), newest first. */
  findByDataset(datasetId: string): Promise<IngestRecord[]>;
  /** Updates fields (and the heartbeat). */
  update(id: string, patch: Partial<IngestRecord>): Promise<void>;
  /** Marks the ingest failed for good, with its error and bad line. */
  fail(id: string, error: string, badLine: BadLine | null): Promise<void>;
  /** Marks the ingest completed. */
  complete(id: string, stats: IngestStats): Promise<void>;
  /**
   * Records that byte range `range` was scanned. Returns true for exactly one caller: the
   * one whose range was the last missing, which moves the ingest to `write`.
   */
  rangeDone(id: string, range: number): Promise<boolean>;
  /** Records that shard `shard` was written; true for the one caller that completes the set. */
  shardDone(id: string, shard: number): Promise<boolean>;
  /** Whether step `index` of `set` is recorded done. */
  isStepDone(id: string, set: StepSet, index: number): Promise<boolean>;
  /** Saves where an interrupted shard write continues. */
  saveCursor(id: string, shard: number, cursor: WriteCursor): Promise<void>;
  /** Where an interrupted shard write continues, or null to start it. */
  getCursor(id: string, shard: number): Promise<WriteCursor | null>;
  /**
   * Running ingests whose heartbeat is older than `staleMs`, each taken over (attempts + 1,
   * heartbeat now) in its own transaction, or failed when out of attempts. Returns the ones
   * taken over, for the caller to drive on.
   */
  takeOverStalled(staleMs: number, maxAttempts: number, limit?: number): Promise<IngestRecord[]>;
}

/** The record a first `begin` writes. */
export function newIngestRecord(draft: IngestDraft, version: number, now: string): IngestRecord {
  const { name, ...fields } = draft;
  return {
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
}

/**
 * What `begin` does with an existing record: nothing (finished, or busy while its heartbeat
 * is fresh), or the record to write: taken over (attempts + 1), or failed when the attempts
 * are spent.
 */
export function decideExisting(
  record: IngestRecord,
  nowMs: number,
  staleMs: number,
  maxAttempts: number,
): BeginOutcome {
  if (record.state !== 'running') return { kind: 'finished', record };
  const quietMs = nowMs - Date.parse(record.heartbeat_at);
  if (quietMs < staleMs) return { kind: 'busy', record };
  return takeOver(record, nowMs, maxAttempts, 'the last one stopped without finishing');
}

/**
 * Takes a stalled record over (attempts + 1, heartbeat now), or fails it when that would be
 * the last allowed attempt.
 */
export function takeOver(
  record: IngestRecord,
  nowMs: number,
  maxAttempts: number,
  why: string,
): { kind: 'finished' | 'takeover'; record: IngestRecord } {
  const now = new Date(nowMs).toISOString();
  if (record.attempts + 1 >= maxAttempts) {
    return {
      kind: 'finished',
      record: {
        ...record,
        state: 'failed',
        error: `gave up after ${record.attempts + 1} attempts; ${why} (${record.phase})`,
        updated_at: now,
        finished_at: now,
      },
    };
  }
  return {
    kind: 'takeover',
    record: { ...record, attempts: record.attempts + 1, heartbeat_at: now, updated_at: now },
  };
}

/** The phases a step set moves the ingest between, and how many steps it has. */
export const STEP_SETS: Readonly<
  Record<
    StepSet,
    {
      counter: 'ranges_done' | 'shards_done';
      total: (r: IngestRecord) => number;
      from: IngestPhase;
      to: IngestPhase;
    }
  >
> = {
  ranges: { counter: 'ranges_done', total: (r) => r.ranges.length, from: 'scan', to: 'write' },
  shards: { counter: 'shards_done', total: (r) => r.shards, from: 'write', to: 'finalize' },
};

/**
 * Whether recording step done changes anything, and the record's patch when it does: null
 * when the step was recorded before or the ingest has moved past its phase. `flips` is true
 * for the step that completes the set (it moves the phase on).
 */
export function decideStepDone(
  record: IngestRecord,
  set: StepSet,
  alreadyDone: boolean,
  now: string,
): { patch: Partial<IngestRecord>; flips: boolean } | null {
  const s = STEP_SETS[set];
  if (alreadyDone || record.phase !== s.from) return null;
  const done = record[s.counter] + 1;
  const flips = done === s.total(record);
  return {
    patch: {
      [s.counter]: done,
      updated_at: now,
      heartbeat_at: now,
      ...(flips ? { phase: s.to } : {}),
    },
    flips,
  };
}
