/**
 * `shardline report` on real runs of the built CLI: a demo-like run (the demo's puzzles and
 * model shape, three worker processes) in which one worker is SIGKILLed after committing parts
 * and another takes its shard over once the lease expires; reported while the dead worker
 * still holds its shard and again when the run is done. The kill and the reclaim must be in
 * the report's data and drawn on that shard's row at the time they happened; the page must
 * open in a real headless Chromium with no console error and no request, and a screenshot is
 * left in bench/out/report/ for a person to look at. Then a gs:// dataset on the Firestore
 * ledger, reported into a gs:// object, its shards' work units (split or not) each counted once.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Storage } from '@google-cloud/storage';

import type { ReportData, ReportUnit } from '../../../cli/report/data';
import { GcsBlobStore } from '../../../core/blob/gcs';
import { systemClock } from '../../../core/clock';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { chromiumTest, withPage } from '../../support/chromium';
import { demoDataset, demoModel, runOutput } from '../../support/demo-run';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { makeTempDir } from '../../support/tmp';
import { CLI, arcJsonl, createArgs, spawnWorker, waitFor } from '../../support/worker-fixtures';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SHOTS = path.join(ROOT, 'bench', 'out', 'report');
const { dir, cleanup } = makeTempDir('report-it');
afterAll(cleanup);
let model = '';
beforeAll(() => {
  model = demoModel(path.join(dir, 'model'));
});

/*
 * No splits in the kill run: it is about one held unit whose holder dies and is taken over, and
 * an idle worker splitting the dead worker's unit would make who reclaims what a matter of
 * timing. Reports of split shards: test/unit/cli/report-data.test.ts (a real split through the
 * ledger), and the gs:// run below, whose workers split when they find nothing to claim.
 */
const WORK = ['--predictions_per_task', '4', '--part_size_mb', '0.3', '--split', 'off'];

/** The one unit of a shard never split (fails when the shard was split). */
function onlyUnit(data: ReportData, shardId: number): ReportUnit {
  const shard = data.shards.find((s) => s.shard_id === shardId)!;
  expect(shard.units.map((u) => u.unit)).toEqual([0]);
  return shard.units[0]!;
}

