/**
 * The local blob store: the shared contract, and what only it has to get right by itself —
 * generations that never collide (core/blob/local.ts, "Generations"): however fast one key is
 * rewritten, by one process or several, whatever the wall clock does, and on files that older
 * versions of the store wrote.
 */
import { mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { LocalBlobStore } from '../../../core/blob/local';
import { blobStoreContract } from '../../support/blob-contract';
import type { WriteRecord } from '../../support/blob-writer';
import { makeTempDir } from '../../support/tmp';
import { runInProcesses } from '../../support/ts-processes';

const dirs: Array<() => void> = [];
afterAll(() => dirs.forEach((cleanup) => cleanup()));
function freshDir(): string {
  const { dir, cleanup } = makeTempDir('blob');
  dirs.push(cleanup);
  return dir;
}

blobStoreContract('local filesystem', () => Promise.resolve(new LocalBlobStore(freshDir())), {
  enforcesCreateOnly: true,
  generationIsMsClock: false,
});

/** Every entry under `dir`, relative, folders included. */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** The positions where `values` fails to increase strictly. */
function notIncreasing(values: readonly bigint[]): string[] {
  const out: string[] = [];
  for (let i = 1; i < values.length; i++)
    if (values[i]! <= values[i - 1]!) out.push(`#${i}: ${values[i]} after ${values[i - 1]}`);
  return out;
}

describe('local generations', () => {
  test('several processes rewriting one key at once: every write gets its own generation, bound to its content', async () => {
    const root = freshDir();
    const processes = 3;
    const writes = 150;
    const results = await runInProcesses<{ writes: WriteRecord[] }>(
      path.join(__dirname, '../../support/blob-writer.ts'),
      Array.from({ length: processes }, (_, i) => ({
        root,
        key: 'shared/part.bin',
        writer: `w${i}`,
        writes,
      })),
      (i) => `writer w${i}`,
    );
    const all = results.flatMap((r) => r.writes);
    expect(all).toHaveLength(processes * writes);
    expect(new Set(all.map((w) => w.generation)).size).toBe(all.length);
    // Each process's own writes came one after another: increasing.
    for (const r of results)
      expect(notIncreasing(r.writes.map((w) => BigInt(w.generation)))).toEqual([]);
    // The object now is one of those writes: its generation names its content.
    const store = new LocalBlobStore(root);
    const now = (await store.stat('shared/part.bin'))!;
    const content = (await store.readAll('shared/part.bin')).toString();
    expect(all.filter((w) => w.generation === now.generation)).toEqual([
      { generation: now.generation, content },
    ]);
    // Nothing but the object is left in its folder, and only it is listed.
    expect(tree(root)).toEqual(['shared', 'shared/part.bin']);
  });

  test('a frozen or backward wall clock does not make generations repeat', async () => {
    for (const clock of [
      () => 1_000_000n,
      (() => {
        let us = 2_000_000_000_000_000n;
        return () => (us -= 1000n);
      })(),
    ]) {
      const store = new LocalBlobStore(freshDir(), { nowUs: clock });
      const gens: bigint[] = [];
      for (let i = 0; i < 50; i++)
        gens.push(BigInt((await store.writeAll('k', `v${i}`)).generation));
      expect(notIncreasing(gens)).toEqual([]);
      expect(BigInt((await store.stat('k'))!.generation)).toBe(gens.at(-1));
    }
  });

  test('files written by earlier versions keep their generation (mtime in ns), and a rewrite goes above it', async () => {
    const root = freshDir();
    mkdirSync(path.join(root, 'old'));
    writeFileSync(path.join(root, 'old/now.json'), 'written before');
    writeFileSync(path.join(root, 'old/future.json'), 'stamped ahead of the clock');
    const year2100 = Date.UTC(2100, 0, 1) / 1000 + 0.123456;
    utimesSync(path.join(root, 'old/future.json'), year2100, year2100);
    const store = new LocalBlobStore(root);
    for (const key of ['old/now.json', 'old/future.json']) {
      const before = (await store.stat(key))!;
      const { statSync } = await import('node:fs');
      expect(before.generation).toBe(
        statSync(path.join(root, key), { bigint: true }).mtimeNs.toString(),
      );
      const after = await store.writeAll(key, 'rewritten');
      expect({ key, above: BigInt(after.generation) > BigInt(before.generation) }).toEqual({
        key,
        above: true,
      });
    }
  });

  test('a key deleted and written again goes on above its old generations; nothing is left behind', async () => {
    const root = freshDir();
    const store = new LocalBlobStore(root);
    const gens: bigint[] = [];
    for (let i = 0; i < 30; i++) {
      gens.push(BigInt((await store.writeAll('d/x', `v${i}`)).generation));
      if (i % 3 === 2) await store.delete('d/x');
    }
    expect(notIncreasing(gens)).toEqual([]);
    await store.delete('d/x');
    expect(tree(root)).toEqual([]);
  });

  test('keys that would use the names the store keeps for itself are refused', async () => {
    const store = new LocalBlobStore(freshDir());
    for (const key of [
      'a.shardline-gen',
      'a.shardline-gen/b',
      'x/b.shardline-tmp-1',
      '.shardline-gen',
    ]) {
      await expect(store.writeAll(key, 'x')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(() => store.read(key)).toThrow(/keeps for itself/);
    }
  });

  test("a write's claim is not listed while it is in flight", async () => {
    const root = freshDir();
    const store = new LocalBlobStore(root);
    await store.writeAll('k', 'first');
    // A claim as a writer that died between claiming and renaming would leave it.
    mkdirSync(path.join(root, 'k.shardline-gen'));
    const stale = (await store.stat('k'))!.generation;
    writeFileSync(path.join(root, 'k.shardline-gen', String(BigInt(stale) / 1000n + 5n)), '');
    const listed: string[] = [];
    for await (const info of store.list('')) listed.push(info.key);
    expect(listed).toEqual(['k']);
    // The next write goes above the claim it finds.
    const next = await store.writeAll('k', 'second');
    expect(BigInt(next.generation)).toBeGreaterThan((BigInt(stale) / 1000n + 5n) * 1000n);
  });
});
