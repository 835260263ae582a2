/**
 * The ledger's records are defined once (core/ledger/schema.ts): no other module lists the
 * shard's fields again, both stores' codecs give back what they were given, and an SQLite file
 * written before a field existed gains its column when opened (one written before work units
 * is rebuilt keyed by unit).
 */
import Database from 'better-sqlite3';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';

import { codecOf, fieldNames } from '../../../core/ledger/record-schema';
import type { ShardState } from '../../../core/ledger/schema';
import { SHARD_FIELDS } from '../../../core/ledger/schema';
import { SQLITE_SCHEMA_VERSION, SqliteLedger } from '../../../core/ledger/sqlite';
import { FakeClock, T0, makeDataset } from '../../support/ledger-fixtures';
import { makeTempDir } from '../../support/tmp';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const { dir, cleanup } = makeTempDir('record-schema');
afterAll(cleanup);

const SHARD_NAMES = fieldNames(SHARD_FIELDS);

/** Every .ts file under `folder`, relative to the root. */
function sourcesIn(folder: string): string[] {
  return readdirSync(path.join(ROOT, folder), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => path.join(folder, f));
}

/** The longest run of lines that are object keys or members named like the shard's fields. */
function longestFieldRun(text: string): number {
  const key = new RegExp(String.raw`^\s*(${SHARD_NAMES.join('|')})\??\s*:`);
  let best = 0;
  let run = new Set<string>();
  for (const line of text.split('\n')) {
    if (/^\s*(\/\/|\/?\*|$)/.test(line)) continue; // comments and blank lines inside a list
    const m = key.exec(line);
    if (m) run.add(m[1]!);
    else run = new Set();
    best = Math.max(best, run.size);
  }
  return best;
}

test("no module but schema.ts lists the shard record's fields", () => {
  const sources = ['core', 'cli', 'worker', 'functions'].flatMap(sourcesIn);
  expect(sources.length).toBeGreaterThan(50);
  // A second list of the record is a run of keys naming most of its fields (the old code had
  // seven, each of all of them); a verb that sets the fields it changes is not one.
  const lists = sources
    .map((file) => ({ file, run: longestFieldRun(readFileSync(path.join(ROOT, file), 'utf8')) }))
    .filter((x) => x.run >= (SHARD_NAMES.length * 3) / 4);
  expect(lists.map((x) => x.file)).toEqual(['core/ledger/schema.ts']);
});

const full: ShardState = {
  status: 'in_use',
  assigned_to: 'w1',
  started_at: T0,
  completed_at: null,
  lease_expires_at: T0 + 60_000,
  heartbeat_at: T0 + 1,
  lease_ms: 60_000,
  epoch: 3,
  attempts: 1,
  max_attempts: 3,
  last_error: "it's 'quoted'",
  retry_at: T0 + 30_000,
  lost_at: T0 - 1,
  total_tasks: 10,
  first_task_index: 20,
  num_chunks: 2,
  total_bytes: 999,
  start_task_index: 22,
  end_task_index: 28,
  reserved_task_index: 26,
  split_from: 0,
  split_tasks_per_part: 12,
  unit_count: 0,
  units_completed: 0,
  next_task_index: 25,
  next_sample: 3,
  run_fingerprint: 'abc',
  claim_next_task_index: 20,
  claim_next_sample: 2,
  parts_committed: 1,
  samples_committed: 40,
  bytes_committed: 5000,
  forced_action: 'fail',
  forced_by: 'op',
  forced_at: T0 + 5,
  reset_by: null,
  reset_at: null,
  manifest: { parts: 1, samples: 40, bytes: 5000, uri: 'gs://b/m.json' },
  history: [
    { at: T0, kind: 'claim', worker: 'w0', epoch: 2 },
    { at: T0 + 1, kind: 'expire', worker: 'w0', epoch: 2, attempt: true, note: 'alone' },
  ],
  history_dropped: 3,
  updated_at: T0 + 7,
};

test('both codecs give back the state they encoded', () => {
  const sqlite = codecOf(SHARD_FIELDS, 'sqlite');
  expect(sqlite.decode(sqlite.encode(full), 'row')).toEqual(full);
  const firestore = codecOf(SHARD_FIELDS, 'firestore');
  // The client turns the Dates we write into Timestamps.
  const asStored = Object.fromEntries(
    Object.entries(firestore.encode(full)).map(([k, v]) => [
      k,
      v instanceof Date ? { toMillis: () => v.getTime() } : v,
    ]),
  );
  expect(firestore.decode(asStored, 'doc')).toEqual(full);
});

test('a document written before a nullable field existed reads it as null; a bad one is refused', () => {
  const firestore = codecOf(SHARD_FIELDS, 'firestore');
  const stored = Object.fromEntries(
    Object.entries(firestore.encode(full))
      .filter(([k]) => k !== 'claim_next_task_index' && k !== 'claim_next_sample')
      .map(([k, v]) => [k, v instanceof Date ? { toMillis: () => v.getTime() } : v]),
  );
  expect(firestore.decode(stored, 'doc')).toMatchObject({
    claim_next_task_index: null,
    claim_next_sample: null,
  });
  expect(() => firestore.decode({ ...stored, epoch: 'three' }, 'shard 1 of ds')).toThrow(
    /shard 1 of ds is not a valid ledger record: epoch/,
  );
});