function report(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): ReportData & { output: string } {
  const r = spawnSync(
    process.execPath,
    [CLI, 'report', ...args, '--json', '--log_format', 'json'],
    {
      encoding: 'utf8',
      cwd: dir,
      env,
    },
  );
  if (r.status !== 0) throw new Error(`report exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ReportData & { output: string };
}

/** The demo-like run with a kill, done once; its two reports. */
let killed: {
  ds: string;
  victimShard: number;
  running: ReportData;
  done: ReportData;
  html: string;
} | null = null;

async function killedRun(): Promise<NonNullable<typeof killed>> {
  if (killed) return killed;
  const ds = demoDataset(dir, 'kill', 60, 3);
  const ledger = SqliteLedger.open(path.join(ds, 'ledger.sqlite'), { clock: systemClock });
  try {
    const work = (id: string, extra: string[] = []) =>
      spawnWorker(
        [
          '--sharded_dataset_dir',
          ds,
          '--model_path',
          model,
          ...WORK,
          '--lease_seconds',
          '3',
          // An expiry and its reclaim is what this run shows: no worker takes the tail early.
          '--split',
          'off',
          '--worker_id',
          id,
          ...extra,
        ],
        process.env,
        dir,
      );
    const victim = work('victim');
    const steady = work('steady');
    let victimShard = -1;
    await waitFor('two parts committed by the victim', async () => {
      for (const k of [0, 1, 2]) {
        const parts = await ledger.listParts({ dataset_id: 'kill', shard_id: k });
        if (parts.filter((p) => p.worker_id === 'victim').length >= 2) victimShard = k;
      }
      return victimShard >= 0;
    });
    victim.child.kill('SIGKILL');
    expect(await victim.exited).toBe('SIGKILL');
    // Reported now: the dead worker still holds its shard in the ledger.
    const running = report(['--dataset_dir', ds, '--output', path.join(dir, 'running.html')]);
    const rescuer = work('rescuer', ['--follow', '--poll_seconds', '0.3']);
    await waitFor(
      'every shard completed',
      async () => (await ledger.status('kill')).totals.completed === 3,
      120_000,
    );
    rescuer.child.kill('SIGTERM');
    expect(await rescuer.exited).toBe(0);
    expect(await steady.exited).toBe(0);
    const file = path.join(dir, 'report.html');
    const done = report(['--dataset_dir', ds, '--output', file]);
    killed = { ds, victimShard, running, done, html: readFileSync(file, 'utf8') };
    return killed;
  } finally {
    await ledger.close();
  }
}

test('a worker killed mid-shard: its expiry and the reclaim are in the report where they happened, running and done', async () => {
  const { ds, victimShard, running, done } = await killedRun();
  // While the dead worker still holds its shard: a running run, its claim open.
  expect(running.state).toBe('in_use');
  const held = onlyUnit(running, victimShard);
  expect(held.claims.at(-1)).toMatchObject({ worker: 'victim', end: 'open' });
  expect(held.parts.filter((p) => p.worker === 'victim').length).toBeGreaterThanOrEqual(2);

  // Done: the victim's claim ended by an expiry, the next holder's claim right at it. Whoever
  // found the lease expired first took the shard over: the rescuer started for it, or the
  // steady worker done with its own shard (on a loaded machine, before the rescuer is up).
  expect(done.state).toBe('completed');
  const unit = onlyUnit(done, victimShard);
  const reclaimer = unit.claims[1]?.worker ?? '';
  expect(['rescuer', 'steady']).toContain(reclaimer);
  const kinds = unit.events.map((e) => [e.kind, e.worker]);
  expect(kinds).toEqual([
    ['claim', 'victim'],
    ['expire', 'victim'],
    ['claim', reclaimer],
    ['complete', reclaimer],
  ]);
  const [lost, rescued] = unit.claims;
  expect(lost).toMatchObject({ worker: 'victim', end: 'expire', reclaim: false });
  expect(rescued).toMatchObject({ worker: reclaimer, end: 'complete', reclaim: true });
  expect(rescued!.from).toBe(lost!.to);
  // Last seen at its last committed part, before the lease ran out.
  const victimParts = unit.parts.filter((p) => p.worker === 'victim');
  expect(lost!.last_seen).toBe(Math.max(...victimParts.map((p) => p.committed_at)));
  expect(lost!.to - lost!.last_seen).toBeGreaterThanOrEqual(3000);
  expect(done.failures).toEqual([
    expect.objectContaining({
      shard_id: victimShard,
      kind: 'expire',
      worker: 'victim',
      attempt: false,
    }),
  ]);
  // The totals agree with the manifests.
  const out = runOutput(path.join(ds, 'activations'));
  expect(done.totals).toMatchObject({
    completed: 3,
    parts: out.parts,
    samples: out.samples,
    tokens: out.tokens,
    bytes: out.bytes,
    expiries: 1,
    reclaims: 1,
  });
  const workers = done.workers.map((w) => w.worker);
  expect(workers).toEqual(expect.arrayContaining(['steady', 'victim', reclaimer]));
  expect(workers.filter((w) => !['rescuer', 'steady', 'victim'].includes(w))).toEqual([]);
  // Throughput accounts for every token.
  const t = done.throughput;
  const tokens = t.all.reduce((a, v) => a + (v * t.bucket_ms) / 1000, 0);
  expect(tokens).toBeCloseTo(out.tokens, 0);
});

chromiumTest(
  'the report opens in headless Chromium with no error and no request, its charts drawn, the kill where it happened',
  async () => {
    const { victimShard, done } = await killedRun();
    mkdirSync(SHOTS, { recursive: true });
    const { result, problems } = await withPage(path.join(dir, 'report.html'), async (page) => {
      await page.screenshot({ path: path.join(SHOTS, 'report-killed-worker.png'), fullPage: true });
      const row = page.locator(`svg#timeline g.unit[data-shard="${victimShard}"]`);
      const box = async (selector: string) => (await row.locator(selector).first().boundingBox())!;
      const expire = await box('.event-expire');
      const lost = await box('rect.silent');
      const rescued = await box('rect.claim-complete');
      return {
        units: await page.locator('svg#timeline g.unit').count(),
        ticks: await page.locator('svg#timeline line.part-tick').count(),
        expiries: await page.locator('svg#timeline .event-expire').count(),
        expireWorker: await row.locator('.event-expire').getAttribute('data-worker'),
        reclaims: await row.locator('.event-reclaim').count(),
        all: await page.locator('svg#throughput path.series-all').count(),
        perWorker: await page.locator('svg#throughput path.series-worker').count(),
        totals: await page.locator('#totals .card').count(),
        failures: await page.locator('#failures tr.failure-expire').count(),
        expireX: expire.x + expire.width / 2,
        silentEnd: lost.x + lost.width,
        rescuedStart: rescued.x,
      };
    });
    expect(problems).toEqual({ console: [], pageErrors: [], requests: [] });
    expect(result).toMatchObject({
      units: 3,
      ticks: done.totals.parts,
      expiries: 1,
      expireWorker: 'victim',
      reclaims: 1,
      all: 1,
      perWorker: done.workers.length,
      totals: 12,
      failures: 1,
    });
    // Drawn where it happened: the × at the end of the victim's silence and the rescuer's start.
    expect(Math.abs(result.expireX - result.silentEnd)).toBeLessThan(2);
    expect(Math.abs(result.expireX - result.rescuedStart)).toBeLessThan(2);
  },
);

