/**
 * The embedded ledger: one SQLite file (`ledger.sqlite`) beside a local dataset, through
 * better-sqlite3. Safe for several processes at once: WAL mode (readers never block the one
 * writer), a busy timeout (writers queue instead of failing), and every writing verb is one
 * `BEGIN IMMEDIATE` transaction, which takes the write lock before it reads, so no two claimers
 * can both see a shard available (and WAL's "snapshot too old" upgrade failure cannot happen).
 *
 * better-sqlite3 is synchronous: a verb blocks its process for the milliseconds it holds the
 * lock, or up to `busyTimeoutMs` while another process holds it.
 */
import Database from 'better-sqlite3';
import { z } from 'zod';

import type { Clock } from '../clock';
import type { MasterMetadata } from '../dataset/metadata';
import { SHARD_STATUSES } from '../dataset/metadata';
import { ShardlineError, errorCode, toError } from '../errors';
import { checkDatasetId } from '../dataset/id';
import { candidateOrder } from './candidates';
import type {
  Claim,
  ClaimOptions,
  DatasetRecord,
  Ledger,
  LedgerStatus,
  ManifestSummary,
  PartInput,
  PartRecord,
  ReapOptions,
  ReapedShard,
  RegisterOptions,
  RegisterResult,
  ResetOptions,
  ShardRecord,
  ShardRef,
} from './ledger';
import { DEFAULT_MAX_ATTEMPTS } from './ledger';
import type { ShardState } from './shard-state';
import {
  applyClaim,
  applyCommitPart,
  applyComplete,
  applyExpiry,
  applyFail,
  applyForceComplete,
  applyForceFail,
  applyHeartbeat,
  applyRelease,
  applyReset,
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
  requireHolder,
  sameShardShape,
  toShardRecord,
} from './shard-state';

/** The schema this code writes (`PRAGMA user_version`). */
export const SQLITE_SCHEMA_VERSION = 2;
/** How long a verb waits for another process's write lock by default: 30 s. */
export const DEFAULT_BUSY_TIMEOUT_MS = 30_000;

