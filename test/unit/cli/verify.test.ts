/**
 * `shardline verify` on real outputs (in-process CLI, SQLite ledger, a seeded Qwen2-shaped
 * model): a clean dataset passes, with and without recomputed statistics, also while it is
 * still running; each kind of damage a user meets is found, with the file named and exit 9:
 * a flipped byte, a deleted part, a part of another run copied in, a missing task (a line
 * removed from an index file, a part removed from a shard manifest).
 */
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { EXIT } from '../../../cli/exit-codes';
import type { VerifyReport } from '../../../cli/verify-report';
import type { PartInput } from '../../../core/ledger/ledger';
import { SqliteLedger } from '../../../core/ledger/sqlite';
import type { ShardManifest } from '../../../core/rollup/manifests';
import { cli } from '../../support/cli';
import { createDataset, extract, mixedTaskLines } from '../../support/extracted';
import { makeTempDir } from '../../support/tmp';
import { makeModel } from '../../support/worker-fixtures';

jest.setTimeout(180_000);

let root: string;
let cleanup: () => void;
let model: string;
/** The dataset as `create` left it. */
let created: string;
/** The dataset after a complete `work` run: copied, then damaged, by each test. */
let finished: string;
/** The same dataset extracted with other `--layers`: the source of foreign parts. */
let otherRun: string;

function work(dir: string, ...extra: string[]) {
  return extract(root, dir, model, ...extra);
}

/** A fresh copy of `from`. */
function copy(from: string, name: string): string {
  const dir = path.join(root, name);
  cpSync(from, dir, { recursive: true });
  return dir;
}

async function verify(
  dir: string,
  ...extra: string[]
): Promise<{ code: number; report: VerifyReport; stderr: string }> {
  const run = await cli(['verify', '--dataset_dir', dir, '--json', ...extra], { cwd: root });
  return { code: run.code, report: JSON.parse(run.stdout) as VerifyReport, stderr: run.stderr };
}

function shardManifest(dir: string, shard: number): ShardManifest {
  return JSON.parse(
    readFileSync(path.join(dir, 'activations', `shard_00${shard}`, '_MANIFEST.json'), 'utf8'),
  ) as ShardManifest;
}

function partFile(dir: string, shard: number, name: string): string {
  return path.join(dir, 'activations', `shard_00${shard}`, name);
}

beforeAll(async () => {
  ({ dir: root, cleanup } = makeTempDir('verify'));
  model = makeModel(path.join(root, 'model'));
  created = await createDataset(root, 'created', mixedTaskLines());
  finished = copy(created, 'finished');
  expect((await work(finished, '--layers', '0,1')).code).toBe(0);
  otherRun = copy(created, 'other-run');
  expect((await work(otherRun, '--layers', '0')).code).toBe(0);
  // The damage below needs parts of several samples, and shards of several parts.
  for (const shard of [0, 1]) {
    const m = shardManifest(finished, shard);
    expect(m.parts.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...m.parts.map((p) => p.samples))).toBeGreaterThanOrEqual(2);
  }
});
afterAll(() => cleanup());

test('a clean dataset passes, and the report counts what the manifests hold', async () => {
  const dir = copy(finished, 'clean');
  const { code, report } = await verify(dir);
  expect(report.problems).toEqual([]);
  expect(code).toBe(EXIT.OK);
  const shards = [0, 1].map((s) => shardManifest(dir, s));
  expect(report).toMatchObject({
    complete: true,
    shards_total: 2,
    shards_completed: 2,
    fingerprint: shards[0]!.fingerprint,
    totals: {
      parts: shards[0]!.parts.length + shards[1]!.parts.length,
      files: 2 * (shards[0]!.parts.length + shards[1]!.parts.length),
      samples: shards[0]!.samples + shards[1]!.samples,
      rows: shards[0]!.rows + shards[1]!.rows,
      skipped: 1,
      bytes: shards[0]!.bytes + shards[1]!.bytes,
    },
  });
  // Every byte of every part was read (the manifests and the parts' files).
  expect(report.bytes_read).toBe(report.totals.bytes);

  const text = await cli(['verify', '--dataset_dir', dir, '--recompute_stats'], { cwd: root });
  expect(text.code).toBe(EXIT.OK);
  expect(text.stdout).toMatch(/^total +\d+ +\d+/m);
  expect(text.stdout).toContain('Statistics recomputed from every row');
  expect(text.stdout).toContain('OK: every file present and intact');
});

