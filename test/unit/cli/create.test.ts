/**
 * `shardline create` as a user runs it: the seed's scenario, re-runs, refusals, bad input.
 */
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';

import { LocalBlobStore } from '../../../core/blob/local';
import { systemClock } from '../../../core/clock';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import { CREATING_MARKER } from '../../../core/dataset/paths';
import { EXIT } from '../../../cli/exit-codes';
import { cli } from '../../support/cli';
import { readAndCheckDataset } from '../../support/dataset-check';
import { taskJson, rng } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';

let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = makeTempDir('create'));
});
afterEach(() => cleanup());

/** `n` ARC-like tasks, one per line. */
function tasksFile(name: string, n: number, seed = 1): string {
  const r = rng(seed);
  const text = Array.from({ length: n }, (_, i) => taskJson(r, i, 0)).join('\n') + '\n';
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function snapshot(root: string): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(root, p)] = statSync(p).mtimeMs;
    }
  };
  if (existsSync(root)) walk(root);
  return out;
}

test("the seed's scenario: 100 tasks, 8 shards, 0.1 MB chunks; nothing dropped, everything checked", async () => {
  const input = tasksFile('test_tasks.jsonl', 100);
  const run = await cli(
    [
      'create',
      '--input_file',
      input,
      '--output_dir',
      'sharded_dataset',
      '--num_shards',
      '8',
      '--chunk_size_mb',
      '0.1',
      '--verbose',
    ],
    { cwd: dir },
  );
  expect(run.code).toBe(EXIT.OK);
  expect(run.stdout).toContain('✓ Created dataset "sharded_dataset"');
  const back = await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'sharded_dataset')));
  // The original kept 8 x floor(100/8) = 96 tasks and still reported 100.
  expect(back.master.total_tasks).toBe(100);
  expect(back.tasks).toHaveLength(100);
  expect(back.shards.map((s) => s.total_tasks)).toEqual([12, 13, 12, 13, 12, 13, 12, 13]);
  const original = readFileSync(input, 'utf8').trimEnd().split('\n');
  expect(back.tasks.map((t) => t.toString())).toEqual(original);
  expect(back.master).toMatchObject({
    num_shards: 8,
    chunk_size_mb: 0.1,
    rejected_lines: 0,
    blank_lines: 0,
    dataset_id: 'sharded_dataset',
  });
  // Seed field names and order in the shard metadata.
  const shardText = readFileSync(path.join(dir, 'sharded_dataset/shard_000/metadata.json'), 'utf8');
  expect(Object.keys(JSON.parse(shardText) as object).slice(0, 9)).toEqual([
    'shard_id',
    'total_shards',
    'status',
    'total_tasks',
    'num_chunks',
    'chunks',
    'assigned_to',
    'started_at',
    'completed_at',
  ]);
  const masterText = readFileSync(path.join(dir, 'sharded_dataset/master_metadata.json'), 'utf8');
  expect(Object.keys(JSON.parse(masterText) as object).slice(0, 4)).toEqual([
    'total_tasks',
    'num_shards',
    'chunk_size_mb',
    'shards',
  ]);
});

test('--json prints one machine-readable document', async () => {
  const input = tasksFile('in.jsonl', 20);
  const run = await cli(
    ['create', '--input-file', input, '--output-dir', 'ds', '--num-shards', '3', '--json'],
    { cwd: dir },
  );
  expect(run.code).toBe(EXIT.OK);
  const doc = JSON.parse(run.stdout) as {
    outcome: string;
    total_tasks: number;
    shards: Array<{ total_tasks: number }>;
  };
  expect(doc.outcome).toBe('created');
  expect(doc.total_tasks).toBe(20);
  expect(doc.shards.map((s) => s.total_tasks)).toEqual([6, 7, 7]);
});

