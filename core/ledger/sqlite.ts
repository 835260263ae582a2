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

import type { Clock } from '../clock';
import type { MasterMetadata } from '../dataset/metadata';
import { ShardlineError, errorCode, toError } from '../errors';
import { checkDatasetId } from '../dataset/id';
import { candidateOrder } from './candidates';
import type { Decide, DecideUnits } from './verbs';
import { LedgerVerbs, reapedOf, unitOf } from './verbs';
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
import type { Fields } from './record-schema';
import { codecOf, fieldNames, sqlColumn, sqlColumns } from './record-schema';
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
  requireHolder,
  sameShardShape,
  splitCandidates,
  toShardRecord,
} from './shard-state';

/**
 * The schema this code writes (`PRAGMA user_version`). 4: work units (the shards and parts
 * tables keyed by unit too; older files are rebuilt on open).
 */
export const SQLITE_SCHEMA_VERSION = 4;
/** How long a verb waits for another process's write lock by default: 30 s. */
export const DEFAULT_BUSY_TIMEOUT_MS = 30_000;

/** Options of `SqliteLedger.open`. */
export interface SqliteLedgerOptions {
  clock: Clock;
  /** How long to wait for another process's lock before failing; default 30 s. */
  busyTimeoutMs?: number;
}

const SHARD_KEYS = {
  dataset_id: { kind: 'text' },
  shard_id: { kind: 'int' },
  unit: { kind: 'int' },
} as const;
const SHARD_COLUMNS = [...fieldNames(SHARD_KEYS), ...fieldNames(SHARD_FIELDS)];
const UPDATABLE = fieldNames(SHARD_FIELDS);
const PART_COLUMNS = fieldNames(PART_FIELDS);
const DATASET_COLUMNS = fieldNames(DATASET_FIELDS);