test('a running dataset passes: only completed shards are expected', async () => {
  const dir = copy(created, 'running');
  expect((await work(dir, '--layers', '0,1', '--max_shards', '1')).code).toBe(0);
  const { code, report } = await verify(dir);
  expect(report.problems).toEqual([]);
  expect(code).toBe(EXIT.OK);
  expect(report).toMatchObject({ complete: false, shards_total: 2, shards_completed: 1 });
  expect(report.shards.map((s) => s.status).sort()).toEqual(['available', 'completed']);
});

test('a shard in the middle of its work: its committed parts are checked, its other tasks not expected', async () => {
  const dir = copy(created, 'midway');
  expect((await work(dir, '--layers', '0,1', '--max_shards', '1')).code).toBe(0);
  const datasetId = (
    JSON.parse(readFileSync(path.join(dir, 'master_metadata.json'), 'utf8')) as {
      dataset_id: string;
    }
  ).dataset_id;
  const clock = { nowMs: () => Date.now() };
  const ledger = SqliteLedger.open(path.join(dir, 'ledger.sqlite'), { clock });
  const done = SqliteLedger.open(path.join(finished, 'ledger.sqlite'), { clock });
  try {
    const open = (await ledger.status(datasetId)).shards.find((s) => s.status !== 'completed')!;
    // Its first part as the finished run committed it: the same settings give the same bytes.
    const [first] = await done.listParts({ dataset_id: datasetId, shard_id: open.shard_id });
    const input: PartInput = {
      part_index: first!.part_index,
      name: first!.name,
      first_task_index: first!.first_task_index,
      first_sample: first!.first_sample,
      last_task_index: first!.last_task_index,
      next_task_index: first!.next_task_index,
      next_sample: first!.next_sample,
      samples: first!.samples,
      bytes: first!.bytes,
      checksums: first!.checksums,
      fingerprint: first!.fingerprint,
    };
    const claim = await ledger.claim(datasetId, 'halfway', { preferredShardId: open.shard_id });
    expect(claim?.shard_id).toBe(open.shard_id);
    for (const f of Object.keys(input.checksums))
      cpSync(partFile(finished, open.shard_id, f), partFile(dir, open.shard_id, f));
    await ledger.commitPart(claim!, input);

    const { code, report } = await verify(dir);
    expect(report.problems).toEqual([]);
    expect(code).toBe(EXIT.OK);
    expect(report.shards.find((s) => s.shard_id === open.shard_id)).toMatchObject({
      status: 'in_use',
      parts: 1,
      samples: first!.samples,
    });

    const file = partFile(dir, open.shard_id, `${first!.name}.safetensors`);
    rmSync(file);
    const broken = await verify(dir);
    expect(broken.code).toBe(EXIT.VERIFY_FAILED);
    expect(broken.report.problems).toContainEqual(
      expect.objectContaining({ uri: file, kind: 'missing', shard_id: open.shard_id }),
    );
  } finally {
    await ledger.close();
    await done.close();
  }
});

test('a flipped byte in a part: its checksum, and with --recompute_stats its statistics', async () => {
  const dir = copy(finished, 'flipped');
  const name = shardManifest(dir, 1).parts[1]!.name;
  const file = partFile(dir, 1, `${name}.safetensors`);
  const bytes = readFileSync(file);
  // A byte inside the last activation tensor (the file's second half is activations).
  const at = bytes.length - 100;
  bytes[at] = bytes[at]! ^ 0x40;
  writeFileSync(file, bytes);

  const { code, report } = await verify(dir, '--recompute_stats');
  expect(code).toBe(EXIT.VERIFY_FAILED);
  expect(report.problems).toContainEqual(
    expect.objectContaining({ uri: file, kind: 'checksum', shard_id: 1 }),
  );
  expect(report.problems).toContainEqual(
    expect.objectContaining({
      uri: file,
      kind: 'stats',
      message: expect.stringMatching(
        /^stats\.resid_post\.1 disagrees with its rows recomputed/,
      ) as unknown,
    }),
  );
  expect(report.shards.find((s) => s.shard_id === 1)!.problems).toBeGreaterThan(0);
  expect(report.shards.find((s) => s.shard_id === 0)!.problems).toBe(0);

  const text = await cli(['verify', '--dataset_dir', dir], { cwd: root });
  expect(text.code).toBe(EXIT.VERIFY_FAILED);
  expect(text.stdout).toContain(`${file}: checksum: CRC32C is `);
});