test('a gs:// dataset on the Firestore ledger, reported into a gs:// object', async () => {
  const { projectId } = emulatorEnv();
  const storage = new Storage({ projectId });
  const bucket = 'shardline-report-it';
  const prefix = uniqueName('rep');
  const root = `${prefix}-datasets`;
  const store = new GcsBlobStore(storage, bucket, prefix);
  await store.writeAll('incoming/tasks.jsonl', arcJsonl(12, 4));
  const uri = `gs://${bucket}/${prefix}/datasets/ds`;
  const create = spawnSync(
    process.execPath,
    [
      CLI,
      ...createArgs(`gs://${bucket}/${prefix}/incoming/tasks.jsonl`, uri, 3, '--dataset_id', 'ds'),
      '--firestore_root',
      root,
    ],
    { encoding: 'utf8', cwd: dir },
  );
  expect([create.status, create.stderr]).toEqual([0, expect.any(String)]);
  const workers = ['g1', 'g2'].map((w) =>
    spawnWorker(
      [
        '--sharded_dataset_dir',
        uri,
        '--model_path',
        model,
        '--predictions_per_task',
        '2',
        '--firestore_root',
        root,
        '--worker_id',
        w,
      ],
      process.env,
      dir,
    ),
  );
  expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0]);
  const target = `gs://${bucket}/${prefix}/reports/ds.html`;
  const data = report(['--dataset_dir', uri, '--firestore_root', root, '--output', target]);
  expect(data.output).toBe(target);
  expect(data.ledger.kind).toBe('firestore');
  expect(data.state).toBe('completed');
  expect(data.output_uri).toBe(`${uri}/activations`);
  // A worker that finds nothing to claim splits the other's unit: one claim per unit, each a
  // shard's or a split's, each ended by its unit's completion.
  const units = data.shards.flatMap((s) => s.units);
  expect(data.totals).toMatchObject({
    completed: 3,
    samples: 24,
    units: units.length,
    claims: 3 + data.totals.splits,
    reclaims: 0,
  });
  expect(units.filter((u) => u.split_from !== null)).toHaveLength(data.totals.splits);
  expect(units.flatMap((u) => u.claims.map((h) => h.end))).toEqual(units.map(() => 'complete'));
  // Every part once, as the ledger and the manifests have them.
  const status = spawnSync(
    process.execPath,
    [CLI, 'status', '--dataset_dir', uri, '--firestore_root', root, '--json'],
    { encoding: 'utf8', cwd: dir },
  );
  expect(status.status).toBe(0);
  const totals = (JSON.parse(status.stdout) as { totals: Record<string, number> }).totals;
  expect(data.totals).toMatchObject({
    parts: totals['parts_committed'],
    bytes: totals['bytes_committed'],
  });
  expect(data.totals.tokens).toBeGreaterThan(0);
  expect(data.workers.reduce((n, w) => n + w.tokens, 0)).toBe(data.totals.tokens);
  const html = (
    await new GcsBlobStore(storage, bucket, `${prefix}/reports`).readAll('ds.html')
  ).toString();
  expect(html).toContain('<svg id="timeline"');
  expect(html).toContain('<svg id="throughput"');
  const embedded = /<script type="application\/json" id="report-data">(.*)<\/script>/s.exec(
    html,
  )![1]!;
  expect((JSON.parse(embedded) as ReportData).totals).toEqual(data.totals);
});