test('re-running over the identical finished dataset changes nothing', async () => {
  const input = tasksFile('in.jsonl', 30);
  expect(
    (
      await cli(['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '4'], {
        cwd: dir,
      })
    ).code,
  ).toBe(0);
  const before = snapshot(path.join(dir, 'ds'));
  const again = await cli(
    ['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '4'],
    { cwd: dir },
  );
  expect(again.code).toBe(EXIT.OK);
  expect(again.stdout).toContain('already up to date');
  expect(snapshot(path.join(dir, 'ds'))).toEqual(before);
});

test('a different input or different settings over an existing dataset is refused, and nothing is touched', async () => {
  const input = tasksFile('in.jsonl', 30);
  expect(
    (
      await cli(['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '4'], {
        cwd: dir,
      })
    ).code,
  ).toBe(0);
  const before = snapshot(path.join(dir, 'ds'));
  const other = tasksFile('other.jsonl', 31, 2);
  const changed = await cli(
    ['create', '--input_file', other, '--output_dir', 'ds', '--num_shards', '4'],
    { cwd: dir },
  );
  expect(changed.code).toBe(EXIT.CONFLICT);
  expect(changed.stderr).toContain("the input's content differs");
  const resharded = await cli(
    ['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '5'],
    { cwd: dir },
  );
  expect(resharded.code).toBe(EXIT.CONFLICT);
  expect(resharded.stderr).toContain('--num_shards 4, this run 5');
  expect(snapshot(path.join(dir, 'ds'))).toEqual(before);
});

test('the remains of a create that died are cleaned up and the dataset made', async () => {
  const input = tasksFile('in.jsonl', 10);
  mkdirSync(path.join(dir, 'ds/shard_000'), { recursive: true });
  writeFileSync(path.join(dir, 'ds/shard_000/chunk_0000.jsonl'), 'half a chunk');
  writeFileSync(path.join(dir, 'ds/shard_007/'.replace(/\/$/, '')), 'stale'); // a file named like a shard
  writeFileSync(
    path.join(dir, 'ds', CREATING_MARKER),
    JSON.stringify({
      dataset_id: 'ds',
      host: 'some-other-host',
      pid: 1,
      started_at: '2020-01-01T00:00:00.000Z',
      updated_at: '2020-01-01T00:00:00.000Z',
      source: input,
    }),
  );
  const run = await cli(
    ['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '2'],
    { cwd: dir },
  );
  expect(run.code).toBe(EXIT.OK);
  expect(run.stderr).toContain('removing the remains of an unfinished create');
  await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'ds')));
  expect(existsSync(path.join(dir, 'ds/shard_007'))).toBe(false);
  expect(existsSync(path.join(dir, 'ds', CREATING_MARKER))).toBe(false);
});

test('a create still running elsewhere in the same folder is not disturbed', async () => {
  const input = tasksFile('in.jsonl', 10);
  mkdirSync(path.join(dir, 'ds'));
  const { hostname } = await import('node:os');
  const now = new Date().toISOString();
  const marker = JSON.stringify({
    dataset_id: 'ds',
    host: hostname(),
    pid: process.pid,
    started_at: now,
    updated_at: now,
    source: input,
  });
  writeFileSync(path.join(dir, 'ds', CREATING_MARKER), marker);
  const run = await cli(['create', '--input_file', input, '--output_dir', 'ds'], { cwd: dir });
  expect(run.code).toBe(EXIT.CONFLICT);
  expect(run.stderr).toContain('another create is writing');
  expect(readFileSync(path.join(dir, 'ds', CREATING_MARKER), 'utf8')).toBe(marker);
});

test("a folder holding someone else's files is refused and left alone", async () => {
  const input = tasksFile('in.jsonl', 10);
  mkdirSync(path.join(dir, 'ds'));
  writeFileSync(path.join(dir, 'ds/notes.txt'), 'mine');
  const run = await cli(['create', '--input_file', input, '--output_dir', 'ds'], { cwd: dir });
  expect(run.code).toBe(EXIT.CONFLICT);
  expect(run.stderr).toContain('holds no shardline dataset');
  expect(readdirSync(path.join(dir, 'ds'))).toEqual(['notes.txt']);
});

test('--strict stops at the first bad line, names it, and writes nothing', async () => {
  writeFileSync(path.join(dir, 'in.jsonl'), '{"a":1}\n\n{"b":2}\n[3]\n{"c":3}\n');
  const run = await cli(['create', '--input_file', 'in.jsonl', '--output_dir', 'ds', '--strict'], {
    cwd: dir,
  });
  expect(run.code).toBe(EXIT.INVALID_INPUT);
  expect(run.stderr).toContain(
    'line 4 is not a valid task: not a JSON object: the line is an array',
  );
  expect(snapshot(path.join(dir, 'ds'))).toEqual({});
});