/** The tables, from the record definitions (core/ledger/schema.ts). */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS datasets (
  ${sqlColumns(DATASET_FIELDS).join(',\n  ')},
  PRIMARY KEY (dataset_id)
) STRICT;
CREATE TABLE IF NOT EXISTS shards (
  dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
  shard_id INTEGER NOT NULL,
  unit INTEGER NOT NULL DEFAULT 0,
  ${sqlColumns(SHARD_FIELDS).join(',\n  ')},
  PRIMARY KEY (dataset_id, shard_id, unit)
) STRICT;
CREATE INDEX IF NOT EXISTS shards_by_lease ON shards (status, lease_expires_at);
CREATE TABLE IF NOT EXISTS parts (
  ${sqlColumns(PART_FIELDS).join(',\n  ')},
  PRIMARY KEY (dataset_id, shard_id, unit, part_index),
  FOREIGN KEY (dataset_id, shard_id, unit) REFERENCES shards (dataset_id, shard_id, unit)
) STRICT;
`;

/** Each table with the fields it stores. */
const TABLES: ReadonlyArray<[string, Fields]> = [
  ['datasets', DATASET_FIELDS],
  ['shards', SHARD_FIELDS],
  ['parts', PART_FIELDS],
];

const shardCodec = codecOf(SHARD_FIELDS, 'sqlite');
const shardKeyCodec = codecOf(SHARD_KEYS, 'sqlite');
const datasetCodec = codecOf(DATASET_FIELDS, 'sqlite');
const partCodec = codecOf(PART_FIELDS, 'sqlite');

function stateOf(row: unknown): { ref: Required<UnitRef>; state: ShardState } {
  return {
    ref: shardKeyCodec.decode(row, 'shard row'),
    state: shardCodec.decode(row, 'shard row'),
  };
}

function rowOf(ref: UnitRef, s: ShardState): Record<string, unknown> {
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    unit: unitOf(ref),
    ...shardCodec.encode(s),
  };
}

/** `units` as the map the state machine's shard-level decisions read. */
function unitMap(rows: ReadonlyArray<{ ref: Required<UnitRef>; state: ShardState }>): ShardUnits {
  return new Map(rows.map((r) => [r.ref.unit, r.state]));
}

const insertSql = (table: string, columns: readonly string[]): string =>
  `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map((c) => `@${c}`).join(', ')})`;

/** Blocks this thread for `ms` (only while opening a file another process is converting). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The SQLite implementation of the `Ledger` port. */
export class SqliteLedger extends LedgerVerbs implements Ledger {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  private readonly clock: Clock;
  private readonly db: Database.Database;
  private readonly stmt: {
    dataset: Database.Statement;
    unit: Database.Statement;
    units: Database.Statement;
    shards: Database.Statement;
    claimable: Database.Statement;
    held: Database.Statement;
    expired: Database.Statement;
    expiredIn: Database.Statement;
    insertDataset: Database.Statement;
    insertShard: Database.Statement;
    updateShard: Database.Statement;
    part: Database.Statement;
    parts: Database.Statement;
    shardParts: Database.Statement;
    insertPart: Database.Statement;
    deleteParts: Database.Statement;
  };

  private constructor(file: string, options: SqliteLedgerOptions) {
    super();
    this.location = file;
    this.clock = options.clock;
    this.db = new Database(file);
    this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS}`);
    this.init();
    const db = this.db;
    this.stmt = {
      dataset: db.prepare('SELECT * FROM datasets WHERE dataset_id = ?'),
      unit: db.prepare('SELECT * FROM shards WHERE dataset_id = ? AND shard_id = ? AND unit = ?'),
      units: db.prepare('SELECT * FROM shards WHERE dataset_id = ? AND shard_id = ? ORDER BY unit'),
      shards: db.prepare('SELECT * FROM shards WHERE dataset_id = ? ORDER BY shard_id, unit'),
      claimable: db.prepare(
        `SELECT * FROM shards WHERE dataset_id = ? AND (status = 'available'
           OR (status = 'in_use' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)))`,
      ),
      held: db.prepare(`SELECT * FROM shards WHERE dataset_id = ? AND status = 'in_use'`),
      expired: db.prepare(
        `SELECT * FROM shards WHERE status = 'in_use' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
           ORDER BY lease_expires_at LIMIT ?`,
      ),
      expiredIn: db.prepare(
        `SELECT * FROM shards WHERE dataset_id = ? AND status = 'in_use'
           AND (lease_expires_at IS NULL OR lease_expires_at <= ?) ORDER BY lease_expires_at LIMIT ?`,
      ),
      insertDataset: db.prepare(insertSql('datasets', DATASET_COLUMNS)),
      insertShard: db.prepare(insertSql('shards', SHARD_COLUMNS)),
      updateShard: db.prepare(
        `UPDATE shards SET ${UPDATABLE.map((c) => `${c} = @${c}`).join(', ')}
           WHERE dataset_id = @dataset_id AND shard_id = @shard_id AND unit = @unit`,
      ),
      part: db.prepare(
        'SELECT * FROM parts WHERE dataset_id = ? AND shard_id = ? AND unit = ? AND part_index = ?',
      ),
      parts: db.prepare(
        'SELECT * FROM parts WHERE dataset_id = ? AND shard_id = ? AND unit = ? ORDER BY part_index',
      ),
      shardParts: db.prepare(
        `SELECT * FROM parts WHERE dataset_id = ? AND shard_id = ?
           ORDER BY first_task_index, first_sample, unit, part_index`,
      ),
      insertPart: db.prepare(insertSql('parts', PART_COLUMNS)),
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
            this.db.exec(SCHEMA);
            // A file from an older version lacks the columns of fields added since (schema 1,
            // before the progress rule, lacks claim_next_task_index): add them.
            for (const [table, fields] of TABLES) {
              const have = this.columnsOf(table);
              for (const [name, spec] of Object.entries(fields))
                if (!have.has(name))
                  this.db.exec(`ALTER TABLE ${table} ADD COLUMN ${sqlColumn(name, spec, true)}`);
            }
            // Before schema 4 a shard had one row and its parts were keyed by shard: rebuild
            // both tables keyed by unit too (every old row is unit 0).
            if (!this.columnsOf('shards').has('unit')) this.keyByUnit();
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

  private columnsOf(table: string): Set<string> {
    return new Set(
      (this.db.pragma(`table_info(${table})`) as Array<{ name: string }>).map((c) => c.name),
    );
  }

  /** The schema-4 migration, inside `init`'s transaction: copy into tables keyed by unit. */
  private keyByUnit(): void {
    const shardCols = fieldNames(SHARD_FIELDS).join(', ');
    const partCols = PART_COLUMNS.join(', ');
    this.db.exec(`
      DROP INDEX IF EXISTS shards_by_lease;
      ALTER TABLE parts RENAME TO parts_v3;
      ALTER TABLE shards RENAME TO shards_v3;
      ${SCHEMA}
      INSERT INTO shards (dataset_id, shard_id, unit, ${shardCols})
        SELECT dataset_id, shard_id, 0, ${shardCols} FROM shards_v3;
      INSERT INTO parts (${partCols}) SELECT ${partCols} FROM parts_v3;
      DROP TABLE parts_v3;
      DROP TABLE shards_v3;
    `);
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
    return row === undefined ? null : datasetCodec.decode(row, `dataset ${datasetId}`);
  }

  private unitState(ref: UnitRef): ShardState | null {
    const row: unknown = this.stmt.unit.get(ref.dataset_id, ref.shard_id, unitOf(ref));
    return row === undefined ? null : stateOf(row).state;
  }

  /** Other units of the dataset whose holder was lost with `s`'s (read in the transaction). */
  private peersLost(ref: UnitRef, s: ShardState, nowMs: number): number {
    const others = this.stmt.shards
      .all(ref.dataset_id)
      .map(stateOf)
      .filter((o) => o.ref.shard_id !== ref.shard_id || o.ref.unit !== unitOf(ref))
      .map((o) => o.state);
    return peersLostWith(s, others, nowMs);
  }

  private save(ref: UnitRef, s: ShardState): void {
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

  /** Every unit of the shard, read in the transaction; `NOT_FOUND` without its unit 0. */
  private requireUnits(ref: ShardRef): ShardUnits {
    this.requireDataset(ref.dataset_id);
    const units = unitMap(this.stmt.units.all(ref.dataset_id, ref.shard_id).map(stateOf));
    if (!units.has(0))
      throw new ShardlineError(
        'NOT_FOUND',
        `dataset ${ref.dataset_id} has no shard ${ref.shard_id}`,
      );
    return units;
  }

  /** Writes what a shard-level decision decided: updates, and inserts for new units. */
  private saveUnits(
    ref: ShardRef,
    read: ShardUnits,
    writes: ReadonlyMap<number, ShardState>,
  ): void {
    for (const [unit, state] of writes) {
      const at = { ...ref, unit };
      if (read.has(unit)) this.save(at, state);
      else this.stmt.insertShard.run(rowOf(at, state));
    }
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
        this.stmt.insertDataset.run(datasetCodec.encode(dataset));
        for (const entry of master.shards) {
          const ref = { dataset_id: master.dataset_id, shard_id: entry.shard_id };
          const old = this.unitState(ref);
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

  getShard(datasetId: string, shardId: number, unit = 0): Promise<ShardRecord | null> {
    return this.settle(() =>
      this.read(() => {
        const ref = { dataset_id: checkDatasetId(datasetId), shard_id: shardId, unit };
        const s = this.unitState(ref);
        return s === null ? null : toShardRecord(ref, s);
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
        const byShard = new Map<number, typeof rows>();
        for (const r of rows)
          byShard.set(r.ref.shard_id, [...(byShard.get(r.ref.shard_id) ?? []), r]);
        const order = candidateOrder(
          [...byShard.keys()],
          workerId,
          options.preferredShardId,
          0,
          options.avoidShardIds,
        );
        for (const id of order) {
          for (const { ref, state } of byShard.get(id)!.sort((a, b) => a.ref.unit - b.ref.unit)) {
            const peers = leaseExpired(state, now) ? this.peersLost(ref, state, now) : 0;
            const verdict = claimability(state, now, peers);
            if (verdict === 'expire') this.save(ref, applyExpiry(state, now, peers));
            if (verdict !== 'claimable') continue;
            const next = applyClaim(state, workerId, now, leaseMs, peers);
            this.save(ref, next);
            return claimOf(ref, next);
          }
        }
        return null;
      });
    });
  }

  split(
    datasetId: string,
    workerId: string,
    options: SplitOptions = {},
  ): Promise<SplitResult | null> {
    return this.settle(() => {
      checkWorkerId(workerId);
      const leaseMs = checkLeaseMs(options.leaseMs ?? DEFAULT_LEASE_MS);
      return this.write((): SplitResult | null => {
        this.requireDataset(datasetId);
        const now = this.clock.nowMs();
        const held = this.stmt.held.all(datasetId).map(stateOf);
        const [best] = splitCandidates(
          held.map((r) => ({ shard_id: r.ref.shard_id, unit: r.ref.unit, state: r.state })),
          workerId,
          options,
        );
        if (!best) return null;
        const ref = { dataset_id: datasetId, shard_id: best.shard_id };
        const units = this.requireUnits(ref);
        const from = units.get(best.unit)!;
        const split = applySplit(units, best.unit, best.at, workerId, now, leaseMs);
        this.saveUnits(ref, units, split.writes);
        return {
          claim: claimOf({ ...ref, unit: split.unit }, split.state),
          from: { ...ref, unit: best.unit, holder: from.assigned_to, end_task_index: best.at },
        };
      });
    });
  }

  commitPart(claim: Claim, part: PartInput): Promise<PartRecord> {
    return this.settle(() =>
      this.write(() => {
        const now = this.clock.nowMs();
        const s = requireHolder(this.unitState(claim), claim, 'commitPart');
        const existingRow: unknown = this.stmt.part.get(
          claim.dataset_id,
          claim.shard_id,
          unitOf(claim),
          part.part_index,
        );
        const existing = existingRow === undefined ? null : partCodec.decode(existingRow, 'part');
        const decision = applyCommitPart(s, claim, part, existing, now);
        this.save(claim, decision.state);
        if (!decision.duplicate) this.stmt.insertPart.run(partCodec.encode(decision.record));
        return decision.record;
      }),
    );
  }

  protected holderVerb(claim: Claim, decide: Decide): Promise<ShardRecord> {
    return this.settle(() =>
      this.write(() => {
        const s = this.unitState(claim);
        const next = decide(s, this.clock.nowMs());
        if (next) this.save(claim, next);
        return toShardRecord(claim, (next ?? s)!);
      }),
    );
  }

  protected shardVerb<T>(ref: ShardRef, decide: DecideUnits<T>): Promise<T> {
    return this.settle(() =>
      this.write(() => {
        const units = this.requireUnits(ref);
        const decision = decide(units, this.clock.nowMs());
        this.saveUnits(ref, units, decision.writes);
        if (decision.discardParts) this.stmt.deleteParts.run(ref.dataset_id, ref.shard_id);
        return decision.result;
      }),
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
          const next = applyExpiry(state, now, this.peersLost(ref, state, now));
          this.save(ref, next);
          reaped.push(reapedOf(ref, state, next));
        }
        return reaped;
      }),
    );
  }

  status(datasetId: string): Promise<LedgerStatus> {
    return this.settle(() =>
      this.read(() => {
        const dataset = this.requireDataset(datasetId);
        const rows = this.stmt.shards.all(datasetId).map(stateOf);
        return buildStatus(
          dataset,
          rows.map((r) => ({ shard_id: r.ref.shard_id, unit: r.ref.unit, state: r.state })),
          this.clock.nowMs(),
        );
      }),
    );
  }

  listParts(ref: UnitRef): Promise<PartRecord[]> {
    return this.settle(() =>
      this.read(() =>
        this.stmt.parts
          .all(checkDatasetId(ref.dataset_id), ref.shard_id, unitOf(ref))
          .map((row) => partCodec.decode(row, 'part')),
      ),
    );
  }

  listShardParts(ref: ShardRef): Promise<PartRecord[]> {
    return this.settle(() =>
      this.read(() =>
        this.stmt.shardParts
          .all(checkDatasetId(ref.dataset_id), ref.shard_id)
          .map((row) => partCodec.decode(row, 'part')),
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