test('a deleted part: both files missing, and the tasks they held', async () => {
  const dir = copy(finished, 'deleted');
  const part = shardManifest(dir, 0).parts[0]!;
  const files = [`${part.name}.safetensors`, `${part.name}.index.jsonl`].map((f) =>
    partFile(dir, 0, f),
  );
  for (const f of files) rmSync(f);

  const { code, report } = await verify(dir);
  expect(code).toBe(EXIT.VERIFY_FAILED);
  for (const f of files)
    expect(report.problems).toContainEqual(
      expect.objectContaining({ uri: f, kind: 'missing', shard_id: 0 }),
    );
  // The first part began with the shard's first sample, 0.0.0: gone, with its task or not.
  const tasks = report.problems.filter((p) => p.kind === 'tasks').map((p) => p.message);
  expect(tasks).toContainEqual(
    expect.stringMatching(/^(task 0: sample\(s\) 0\.0\.0\b.* missing|\d+ task\(s\) missing: 0\b)/),
  );
});

test('a part of another run copied in under the same name: the fingerprint, naming the field', async () => {
  const dir = copy(finished, 'foreign');
  for (const f of ['part_00000.safetensors', 'part_00000.index.jsonl'])
    cpSync(partFile(otherRun, 0, f), partFile(dir, 0, f));

  const { code, report } = await verify(dir);
  expect(code).toBe(EXIT.VERIFY_FAILED);
  const file = partFile(dir, 0, 'part_00000.safetensors');
  expect(report.problems).toContainEqual(
    expect.objectContaining({
      uri: file,
      kind: 'fingerprint',
      message: expect.stringContaining('written by another run') as unknown,
    }),
  );
  const fingerprint = report.problems.find((p) => p.kind === 'fingerprint')!;
  expect(fingerprint.message).toContain('layers: [0] here, [0,1] in the dataset');
  expect(report.problems).toContainEqual(expect.objectContaining({ uri: file, kind: 'checksum' }));
});

test('a line removed from an index file: the missing sample, named in that file', async () => {
  const dir = copy(finished, 'line-removed');
  // The last line of a part of several samples, an ARC sample (its task has other samples).
  const [file, lines] = shardManifest(dir, 1)
    .parts.filter((p) => p.samples >= 2)
    .map((p) => partFile(dir, 1, `${p.name}.index.jsonl`))
    .map((f): [string, string[]] => [f, readFileSync(f, 'utf8').trimEnd().split('\n')])
    .find(([, l]) => (JSON.parse(l.at(-1)!) as { kind: string }).kind === 'arc')!;
  const removed = JSON.parse(lines.pop()!) as { sample_id: string; task_index: number };
  writeFileSync(file, `${lines.join('\n')}\n`);

  const { code, report } = await verify(dir);
  expect(code).toBe(EXIT.VERIFY_FAILED);
  const missing = report.problems.find((p) => p.kind === 'tasks');
  expect(missing).toBeDefined();
  // Named in the index file that holds the task's other samples.
  expect(missing!.uri).toMatch(/\/shard_001\/part_\d{5}\.index\.jsonl$/);
  expect(missing!.message).toMatch(
    new RegExp(
      `^task ${removed.task_index}: sample\\(s\\) .*\\b${removed.sample_id.replace(/\./g, '\\.')}\\b.* missing`,
    ),
  );
  expect(report.problems).toContainEqual(
    expect.objectContaining({
      uri: file,
      kind: 'counts',
      message: `has ${lines.length} lines, the part holds ${lines.length + 1} samples`,
    }),
  );
  expect(report.problems).toContainEqual(expect.objectContaining({ uri: file, kind: 'checksum' }));
});

test("a part removed from a shard's manifest: the tasks readers lose, and the disagreement with the ledger", async () => {
  const dir = copy(finished, 'unlisted');
  const manifestFile = partFile(dir, 1, '_MANIFEST.json');
  const manifest = shardManifest(dir, 1);
  const [dropped] = manifest.parts.splice(1, 1);
  writeFileSync(manifestFile, JSON.stringify(manifest, null, 2));

  const { code, report } = await verify(dir);
  expect(code).toBe(EXIT.VERIFY_FAILED);
  expect(report.problems).toContainEqual(
    expect.objectContaining({
      uri: manifestFile,
      kind: 'manifest',
      message: `committed part ${dropped!.name} is not listed in the manifest`,
    }),
  );
  // The dropped part's first task is the next one after the part before it, which ended on a
  // task boundary or in the middle of one: either way samples of that task are gone.
  const tasks = report.problems.filter((p) => p.kind === 'tasks');
  expect(tasks.length).toBeGreaterThan(0);
  expect(tasks.map((p) => p.message).join('\n')).toMatch(
    new RegExp(`\\b${dropped!.last_task_index}\\b`),
  );
});