test('without --strict, bad lines go to rejected.jsonl with line, offset and reason; blank lines are counted', async () => {
  writeFileSync(path.join(dir, 'in.jsonl'), '{"a":1}\n\n{"b":2}\n[3]\n{"c":\n  \n{"d":4}');
  const run = await cli(
    ['create', '--input_file', 'in.jsonl', '--output_dir', 'ds', '--num_shards', '2'],
    { cwd: dir },
  );
  expect(run.code).toBe(EXIT.OK);
  expect(run.stdout).toContain('line 4: not a JSON object: the line is an array');
  const rejected = readFileSync(path.join(dir, 'ds/rejected.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as unknown);
  expect(rejected).toEqual([
    {
      line: 4,
      offset: 17,
      reason: 'not a JSON object: the line is an array',
      bytes: 3,
      preview: '[3]',
    },
    {
      line: 5,
      offset: 21,
      reason: 'invalid JSON: the line ends inside the object (truncated?)',
      bytes: 5,
      preview: '{"c":',
    },
  ]);
  const back = await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'ds')));
  expect(back.master).toMatchObject({
    total_tasks: 3,
    input_lines: 7,
    blank_lines: 2,
    rejected_lines: 2,
  });
  expect(back.tasks.map(String)).toEqual(['{"a":1}', '{"b":2}', '{"d":4}']);
});

test('a .jsonl.gz input gives the same dataset as the plain file', async () => {
  const input = tasksFile('in.jsonl', 40);
  writeFileSync(path.join(dir, 'in.jsonl.gz'), gzipSync(readFileSync(input)));
  expect(
    (
      await cli(
        [
          'create',
          '--input_file',
          input,
          '--output_dir',
          'plain',
          '--num_shards',
          '3',
          '--chunk_size_mb',
          '0.01',
        ],
        { cwd: dir },
      )
    ).code,
  ).toBe(0);
  expect(
    (
      await cli(
        [
          'create',
          '--input_file',
          'in.jsonl.gz',
          '--output_dir',
          'gz',
          '--num_shards',
          '3',
          '--chunk_size_mb',
          '0.01',
        ],
        { cwd: dir },
      )
    ).code,
  ).toBe(0);
  const a = await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'plain')));
  const b = await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'gz')));
  expect([...b.files.entries()]).toEqual([...a.files.entries()]);
  expect(b.master.source).toMatchObject({
    gzip: true,
    bytes: a.master.source.bytes,
    crc32c: a.master.source.crc32c,
  });
});

test('a truncated or fake .gz fails with a clear message and leaves nothing', async () => {
  const input = tasksFile('in.jsonl', 200);
  const gz = gzipSync(readFileSync(input));
  writeFileSync(path.join(dir, 'cut.jsonl.gz'), gz.subarray(0, Math.floor(gz.length / 2)));
  writeFileSync(path.join(dir, 'fake.jsonl.gz'), readFileSync(input));
  const cut = await cli(['create', '--input_file', 'cut.jsonl.gz', '--output_dir', 'a'], {
    cwd: dir,
  });
  expect(cut.code).toBe(EXIT.INVALID_INPUT);
  expect(cut.stderr).toContain('is truncated');
  const fake = await cli(['create', '--input_file', 'fake.jsonl.gz', '--output_dir', 'b'], {
    cwd: dir,
  });
  expect(fake.code).toBe(EXIT.INVALID_INPUT);
  expect(fake.stderr).toContain('is not gzip data');
  expect(snapshot(path.join(dir, 'a'))).toEqual({});
  expect(snapshot(path.join(dir, 'b'))).toEqual({});
});

test('an empty input, or one with no valid task, is refused with what was found', async () => {
  writeFileSync(path.join(dir, 'empty.jsonl'), '');
  writeFileSync(path.join(dir, 'blank.jsonl'), '\n  \n\r\n');
  writeFileSync(path.join(dir, 'bad.jsonl'), '[1]\n2\n');
  const empty = await cli(['create', '--input_file', 'empty.jsonl', '--output_dir', 'a'], {
    cwd: dir,
  });
  expect([empty.code, empty.stderr]).toEqual([
    EXIT.INVALID_INPUT,
    expect.stringContaining('is empty: no task to shard'),
  ]);
  const blank = await cli(['create', '--input_file', 'blank.jsonl', '--output_dir', 'b'], {
    cwd: dir,
  });
  expect([blank.code, blank.stderr]).toEqual([
    EXIT.INVALID_INPUT,
    expect.stringContaining('holds no valid task (3 lines: 3 blank, 0 rejected)'),
  ]);
  const bad = await cli(['create', '--input_file', 'bad.jsonl', '--output_dir', 'c'], { cwd: dir });
  expect([bad.code, bad.stderr]).toEqual([
    EXIT.INVALID_INPUT,
    expect.stringContaining('first rejected: line 1: not a JSON object'),
  ]);
});