/** Options of `SqliteLedger.open`. */
export interface SqliteLedgerOptions {
  clock: Clock;
  /** How long to wait for another process's lock before failing; default 30 s. */
  busyTimeoutMs?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS datasets (
  dataset_id TEXT PRIMARY KEY,
  dataset_uri TEXT NOT NULL,
  num_shards INTEGER NOT NULL,
  total_tasks INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  registered_at TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS shards (
  dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
  shard_id INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('available', 'in_use', 'completed', 'failed')),
  assigned_to TEXT,
  started_at INTEGER,
  completed_at INTEGER,
  lease_expires_at INTEGER,
  heartbeat_at INTEGER,
  lease_ms INTEGER,
  epoch INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  last_error TEXT,
  total_tasks INTEGER NOT NULL,
  first_task_index INTEGER NOT NULL,
  num_chunks INTEGER NOT NULL,
  total_bytes INTEGER NOT NULL,
  next_task_index INTEGER NOT NULL,
  claim_next_task_index INTEGER,
  parts_committed INTEGER NOT NULL,
  samples_committed INTEGER NOT NULL,
  bytes_committed INTEGER NOT NULL,
  forced_action TEXT,
  forced_by TEXT,
  forced_at INTEGER,
  reset_by TEXT,
  reset_at INTEGER,
  manifest TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (dataset_id, shard_id)
) STRICT;
CREATE INDEX IF NOT EXISTS shards_by_lease ON shards (status, lease_expires_at);
CREATE TABLE IF NOT EXISTS parts (
  dataset_id TEXT NOT NULL,
  shard_id INTEGER NOT NULL,
  part_index INTEGER NOT NULL,
  name TEXT NOT NULL,
  first_task_index INTEGER NOT NULL,
  last_task_index INTEGER NOT NULL,
  next_task_index INTEGER NOT NULL,
  samples INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  checksums TEXT NOT NULL,
  worker_id TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  committed_at TEXT NOT NULL,
  PRIMARY KEY (dataset_id, shard_id, part_index),
  FOREIGN KEY (dataset_id, shard_id) REFERENCES shards (dataset_id, shard_id)
) STRICT;
`;

const int = z.number().int();
const optInt = int.nullable();
const ManifestSchema = z.object({
  parts: int,
  samples: int,
  bytes: int,
  uri: z.string().optional(),
  checksum: z.string().optional(),
});

/** A `shards` row, decoded at the edge (the file may come from another version). */
const ShardRowSchema = z.object({
  dataset_id: z.string(),
  shard_id: int,
  status: z.enum(SHARD_STATUSES),
  assigned_to: z.string().nullable(),
  started_at: optInt,
  completed_at: optInt,
  lease_expires_at: optInt,
  heartbeat_at: optInt,
  lease_ms: optInt,
  epoch: int,
  attempts: int,
  max_attempts: int,
  last_error: z.string().nullable(),
  total_tasks: int,
  first_task_index: int,
  num_chunks: int,
  total_bytes: int,
  next_task_index: int,
  claim_next_task_index: optInt,
  parts_committed: int,
  samples_committed: int,
  bytes_committed: int,
  forced_action: z.enum(['complete', 'fail']).nullable(),
  forced_by: z.string().nullable(),
  forced_at: optInt,
  reset_by: z.string().nullable(),
  reset_at: optInt,
  manifest: z.string().nullable(),
  updated_at: int,
});
type ShardRow = z.infer<typeof ShardRowSchema>;

const DatasetRowSchema = z.object({
  dataset_id: z.string(),
  dataset_uri: z.string(),
  num_shards: int,
  total_tasks: int,
  max_attempts: int,
  fingerprint: z.string(),
  registered_at: z.string(),
});

const PartRowSchema = z.object({
  dataset_id: z.string(),
  shard_id: int,
  part_index: int,
  name: z.string(),
  first_task_index: int,
  last_task_index: int,
  next_task_index: int,
  samples: int,
  bytes: int,
  checksums: z.string(),
  worker_id: z.string(),
  epoch: int,
  committed_at: z.string(),
});

function stateOf(row: unknown): { ref: ShardRef; state: ShardState } {
  const r: ShardRow = ShardRowSchema.parse(row);
  const { dataset_id, shard_id, manifest, ...rest } = r;
  return {
    ref: { dataset_id, shard_id },
    state: {
      ...rest,
      manifest: manifest === null ? null : ManifestSchema.parse(JSON.parse(manifest)),
    },
  };
}

function rowOf(ref: ShardRef, s: ShardState): ShardRow {
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    ...s,
    manifest: s.manifest === null ? null : JSON.stringify(s.manifest),
  };
}

function partOf(row: unknown): PartRecord {
  const r = PartRowSchema.parse(row);
  return {
    ...r,
    checksums: z.record(z.string(), z.string()).parse(JSON.parse(r.checksums)),
  };
}

const SHARD_COLUMNS = Object.keys(ShardRowSchema.shape);
const UPDATABLE = SHARD_COLUMNS.filter((c) => c !== 'dataset_id' && c !== 'shard_id');

/** Blocks this thread for `ms` (only while opening a file another process is converting). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The SQLite implementation of the `Ledger` port. */
export class SqliteLedger implements Ledger {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  private readonly clock: Clock;
  private readonly db: Database.Database;
  private readonly stmt: {
    dataset: Database.Statement;
    shard: Database.Statement;
    shards: Database.Statement;
    claimable: Database.Statement;
    expired: Database.Statement;
    expiredIn: Database.Statement;
    insertDataset: Database.Statement;
    insertShard: Database.Statement;
    updateShard: Database.Statement;
    part: Database.Statement;
    parts: Database.Statement;
    insertPart: Database.Statement;
    deleteParts: Database.Statement;
  };

  private constructor(file: string, options: SqliteLedgerOptions) {
    this.location = file;
    this.clock = options.clock;
    this.db = new Database(file);
    this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS}`);
    this.init();
    const db = this.db;
    this.stmt = {
      dataset: db.prepare('SELECT * FROM datasets WHERE dataset_id = ?'),
      shard: db.prepare('SELECT * FROM shards WHERE dataset_id = ? AND shard_id = ?'),
      shards: db.prepare('SELECT * FROM shards WHERE dataset_id = ? ORDER BY shard_id'),
      claimable: db.prepare(
        `SELECT * FROM shards WHERE dataset_id = ? AND (status = 'available'
           OR (status = 'in_use' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)))`,
      ),
      expired: db.prepare(
        `SELECT * FROM shards WHERE status = 'in_use' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
           ORDER BY lease_expires_at LIMIT ?`,
      ),
      expiredIn: db.prepare(
        `SELECT * FROM shards WHERE dataset_id = ? AND status = 'in_use'
           AND (lease_expires_at IS NULL OR lease_expires_at <= ?) ORDER BY lease_expires_at LIMIT ?`,
      ),
      insertDataset: db.prepare(
        `INSERT INTO datasets (dataset_id, dataset_uri, num_shards, total_tasks, max_attempts, fingerprint, registered_at)
           VALUES (@dataset_id, @dataset_uri, @num_shards, @total_tasks, @max_attempts, @fingerprint, @registered_at)`,
      ),
      insertShard: db.prepare(
        `INSERT INTO shards (${SHARD_COLUMNS.join(', ')}) VALUES (${SHARD_COLUMNS.map((c) => `@${c}`).join(', ')})`,
      ),
      updateShard: db.prepare(
        `UPDATE shards SET ${UPDATABLE.map((c) => `${c} = @${c}`).join(', ')}
           WHERE dataset_id = @dataset_id AND shard_id = @shard_id`,
      ),
      part: db.prepare(
        'SELECT * FROM parts WHERE dataset_id = ? AND shard_id = ? AND part_index = ?',
      ),
      parts: db.prepare(
        'SELECT * FROM parts WHERE dataset_id = ? AND shard_id = ? ORDER BY part_index',
      ),
      insertPart: db.prepare(
        `INSERT INTO parts (dataset_id, shard_id, part_index, name, first_task_index, last_task_index,
           next_task_index, samples, bytes, checksums, worker_id, epoch, committed_at)
         VALUES (@dataset_id, @shard_id, @part_index, @name, @first_task_index, @last_task_index,
           @next_task_index, @samples, @bytes, @checksums, @worker_id, @epoch, @committed_at)`,
      ),
      deleteParts: db.prepare('DELETE FROM parts WHERE dataset_id = ? AND shard_id = ?'),
    };
  }

  /** Opens (creating if needed) the ledger file at `file`. */
  static open(file: string, options: SqliteLedgerOptions): SqliteLedger {
    return new SqliteLedger(file, options);
  }

  /**
   * WAL mode and the schema. Switching a new file to WAL needs an exclusive lock that the busy
   * handler does not always wait for, so several processes opening one new file at once retry
   * here (bounded; jitter from the pid spreads them).
   */
  private init(): void {
    for (let attempt = 1; ; attempt++) {
      try {
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = NORMAL');
        this.db.pragma('foreign_keys = ON');
        this.db
          .transaction(() => {
            const version = this.db.pragma('user_version', { simple: true }) as number;
            if (version > SQLITE_SCHEMA_VERSION) {
              throw new ShardlineError(
                'LEDGER',
                `${this.location} was written by a newer shardline (schema ${version}, this one knows ${SQLITE_SCHEMA_VERSION})`,
              );
            }
            // Schema 1 (shardline 0.1.0 before the progress rule) lacks one column.
            if (version === 1)
              this.db.exec('ALTER TABLE shards ADD COLUMN claim_next_task_index INTEGER');
            this.db.exec(SCHEMA);
            if (version < SQLITE_SCHEMA_VERSION)
              this.db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
          })
          .immediate();
        return;
      } catch (e: unknown) {
        if (!String(errorCode(e)).startsWith('SQLITE_BUSY') || attempt >= 20) {
          this.db.close();
          if (e instanceof ShardlineError) throw e;
          throw new ShardlineError(
            'LEDGER',
            `cannot open the ledger ${this.location}: ${(e as Error).message}`,
            {
              cause: e,
            },
          );
        }
        sleepSync(20 * attempt + (process.pid % 37));
      }
    }
  }

  /** Runs `fn` as one `BEGIN IMMEDIATE` transaction. */
  private write<T>(fn: () => T): T {
    return this.run(() => this.db.transaction(fn).immediate());
  }

  /** Runs `fn` as one read transaction (a consistent snapshot). */
  private read<T>(fn: () => T): T {
    return this.run(() => this.db.transaction(fn).deferred());
  }

  private run<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e: unknown) {
      if (e instanceof ShardlineError) throw e;
      throw new ShardlineError('LEDGER', `ledger ${this.location}: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  private datasetRow(datasetId: string): DatasetRecord | null {
    const row: unknown = this.stmt.dataset.get(datasetId);
    return row === undefined ? null : DatasetRowSchema.parse(row);
  }

  private shardState(datasetId: string, shardId: number): ShardState | null {
    const row: unknown = this.stmt.shard.get(datasetId, shardId);
    return row === undefined ? null : stateOf(row).state;
  }

  private save(ref: ShardRef, s: ShardState): void {
    this.stmt.updateShard.run(rowOf(ref, s));
  }

  private requireDataset(datasetId: string): DatasetRecord {
    const ds = this.datasetRow(checkDatasetId(datasetId));
    if (!ds)
      throw new ShardlineError(
        'NOT_FOUND',
        `dataset ${datasetId} is not registered in ${this.location}`,
      );
    return ds;
  }

  private requireShard(datasetId: string, shardId: number): ShardState {
    this.requireDataset(datasetId);
    const s = this.shardState(datasetId, shardId);
    if (!s) throw new ShardlineError('NOT_FOUND', `dataset ${datasetId} has no shard ${shardId}`);
    return s;
  }

  registerDataset(master: MasterMetadata, options: RegisterOptions): Promise<RegisterResult> {
    return this.settle(() => {
      checkMasterForRegistration(master);
      const maxAttempts = checkMaxAttempts(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
      return this.write(() => {
        const existing = this.datasetRow(master.dataset_id);
        if (existing) {
          checkSameDataset(existing, master);
          return { created: false, dataset: existing };
        }
        const now = this.clock.nowMs();
        const dataset = newDatasetRecord(master, options.datasetUri, maxAttempts, now);
        this.stmt.insertDataset.run(dataset);
        for (const entry of master.shards) {
          const ref = { dataset_id: master.dataset_id, shard_id: entry.shard_id };
          const old = this.shardState(ref.dataset_id, ref.shard_id);
          // Rows without a dataset row cannot exist (one transaction), but be strict anyway.
          if (old && !sameShardShape(old, entry))
            throw new ShardlineError(
              'DATASET_CONFLICT',
              `shard ${entry.shard_id} of ${master.dataset_id} differs`,
            );
          if (!old) this.stmt.insertShard.run(rowOf(ref, newShardState(entry, maxAttempts, now)));
        }
        return { created: true, dataset };
      });
    });
  }

  getDataset(datasetId: string): Promise<DatasetRecord | null> {
    return this.settle(() => this.run(() => this.datasetRow(checkDatasetId(datasetId))));
  }

  getShard(datasetId: string, shardId: number): Promise<ShardRecord | null> {
    return this.settle(() =>
      this.read(() => {
        const s = this.shardState(checkDatasetId(datasetId), shardId);
        return s === null ? null : toShardRecord({ dataset_id: datasetId, shard_id: shardId }, s);
      }),
    );
  }

  claim(datasetId: string, workerId: string, options: ClaimOptions = {}): Promise<Claim | null> {
    return this.settle(() => {
      checkWorkerId(workerId);
      const leaseMs = checkLeaseMs(options.leaseMs);
      return this.write(() => {
        this.requireDataset(datasetId);
        const now = this.clock.nowMs();
        const rows = this.stmt.claimable.all(datasetId, now).map(stateOf);
        const byId = new Map(rows.map((r) => [r.ref.shard_id, r]));
        for (const id of candidateOrder([...byId.keys()], workerId, options.preferredShardId)) {
          const { ref, state } = byId.get(id)!;
          const verdict = claimability(state, now);
          if (verdict === 'exhausted') this.save(ref, applyExpiry(state, now));
          if (verdict !== 'claimable') continue;
          const next = applyClaim(state, workerId, now, leaseMs);
          this.save(ref, next);
          return claimOf(ref, next);
        }
        return null;
      });
    });
  }

  heartbeat(claim: Claim, options: { leaseMs?: number } = {}): Promise<Claim> {
    return this.settle(() =>
      this.write(() => {
        const now = this.clock.nowMs();
        const s = requireHolder(
          this.shardState(claim.dataset_id, claim.shard_id),
          claim,
          'heartbeat',
        );
        const next = applyHeartbeat(s, now, options.leaseMs);
        this.save(claim, next);
        return claimOf(claim, next);
      }),
    );
  }

  commitPart(claim: Claim, part: PartInput): Promise<PartRecord> {
    return this.settle(() =>
      this.write(() => {
        const now = this.clock.nowMs();
        const s = requireHolder(
          this.shardState(claim.dataset_id, claim.shard_id),
          claim,
          'commitPart',
        );
        const existingRow: unknown = this.stmt.part.get(
          claim.dataset_id,
          claim.shard_id,
          part.part_index,
        );
        const existing = existingRow === undefined ? null : partOf(existingRow);
        const decision = applyCommitPart(s, claim, part, existing, now);
        this.save(claim, decision.state);
        if (!decision.duplicate)
          this.stmt.insertPart.run({
            ...decision.record,
            checksums: JSON.stringify(decision.record.checksums),
          });
        return decision.record;
      }),
    );
  }

  complete(claim: Claim, manifest?: ManifestSummary): Promise<ShardRecord> {
    return this.settle(() =>
      this.write(() => {
        const now = this.clock.nowMs();
        const s = this.shardState(claim.dataset_id, claim.shard_id);
        const next = applyComplete(s, claim, manifest, now);
        if (next) this.save(claim, next);
        return toShardRecord(claim, next ?? s!);
      }),
    );
  }

  fail(claim: Claim, reason: string): Promise<ShardRecord> {
    return this.holderVerb(claim, (s, now) => applyFail(s, claim, reason, now));
  }

  release(claim: Claim): Promise<ShardRecord> {
    return this.holderVerb(claim, (s, now) => applyRelease(s, claim, now));
  }

  private holderVerb(
    claim: Claim,
    decide: (s: ShardState | null, nowMs: number) => ShardState,
  ): Promise<ShardRecord> {
    return this.settle(() =>
      this.write(() => {
        const next = decide(this.shardState(claim.dataset_id, claim.shard_id), this.clock.nowMs());
        this.save(claim, next);
        return toShardRecord(claim, next);
      }),
    );
  }

  private operatorVerb(
    datasetId: string,
    shardId: number,
    by: string,
    decide: (s: ShardState, nowMs: number) => ShardState | null,
    after?: (ref: ShardRef) => void,
  ): Promise<ShardRecord> {
    return this.settle(() => {
      checkWorkerId(by, 'operator name');
      return this.write(() => {
        const s = this.requireShard(datasetId, shardId);
        const ref = { dataset_id: datasetId, shard_id: shardId };
        const next = decide(s, this.clock.nowMs());
        if (next) this.save(ref, next);
        after?.(ref);
        return toShardRecord(ref, next ?? s);
      });
    });
  }

  forceComplete(
    datasetId: string,
    shardId: number,
    by: string,
    manifest?: ManifestSummary,
  ): Promise<ShardRecord> {
    return this.operatorVerb(datasetId, shardId, by, (s, now) =>
      applyForceComplete(s, shardId, by, manifest, now),
    );
  }

  forceFail(datasetId: string, shardId: number, by: string, reason: string): Promise<ShardRecord> {
    return this.operatorVerb(datasetId, shardId, by, (s, now) =>
      applyForceFail(s, by, reason, now),
    );
  }

  reset(
    datasetId: string,
    shardId: number,
    by: string,
    options: ResetOptions = {},
  ): Promise<ShardRecord> {
    const discard = options.discardParts ?? false;
    return this.operatorVerb(
      datasetId,
      shardId,
      by,
      (s, now) => applyReset(s, by, now, discard),
      discard ? (ref) => void this.stmt.deleteParts.run(ref.dataset_id, ref.shard_id) : undefined,
    );
  }

  reapExpired(nowMs?: number, options: ReapOptions = {}): Promise<ReapedShard[]> {
    return this.settle(() =>
      this.write(() => {
        const now = nowMs ?? this.clock.nowMs();
        const limit = options.limit ?? 500;
        const rows =
          options.datasetId === undefined
            ? this.stmt.expired.all(now, limit)
            : this.stmt.expiredIn.all(checkDatasetId(options.datasetId), now, limit);
        const reaped: ReapedShard[] = [];
        for (const { ref, state } of rows.map(stateOf)) {
          if (!leaseExpired(state, now)) continue;
          const next = applyExpiry(state, now);
          this.save(ref, next);
          reaped.push({
            ...ref,
            worker_id: state.assigned_to ?? '',
            epoch: state.epoch,
            status: next.status === 'failed' ? 'failed' : 'available',
            attempts: next.attempts,
            last_error: next.last_error ?? '',
          });
        }
        return reaped;
      }),
    );
  }

  status(datasetId: string): Promise<LedgerStatus> {
    return this.settle(() =>
      this.read(() => {
        const dataset = this.requireDataset(datasetId);
        const shards = this.stmt.shards.all(datasetId).map(stateOf);
        return buildStatus(
          dataset,
          shards.map((r) => ({ shard_id: r.ref.shard_id, state: r.state })),
          this.clock.nowMs(),
        );
      }),
    );
  }

  listParts(ref: ShardRef): Promise<PartRecord[]> {
    return this.settle(() =>
      this.read(() =>
        this.stmt.parts.all(checkDatasetId(ref.dataset_id), ref.shard_id).map(partOf),
      ),
    );
  }

  close(): Promise<void> {
    return this.settle(() => {
      if (this.db.open) this.db.close();
    });
  }

  /** Runs synchronous work so that its errors become rejections, as the async port promises. */
  private settle<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (e: unknown) {
      return Promise.reject(toError(e));
    }
  }
}
