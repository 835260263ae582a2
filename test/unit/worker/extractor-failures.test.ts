/**
 * A child extractor that fails (`work --backend command`, test/support/fake-extractor.ts):
 * one that dies in the middle of a batch, one that hangs, one that answers garbage, one that
 * speaks another protocol version. Each fails the claim with a reason `status` shows, commits
 * nothing of the batch it failed (no part past the last whole one, no manifest; a later run
 * resumes and every stored row is the extractor's), and the worker's next claim runs on a
 * fresh child. A hung child is killed on the timeout while the lease keeps being renewed.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { LOCAL_LEDGER_FILE, MASTER_METADATA } from '../../../core/dataset/paths';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { parseSafetensorsHeader, readTensor } from '../../../core/safetensors';
import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import { cli } from '../../support/cli';
import {
  fakeChildren,
  fakeRow,
  processAlive,
  writeFakeExtractor,
} from '../../support/fake-extractor';
import { makeTempDir } from '../../support/tmp';
import { arcJsonl, collectSamples, expectedSampleIds } from '../../support/worker-fixtures';

const HIDDEN = 8;
const LAYERS = 2;

let root: string;
let cleanup: () => void;
let launcher: string;
let checkpoint: string;
let pristine: string;
/** The dataset's id (`create` chose it). */
let DATASET: string;

beforeAll(async () => {
  ({ dir: root, cleanup } = makeTempDir('extractor-failures'));
  launcher = writeFakeExtractor(root);
  // What a checkpoint folder must hold for the worker to start a child on it; the fake reads
  // nothing from it.
  checkpoint = path.join(root, 'checkpoint');
  mkdirSync(checkpoint);
  writeFileSync(path.join(checkpoint, 'config.json'), '{"model_type": "fake"}\n');
  writeFileSync(path.join(root, 'tasks.jsonl'), arcJsonl(4, 5));
  pristine = path.join(root, 'pristine');
  const made = await cli(
    ['create', '--input_file', 'tasks.jsonl', '--output_dir', pristine, '--num_shards', '2'],
    { cwd: root },
  );
  expect(made.code).toBe(0);
  DATASET = (
    JSON.parse(readFileSync(path.join(pristine, MASTER_METADATA), 'utf8')) as {
      dataset_id: string;
    }
  ).dataset_id;
});
afterAll(() => cleanup());

/** A fresh copy of the dataset and an empty state folder for the fake's children. */
function setUp(name: string): { dir: string; state: string } {
  const dir = path.join(root, name);
  cpSync(pristine, dir, { recursive: true });
  const state = path.join(root, `${name}-children`);
  mkdirSync(state);
  return { dir, state };
}

/**
 * `work` on `dir` with the fake extractor following `plan`. One sample per batch and per part
 * (each of the 4 ARC tasks gives 2 samples, 2 tasks per shard): a failure at batch K comes
 * after K-1 whole parts.
 */
function work(dir: string, state: string, plan: string, ...extra: string[]) {
  return cli(
    [
      'work',
      '--sharded_dataset_dir',
      dir,
      '--model_path',
      checkpoint,
      '--backend',
      'command',
      '--backend_command',
      `${process.execPath} ${launcher} --state ${state} --plan ${plan} --hidden ${HIDDEN} --layers ${LAYERS}`,
      '--predictions_per_task',
      '2',
      '--batch_size',
      '1',
      '--part_size_mb',
      '0.001',
      '--lease_seconds',
      '2',
      ...extra,
    ],
    { cwd: root },
  );
}

function openLedger(dir: string): SqliteLedger {
  return SqliteLedger.open(path.join(dir, LOCAL_LEDGER_FILE), { clock: systemClock });
}

/**
 * After `work --max_shards 2 --preferred_shard_id 0` with a fake whose first child fails at
 * batch 3: shard 0's claim failed with `reason` (attempt 1, back to available), holding only
 * the parts of batches 1 and 2 and no manifest; shard 1 was done by a second, fresh child; then
 * a plain run finishes shard 0 from its committed parts, and every stored row is the fake's.
 */