test('an SQLite ledger of schema 1 (before claim_next_task_index, retry_at, lost_at) opens, migrates and works', async () => {
  const file = path.join(dir, 'v1.sqlite');
  const clock = new FakeClock();
  // Write a current ledger, then take it back to schema 1: drop the column, set the version.
  const { master } = makeDataset({ datasetId: 'old', numShards: 2, tasksPerShard: 5 });
  const current = SqliteLedger.open(file, { clock });
  await current.registerDataset(master, { datasetUri: '/data/old' });
  await current.close();
  const db = new Database(file);
  for (const column of [
    'claim_next_task_index',
    'claim_next_sample',
    'retry_at',
    'lost_at',
    'history',
    'history_dropped',
  ])
    db.exec(`ALTER TABLE shards DROP COLUMN ${column}`);
  db.pragma('user_version = 1');
  db.close();

  const ledger = SqliteLedger.open(file, { clock });
  try {
    const claim = await ledger.claim('old', 'w1', { leaseMs: 60_000 });
    expect(claim).not.toBeNull();
    expect((await ledger.status('old')).totals).toMatchObject({ shards: 2, in_use: 1 });
  } finally {
    await ledger.close();
  }
  const after = new Database(file, { readonly: true });
  const columns = (after.pragma('table_info(shards)') as Array<{ name: string }>).map(
    (c) => c.name,
  );
  expect(after.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
  after.close();
  // The added column comes last; every field has its column, once.
  expect([...columns].sort()).toEqual(['dataset_id', 'shard_id', 'unit', ...SHARD_NAMES].sort());
});

test('an SQLite ledger of schema 3 (one row per shard, parts keyed by shard) is rebuilt keyed by unit, keeping every row', async () => {
  const file = path.join(dir, 'v3.sqlite');
  const clock = new FakeClock();
  const { master } = makeDataset({ datasetId: 'old3', numShards: 2, tasksPerShard: 20 });
  const current = SqliteLedger.open(file, { clock });
  await current.registerDataset(master, { datasetUri: '/data/old3' });
  const held = (await current.claim('old3', 'w1', { leaseMs: 60_000, preferredShardId: 0 }))!;
  const part = {
    part_index: 0,
    name: 'part_00000',
    first_task_index: 0,
    first_sample: 0,
    last_task_index: 3,
    next_task_index: 4,
    next_sample: 0,
    samples: 8,
    bytes: 100,
    checksums: { 'part_00000.safetensors': 'crc' },
    fingerprint: 'run-a',
  };
  await current.commitPart(held, part);
  await current.close();
  // Take it back to schema 3: tables keyed by (dataset, shard) without the unit's columns.
  const db = new Database(file);
  const v4Only = [
    'unit',
    'start_task_index',
    'end_task_index',
    'reserved_task_index',
    'split_from',
    'split_tasks_per_part',
    'unit_count',
    'units_completed',
  ];
  const keep = (table: string): string =>
    (db.pragma(`table_info(${table})`) as Array<{ name: string }>)
      .map((c) => c.name)
      .filter((c) => !v4Only.includes(c))
      .join(', ');
  db.pragma('foreign_keys = OFF');
  db.exec(`
    CREATE TABLE shards3 AS SELECT ${keep('shards')} FROM shards;
    CREATE TABLE parts3 AS SELECT ${keep('parts')} FROM parts;
    DROP TABLE parts; DROP TABLE shards;
    ALTER TABLE shards3 RENAME TO shards; ALTER TABLE parts3 RENAME TO parts;
    CREATE INDEX shards_by_lease ON shards (status, lease_expires_at);
  `);
  db.pragma('user_version = 3');
  db.close();

  const ledger = SqliteLedger.open(file, { clock });
  try {
    const status = await ledger.status('old3');
    expect(
      status.shards.map((s) => [s.shard_id, s.status, s.next_task_index, s.parts_committed]),
    ).toEqual([
      [0, 'in_use', 4, 1],
      [1, 'available', 20, 0],
    ]);
    expect(await ledger.listShardParts({ dataset_id: 'old3', shard_id: 0 })).toEqual([
      expect.objectContaining({ unit: 0, part_index: 0, name: 'part_00000', next_task_index: 4 }),
    ]);
    // The holder from before the upgrade carries on, and its shard can be split.
    await ledger.commitPart(held, {
      ...part,
      part_index: 1,
      name: 'part_00001',
      first_task_index: 4,
      last_task_index: 5,
      next_task_index: 6,
    });
    const split = await ledger.split('old3', 'w2', { leaseMs: 60_000 });
    expect(split?.claim).toMatchObject({ shard_id: 0, unit: 1, end_task_index: 20 });
  } finally {
    await ledger.close();
  }
  const after = new Database(file, { readonly: true });
  const pk = (table: string): string[] =>
    (after.pragma(`table_info(${table})`) as Array<{ name: string; pk: number }>)
      .filter((c) => c.pk > 0)
      .sort((a, b) => a.pk - b.pk)
      .map((c) => c.name);
  expect(pk('shards')).toEqual(['dataset_id', 'shard_id', 'unit']);
  expect(pk('parts')).toEqual(['dataset_id', 'shard_id', 'unit', 'part_index']);
  expect(after.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
  after.close();
});
