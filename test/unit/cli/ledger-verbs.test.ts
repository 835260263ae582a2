/**
 * The shard-manager verbs as a user types them (the seed README's "Monitor progress" and
 * "Handle failures"): claim, status, complete, fail, reset, against the SQLite ledger beside a
 * local dataset.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { EXIT } from '../../../cli/exit-codes';
import { systemClock } from '../../../core/clock';
import { LOCAL_LEDGER_FILE } from '../../../core/dataset/paths';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { cli } from '../../support/cli';
import type { CliRun } from '../../support/cli';
import { writeLocalDataset } from '../../support/ledger-fixtures';
import { makeTempDir } from '../../support/tmp';

let dir: string;
let data: string;
let cleanup: () => void;
const env = { USER: 'alice' };

beforeEach(() => {
  ({ dir, cleanup } = makeTempDir('ledger-cli'));
  data = path.join(dir, 'sharded_dataset');
  writeLocalDataset(data, { datasetId: 'arc-test', numShards: 8, tasksPerShard: 5 });
});
afterEach(() => cleanup());

function run(...args: string[]): Promise<CliRun> {
  return cli(args, { cwd: dir, env });
}

function shardOf(stdout: string): number {
  const m = /✓ Claimed shard (\d+)/.exec(stdout);
  if (!m) throw new Error(`no claim in: ${stdout}`);
  return Number(m[1]);
}

function statusLine(stdout: string, shardId: number): string {
  const line = stdout.split('\n').find((l) => l.startsWith(String(shardId).padStart(3, '0')));
  if (!line) throw new Error(`no status line for shard ${shardId} in:\n${stdout}`);
  return line;
}

test('the seed README: claim, status, complete, reset, as a user types them', async () => {
  const claim = await run('claim', '--dataset_dir', 'sharded_dataset', '--worker_id', 'worker_0');
  expect(claim.code).toBe(EXIT.OK);
  const id = shardOf(claim.stdout);
  const shardDir = path.join(data, `shard_${String(id).padStart(3, '0')}`);
  expect(claim.stdout).toContain(`  Directory: ${shardDir}\n  Tasks: 5\n  Chunks: 2\n`);
  expect(claim.stdout).toContain(`    ${path.join(shardDir, 'chunk_0000.jsonl')}\n`);
  expect(claim.stdout).toContain('  Worker: worker_0\n  Epoch: 1\n');
  expect(existsSync(path.join(data, LOCAL_LEDGER_FILE))).toBe(true);

  let status = await run('status', '--dataset_dir', 'sharded_dataset');
  expect(status.code).toBe(EXIT.OK);
  expect(status.stdout).toMatch(
    /^Shard\s+Status\s+Holder\s+Tasks\s+Chunks\s+Progress\s+Lease left\s+Attempts\s+Last error$/m,
  );
  expect(statusLine(status.stdout, id)).toMatch(
    /in_use\s+worker_0\s+5\s+2\s+0\/5 0\.0%\s+59m \d\ds\s+0\/3\s+-/,
  );
  expect(status.stdout).toContain(
    'Totals: 8 shards: 7 available, 1 in_use, 0 completed, 0 failed; tasks 0/40 (0.0%)',
  );

  const done = await run(
    'complete',
    '--dataset_dir',
    'sharded_dataset',
    '--shard_id',
    String(id),
    '--worker_id',
    'worker_0',
  );
  expect(done).toMatchObject({ code: EXIT.OK, stdout: `✓ Marked shard ${id} as completed\n` });
  status = await run('status', '--dataset-dir', 'sharded_dataset');
  expect(statusLine(status.stdout, id)).toMatch(/completed\s+worker_0\s+5\s+2\s+5\/5 100%\s+-/);
  expect(status.stdout).toContain('1 completed');

  const reset = await run('reset', '--dataset_dir', 'sharded_dataset', '--shard_id', String(id));
  expect(reset).toMatchObject({ code: EXIT.OK, stdout: `✓ Reset shard ${id} to available\n` });
  status = await run('status', '--dataset_dir', 'sharded_dataset', '--json');
  const json = JSON.parse(status.stdout) as {
    totals: { available: number };
    shards: Array<{ reset_by: string; completed_at: null }>;
  };
  expect(json.totals.available).toBe(8);
  expect(json.shards[id]).toMatchObject({
    completed_at: null,
    reset_by: expect.stringMatching(/^alice@/) as unknown,
  });
});

test('every machine runs the same command and gets a different shard; then nothing is available (exit 5)', async () => {
  const seen = new Set<number>();
  for (let i = 0; i < 8; i++) {
    const r = await run('claim', '--dataset_dir', data);
    expect(r.code).toBe(EXIT.OK);
    seen.add(shardOf(r.stdout));
    // Default worker ids are unique: host-pid-random.
    expect(r.stdout).toMatch(/Worker: .+-\d+-[0-9a-f]{6}\n/);
  }
  expect(seen.size).toBe(8);
  const none = await run('claim', '--dataset_dir', data);
  expect(none).toMatchObject({ code: EXIT.NOTHING_AVAILABLE, stdout: '✗ No available shards\n' });
  const json = await run('claim', '--dataset_dir', data, '--json');
  expect(json.code).toBe(EXIT.NOTHING_AVAILABLE);
  expect(JSON.parse(json.stdout)).toMatchObject({ claimed: false, claim: null });
});

test('--preferred_shard_id is honoured when free; --machine_id/--host_id name the worker as the original did', async () => {
  const r = await run(
    'claim',
    '--dataset_dir',
    data,
    '--preferred_shard_id',
    '3',
    '--machine_id',
    '0',
    '--host_id',
    '2',
    '--json',
  );
  expect(r.code).toBe(EXIT.OK);
  const report = JSON.parse(r.stdout) as {
    claim: { shard_id: number; worker_id: string; epoch: number };
    chunks: Array<{ path: string }>;
  };
  expect(report.claim).toMatchObject({ shard_id: 3, worker_id: 'machine0_host2', epoch: 1 });
  expect(report.chunks.map((c) => path.basename(c.path))).toEqual([
    'chunk_0000.jsonl',
    'chunk_0001.jsonl',
  ]);
  const again = await run('claim', '--dataset_dir', data, '--preferred-shard-id', '3');
  expect(shardOf(again.stdout)).not.toBe(3);
});

test('complete or fail of a shard you do not hold needs --force (exit 6), and is recorded as forced', async () => {
  const claim = await run(
    'claim',
    '--dataset_dir',
    data,
    '--worker_id',
    'w1',
    '--preferred_shard_id',
    '2',
  );
  expect(shardOf(claim.stdout)).toBe(2);
  const notMine = await run(
    'complete',
    '--dataset_dir',
    data,
    '--shard_id',
    '2',
    '--worker_id',
    'w2',
  );
  expect(notMine.code).toBe(EXIT.NOT_HOLDER);
  expect(notMine.stderr).toContain('w2 does not hold it; it is held by w1 at epoch 1');
  expect(notMine.stderr).toContain('--force');
  const anonymous = await run('complete', '--dataset_dir', data, '--shard_id', '2');
  expect(anonymous.code).toBe(EXIT.NOT_HOLDER);
  const wrongEpoch = await run(
    'complete',
    '--dataset_dir',
    data,
    '--shard_id',
    '2',
    '--worker_id',
    'w1',
    '--epoch',
    '7',
  );
  expect(wrongEpoch.code).toBe(EXIT.NOT_HOLDER);
  const failNotMine = await run(
    'fail',
    '--dataset_dir',
    data,
    '--shard_id',
    '2',
    '--worker_id',
    'w2',
  );
  expect(failNotMine.code).toBe(EXIT.NOT_HOLDER);

  const forced = await run('complete', '--dataset_dir', data, '--shard_id', '2', '--force');
  expect(forced.code).toBe(EXIT.OK);
  expect(forced.stdout).toMatch(
    /^✓ Marked shard 2 as completed \(forced by alice@.+; it was held by w1 at epoch 1\)\n$/,
  );
  const status = await run('status', '--dataset_dir', data);
  expect(statusLine(status.stdout, 2)).toMatch(/completed\s+w1 \(forced complete by alice@/);
  // The holder has been fenced.
  const late = await run('complete', '--dataset_dir', data, '--shard_id', '2', '--worker_id', 'w1');
  expect(late.code).toBe(EXIT.NOT_HOLDER);
  const json = await run('status', '--dataset_dir', data, '--json');
  const shard = (JSON.parse(json.stdout) as { shards: Array<{ forced: unknown }> }).shards[2];
  expect(shard?.forced).toMatchObject({
    action: 'complete',
    by: expect.stringMatching(/^alice@/) as unknown,
  });
});

test('fail counts attempts with the reason and backs off; the third is failed for good; reset brings it back', async () => {
  const c = await run(
    'claim',
    '--dataset_dir',
    data,
    '--worker_id',
    'w',
    '--preferred_shard_id',
    '4',
  );
  expect(shardOf(c.stdout)).toBe(4);
  const first = await run(
    'fail',
    '--dataset_dir',
    data,
    '--shard_id',
    '4',
    '--worker_id',
    'w',
    '--reason',
    'OOM at task 1',
  );
  expect(first.code).toBe(EXIT.OK);
  expect(first.stdout).toMatch(
    /^✓ Marked shard 4 as failed: attempt 1 of 3, available again in \d+(\.\d)?s\n$/,
  );
  // Backing off: status says until when, and a claim that prefers it gets another shard.
  expect(statusLine((await run('status', '--dataset_dir', data)).stdout, 4)).toMatch(
    /^004\s+available \(retry in \d+(\.\d)?s\)\s/,
  );
  const meanwhile = await run('claim', '--dataset_dir', data, '--preferred_shard_id', '4');
  expect(shardOf(meanwhile.stdout)).not.toBe(4);
  // An operator fails it twice more (each one an attempt); the third is failed for good.
  for (let attempt = 2; attempt <= 3; attempt++) {
    const f = await run(
      'fail',
      '--dataset_dir',
      data,
      '--shard_id',
      '4',
      '--force',
      '--reason',
      `OOM at task ${attempt}`,
    );
    expect(f.code).toBe(EXIT.OK);
    expect(f.stdout).toMatch(
      attempt < 3
        ? /^✓ Marked shard 4 as failed: attempt 2 of 3, available again in [^;]+; forced by /
        : /^✓ Marked shard 4 as failed: attempt 3 of 3, failed for good \(reset it to run it again\); forced by /,
    );
  }
  const status = await run('status', '--dataset_dir', data);
  expect(statusLine(status.stdout, 4)).toMatch(
    /failed\s+.*\s+5\s+2\s+0\/5 0\.0%\s+-\s+3\/3\s+OOM at task 3$/,
  );
  expect(status.stdout).toContain('1 failed');
  const again = await run('claim', '--dataset_dir', data, '--preferred_shard_id', '4');
  expect(shardOf(again.stdout)).not.toBe(4);
  expect((await run('reset', '--dataset_dir', data, '--shard_id', '4')).code).toBe(EXIT.OK);
  const back = await run('claim', '--dataset_dir', data, '--preferred_shard_id', '4');
  expect(shardOf(back.stdout)).toBe(4);
});

test('fail --final fails the shard for good at once', async () => {
  const c = await run(
    'claim',
    '--dataset_dir',
    data,
    '--worker_id',
    'wf',
    '--preferred_shard_id',
    '3',
  );
  expect(shardOf(c.stdout)).toBe(3);
  const f = await run(
    'fail',
    '--dataset_dir',
    data,
    '--shard_id',
    '3',
    '--worker_id',
    'wf',
    '--final',
    '--reason',
    'chunk_0001 fails its checksum',
  );
  expect(f.stdout).toBe(
    '✓ Marked shard 3 as failed: attempt 1 of 3, failed for good (reset it to run it again)\n',
  );
});

test('reset of a held shard warns, and fences the worker that held it', async () => {
  await run('claim', '--dataset_dir', data, '--worker_id', 'busy', '--preferred_shard_id', '1');
  const reset = await run('reset', '--dataset_dir', data, '--shard_id', '1');
  expect(reset.code).toBe(EXIT.OK);
  expect(reset.stderr).toMatch(/warning: shard 1 was held by busy \(lease left 59m \d\ds\)/);
  const late = await run(
    'complete',
    '--dataset_dir',
    data,
    '--shard_id',
    '1',
    '--worker_id',
    'busy',
  );
  expect(late.code).toBe(EXIT.NOT_HOLDER);
});

test('a split shard: status shows its units under it; claim prints the unit; complete finds the unit the worker holds', async () => {
  const claim = await run(
    'claim',
    '--dataset_dir',
    'sharded_dataset',
    '--worker_id',
    'worker_0',
    '--preferred_shard_id',
    '2',
  );
  expect(shardOf(claim.stdout)).toBe(2);
  // Another worker splits it (as `work` does when nothing is claimable).
  const ledger = SqliteLedger.open(path.join(data, LOCAL_LEDGER_FILE), { clock: systemClock });
  try {
    const split = await ledger.split('arc-test', 'worker_9', { minTasks: 1 });
    expect(split?.claim).toMatchObject({ shard_id: 2, unit: 1, end_task_index: 15 });
    // Its splitter shuts down: the unit is available to anyone.
    await ledger.release(split!.claim);
    for (let k = 0; k < 8; k++)
      if (k !== 2) await ledger.claim('arc-test', `busy-${k}`, { preferredShardId: k });
  } finally {
    await ledger.close();
  }
  const unitClaim = await run(
    'claim',
    '--dataset_dir',
    'sharded_dataset',
    '--worker_id',
    'worker_1',
  );
  expect(unitClaim.stdout).toContain('✓ Claimed shard 2\n');
  expect(unitClaim.stdout).toContain('  Work unit: 1 (tasks 13-14)\n');
  expect(unitClaim.stdout).toContain('--shard_id 2 --unit 1 --worker_id worker_1');
  const status = await run('status', '--dataset_dir', 'sharded_dataset');
  const lines = status.stdout.split('\n');
  const row = lines.findIndex((l) => l.startsWith('002'));
  expect(lines[row]).toMatch(/^002\s+in_use\s+2 units\s+5\s+2\s+0\/5 0\.0%\s+0\/3/);
  expect(lines[row + 1]).toMatch(
    /^\s+└ unit 0\s+in_use\s+worker_0\s+10-12\s+0\/3 0\.0%\s+59m \d\ds/,
  );
  expect(lines[row + 2]).toMatch(/^\s+└ unit 1\s+in_use\s+worker_1\s+13-14\s+0\/2 0\.0%/);
  expect(status.stdout).toContain('; 1 work units split off');
  const json = JSON.parse(
    (await run('status', '--dataset_dir', 'sharded_dataset', '--json')).stdout,
  ) as {
    shards: Array<{ shard_id: number; units: Array<{ unit: number; assigned_to: string }> }>;
  };
  expect(json.shards[2]!.units.map((u) => [u.unit, u.assigned_to])).toEqual([
    [0, 'worker_0'],
    [1, 'worker_1'],
  ]);
  // worker_1 completes its unit without naming it; then worker_0 completes the shard.
  const c1 = await run(
    'complete',
    '--dataset_dir',
    'sharded_dataset',
    '--shard_id',
    '2',
    '--worker_id',
    'worker_1',
  );
  expect(c1.code).toBe(EXIT.OK);
  expect(statusLine((await run('status', '--dataset_dir', 'sharded_dataset')).stdout, 2)).toMatch(
    /in_use\s+2 units/,
  );
  const c0 = await run(
    'complete',
    '--dataset_dir',
    'sharded_dataset',
    '--shard_id',
    '2',
    '--worker_id',
    'worker_0',
  );
  expect(c0.code).toBe(EXIT.OK);
  expect(statusLine((await run('status', '--dataset_dir', 'sharded_dataset')).stdout, 2)).toMatch(
    /completed\s+2 units\s+5\s+2\s+5\/5 100%/,
  );
});

test('usage errors exit 2; a missing dataset or shard exits 7 and creates no ledger', async () => {
  for (const verb of ['complete', 'fail', 'reset']) {
    const r = await run(verb, '--dataset_dir', data);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stderr).toContain('--shard_id is required');
  }
  expect((await run('claim')).code).toBe(EXIT.USAGE);
  expect((await run('claim', '--dataset_dir', data, '--ledger', 'mysql')).code).toBe(EXIT.USAGE);
  const gcsSqlite = await run('status', '--dataset_dir', 'gs://bucket/ds', '--ledger', 'sqlite');
  expect(gcsSqlite.code).toBe(EXIT.USAGE);
  expect(gcsSqlite.stderr).toContain('--ledger sqlite needs a local dataset folder');
  expect((await run('complete', '--dataset_dir', data, '--shard_id', '8', '--force')).code).toBe(
    EXIT.NOT_FOUND,
  );

  const empty = path.join(dir, 'not-a-dataset');
  mkdirSync(empty);
  writeFileSync(path.join(empty, 'README'), 'hello');
  const missing = await run('claim', '--dataset_dir', empty);
  expect(missing.code).toBe(EXIT.NOT_FOUND);
  expect(missing.stderr).toContain('has no master_metadata.json');
  expect(existsSync(path.join(empty, LOCAL_LEDGER_FILE))).toBe(false);
});

test('a different dataset re-created under the same id conflicts (exit 4)', async () => {
  expect((await run('status', '--dataset_dir', data)).code).toBe(EXIT.OK);
  writeLocalDataset(data, { datasetId: 'arc-test', numShards: 8, tasksPerShard: 6 });
  const r = await run('status', '--dataset_dir', data);
  expect(r.code).toBe(EXIT.CONFLICT);
  expect(r.stderr).toContain('already registered with different content');
});