async function expectFailedThenResumed(
  name: string,
  mode: string,
  reason: RegExp,
  ...extra: string[]
): Promise<void> {
  const { dir, state } = setUp(name);
  const first = await work(
    dir,
    state,
    `${mode}@3`,
    '--max_shards',
    '2',
    '--preferred_shard_id',
    '0',
    ...extra,
  );
  expect({ code: first.code, stderr: first.code === 0 ? '' : first.stderr }).toEqual({
    code: 0,
    stderr: '',
  });

  const ledger = openLedger(dir);
  try {
    const [s0, s1] = [await ledger.getShard(DATASET, 0), await ledger.getShard(DATASET, 1)];
    expect(s0).toMatchObject({ status: 'available', attempts: 1 });
    expect(s0!.last_error).toMatch(/^MODEL: /);
    expect(s0!.last_error).toMatch(reason);
    expect(s1).toMatchObject({ status: 'completed', attempts: 0 });
    // Batches 1 and 2 were whole: at most their two parts are committed (the pipeline may not
    // have committed the second when batch 3 failed), none with the failed batch's sample.
    const parts = await ledger.listParts({ dataset_id: DATASET, shard_id: 0 });
    expect(parts.length).toBeLessThanOrEqual(2);
    expect(parts.reduce((n, p) => n + p.samples, 0)).toBe(parts.length);
  } finally {
    await ledger.close();
  }
  const out = path.join(dir, 'activations', 'shard_000');
  expect(existsSync(path.join(out, '_MANIFEST.json'))).toBe(false);
  expect(existsSync(path.join(out, 'part_00002.safetensors'))).toBe(false);

  // The failed child is gone; the next claim ran on a fresh one.
  const children = fakeChildren(state);
  expect(children.map((c) => c.mode)).toEqual([`${mode}@3`, 'ok']);
  expect(new Set(children.map((c) => c.pid)).size).toBe(2);
  expect(processAlive(children[0]!.pid)).toBe(false);

  // Resume: the dataset completes, every sample once, every row what the extractor gave.
  const rest = await work(dir, state, `${mode}@3`);
  expect(rest.code).toBe(0);
  await expectAllRowsFromTheExtractor(dir);
}

/** Every sample of the dataset's outputs is there once, and every row equals `fakeRow`. */
async function expectAllRowsFromTheExtractor(dir: string): Promise<void> {
  const output = new LocalBlobStore(path.join(dir, 'activations'));
  const { ids, manifests } = await collectSamples(output, 2);
  expect(ids.sort()).toEqual(expectedSampleIds(4, 2));
  let rows = 0;
  for (const [k, m] of manifests.entries()) {
    for (const part of m.parts) {
      const file = readFileSync(
        path.join(dir, 'activations', `shard_00${k}`, `${part.name}.safetensors`),
      );
      const parsed = parseSafetensorsHeader(file);
      const tokens = readTensor(file, parsed, 'token_ids') as Int32Array;
      const positions = readTensor(file, parsed, 'token_positions') as Int32Array;
      for (let layer = 0; layer < LAYERS; layer++) {
        const values = readTensor(file, parsed, `resid_post.${layer}`) as Uint16Array;
        for (let r = 0; r < tokens.length; r++)
          for (let d = 0; d < HIDDEN; d++) {
            const want = fakeRow(layer, tokens[r]!, positions[r]!, d);
            const got = f16BitsToNumber(values[r * HIDDEN + d]!);
            if (got !== want)
              throw new Error(`${part.name} layer ${layer} row ${r}[${d}]: ${got}, want ${want}`);
          }
      }
      rows += tokens.length;
    }
  }
  expect(rows).toBeGreaterThan(0);
}

