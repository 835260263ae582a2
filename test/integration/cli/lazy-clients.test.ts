/**
 * A local run (SQLite ledger, local folders) never loads a Google Cloud client library: each
 * takes most of a second to start, and a laptop run has no use for them. The built CLI runs
 * create, status, claim, reset and work in one process, which then lists the modules it
 * loaded; a Firestore client created afterwards is the control that the check can see one.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { arcJsonl, makeModel } from '../../support/worker-fixtures';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const { dir, cleanup } = makeTempDir('lazy-clients');
afterAll(cleanup);

const SCRIPT = `
const { runCli } = require(process.argv[1]);
const { Writable } = require('node:stream');
const sink = () => Object.assign(new Writable({ write: (c, e, cb) => cb() }), { isTTY: false });
const io = { stdout: sink(), stderr: sink(), env: { PATH: process.env.PATH }, cwd: process.argv[2] };
const loaded = () => Object.keys(require.cache).filter((k) => k.includes('@google-cloud/'))
  .map((k) => k.split('node_modules/').pop().split('/').slice(0, 2).join('/'));
(async () => {
  const codes = [];
  for (const argv of JSON.parse(process.argv[3])) codes.push(await runCli(argv, io));
  const local = [...new Set(loaded())];
  require(process.argv[4]).createFirestoreClient({ projectId: 'demo-lazy' });
  process.stdout.write(JSON.stringify({ codes, local, after: [...new Set(loaded())] }));
  process.exit(0);
})();
`;

test('create, status, claim, reset and work on a local dataset load no cloud client library', () => {
  writeFileSync(path.join(dir, 'tasks.jsonl'), arcJsonl(6));
  const model = makeModel(path.join(dir, 'model'));
  const commands = [
    ['create', '--input_file', 'tasks.jsonl', '--output_dir', 'ds', '--num_shards', '2'],
    ['status', '--dataset_dir', 'ds'],
    ['claim', '--dataset_dir', 'ds', '--worker_id', 'w1'],
    ['reset', '--dataset_dir', 'ds', '--shard_id', '0'],
    [
      'work',
      '--sharded_dataset_dir',
      'ds',
      '--model_path',
      model,
      '--threads',
      '1',
      '--predictions_per_task',
      '1',
      '--worker_id',
      'w2',
    ],
  ];
  const out = execFileSync(
    process.execPath,
    [
      '-e',
      SCRIPT,
      path.join(ROOT, 'dist', 'cli', 'main.js'),
      dir,
      JSON.stringify(commands),
      path.join(ROOT, 'dist', 'core', 'cloud-clients.js'),
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  const result = JSON.parse(out) as { codes: number[]; local: string[]; after: string[] };
  expect(result.codes).toEqual([0, 0, 0, 0, 0]);
  expect(result.local).toEqual([]);
  expect(result.after).toContain('@google-cloud/firestore');
});
