/**
 * The report's HTML: self-contained and inert (no script runs, nothing may be fetched, no
 * string from the ledger can become markup), and drawn from what the ledger's `status` holds:
 * a shard never split as one row, a split shard as its own row with its work units under it,
 * in task order, each named with the unit it was split from.
 */
import type {
  LedgerStatus,
  PartRecord,
  ShardStatusRow,
  UnitStatusRow,
} from '../../../core/ledger/ledger';
import { buildReportData } from '../../../cli/report/data';
import { renderReportHtml } from '../../../cli/report/render';
import { LocalBlobStore } from '../../../core/blob/local';
import { timelineLabels, timelineUnit } from '../../support/report-html';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('report-render');
afterAll(cleanup);

const T = Date.UTC(2026, 5, 1);
const iso = (ms: number): string => new Date(ms).toISOString();
const EVIL = '<img src=x onerror=alert(1)></script><script>alert(2)</script>';

/** One work unit as `status` lists it: shard `shardId` of 10 tasks, unit 0 unless `extra` says. */
function unitRow(shardId: number, extra: Partial<UnitStatusRow>): UnitStatusRow {
  const first = shardId * 10;
  const unit: UnitStatusRow = {
    dataset_id: 'ds',
    shard_id: shardId,
    unit: 0,
    status: 'completed',
    assigned_to: null,
    started_at: null,
    completed_at: null,
    lease_expires_at: null,
    heartbeat_at: null,
    lease_ms: null,
    epoch: 1,
    attempts: 0,
    max_attempts: 3,
    last_error: null,
    retry_at: null,
    lost_at: null,
    total_tasks: 10,
    first_task_index: first,
    num_chunks: 1,
    total_bytes: 100,
    start_task_index: null,
    end_task_index: null,
    reserved_task_index: null,
    split_from: null,
    split_tasks_per_part: null,
    unit_count: 1,
    units_completed: 0,
    next_task_index: first + 10,
    next_sample: 0,
    run_fingerprint: null,
    parts_committed: 0,
    samples_committed: 0,
    bytes_committed: 0,
    reset_by: null,
    reset_at: null,
    manifest: null,
    history: [],
    history_dropped: 0,
    updated_at: iso(T),
    forced: null,
    lease_left_ms: null,
    tasks_done: 10,
    unit_start: first,
    unit_end: first + 10,
    ...extra,
  };
  return unit;
}

/**
 * A shard's `status` row from its units, summed up as the ledger does for what the report
 * reads (status, holder, attempts, tasks done): unit 0's record with the units under it.
 */
function shardRow(units: UnitStatusRow[], extra: Partial<ShardStatusRow> = {}): ShardStatusRow {
  const unit0 = units.find((u) => u.unit === 0)!;
  const { lease_left_ms, unit_start, unit_end, ...record } = unit0;
  return {
    ...record,
    lease_left_ms,
    tasks_done: units.reduce((n, u) => n + u.tasks_done, 0),
    attempts: Math.max(...units.map((u) => u.attempts)),
    units: [...units].sort((a, b) => a.unit_start - b.unit_start),
    ...extra,
  };
}

/**
 * A ledger in the middle of a run: shard 0 failed once by a worker whose id is markup; shard 1
 * split twice (unit 1 off unit 0 at task 15, then unit 2 off unit 0 at task 13, so task order
 * is units 0, 2, 1), all three units completed; shard 2 held, never split.
 */
function fakeLedger(): Parameters<typeof buildReportData>[0]['ledger'] {
  const split = (u: number, from: number, at: number, end: number): UnitStatusRow =>
    unitRow(1, {
      unit: u,
      split_from: from,
      start_task_index: at,
      end_task_index: end,
      unit_count: 0,
      unit_start: at,
      unit_end: end,
      tasks_done: end - at,
    });
  const shard1: UnitStatusRow[] = [
    unitRow(1, {
      end_task_index: 13,
      unit_count: 3,
      units_completed: 3,
      unit_end: 13,
      tasks_done: 3,
      history: [
        { at: T, kind: 'claim', worker: 'w1', epoch: 1 },
        {
          at: T + 2000,
          kind: 'split',
          worker: 'w2',
          epoch: 1,
          note: 'tasks 15-19 split off to unit 1 by w2',
        },
        {
          at: T + 2500,
          kind: 'split',
          worker: 'w3',
          epoch: 1,
          note: 'tasks 13-14 split off to unit 2 by w3',
        },
        { at: T + 4000, kind: 'complete', worker: 'w1', epoch: 1 },
      ],
    }),
    {
      ...split(1, 0, 15, 20),
      history: [
        { at: T + 2000, kind: 'split', worker: 'w2', epoch: 0, note: 'tasks 15-19 from unit 0' },
        { at: T + 2000, kind: 'claim', worker: 'w2', epoch: 1 },
        { at: T + 3500, kind: 'complete', worker: 'w2', epoch: 1 },
      ],
    },
    {
      ...split(2, 0, 13, 15),
      history: [
        { at: T + 2500, kind: 'split', worker: 'w3', epoch: 0, note: 'tasks 13-14 from unit 0' },
        { at: T + 2500, kind: 'claim', worker: 'w3', epoch: 1 },
        { at: T + 3000, kind: 'complete', worker: 'w3', epoch: 1 },
      ],
    },
  ];
  const shards = [
    shardRow([
      unitRow(0, {
        status: 'available',
        attempts: 1,
        last_error: EVIL,
        tasks_done: 0,
        next_task_index: 0,
        history: [
          { at: T, kind: 'claim', worker: EVIL, epoch: 1 },
          { at: T + 5000, kind: 'fail', worker: EVIL, epoch: 1, attempt: true, note: EVIL },
        ],
      }),
    ]),
    shardRow(shard1),
    shardRow([
      unitRow(2, {
        status: 'in_use',
        assigned_to: 'w3',
        lease_left_ms: 60_000,
        tasks_done: 0,
        next_task_index: 20,
        history: [{ at: T + 1000, kind: 'claim', worker: 'w3', epoch: 1 }],
      }),
    ]),
  ];
  const status: LedgerStatus = {
    dataset: {
      dataset_id: 'ds',
      dataset_uri: '/data/ds',
      num_shards: 3,
      total_tasks: 30,
      max_attempts: 3,
      fingerprint: 'f',
      registered_at: iso(T),
    },
    as_of: iso(T + 6000),
    state: 'in_use',
    shards,
    totals: {
      shards: 3,
      available: 1,
      in_use: 1,
      completed: 1,
      failed: 0,
      total_tasks: 30,
      tasks_done: 10,
      parts_committed: 0,
      samples_committed: 0,
      bytes_committed: 0,
      attempts: 1,
    },
  };
  return {
    kind: 'sqlite',
    location: '/data/ds/ledger.sqlite',
    status: () => Promise.resolve(status),
    listShardParts: (): Promise<PartRecord[]> => Promise.resolve([]),
  };
}

