/**
 * The blob-store contract: every BlobStore implementation passes these tests
 * (local filesystem in test/unit, Cloud Storage against the emulator in test/integration).
 */
import { randomBytes } from 'node:crypto';

import type { BlobStore } from '../../core/blob/store';
import { errorCode } from '../../core/errors';

async function drain(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(parts);
}

async function keys(store: BlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of store.list(prefix)) out.push(info.key);
  return out;
}

/** What a store (or the emulator standing in for its service) does, where stores differ. */
export interface BlobStoreCapabilities {
  /** Whether `createOnly` is enforced (the Storage emulator ignores ifGenerationMatch). */
  enforcesCreateOnly: boolean;
  /**
   * Whether generations are the service's millisecond clock at the write (the Storage
   * emulator's are `Date.now()`; Cloud Storage's and the local store's are unique per write).
   * Then the generation tests wait, before each overwrite, until this machine's clock has
   * passed the last generation: a condition on the emulator's clock, not a guessed pause.
   */
  generationIsMsClock: boolean;
}

/** Declares the contract suite for a store made fresh for each test. */
export function blobStoreContract(
  name: string,
  make: () => Promise<BlobStore>,
  capabilities: BlobStoreCapabilities,
): void {
  /** Before an overwrite: on a millisecond-clock service, until its clock has moved on. */
  const beforeOverwrite = async (last: string): Promise<void> => {
    if (capabilities.generationIsMsClock)
      while (Date.now() <= Number(last)) await new Promise((r) => setTimeout(r, 1));
  };

  describe(`BlobStore contract: ${name}`, () => {
    let store: BlobStore;
    beforeEach(async () => {
      store = await make();
    });

    test('writeAll then readAll returns the same bytes; stat reports size and generation', async () => {
      const data = randomBytes(10_000);
      const info = await store.writeAll('a/b/one.bin', data);
      expect(info.size).toBe(10_000);
      expect(info.generation).not.toBe('');
      expect((await store.readAll('a/b/one.bin')).equals(data)).toBe(true);
      const stat = await store.stat('a/b/one.bin');
      expect(stat).toMatchObject({ key: 'a/b/one.bin', size: 10_000, generation: info.generation });
    });

    test('overwriting changes the generation', async () => {
      const first = await store.writeAll('gen.txt', 'one');
      await beforeOverwrite(first.generation);
      const second = await store.writeAll('gen.txt', 'two!');
      expect(second.generation).not.toBe(first.generation);
      expect(BigInt(second.generation)).toBeGreaterThan(BigInt(first.generation));
      expect((await store.readAll('gen.txt')).toString()).toBe('two!');
    });

    test('writes of one key in a tight loop get distinct, increasing generations; a remembered one never matches a later version', async () => {
      const writes = 100;
      const seen: Array<{ generation: string; content: string }> = [];
      const problems: string[] = [];
      for (let i = 0; i < writes; i++) {
        if (i > 0) await beforeOverwrite(seen[i - 1]!.generation);
        const content = `version ${i}`;
        const info = await store.writeAll('loop.txt', content);
        const now = await store.stat('loop.txt');
        if (now?.generation !== info.generation)
          problems.push(`write ${i}: stat says ${now?.generation}, the write ${info.generation}`);
        if (i > 0 && BigInt(info.generation) <= BigInt(seen[i - 1]!.generation))
          problems.push(`write ${i}: ${info.generation} after ${seen[i - 1]!.generation}`);
        seen.push({ generation: info.generation, content });
      }
      expect(problems).toEqual([]);
      expect(new Set(seen.map((s) => s.generation)).size).toBe(writes);
      // A "has it changed since I read it?" check on any remembered generation: it has, and
      // only the last one still matches, with the last content.
      const last = (await store.stat('loop.txt'))!.generation;
      expect(seen.filter((s) => s.generation === last)).toEqual([
        { generation: last, content: `version ${writes - 1}` },
      ]);
      expect((await store.readAll('loop.txt')).toString()).toBe(`version ${writes - 1}`);
    });

    test('a key deleted and written again gets a generation it never had', async () => {
      const first = await store.writeAll('again.txt', 'one');
      await store.delete('again.txt');
      await beforeOverwrite(first.generation);
      const second = await store.writeAll('again.txt', 'one');
      expect(BigInt(second.generation)).toBeGreaterThan(BigInt(first.generation));
    });

    test('a streamed write is invisible until close, then whole', async () => {
      const w = store.writer('stream/big.bin');
      const parts = Array.from({ length: 300 }, (_, i) => randomBytes(1000 + i));
      for (const p of parts) await w.write(p);
      expect(await store.stat('stream/big.bin')).toBeNull();
      const info = await w.close();
      const all = Buffer.concat(parts);
      expect(info.size).toBe(all.length);
      expect((await store.readAll('stream/big.bin')).equals(all)).toBe(true);
    });

    test('a large streamed write (over the resumable threshold) round-trips', async () => {
      const block = randomBytes(1 << 20);
      const w = store.writer('large.bin');
      for (let i = 0; i < 10; i++) await w.write(block);
      const info = await w.close();
      expect(info.size).toBe(10 << 20);
      const back = await drain(
        store.read('large.bin', { start: (9 << 20) + 5, end: (9 << 20) + 105 }),
      );
      expect(back.equals(block.subarray(5, 105))).toBe(true);
    });

    test('an aborted write leaves nothing behind', async () => {
      const w = store.writer('aborted.bin');
      await w.write(randomBytes(100));
      await w.abort();
      expect(await store.stat('aborted.bin')).toBeNull();
      expect(await keys(store, '')).not.toContain('aborted.bin');
    });

    test('reads honour byte ranges [start, end)', async () => {
      const data = Buffer.from('0123456789abcdef');
      await store.writeAll('range.txt', data);
      expect((await drain(store.read('range.txt'))).toString()).toBe('0123456789abcdef');
      expect((await drain(store.read('range.txt', { start: 3, end: 7 }))).toString()).toBe('3456');
      expect((await drain(store.read('range.txt', { start: 10 }))).toString()).toBe('abcdef');
      expect((await drain(store.read('range.txt', { start: 4, end: 4 }))).length).toBe(0);
    });

    test('reading a missing object fails with NOT_FOUND', async () => {
      await expect(drain(store.read('missing.txt'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await expect(store.readAll('missing.txt')).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect(await store.stat('missing.txt')).toBeNull();
    });

    test('list returns keys under a prefix, in order, and nothing else', async () => {
      for (const k of ['p/x/2.txt', 'p/x/1.txt', 'p/y.txt', 'q/z.txt', 'px.txt'])
        await store.writeAll(k, k);
      expect(await keys(store, 'p/')).toEqual(['p/x/1.txt', 'p/x/2.txt', 'p/y.txt']);
      expect(await keys(store, 'p/x/')).toEqual(['p/x/1.txt', 'p/x/2.txt']);
      expect(await keys(store, 'p')).toEqual(['p/x/1.txt', 'p/x/2.txt', 'p/y.txt', 'px.txt']);
      expect(await keys(store, 'none/')).toEqual([]);
    });

    test('delete removes an object and ignores a missing one', async () => {
      await store.writeAll('d/gone.txt', 'x');
      await store.delete('d/gone.txt');
      expect(await store.stat('d/gone.txt')).toBeNull();
      await expect(store.delete('d/gone.txt')).resolves.toBeUndefined();
    });

    test('keys that could leave the root are refused', () => {
      for (const bad of ['../x', 'a/../../x', '/abs', 'a//b', 'a\\b', 'nul\u0000', '.', 'a/./b']) {
        let code: string | undefined;
        try {
          store.read(bad);
        } catch (e: unknown) {
          code = errorCode(e);
        }
        expect({ bad, code }).toEqual({ bad, code: 'INVALID_ARGUMENT' });
      }
    });

    test('uriOf names the object under the root', () => {
      expect(store.uriOf('s/x.json').startsWith(store.root)).toBe(true);
      expect(store.uriOf('s/x.json').endsWith('/s/x.json')).toBe(true);
    });

    const createOnly = 'createOnly refuses to replace an existing object';
    if (capabilities.enforcesCreateOnly) {
      test(createOnly, async () => {
        await store.writeAll('once.txt', 'first', { createOnly: true });
        await expect(
          store.writeAll('once.txt', 'second', { createOnly: true }),
        ).rejects.toMatchObject({
          code: 'ALREADY_EXISTS',
        });
        expect((await store.readAll('once.txt')).toString()).toBe('first');
      });
    } else {
      test.skip(`${createOnly} (skipped: ${name} does not enforce it)`, () => undefined);
    }
  });
}
