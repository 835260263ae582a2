/**
 * The report's HTML: self-contained and inert (no script runs, nothing may be fetched, no
 * string from the ledger can become markup), and drawn from what the ledger holds, including
 * units split from a shard, which sit under their shard with their split marked.
 */
import type { LedgerStatus, PartRecord, ShardStatusRow } from '../../../core/ledger/ledger';
import { buildReportData } from '../../../cli/report/data';
import { renderReportHtml } from '../../../cli/report/render';
import { LocalBlobStore } from '../../../core/blob/local';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('report-render');
afterAll(cleanup);

const T = Date.UTC(2026, 5, 1);
const iso = (ms: number): string => new Date(ms).toISOString();
const EVIL = '<img src=x onerror=alert(1)></script><script>alert(2)</script>';

function row(
  shardId: number,
  extra: Partial<ShardStatusRow> & Record<string, unknown>,
): ShardStatusRow {
  return {
    dataset_id: 'ds',
    shard_id: shardId,
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
    first_task_index: shardId * 10,
    num_chunks: 1,
    total_bytes: 100,
    next_task_index: shardId * 10 + 10,
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
    start_task_index: null,
    end_task_index: null,
    reserved_task_index: null,
    split_from: null,
    split_tasks_per_part: null,
    unit_count: 1,
    units_completed: 0,
    unit: 0,
    units: [],
    ...extra,
  };
}

/** A ledger as a newer shardline may leave it: shard 1 split, its split unit 7 under it. */
function fakeLedger(): Parameters<typeof buildReportData>[0]['ledger'] {
  const shards = [
    row(0, {
      assigned_to: EVIL,
      history: [
        { at: T, kind: 'claim', worker: EVIL, epoch: 1 },
        { at: T + 5000, kind: 'fail', worker: EVIL, epoch: 1, attempt: true, note: EVIL },
      ],
      status: 'available',
      attempts: 1,
      last_error: EVIL,
    }),
    row(1, {
      history: [
        { at: T, kind: 'claim', worker: 'w1', epoch: 1 },
        { at: T + 2000, kind: 'split', worker: 'w2', epoch: 1, note: 'tasks 15-19 to unit 7' },
        { at: T + 4000, kind: 'complete', worker: 'w1', epoch: 1 },
      ],
    }),
    row(7, {
      parent_shard_id: 1,
      first_task_index: 15,
      total_tasks: 5,
      history: [
        { at: T + 2000, kind: 'claim', worker: 'w2', epoch: 1 },
        { at: T + 3500, kind: 'complete', worker: 'w2', epoch: 1 },
      ],
    }),
    row(2, {
      status: 'in_use',
      assigned_to: 'w3',
      history: [{ at: T + 1000, kind: 'claim', worker: 'w3', epoch: 1 }],
    }),
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
      shards: 4,
      available: 1,
      in_use: 1,
      completed: 2,
      failed: 0,
      total_tasks: 30,
      tasks_done: 20,
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
    listParts: (): Promise<PartRecord[]> => Promise.resolve([]),
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

test('split units are drawn under the shard they came from, the split marked on the shard', async () => {
  const data = await reportOfFakeLedger();
  expect(data.units.map((u) => [u.shard_id, u.parent_shard_id])).toEqual([
    [0, null],
    [1, null],
    [7, 1],
    [2, null],
  ]);
  expect(data.totals).toMatchObject({ units: 4, shards: 3 });
  const html = renderReportHtml(data);
  const order = [...html.matchAll(/<g class="unit[^"]*" data-shard="(\d+)"/g)].map((m) => m[1]);
  expect(order).toEqual(['0', '1', '7', '2']);
  expect(html).toMatch(/data-shard="7" data-parent="1"/);
  expect(html).toContain('↳ 007 (split of 001)');
  expect(html).toMatch(/data-shard="1"[^>]*>.*class="event event-split"/);
  // A running shard's bar reaches the time the ledger was read.
  expect(data.units.find((u) => u.shard_id === 2)!.claims[0]).toMatchObject({
    end: 'open',
    to: T + 6000,
  });
  // Nothing committed yet: the throughput section says so instead of drawing an empty chart.
  expect(html).not.toContain('id="throughput"');
  expect(html).toContain('No part with a known token count yet');
});