/** The report's data of the fake ledger, read a second after the ledger was. */
const reportOfFakeLedger = (): ReturnType<typeof buildReportData> =>
  buildReportData({
    ledger: fakeLedger(),
    datasetId: 'ds',
    output: new LocalBlobStore(dir),
    nowMs: T + 7000,
  });

test('inert and self-contained: a CSP that forbids every fetch, no script but the data, every ledger string escaped', async () => {
  const data = await reportOfFakeLedger();
  const html = renderReportHtml(data);
  expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`);
  const scripts = html.match(/<script[^>]*>/g) ?? [];
  expect(scripts).toEqual(['<script type="application/json" id="report-data">']);
  expect(html).not.toMatch(/<img/);
  expect(html.split('</script>')).toHaveLength(2);
  expect(html).not.toMatch(/\b(?:src|href)="(?:https?:|\/\/)/);
  // The data block parses back to what was drawn.
  const embedded = /<script type="application\/json" id="report-data">(.*)<\/script>/s.exec(
    html,
  )![1]!;
  expect(JSON.parse(embedded)).toEqual(JSON.parse(JSON.stringify(data)));
});

test('a split shard is drawn as its own row with its units under it in task order, each named with where it came from', async () => {
  const data = await reportOfFakeLedger();
  expect(
    data.shards.map((s) => [s.shard_id, s.units.map((u) => [u.unit, u.split_from, u.unit_start])]),
  ).toEqual([
    [0, [[0, null, 0]]],
    [
      1,
      [
        [0, null, 10],
        [2, 0, 13],
        [1, 0, 15],
      ],
    ],
    [2, [[0, null, 20]]],
  ]);
  expect(data.totals).toMatchObject({ units: 5, shards: 3, splits: 2, claims: 5 });
  // Each unit's own claims, and its completion, credited once; the shard to its last completer.
  const workers = Object.fromEntries(data.workers.map((w) => [w.worker, w]));
  expect(workers['w1']).toMatchObject({ claims: 1, units_completed: 1, shards_completed: 1 });
  expect(workers['w2']).toMatchObject({ claims: 1, units_completed: 1, shards_completed: 0 });
  expect(workers['w3']).toMatchObject({ claims: 2, units_completed: 1, shards_completed: 0 });

  const html = renderReportHtml(data);
  const rows = [
    ...html.matchAll(/<g class="(unit|shard)[^"]*" data-shard="(\d+)"(?: data-unit="(\d+)")?/g),
  ].map((m) => `${m[1]} ${m[2]}${m[3] === undefined ? '' : `.${m[3]}`}`);
  expect(rows).toEqual(['unit 0.0', 'shard 1', 'unit 1.0', 'unit 1.2', 'unit 1.1', 'unit 2.0']);
  expect(html).toContain('data-shard="1" data-units="3"');
  expect(html).toMatch(/data-shard="1" data-unit="2" data-split-from="0"/);
  expect(timelineLabels(html)).toEqual([
    'shard 000',
    'shard 001 · 3 units',
    '001 · unit 0',
    '001 · unit 2 (split from unit 0)',
    '001 · unit 1 (split from unit 0)',
    'shard 002',
  ]);
  // The split is marked on the unit it cut and on the unit it made, nowhere else.
  const unitG = (shard: number, unit: number): string => timelineUnit(html, shard, unit);
  expect(unitG(1, 0).match(/class="event event-split"/g)).toHaveLength(2);
  expect(unitG(1, 1).match(/class="event event-split"/g)).toHaveLength(1);
  expect(unitG(1, 2).match(/class="event event-split"/g)).toHaveLength(1);
  expect(html.match(/class="event event-split"/g)).toHaveLength(4);
  // A running shard's bar reaches the time the ledger was read.
  expect(data.shards[2]!.units[0]!.claims[0]).toMatchObject({ end: 'open', to: T + 6000 });
  // Nothing committed yet: the throughput section says so instead of drawing an empty chart.
  expect(html).not.toContain('id="throughput"');
  expect(html).toContain('No part with a known token count yet');
});
