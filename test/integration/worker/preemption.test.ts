/**
 * A preemption notice end to end: `shardline work` (the built CLI) on a "Compute Engine VM"
 * whose metadata server is a fake on loopback (`GCE_METADATA_HOST`). When the server says the
 * VM is preempted, the worker stops claiming, commits the part in hand, releases its shard
 * without an attempt and exits 0, long before its lease would have run out; the next worker
 * resumes where it stopped, and every sample is in the outputs exactly once.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { LOCAL_LEDGER_FILE } from '../../../core/dataset/paths';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { cli } from '../../support/cli';
import { FakeMetadataServer } from '../../support/fake-metadata';
import { makeTempDir } from '../../support/tmp';
import {
  arcJsonl,
  collectSamples,
  expectedSampleIds,
  makeModel,
  spawnWorker,
  waitFor,
} from '../../support/worker-fixtures';

jest.setTimeout(300_000);

const TASKS = 100;
const { dir, cleanup } = makeTempDir('preemption-it');
let server: FakeMetadataServer;
afterAll(async () => {
  await server?.close();
  cleanup();
});

test('on a preemption notice the worker commits the part in hand, releases its shard (no attempt) and exits 0; the next worker finishes it exactly', async () => {
  server = await FakeMetadataServer.start();
  const model = makeModel(path.join(dir, 'model'));
  writeFileSync(path.join(dir, 'tasks.jsonl'), arcJsonl(TASKS));
  const made = await cli(
    ['create', '--input_file', 'tasks.jsonl', '--output_dir', 'ds', '--num_shards', '1'],
    { cwd: dir },
  );
  expect(made.code).toBe(0);
  const ds = path.join(dir, 'ds');
  const common = [
    '--sharded_dataset_dir',
    ds,
    '--model_path',
    model,
    '--predictions_per_task',
    '2',
    '--part_size_mb',
    '0.05',
    // A lease far longer than the test: only the notice can hand the shard on this soon.
    '--lease_seconds',
    '3600',
  ];
  const ledger = SqliteLedger.open(path.join(ds, LOCAL_LEDGER_FILE), { clock: systemClock });
  try {
    const w = spawnWorker(
      [...common, '--worker_id', 'spot-vm'],
      { ...process.env, GCE_METADATA_HOST: server.host, SHARDLINE_PREEMPTION_NOTICES: 'auto' },
      dir,
    );
    await waitFor(
      'a committed part',
      async () => ((await ledger.getShard('ds', 0))?.parts_committed ?? 0) > 0,
      120_000,
    );
    expect(server.held).toBe(2); // it is watching both keys
    server.set('preempted', 'TRUE');
    expect(await w.exited).toBe(0);
    expect(w.stdout()).toContain('1 released at shutdown');
    expect(w.stderr()).toContain('preemption notice: this machine is about to stop; draining');
    expect(w.stderr()).toContain(
      'preemption notice: committed the part in hand; releasing the unit',
    );
    expect(server.requests.every((r) => r.flavor === 'Google')).toBe(true);
    const after = (await ledger.getShard('ds', 0))!;
    expect(after).toMatchObject({ status: 'available', attempts: 0, assigned_to: null });
    expect(after.next_task_index).toBeGreaterThan(0);
    expect(after.next_task_index).toBeLessThan(TASKS);
    expect(after.history.at(-1)).toMatchObject({ kind: 'release', worker: 'spot-vm' });
    // What it committed ends where the shard now resumes.
    expect((await ledger.listParts({ dataset_id: 'ds', shard_id: 0 })).at(-1)).toMatchObject({
      next_task_index: after.next_task_index,
      worker_id: 'spot-vm',
    });

    const next = spawnWorker([...common, '--worker_id', 'next'], { ...process.env }, dir);
    expect(await next.exited).toBe(0);
    const { ids } = await collectSamples(new LocalBlobStore(path.join(ds, 'activations')), 1);
    expect([...ids].sort()).toEqual(expectedSampleIds(TASKS, 2));
  } finally {
    await ledger.close();
  }
});