test('fewer tasks than shards: one shard per task, and the summary says why', async () => {
  const input = tasksFile('in.jsonl', 3);
  const run = await cli(
    ['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '8'],
    { cwd: dir },
  );
  expect(run.code).toBe(0);
  expect(run.stdout).toContain('3 shards, not 8');
  const back = await readAndCheckDataset(new LocalBlobStore(path.join(dir, 'ds')));
  expect(back.master).toMatchObject({ num_shards: 3, requested_num_shards: 8 });
});

test('usage errors: missing input, unknown or bad flags', async () => {
  const missing = await cli(['create', '--input_file', 'nope.jsonl', '--output_dir', 'ds'], {
    cwd: dir,
  });
  expect([missing.code, missing.stderr]).toEqual([
    EXIT.NOT_FOUND,
    expect.stringContaining('input not found'),
  ]);
  const typo = await cli(['create', '--input_fle', 'x', '--output_dir', 'ds'], { cwd: dir });
  expect([typo.code, typo.stderr]).toEqual([
    EXIT.USAGE,
    expect.stringContaining('did you mean --input_file?'),
  ]);
  const zero = await cli(
    ['create', '--input_file', 'x', '--output_dir', 'ds', '--num_shards', '0'],
    { cwd: dir },
  );
  expect([zero.code, zero.stderr]).toEqual([
    EXIT.USAGE,
    expect.stringContaining('--num_shards must be at least 1, got "0"'),
  ]);
  const noOut = await cli(['create', '--input_file', 'x'], { cwd: dir });
  expect([noOut.code, noOut.stderr]).toEqual([
    EXIT.USAGE,
    expect.stringContaining('--output_dir is required'),
  ]);
});

test('--help documents the flags and the exit codes', async () => {
  const help = await cli(['create', '--help'], { cwd: dir });
  expect(help.code).toBe(0);
  for (const flag of [
    '--input_file',
    '--output_dir',
    '--num_shards',
    '--chunk_size_mb',
    '--verbose',
    '--strict',
    '--json',
  ]) {
    expect(help.stdout).toContain(flag);
  }
  expect(help.stdout).toContain('Exit codes:');
});

test('create registers the new dataset in the SQLite ledger beside it: every shard available', async () => {
  const input = tasksFile('in.jsonl', 25);
  const run = await cli(
    ['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '4'],
    { cwd: dir },
  );
  expect(run.code).toBe(EXIT.OK);
  expect(run.stdout).toContain('Ledger: sqlite');
  const ledger = SqliteLedger.open(path.join(dir, 'ds/ledger.sqlite'), {
    clock: systemClock,
  });
  try {
    const status = await ledger.status('ds');
    expect(status.totals).toMatchObject({ shards: 4, available: 4, total_tasks: 25 });
    expect(status.shards.map((s) => s.total_tasks)).toEqual([6, 6, 6, 7]);
  } finally {
    await ledger.close();
  }
  const json = await cli(
    ['create', '--input_file', input, '--output_dir', 'ds', '--num_shards', '4', '--json'],
    { cwd: dir },
  );
  expect(JSON.parse(json.stdout)).toMatchObject({
    outcome: 'unchanged',
    ledger: { kind: 'sqlite', newly_registered: false },
  });
});

test('--log_format is honoured written with a space as well as with =', async () => {
  writeFileSync(path.join(dir, 'in.jsonl'), '{"a":1}\n');
  const spaced = await cli(
    [
      'create',
      '--input_file',
      'in.jsonl',
      '--output_dir',
      'a',
      '--log_format',
      'text',
      '--verbose',
    ],
    { cwd: dir },
  );
  const joined = await cli(
    ['create', '--input_file', 'in.jsonl', '--output_dir', 'b', '--log_format=json', '--verbose'],
    { cwd: dir },
  );
  expect({ spaced: spaced.code, joined: joined.code }).toEqual({ spaced: 0, joined: 0 });
  const lines = (stderr: string) => stderr.split('\n').filter(Boolean);
  // --verbose logs at least the run's start and end; every line is in the asked-for format.
  const text = lines(spaced.stderr);
  expect(text.length).toBeGreaterThanOrEqual(2);
  for (const l of text) expect(l).toMatch(/^\d\d:\d\d:\d\d (DEBUG|INFO|NOTICE|WARNING|ERROR)\s+\S/);
  const json = lines(joined.stderr);
  expect(json.length).toBeGreaterThanOrEqual(2);
  for (const l of json)
    expect(JSON.parse(l)).toMatchObject({
      severity: expect.stringMatching(/^(DEBUG|INFO|NOTICE|WARNING|ERROR)$/) as unknown,
      message: expect.any(String) as unknown,
      time: expect.any(String) as unknown,
    });
  // The same run, so the same lines: one per line in either format.
  expect(json.map((l) => (JSON.parse(l) as { message: string }).message)).toEqual(
    text.map((l) => l.replace(/^\S+ \S+\s+/, '').split('  ')[0]),
  );
});