describe('a child extractor that fails', () => {
  test('dies in the middle of a batch: the claim fails saying it exited', async () => {
    await expectFailedThenResumed(
      'die',
      'die',
      /the extractor exited \(code 1\).*dying in the middle of batch/,
    );
  });

  test('answers garbage: the claim fails with the protocol error', async () => {
    await expectFailedThenResumed(
      'garbage',
      'garbage',
      /extractor protocol error: a frame starts with "Trac", not SLXF/,
    );
  });

  test('hangs: killed on the timeout and the claim failed, while the lease was renewed throughout', async () => {
    // The lease is 2 s (renewed every 0.67 s); the child hangs for the 4 s timeout. A keeper
    // that waited on the child would let the lease expire. Watch it from the ledger meanwhile.
    const { dir, state } = setUp('hang');
    const watcher = openLedger(dir);
    const seen: Array<{ atMs: number; expiresMs: number }> = [];
    let hungSince: number | null = null;
    const poll = setInterval(() => {
      void watcher.getShard(DATASET, 0).then((s) => {
        if (s?.status !== 'in_use' || !s.lease_expires_at) return;
        if (hungSince === null && fakeChildren(state).length > 0 && hangStarted(state))
          hungSince = Date.now();
        if (hungSince !== null)
          seen.push({ atMs: Date.now(), expiresMs: Date.parse(s.lease_expires_at) });
      });
    }, 100);
    let run: Awaited<ReturnType<typeof work>>;
    try {
      run = await work(
        dir,
        state,
        'hang@3',
        '--max_shards',
        '1',
        '--preferred_shard_id',
        '0',
        '--extractor_timeout_seconds',
        '4',
      );
    } finally {
      clearInterval(poll);
    }
    expect(run.code).toBe(0);
    const s0 = await watcher.getShard(DATASET, 0);
    await watcher.close();
    expect(s0).toMatchObject({ status: 'available', attempts: 1 });
    expect(s0!.last_error).toMatch(
      /^MODEL: the extractor did not answer batch 3 within 4 s \(--extractor_timeout_seconds\); killed it.*hanging on batch 3/,
    );
    // While the child hung, the lease never ran out and was renewed again and again.
    expect(seen.length).toBeGreaterThan(10);
    for (const s of seen) expect(s.expiresMs).toBeGreaterThan(s.atMs);
    expect(new Set(seen.map((s) => s.expiresMs)).size).toBeGreaterThanOrEqual(4);
    const [hung] = fakeChildren(state);
    expect(processAlive(hung!.pid)).toBe(false);
    // Nothing of the hung batch was committed; a later run resumes and finishes.
    expect(existsSync(path.join(dir, 'activations', 'shard_000', 'part_00002.safetensors'))).toBe(
      false,
    );
    expect((await work(dir, state, 'hang@3')).code).toBe(0);
    await expectAllRowsFromTheExtractor(dir);
  });

  test('speaks another protocol version at start: the worker stops before claiming anything', async () => {
    const { dir, state } = setUp('version-start');
    const run = await work(dir, state, 'version');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      'did not start: UNSUPPORTED_VERSION: this extractor speaks shardline-extractor version 2',
    );
    const ledger = openLedger(dir);
    try {
      const status = await ledger.status(DATASET);
      expect(status.shards.map((s) => [s.status, s.attempts])).toEqual([
        ['available', 0],
        ['available', 0],
      ]);
    } finally {
      await ledger.close();
    }
  });

  test('speaks another protocol version when restarted: the next claim fails with that reason', async () => {
    const { dir, state } = setUp('version-restart');
    const run = await work(
      dir,
      state,
      'die@1,version',
      '--max_shards',
      '2',
      '--preferred_shard_id',
      '0',
    );
    expect(run.code).toBe(0);
    const ledger = openLedger(dir);
    try {
      const [s0, s1] = [await ledger.getShard(DATASET, 0), await ledger.getShard(DATASET, 1)];
      expect(s0).toMatchObject({ status: 'available', attempts: 1 });
      expect(s0!.last_error).toMatch(/the extractor exited \(code 1\)/);
      expect(s1).toMatchObject({ status: 'available', attempts: 1 });
      expect(s1!.last_error).toMatch(
        /^MODEL: the extractor \(.*\) did not start: UNSUPPORTED_VERSION: this extractor speaks shardline-extractor version 2/,
      );
      expect(await ledger.listParts({ dataset_id: DATASET, shard_id: 1 })).toEqual([]);
    } finally {
      await ledger.close();
    }
    expect(fakeChildren(state).map((c) => c.mode)).toEqual(['die@1', 'version']);
  });
});

/** Whether the fake's first child has begun to hang (it says so on stderr; we see its state). */
function hangStarted(state: string): boolean {
  return existsSync(path.join(state, 'hanging'));
}
