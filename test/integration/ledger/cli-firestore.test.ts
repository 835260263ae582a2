/**
 * The shard-manager verbs against the Firestore ledger (emulator): a local dataset folder with
 * `--ledger firestore`, as a user would point a laptop at the shared ledger.
 */
import { Firestore } from '@google-cloud/firestore';

import { EXIT } from '../../../cli/exit-codes';
import { cli } from '../../support/cli';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { writeLocalDataset } from '../../support/ledger-fixtures';
import { makeTempDir } from '../../support/tmp';

const { projectId } = emulatorEnv();
let dir: string;
let cleanup: () => void;
let root: string;

beforeEach(() => {
  ({ dir, cleanup } = makeTempDir('ledger-cli-fs'));
  writeLocalDataset(`${dir}/ds`, { datasetId: 'fs-cli', numShards: 4, tasksPerShard: 3 });
  root = uniqueName('cli-ledger');
});
afterEach(() => cleanup());

function run(...args: string[]): ReturnType<typeof cli> {
  const env: Record<string, string> = { USER: 'bob' };
  for (const k of [
    'FIRESTORE_EMULATOR_HOST',
    'GCLOUD_PROJECT',
    'GOOGLE_CLOUD_PROJECT',
    'METADATA_SERVER_DETECTION',
  ]) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  return cli([...args, '--dataset_dir', 'ds', '--ledger', 'firestore', '--firestore_root', root], {
    cwd: dir,
    env,
  });
}

test('claim, status, complete, fail, reset through the Firestore ledger', async () => {
  const claim = await run('claim', '--worker_id', 'laptop', '--preferred_shard_id', '2');
  expect(claim.code).toBe(EXIT.OK);
  expect(claim.stdout).toContain('✓ Claimed shard 2\n');
  let status = await run('status');
  expect(status.stdout).toContain(`ledger firestore firestore:${root}`);
  expect(status.stdout).toMatch(/^002\s+in_use\s+laptop\s+3\s+2\s+0\/3 0\.0%/m);
  expect((await run('complete', '--shard_id', '2', '--worker_id', 'other')).code).toBe(
    EXIT.NOT_HOLDER,
  );
  expect((await run('complete', '--shard_id', '2', '--worker_id', 'laptop')).stdout).toBe(
    '✓ Marked shard 2 as completed\n',
  );
  const c2 = await run('claim', '--worker_id', 'laptop', '--preferred_shard_id', '1');
  expect(c2.stdout).toContain('✓ Claimed shard 1\n');
  expect((await run('fail', '--shard_id', '1', '--force', '--reason', 'bad host')).stdout).toMatch(
    /✓ Marked shard 1 as failed: attempt 1 of 3, available again in \d+(\.\d)?s; forced by bob@/,
  );
  expect((await run('reset', '--shard_id', '2')).stdout).toBe('✓ Reset shard 2 to available\n');
  status = await run('status', '--json');
  const json = JSON.parse(status.stdout) as {
    totals: { available: number; attempts: number };
    shards: Array<{ last_error: string | null }>;
  };
  expect(json.totals).toMatchObject({ available: 4, attempts: 1 });
  expect(json.shards[1]?.last_error).toBe('bad host');
  // Shard 1 backs off after its failure: the other three are claimable now.
  const got: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await run('claim');
    expect(r.code).toBe(EXIT.OK);
    got.push(Number(/Claimed shard (\d+)/.exec(r.stdout)?.[1]));
  }
  expect(got.sort()).toEqual([0, 2, 3]);
  expect(await run('claim')).toMatchObject({
    code: EXIT.NOTHING_AVAILABLE,
    stdout: '✗ No available shards\n',
  });

  // The documents are where the report says they are.
  const db = new Firestore({ projectId });
  try {
    const shard = await db.doc(`${root}/fs-cli/shards/shard_002`).get();
    expect(shard.get('status')).toBe('in_use');
    expect(shard.get('ledger_root')).toBe(root);
    expect((await db.doc(`${root}/fs-cli`).get()).get('num_shards')).toBe(4);
  } finally {
    await db.terminate();
  }
});
