/**
 * The ledger contract: every `Ledger` implementation passes these tests (SQLite in
 * test/unit/ledger, Firestore against the emulator in test/integration/ledger). They assert
 * what a user relies on: no shard is ever given to two workers, a zombie cannot finish what it
 * lost, failures are counted and end in `failed`, an operator can see and repair everything.
 */
import type { Clock } from '../../core/clock';
import { errorCode } from '../../core/errors';
import type { Claim, Ledger, PartInput } from '../../core/ledger/ledger';
import { DEFAULT_LEASE_MS } from '../../core/ledger/ledger';
import { MAX_SHARD_HISTORY } from '../../core/ledger/schema';
import { retryDelayMs } from '../../core/ledger/shard-state';
import { FakeClock, T0, makeDataset } from './ledger-fixtures';

/** A fresh, empty ledger namespace (a new SQLite file, a new Firestore collection root). */
export interface LedgerNamespace {
  /** A ledger on this namespace driven by `clock`; open several to act as several processes. */
  open(clock: Clock): Promise<Ledger>;
  /**
   * Claims once per worker id, all at once, each in its own process (SQLite) or client
   * (Firestore), with the clock fixed at `nowMs`. Results in worker order.
   */
  concurrentClaims(
    datasetId: string,
    workerIds: readonly string[],
    nowMs: number,
    leaseMs: number,
  ): Promise<Array<Claim | null>>;
  /**
   * Splits once per worker id, all at once, each in its own process or client, with the clock
   * fixed at `nowMs`; each result is the new unit's claim or null. Results in worker order.
   */
  concurrentSplits(
    datasetId: string,
    workerIds: readonly string[],
    nowMs: number,
    leaseMs: number,
    minTasks: number,
  ): Promise<Array<Claim | null>>;
  /** Removes what the namespace created. */
  cleanup(): Promise<void>;
}

const MINUTE = 60_000;
const LEASE = 5 * MINUTE;
const DS = 'ds-contract';

/** The code of what `p` rejected with (fails the test if it resolved). */
async function rejection(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e: unknown) {
    return errorCode(e);
  }
  throw new Error('expected a rejection');
}

function part(index: number, first: number, next: number, name?: string): PartInput {
  return {
    part_index: index,
    name: name ?? `part_${String(index).padStart(5, '0')}`,
    first_task_index: first,
    last_task_index: next - 1,
    next_task_index: next,
    samples: (next - first) * 8,
    bytes: 1000 * (index + 1),
    checksums: { [`part_${index}.safetensors`]: `crc-${index}` },
    first_sample: 0,
    next_sample: 0,
    fingerprint: 'run-a',
  };
}

/**
 * Declares the contract suite. `makeNamespace` gives each test its own namespace;
 * `concurrencyTimeoutMs` bounds the 32-claimer test (processes and the emulator are slow).
 */
export function ledgerContract(
  name: string,
  makeNamespace: () => Promise<LedgerNamespace>,
  options: { concurrencyTimeoutMs: number },
): void {
  describe(`Ledger contract: ${name}`, () => {
    let ns: LedgerNamespace;
    let clock: FakeClock;
    let ledger: Ledger;
    const opened: Ledger[] = [];

    async function register(
      numShards: number,
      datasetId = DS,
      maxAttempts?: number,
      tasksPerShard?: number,
    ): Promise<void> {
      const { master } = makeDataset({
        datasetId,
        numShards,
        ...(tasksPerShard === undefined ? {} : { tasksPerShard }),
      });
      await ledger.registerDataset(master, {
        datasetUri: `/data/${datasetId}`,
        ...(maxAttempts === undefined ? {} : { maxAttempts }),
      });
    }

    async function claimed(workerId: string, preferredShardId?: number): Promise<Claim> {
      const c = await ledger.claim(DS, workerId, {
        leaseMs: LEASE,
        ...(preferredShardId === undefined ? {} : { preferredShardId }),
      });
      if (!c) throw new Error(`${workerId} got nothing`);
      return c;
    }

    beforeEach(async () => {
      ns = await makeNamespace();
      clock = new FakeClock(T0);
      ledger = await ns.open(clock);
      opened.push(ledger);
    });

    afterEach(async () => {
      for (const l of opened.splice(0)) await l.close();
      await ns.cleanup();
    });

    test('registers a dataset once: the same one again is a no-op, a different one under its id conflicts', async () => {
      const { master } = makeDataset({ datasetId: DS, numShards: 4 });
      const first = await ledger.registerDataset(master, { datasetUri: '/data/a' });
      expect(first.created).toBe(true);
      expect(first.dataset).toMatchObject({
        dataset_id: DS,
        num_shards: 4,
        total_tasks: 40,
        max_attempts: 3,
      });
      const again = await ledger.registerDataset(
        { ...master, created_at: '2027-01-01T00:00:00.000Z' },
        {
          datasetUri: '/data/a',
        },
      );
      expect(again.created).toBe(false);
      expect(again.dataset.fingerprint).toBe(first.dataset.fingerprint);
      const other = makeDataset({
        datasetId: DS,
        numShards: 4,
        sourceUri: '/elsewhere.jsonl',
      }).master;
      expect(await rejection(ledger.registerDataset(other, { datasetUri: '/data/a' }))).toBe(
        'DATASET_CONFLICT',
      );
      const bigger = makeDataset({ datasetId: DS, numShards: 5 }).master;
      expect(await rejection(ledger.registerDataset(bigger, { datasetUri: '/data/a' }))).toBe(
        'DATASET_CONFLICT',
      );
      expect(await ledger.getDataset(DS)).toEqual(first.dataset);
      expect(await ledger.getDataset('nope')).toBeNull();
    });

    test('refuses a master whose shards do not add up; an unregistered dataset cannot be claimed', async () => {
      const { master } = makeDataset({ datasetId: DS, numShards: 3 });
      const broken = { ...master, shards: master.shards.slice(0, 2) };
      expect(await rejection(ledger.registerDataset(broken, { datasetUri: '/x' }))).toBe(
        'INVALID_INPUT',
      );
      expect(await ledger.getDataset(DS)).toBeNull();
      expect(await rejection(ledger.claim(DS, 'w1'))).toBe('NOT_FOUND');
      expect(await rejection(ledger.status(DS))).toBe('NOT_FOUND');
      expect(await ledger.getShard(DS, 0)).toBeNull();
    });

    test('a new dataset: every shard available at epoch 0, totals add up', async () => {
      await register(3);
      const status = await ledger.status(DS);
      expect(status.state).toBe('available');
      expect(
        status.shards.map((s) => [s.shard_id, s.status, s.epoch, s.attempts, s.next_task_index]),
      ).toEqual([
        [0, 'available', 0, 0, 0],
        [1, 'available', 0, 0, 10],
        [2, 'available', 0, 0, 20],
      ]);
      expect(status.totals).toMatchObject({
        shards: 3,
        available: 3,
        in_use: 0,
        total_tasks: 30,
        tasks_done: 0,
      });
    });

    test('claim grants every shard once, with epoch 1 and a lease, then nothing is available', async () => {
      await register(4);
      const claims: Claim[] = [];
      for (let i = 0; i < 4; i++) claims.push(await claimed(`w${i}`));
      expect(new Set(claims.map((c) => c.shard_id)).size).toBe(4);
      for (const [i, c] of claims.entries()) {
        expect(c).toEqual({
          dataset_id: DS,
          shard_id: c.shard_id,
          worker_id: `w${i}`,
          epoch: 1,
          lease_expires_at: new Date(T0 + LEASE).toISOString(),
          end_task_index: (c.shard_id + 1) * 10,
        });
        expect(await ledger.getShard(DS, c.shard_id)).toMatchObject({
          status: 'in_use',
          assigned_to: `w${i}`,
          started_at: new Date(T0).toISOString(),
        });
      }
      expect(await ledger.claim(DS, 'w-late', { leaseMs: LEASE })).toBeNull();
      expect((await ledger.status(DS)).state).toBe('in_use');
    });

    test('the default lease is DEFAULT_LEASE_MS', async () => {
      await register(1);
      const c = await ledger.claim(DS, 'w');
      expect(c?.lease_expires_at).toBe(new Date(T0 + DEFAULT_LEASE_MS).toISOString());
    });

    test('the preferred shard is taken when free; when held, another shard is', async () => {
      await register(6);
      const a = await claimed('wa', 4);
      expect(a.shard_id).toBe(4);
      const b = await claimed('wb', 4);
      expect(b.shard_id).not.toBe(4);
      const c = await claimed('wc', 99);
      expect([4, b.shard_id]).not.toContain(c.shard_id);
    });

    test('heartbeat renews the lease; a shard with a live lease is not claimable', async () => {
      await register(1);
      const c = await claimed('w1');
      clock.advance(LEASE - MINUTE);
      const renewed = await ledger.heartbeat(c);
      expect(renewed).toEqual({
        ...c,
        lease_expires_at: new Date(clock.nowMs() + LEASE).toISOString(),
      });
      clock.advance(LEASE - MINUTE);
      expect(await ledger.claim(DS, 'w2', { leaseMs: LEASE })).toBeNull();
      const longer = await ledger.heartbeat(renewed, { leaseMs: 3 * LEASE });
      expect(longer.lease_expires_at).toBe(new Date(clock.nowMs() + 3 * LEASE).toISOString());
      expect((await ledger.getShard(DS, c.shard_id))?.lease_ms).toBe(3 * LEASE);
    });

    test('an expired lease is reclaimed with a higher epoch; the zombie can no longer heartbeat, commit, complete, fail or release', async () => {
      await register(1);
      const zombie = await claimed('zombie');
      clock.advance(LEASE + 1);
      const fresh = await claimed('fresh');
      expect(fresh.shard_id).toBe(zombie.shard_id);
      expect(fresh.epoch).toBe(zombie.epoch + 1);
      const shard = await ledger.getShard(DS, 0);
      expect(shard).toMatchObject({
        status: 'in_use',
        assigned_to: 'fresh',
        epoch: 2,
        attempts: 1,
      });
      expect(shard?.last_error).toContain('zombie');
      expect(await rejection(ledger.heartbeat(zombie))).toBe('LEASE_LOST');
      expect(await rejection(ledger.commitPart(zombie, part(0, 0, 5)))).toBe('LEASE_LOST');
      expect(await rejection(ledger.complete(zombie))).toBe('LEASE_LOST');
      expect(await rejection(ledger.fail(zombie, 'late'))).toBe('LEASE_LOST');
      expect(await rejection(ledger.release(zombie))).toBe('LEASE_LOST');
      // Nothing the zombie tried left a trace; the new holder carries on.
      expect(await ledger.getShard(DS, 0)).toMatchObject({
        assigned_to: 'fresh',
        epoch: 2,
        parts_committed: 0,
      });
      await ledger.commitPart(fresh, part(0, 0, 5));
      expect((await ledger.complete(fresh, { parts: 1, samples: 40, bytes: 1000 })).status).toBe(
        'completed',
      );
    });

    test('an expired lease that nobody took is still its holder’s to renew and finish', async () => {
      await register(1);
      const c = await claimed('slow');
      clock.advance(LEASE + MINUTE);
      const renewed = await ledger.heartbeat(c);
      expect(renewed.epoch).toBe(c.epoch);
      await ledger.commitPart(renewed, part(0, 0, 10));
      expect((await ledger.complete(renewed)).status).toBe('completed');
    });

    test('two processes with the same worker id: only the claim with the current epoch may act', async () => {
      await register(1);
      const other = await ns.open(clock);
      opened.push(other);
      const first = await claimed('machine0_host0');
      clock.advance(LEASE + 1);
      const second = await other.claim(DS, 'machine0_host0', { leaseMs: LEASE });
      expect(second).toMatchObject({
        shard_id: first.shard_id,
        worker_id: 'machine0_host0',
        epoch: 2,
      });
      expect(await rejection(ledger.heartbeat(first))).toBe('LEASE_LOST');
      expect(await rejection(ledger.complete(first))).toBe('LEASE_LOST');
      await other.heartbeat(second!);
    });

    test('commitPart records parts in order; the next holder resumes at next_task_index', async () => {
      await register(2);
      const c = await claimed('w1', 1);
      expect(c.shard_id).toBe(1);
      const p0 = await ledger.commitPart(c, part(0, 10, 14));
      expect(p0).toMatchObject({
        dataset_id: DS,
        shard_id: 1,
        part_index: 0,
        worker_id: 'w1',
        epoch: 1,
      });
      clock.advance(MINUTE);
      await ledger.commitPart(c, part(1, 14, 17));
      // The same part again (a retried call) is a no-op; a different one under its index is refused.
      await ledger.commitPart(c, part(1, 14, 17));
      expect(await rejection(ledger.commitPart(c, { ...part(1, 14, 17), samples: 1 }))).toBe(
        'ALREADY_EXISTS',
      );
      expect(await rejection(ledger.commitPart(c, part(3, 17, 18)))).toBe('INVALID_ARGUMENT');
      expect(await rejection(ledger.commitPart(c, part(2, 16, 18)))).toBe('INVALID_ARGUMENT');
      expect(await rejection(ledger.commitPart(c, part(2, 17, 21)))).toBe('PAST_END');
      let shard = await ledger.getShard(DS, 1);
      expect(shard).toMatchObject({
        next_task_index: 17,
        parts_committed: 2,
        samples_committed: 56,
        bytes_committed: 3000,
      });
      // commitPart renews the lease.
      expect(shard?.lease_expires_at).toBe(new Date(clock.nowMs() + LEASE).toISOString());
      const parts = await ledger.listParts(c);
      expect(parts.map((p) => [p.part_index, p.first_task_index, p.next_task_index])).toEqual([
        [0, 10, 14],
        [1, 14, 17],
      ]);
      expect(parts[1]?.checksums).toEqual({ 'part_1.safetensors': 'crc-1' });
      expect(await ledger.listParts({ dataset_id: DS, shard_id: 0 })).toEqual([]);
      // The worker fails; after the backoff the next holder resumes after the last committed part.
      await ledger.fail(c, 'killed');
      clock.advance(retryDelayMs(1, LEASE));
      const next = await claimed('w2', 1);
      shard = await ledger.getShard(DS, 1);
      expect(shard).toMatchObject({ assigned_to: 'w2', next_task_index: 17, parts_committed: 2 });
      await ledger.commitPart(next, part(2, 17, 20));
      const status = await ledger.status(DS);
      expect(status.shards[1]).toMatchObject({ tasks_done: 10, parts_committed: 3 });
      expect(status.totals).toMatchObject({ tasks_done: 10, parts_committed: 3 });
    });

    test('complete marks the shard completed, keeps the holder and the manifest; repeating it is a no-op', async () => {
      await register(2);
      const c = await claimed('w1', 0);
      await ledger.commitPart(c, part(0, 0, 10));
      expect(await rejection(ledger.complete(c, { parts: 2, samples: 80, bytes: 1000 }))).toBe(
        'INVALID_ARGUMENT',
      );
      clock.advance(MINUTE);
      const done = await ledger.complete(c, {
        parts: 1,
        samples: 80,
        bytes: 1000,
        uri: '/out/shard_000/_MANIFEST.json',
      });
      expect(done).toMatchObject({
        status: 'completed',
        assigned_to: 'w1',
        completed_at: new Date(T0 + MINUTE).toISOString(),
        lease_expires_at: null,
        forced: null,
        manifest: { parts: 1, samples: 80, bytes: 1000, uri: '/out/shard_000/_MANIFEST.json' },
      });
      expect((await ledger.complete(c)).status).toBe('completed');
      expect(await rejection(ledger.heartbeat(c))).toBe('LEASE_LOST');
      const other = await claimed('w2');
      expect(other.shard_id).toBe(1);
      expect(await ledger.claim(DS, 'w3', { leaseMs: LEASE })).toBeNull();
    });

    test('fail counts an attempt and keeps the reason; at max attempts the shard is failed and not claimable', async () => {
      await register(1);
      for (let attempt = 1; attempt <= 2; attempt++) {
        const c = await claimed(`w${attempt}`);
        const after = await ledger.fail(c, `boom ${attempt}`);
        expect(after).toMatchObject({
          status: 'available',
          attempts: attempt,
          last_error: `boom ${attempt}`,
          assigned_to: null,
        });
        clock.advance(retryDelayMs(attempt, LEASE));
      }
      const last = await claimed('w3');
      expect(last.epoch).toBe(3);
      const failed = await ledger.fail(last, 'out of memory on task 7');
      expect(failed).toMatchObject({
        status: 'failed',
        attempts: 3,
        max_attempts: 3,
        last_error: 'out of memory on task 7',
      });
      expect(await ledger.claim(DS, 'w4', { leaseMs: LEASE })).toBeNull();
      const status = await ledger.status(DS);
      expect(status.state).toBe('failed');
      expect(status.totals).toMatchObject({ failed: 1, attempts: 3 });
    });

    test('a failed attempt backs off: refused for that shard until retry_at, others granted meanwhile; reset clears it', async () => {
      await register(2);
      const c = await claimed('w1', 0);
      const after = await ledger.fail(c, 'storage was down');
      const delay = retryDelayMs(1, LEASE);
      expect(after).toMatchObject({
        status: 'available',
        attempts: 1,
        retry_at: new Date(clock.nowMs() + delay).toISOString(),
      });
      // The same worker asks again at once: not shard 0, which waits; shard 1 is fine.
      const other = await claimed('w1', 0);
      expect(other.shard_id).toBe(1);
      expect(await ledger.claim(DS, 'w2', { leaseMs: LEASE, preferredShardId: 0 })).toBeNull();
      expect((await ledger.status(DS)).shards[0]).toMatchObject({
        status: 'available',
        retry_at: after.retry_at,
      });
      clock.advance(delay - 1);
      expect(await ledger.claim(DS, 'w2', { leaseMs: LEASE })).toBeNull();
      clock.advance(1);
      const again = await claimed('w2', 0);
      expect(again).toMatchObject({ shard_id: 0, epoch: c.epoch + 1 });
      expect((await ledger.getShard(DS, 0))!.retry_at).toBeNull();
      // The backoff grows with the attempts; an operator's reset clears it.
      const second = await ledger.fail(again, 'again');
      expect(Date.parse(second.retry_at!) - clock.nowMs()).toBe(retryDelayMs(2, LEASE));
      expect(retryDelayMs(2, LEASE)).toBeGreaterThan(delay);
      const reset = await ledger.reset(DS, 0, 'alice');
      expect(reset).toMatchObject({ attempts: 0, retry_at: null });
      expect((await claimed('w3', 0)).shard_id).toBe(0);
    });

    test('a final failure (a deterministic one) fails the shard at once, with its reason', async () => {
      await register(2);
      const c = await claimed('w1', 0);
      const after = await ledger.fail(c, 'chunk_0001.jsonl: CRC32C mismatch', { final: true });
      expect(after).toMatchObject({
        status: 'failed',
        attempts: 1,
        max_attempts: 3,
        last_error: 'chunk_0001.jsonl: CRC32C mismatch',
      });
      expect((await claimed('w2')).shard_id).toBe(1);
      expect(await ledger.claim(DS, 'w3', { leaseMs: LEASE })).toBeNull();
    });

    test('holders lost together (a fleet-wide loss) count no attempt; a holder lost alone does', async () => {
      await register(4);
      // Three holders go silent at the same moment; the fourth keeps renewing.
      for (const [w, k] of [
        ['a', 0],
        ['b', 1],
        ['c', 2],
      ] as const)
        await claimed(w, k);
      const live = await claimed('d', 3);
      for (let t = 0; t < 3; t++) {
        clock.advance(LEASE / 3);
        await ledger.heartbeat(live);
      }
      clock.advance(1);
      const reaped = await ledger.reapExpired(clock.nowMs(), { datasetId: DS });
      expect(reaped.map((r) => [r.shard_id, r.attempts]).sort()).toEqual([
        [0, 0],
        [1, 0],
        [2, 0],
      ]);
      expect((await ledger.getShard(DS, 1))!.last_error).toMatch(
        /2 other holders at the same time/,
      );
      // A claim finds the fleet's loss the same way: a new holder of shard 0 and one of shard 1
      // die together; the claim that finds them expired counts nothing either.
      const x = await claimed('x', 0);
      const y = await claimed('y', 1);
      expect([x.shard_id, y.shard_id]).toEqual([0, 1]);
      for (let t = 0; t < 3; t++) {
        clock.advance(LEASE / 3);
        await ledger.heartbeat(live);
      }
      clock.advance(1);
      const z = await claimed('z', 0);
      expect(z.shard_id).toBe(0);
      expect(await ledger.getShard(DS, 0)).toMatchObject({ attempts: 0, assigned_to: 'z' });
      // Long after, the new holder of shard 2 dies alone, while z and d keep renewing: that
      // counts. (y's shard, silent since its fleet's loss, still counts nothing.)
      const alone = await claimed('w', 2);
      expect(alone.shard_id).toBe(2);
      for (let t = 0; t < 3; t++) {
        clock.advance(LEASE / 3);
        await ledger.heartbeat(live);
        await ledger.heartbeat(z);
      }
      clock.advance(1);
      const later = await ledger.reapExpired(clock.nowMs(), { datasetId: DS });
      expect(later.map((r) => [r.shard_id, r.attempts]).sort()).toEqual([
        [1, 0],
        [2, 1],
      ]);
    });

    test('a shard keeps its history: claims, releases, expiries, failures, completion, bounded', async () => {
      await register(1);
      const a = await claimed('a');
      await ledger.release(a);
      const b = await claimed('b');
      clock.advance(LEASE + 1);
      const c = await claimed('c'); // finds b expired
      await ledger.fail(c, 'boom');
      clock.advance(retryDelayMs(2, LEASE));
      const d = await claimed('d');
      await ledger.commitPart(d, part(0, 0, 10));
      await ledger.complete(d);
      const shard = (await ledger.getShard(DS, 0))!;
      expect(shard.history.map((e) => [e.kind, e.worker, e.epoch, e.attempt ?? false])).toEqual([
        ['claim', 'a', a.epoch, false],
        ['release', 'a', a.epoch, false],
        ['claim', 'b', b.epoch, false],
        ['expire', 'b', b.epoch, true],
        ['claim', 'c', c.epoch, false],
        ['fail', 'c', c.epoch, true],
        ['claim', 'd', d.epoch, false],
        ['complete', 'd', d.epoch, false],
      ]);
      expect(shard.history[5]!.note).toBe('boom');
      expect(shard.history_dropped).toBe(0);
      // Bounded: the oldest go, and are counted.
      for (let i = 0; i < MAX_SHARD_HISTORY; i++) await ledger.reset(DS, 0, `op${i}`);
      const after = (await ledger.getShard(DS, 0))!;
      expect(after.history).toHaveLength(MAX_SHARD_HISTORY);
      expect(after.history_dropped).toBe(8);
      expect(after.history.at(-1)).toMatchObject({
        kind: 'reset',
        worker: `op${MAX_SHARD_HISTORY - 1}`,
      });
    });

    test('max attempts is per dataset', async () => {
      await register(1, DS, 1);
      const c = await claimed('w1');
      expect((await ledger.fail(c, 'once')).status).toBe('failed');
    });

    test('an expired lease whose holder had committed parts counts no attempt; one without progress does', async () => {
      await register(1); // shard 0 holds tasks 0-9
      // Holder 1 commits a part, then dies: reaped, not counted (it was doing the work).
      const c1 = await claimed('w1');
      await ledger.commitPart(c1, part(0, 0, 4));
      clock.advance(LEASE + 1);
      const [r1] = await ledger.reapExpired();
      expect(r1).toMatchObject({ status: 'available', attempts: 0 });
      expect((await ledger.getShard(DS, 0))!.last_error).toContain('not counted');
      // Holder 2 resumes, commits nothing, dies: counted. So does holder 3, found by a claim.
      const c2 = await claimed('w2');
      clock.advance(LEASE + 1);
      expect((await ledger.reapExpired())[0]).toMatchObject({ attempts: 1 });
      await claimed('w3');
      clock.advance(LEASE + 1);
      const c4 = await claimed('w4');
      expect(c4.epoch).toBe(c2.epoch + 2);
      expect(await ledger.getShard(DS, 0)).toMatchObject({
        attempts: 2,
        next_task_index: 4,
        assigned_to: 'w4',
      });
      // Holder 4 commits a part that ends inside task 4 (its samples span two parts), then
      // dies: it made progress, so it is not counted either.
      await ledger.commitPart(c4, { ...part(1, 4, 4), last_task_index: 4, next_sample: 3 });
      clock.advance(LEASE + 1);
      expect((await ledger.reapExpired())[0]).toMatchObject({ attempts: 2 });
      const after = (await ledger.getShard(DS, 0))!;
      expect(after).toMatchObject({ next_task_index: 4, next_sample: 3 });
      expect(after.last_error).toContain('not counted');
    });

    test('release returns the shard without counting an attempt', async () => {
      await register(1);
      const c = await claimed('w1');
      const after = await ledger.release(c);
      expect(after).toMatchObject({
        status: 'available',
        attempts: 0,
        assigned_to: null,
        lease_expires_at: null,
        last_error: null,
      });
      expect(await rejection(ledger.heartbeat(c))).toBe('LEASE_LOST');
      expect((await claimed('w2')).epoch).toBe(2);
    });

    test('reset clears holder, lease, completed_at and attempts, fences the old holder, and can discard parts', async () => {
      await register(2);
      const c = await claimed('w1', 0);
      await ledger.commitPart(c, part(0, 0, 10));
      await ledger.complete(c);
      clock.advance(MINUTE);
      const reset = await ledger.reset(DS, 0, 'operator@host');
      expect(reset).toMatchObject({
        status: 'available',
        assigned_to: null,
        completed_at: null,
        lease_expires_at: null,
        attempts: 0,
        last_error: null,
        reset_by: 'operator@host',
        reset_at: new Date(T0 + MINUTE).toISOString(),
        next_task_index: 10,
        parts_committed: 1,
      });
      // A held shard: the holder is fenced; a failed one becomes claimable again.
      const h = await claimed('w2', 1);
      await ledger.reset(DS, 1, 'op');
      expect(await rejection(ledger.complete(h))).toBe('LEASE_LOST');
      const again = await claimed('w3', 1);
      expect(again.epoch).toBe(2);
      await ledger.fail(again, 'x');
      const discarded = await ledger.reset(DS, 0, 'op', { discardParts: true });
      expect(discarded).toMatchObject({
        next_task_index: 0,
        parts_committed: 0,
        samples_committed: 0,
      });
      expect(await ledger.listParts({ dataset_id: DS, shard_id: 0 })).toEqual([]);
      expect(await rejection(ledger.reset(DS, 7, 'op'))).toBe('NOT_FOUND');
      expect(await rejection(ledger.reset('nope', 0, 'op'))).toBe('NOT_FOUND');
    });

    test('forced complete and fail are recorded with who and when, and fence the holder', async () => {
      await register(3);
      const h = await claimed('w1', 0);
      clock.advance(MINUTE);
      const forced = await ledger.forceComplete(DS, 0, 'alice');
      expect(forced).toMatchObject({
        status: 'completed',
        assigned_to: 'w1',
        forced: { action: 'complete', by: 'alice', at: new Date(T0 + MINUTE).toISOString() },
      });
      expect(await rejection(ledger.complete(h))).toBe('LEASE_LOST');
      expect(await rejection(ledger.heartbeat(h))).toBe('LEASE_LOST');
      // An unclaimed shard can be force-completed too; it records the operator as the holder.
      expect(await ledger.forceComplete(DS, 2, 'bob')).toMatchObject({
        status: 'completed',
        assigned_to: 'bob',
      });
      const h1 = await claimed('w2', 1);
      const failed = await ledger.forceFail(DS, 1, 'alice', 'stuck on a bad task');
      expect(failed).toMatchObject({
        status: 'available',
        attempts: 1,
        last_error: 'stuck on a bad task',
        forced: { action: 'fail', by: 'alice' },
      });
      expect(await rejection(ledger.fail(h1, 'me too'))).toBe('LEASE_LOST');
      expect(await rejection(ledger.forceFail(DS, 0, 'alice', 'no'))).toBe('INVALID_ARGUMENT');
      // A later claim (after the failure's backoff) clears the forced mark.
      expect((await ledger.getShard(DS, 1))?.forced).not.toBeNull();
      clock.advance(retryDelayMs(1, LEASE));
      await claimed('w3', 1);
      expect((await ledger.getShard(DS, 1))?.forced).toBeNull();
    });

    test('reapExpired frees only expired leases, counts an attempt, fails at max attempts, and returns what it freed', async () => {
      await register(3);
      await register(1, 'ds-other');
      const a = await claimed('wa', 0);
      const b = await claimed('wb', 1);
      const o = await ledger.claim('ds-other', 'wo', { leaseMs: LEASE });
      clock.advance(LEASE / 2);
      await ledger.heartbeat(b);
      expect(await ledger.reapExpired()).toEqual([]);
      clock.advance(LEASE / 2);
      const mine = await ledger.reapExpired(clock.nowMs(), { datasetId: DS });
      expect(mine).toEqual([
        expect.objectContaining({
          dataset_id: DS,
          shard_id: 0,
          worker_id: 'wa',
          epoch: a.epoch,
          status: 'available',
          attempts: 1,
        }),
      ]);
      expect(mine[0]?.last_error).toContain('wa');
      const rest = await ledger.reapExpired();
      expect(rest).toEqual([
        expect.objectContaining({ dataset_id: 'ds-other', shard_id: o!.shard_id, worker_id: 'wo' }),
      ]);
      expect(await rejection(ledger.heartbeat(a))).toBe('LEASE_LOST');
      expect((await ledger.getShard(DS, 1))?.status).toBe('in_use');
      // Two more expiries of shard 0 reach max attempts (wb stays alive: each holder of shard 0
      // dies alone, which counts; shard-state.ts applyExpiry).
      for (let i = 0; i < 2; i++) {
        await claimed(`again${i}`, 0);
        clock.advance(LEASE / 2);
        await ledger.heartbeat(b);
        clock.advance(LEASE / 2);
        const freed = await ledger.reapExpired(clock.nowMs(), { datasetId: DS });
        const zero = freed.find((r) => r.shard_id === 0);
        expect(zero?.status).toBe(i === 0 ? 'available' : 'failed');
      }
      expect(await ledger.getShard(DS, 0)).toMatchObject({ status: 'failed', attempts: 3 });
    });

    test('a claim that finds an expired lease on its last attempt marks the shard failed and moves on', async () => {
      await register(2, DS, 1);
      await claimed('w1', 0);
      clock.advance(LEASE + 1);
      const next = await claimed('w2', 0);
      expect(next.shard_id).toBe(1);
      expect(await ledger.getShard(DS, 0)).toMatchObject({ status: 'failed', attempts: 1 });
    });

    test('status shows every state with holders, lease left, progress and totals', async () => {
      await register(5);
      const c0 = await claimed('w0', 0);
      await ledger.commitPart(c0, part(0, 0, 10));
      await ledger.complete(c0);
      const c1 = await claimed('w1', 1);
      await ledger.commitPart(c1, part(0, 10, 13));
      await claimed('w2', 2);
      const c3 = await claimed('w3', 3);
      await ledger.fail(c3, 'e1');
      await ledger.forceFail(DS, 3, 'op', 'e2');
      await ledger.forceFail(DS, 3, 'op', 'e3');
      clock.advance(MINUTE);
      const status = await ledger.status(DS);
      expect(status.as_of).toBe(new Date(T0 + MINUTE).toISOString());
      expect(
        status.shards.map((s) => [
          s.shard_id,
          s.status,
          s.assigned_to,
          s.tasks_done,
          s.lease_left_ms,
        ]),
      ).toEqual([
        [0, 'completed', 'w0', 10, null],
        [1, 'in_use', 'w1', 3, LEASE - MINUTE],
        [2, 'in_use', 'w2', 0, LEASE - MINUTE],
        [3, 'failed', null, 0, null],
        [4, 'available', null, 0, null],
      ]);
      expect(status.shards[3]?.last_error).toBe('e3');
      expect(status.totals).toEqual({
        shards: 5,
        available: 1,
        in_use: 2,
        completed: 1,
        failed: 1,
        total_tasks: 50,
        tasks_done: 13,
        parts_committed: 2,
        samples_committed: 104,
        bytes_committed: 2000,
        attempts: 3,
      });
      expect(status.state).toBe('in_use');
    });

    describe('work units', () => {
      /** One shard of 40 tasks (0-39) held by w1, which committed 0-3 and reserved to 12. */
      async function midPart(): Promise<Claim> {
        await register(1, DS, undefined, 40);
        const c = await claimed('w1');
        await ledger.commitPart(c, part(0, 0, 4));
        return ledger.heartbeat(c, { reserveTo: 12 });
      }

      async function splitBy(workerId: string, minTasks?: number) {
        const r = await ledger.split(DS, workerId, {
          leaseMs: LEASE,
          ...(minTasks === undefined ? {} : { minTasks }),
        });
        if (!r) throw new Error(`${workerId} split nothing`);
        return r;
      }

      test('a split while the holder is mid-part: the splitter holds the tail, the holder keeps what it reserved and learns its new end', async () => {
        const holder = await midPart();
        expect(holder.end_task_index).toBe(40);
        clock.advance(MINUTE);
        const { claim, from } = await splitBy('w2');
        // Half of what is past the committed position (4-39), above the reservation (12).
        expect(from).toEqual({
          dataset_id: DS,
          shard_id: 0,
          unit: 0,
          holder: 'w1',
          end_task_index: 22,
        });
        expect(claim).toEqual({
          dataset_id: DS,
          shard_id: 0,
          unit: 1,
          worker_id: 'w2',
          epoch: 1,
          lease_expires_at: new Date(clock.nowMs() + LEASE).toISOString(),
          end_task_index: 40,
        });
        expect(await ledger.getShard(DS, 0, 1)).toMatchObject({
          unit: 1,
          status: 'in_use',
          assigned_to: 'w2',
          start_task_index: 22,
          end_task_index: 40,
          next_task_index: 22,
          split_from: 0,
        });
        // The holder's claim still stands; its next heartbeat tells it the new end, and a
        // reservation past the end stops there.
        const renewed = await ledger.heartbeat(holder, { reserveTo: 30 });
        expect(renewed).toMatchObject({ epoch: holder.epoch, end_task_index: 22 });
        expect((await ledger.getShard(DS, 0))!).toMatchObject({
          reserved_task_index: 22,
          unit_count: 2,
          history: expect.arrayContaining([
            expect.objectContaining({ kind: 'split', worker: 'w2', epoch: holder.epoch }),
          ]) as unknown,
        });
        // Nothing is left worth splitting: unit 0 is reserved to its end, unit 1 is 18 tasks
        // and the minimum asked for is 10 per side.
        expect(await ledger.split(DS, 'w3', { leaseMs: LEASE, minTasks: 10 })).toBeNull();
      });

      test('the holder commits up to its new end and is refused beyond it; the last unit completes the shard with the manifest of every unit', async () => {
        const holder = await midPart();
        const { claim: tail } = await splitBy('w2');
        const past = await ledger.commitPart(holder, part(1, 4, 23)).then(
          () => undefined,
          (e: unknown) => e as { code: string; details: Record<string, unknown> },
        );
        expect(past?.code).toBe('PAST_END');
        expect(past?.details.end_task_index).toBe(22);
        await ledger.commitPart(holder, part(1, 4, 22));
        // The splitter's parts carry their unit; names differ from unit 0's.
        const p0 = await ledger.commitPart(tail, part(0, 22, 30, 'part_u1_00000'));
        expect(p0).toMatchObject({ unit: 1, part_index: 0, worker_id: 'w2', epoch: 1 });
        await ledger.commitPart(tail, part(1, 30, 40, 'part_u1_00001'));
        expect(await rejection(ledger.commitPart(tail, part(2, 40, 41, 'x')))).toBe('PAST_END');
        // Unit 1 finishes first: not the last, so no manifest; a manifest now is refused.
        expect(await rejection(ledger.complete(holder, { parts: 4, samples: 1, bytes: 1 }))).toBe(
          'INVALID_ARGUMENT',
        );
        const done1 = await ledger.complete(tail, undefined, { requireManifest: true });
        expect(done1).toMatchObject({ unit: 1, status: 'completed', manifest: null });
        expect((await ledger.status(DS)).shards[0]!.status).toBe('in_use');
        // Unit 0 is the last: refused without the manifest, completed with it.
        expect(await rejection(ledger.complete(holder, undefined, { requireManifest: true }))).toBe(
          'MANIFEST_REQUIRED',
        );
        expect(await rejection(ledger.complete(holder, { parts: 3, samples: 1, bytes: 1 }))).toBe(
          'INVALID_ARGUMENT',
        );
        await ledger.complete(holder, { parts: 4, samples: 224, bytes: 4000, uri: '/m.json' });
        const parts = await ledger.listShardParts({ dataset_id: DS, shard_id: 0 });
        expect(
          parts.map((p) => [p.unit, p.part_index, p.first_task_index, p.next_task_index]),
        ).toEqual([
          [0, 0, 0, 4],
          [0, 1, 4, 22],
          [1, 0, 22, 30],
          [1, 1, 30, 40],
        ]);
        expect((await ledger.listParts({ dataset_id: DS, shard_id: 0, unit: 1 })).length).toBe(2);
        const status = await ledger.status(DS);
        expect(status.state).toBe('completed');
        expect(status.shards[0]).toMatchObject({
          status: 'completed',
          assigned_to: 'w1',
          tasks_done: 40,
          parts_committed: 4,
          unit_count: 2,
          units_completed: 2,
          manifest: { parts: 4, uri: '/m.json' },
        });
        expect(
          status.shards[0]!.units.map((u) => [u.unit, u.status, u.unit_start, u.unit_end]),
        ).toEqual([
          [0, 'completed', 0, 22],
          [1, 'completed', 22, 40],
        ]);
        expect(status.totals).toMatchObject({ completed: 1, tasks_done: 40, parts_committed: 4 });
      });

      test('a split of an expired unit: its holder, not replaced, may still renew and learn its end; a claim then fences it', async () => {
        const holder = await midPart();
        clock.advance(LEASE + 1);
        const { from } = await splitBy('w2');
        expect(from).toMatchObject({ unit: 0, holder: 'w1', end_task_index: 22 });
        const renewed = await ledger.heartbeat(holder);
        expect(renewed.end_task_index).toBe(22);
        clock.advance(LEASE + 1);
        // Unit 1's holder (w2) renewed nothing either: a claim takes one of the expired units,
        // and then the other.
        const a = await claimed('w3');
        const b = await claimed('w4');
        expect([a, b].map((c) => [c.unit ?? 0, c.epoch]).sort()).toEqual([
          [0, holder.epoch + 1],
          [1, 2],
        ]);
        expect(await rejection(ledger.commitPart(holder, part(1, 4, 22)))).toBe('LEASE_LOST');
        const resumed = [a, b].find((c) => (c.unit ?? 0) === 0)!;
        expect(resumed.end_task_index).toBe(22);
        await ledger.commitPart(resumed, part(1, 4, 22));
      });

      test('splits of splits: a split unit splits again, numbered from the shard’s count', async () => {
        const holder = await midPart();
        const first = await splitBy('w2');
        await ledger.heartbeat(holder, { reserveTo: 40 });
        const second = await splitBy('w3');
        // Unit 0 is reserved to its end (22); unit 1 (22-39) splits at 31.
        expect(second.from).toMatchObject({ unit: 1, holder: 'w2', end_task_index: 31 });
        expect(second.claim).toMatchObject({ unit: 2, worker_id: 'w3', end_task_index: 40 });
        expect((await ledger.heartbeat(first.claim)).end_task_index).toBe(31);
        const third = await splitBy('w4');
        // Units 1 (22-30) and 2 (31-39) would both give 4 tasks: the lower unit splits, at 27.
        expect(third.from).toMatchObject({ unit: 1, end_task_index: 27 });
        expect(third.claim).toMatchObject({ unit: 3, end_task_index: 31 });
        const row = (await ledger.status(DS)).shards[0]!;
        expect(row.unit_count).toBe(4);
        expect(row.units.map((u) => [u.unit, u.unit_start, u.unit_end, u.assigned_to])).toEqual([
          [0, 0, 22, 'w1'],
          [1, 22, 27, 'w2'],
          [3, 27, 31, 'w4'],
          [2, 31, 40, 'w3'],
        ]);
      });

      test('a unit split off before its first part keeps sides of one part as the shard measured it', async () => {
        // Unit 0 committed 0-3 in one part: 4 tasks a part. Unit 1 (22-39) has no part yet.
        const holder = await midPart();
        const first = await splitBy('w2');
        await ledger.heartbeat(holder, { reserveTo: 40 });
        expect(await ledger.getShard(DS, 0, 1)).toMatchObject({
          parts_committed: 0,
          split_tasks_per_part: 4,
        });
        // 8 tasks past w2's reservation (32-39): two parts' worth, split at the reservation.
        await ledger.heartbeat(first.claim, { reserveTo: 32 });
        const second = await splitBy('w3');
        expect(second.from).toMatchObject({ unit: 1, end_task_index: 32 });
        expect(second.claim).toMatchObject({ unit: 2, worker_id: 'w3', end_task_index: 40 });
        expect(await ledger.getShard(DS, 0, 2)).toMatchObject({
          split_from: 1,
          split_tasks_per_part: 4,
        });
        // 7 tasks past w3's reservation (33-39): under two parts' worth, so nothing is split
        // (2 tasks a side, the minimum alone, would have split it at 36).
        await ledger.heartbeat(second.claim, { reserveTo: 33 });
        expect(await ledger.split(DS, 'w4', { leaseMs: LEASE })).toBeNull();
      });

      test(
        'concurrent splitters on one unit: exactly one wins',
        async () => {
          // 10 tasks, reserved to 2, at least 3 per side: one split (at 5) and nothing after.
          await register(1, DS, undefined, 10);
          const c = await claimed('holder');
          await ledger.heartbeat(c, { reserveTo: 2 });
          const workers = Array.from({ length: 6 }, (_, i) => `splitter-${i}`);
          const results = await ns.concurrentSplits(DS, workers, clock.nowMs(), LEASE, 3);
          const won = results.filter((r): r is Claim => r !== null);
          expect(won).toHaveLength(1);
          expect(won[0]).toMatchObject({ unit: 1, epoch: 1, end_task_index: 10 });
          const row = (await ledger.status(DS)).shards[0]!;
          expect(row.units.map((u) => [u.unit, u.unit_start, u.unit_end, u.assigned_to])).toEqual([
            [0, 0, 5, 'holder'],
            [1, 5, 10, won[0]!.worker_id],
          ]);
        },
        options.concurrencyTimeoutMs,
      );

      test('a zombie holder cannot commit into a split unit', async () => {
        const holder = await midPart();
        const { claim: tail } = await splitBy('w2');
        // The unit-0 holder cannot write the tail's range, under its own claim or the tail's.
        expect(await rejection(ledger.commitPart(holder, part(1, 22, 30)))).toBe(
          'INVALID_ARGUMENT',
        );
        expect(await rejection(ledger.commitPart({ ...holder, unit: 1 }, part(0, 22, 30)))).toBe(
          'LEASE_LOST',
        );
        // The tail's holder dies; the reaper frees the unit, anyone may claim it; the old
        // holder is fenced.
        await ledger.commitPart(tail, part(0, 22, 26, 'part_u1_00000'));
        for (let t = 0; t < 3; t++) {
          clock.advance(LEASE / 3);
          await ledger.heartbeat(holder);
        }
        clock.advance(1);
        const reaped = await ledger.reapExpired(clock.nowMs(), { datasetId: DS });
        expect(reaped).toEqual([
          expect.objectContaining({
            shard_id: 0,
            unit: 1,
            worker_id: 'w2',
            status: 'available',
            attempts: 0,
          }),
        ]);
        const next = await claimed('w3');
        expect(next).toMatchObject({ unit: 1, epoch: 2, end_task_index: 40 });
        expect(await ledger.getShard(DS, 0, 1)).toMatchObject({ next_task_index: 26 });
        expect(await rejection(ledger.commitPart(tail, part(1, 26, 30, 'part_u1_00001')))).toBe(
          'LEASE_LOST',
        );
        expect(await rejection(ledger.heartbeat(tail))).toBe('LEASE_LOST');
        expect(await rejection(ledger.complete(tail))).toBe('LEASE_LOST');
        await ledger.commitPart(next, part(1, 26, 40, 'part_u1_00001'));
      });

      test('fail counts against one unit; reset and force act on every unit and keep the split', async () => {
        const holder = await midPart();
        const { claim: tail } = await splitBy('w2');
        const failed = await ledger.fail(tail, 'boom');
        expect(failed).toMatchObject({ unit: 1, status: 'available', attempts: 1 });
        expect(await ledger.getShard(DS, 0)).toMatchObject({ status: 'in_use', attempts: 0 });
        const forced = await ledger.forceFail(DS, 0, 'op', 'stuck');
        expect(forced).toMatchObject({ status: 'available', attempts: 2 });
        expect(await rejection(ledger.heartbeat(holder))).toBe('LEASE_LOST');
        const reset = await ledger.reset(DS, 0, 'op');
        expect(reset).toMatchObject({
          status: 'available',
          attempts: 0,
          parts_committed: 1,
          unit_count: 2,
        });
        const units = (await ledger.status(DS)).shards[0]!.units;
        expect(
          units.map((u) => [u.unit, u.status, u.unit_start, u.unit_end, u.next_task_index]),
        ).toEqual([
          [0, 'available', 0, 22, 4],
          [1, 'available', 22, 40, 22],
        ]);
        await ledger.reset(DS, 0, 'op', { discardParts: true });
        expect(await ledger.listShardParts({ dataset_id: DS, shard_id: 0 })).toEqual([]);
        expect(await ledger.getShard(DS, 0)).toMatchObject({
          next_task_index: 0,
          parts_committed: 0,
        });
        const done = await ledger.forceComplete(DS, 0, 'op');
        expect(done).toMatchObject({ status: 'completed', units_completed: 2 });
        expect((await ledger.status(DS)).shards[0]!.units.map((u) => u.status)).toEqual([
          'completed',
          'completed',
        ]);
      });
    });

    test(
      '32 concurrent claimers on 8 shards: exactly 8 claims, no shard twice, the rest told nothing is available',
      async () => {
        await register(8);
        const workers = Array.from({ length: 32 }, (_, i) => `claimer-${i}`);
        const results = await ns.concurrentClaims(DS, workers, T0, LEASE);
        const granted = results.filter((c): c is Claim => c !== null);
        expect(granted).toHaveLength(8);
        expect(new Set(granted.map((c) => c.shard_id)).size).toBe(8);
        expect(results.filter((c) => c === null)).toHaveLength(24);
        const status = await ledger.status(DS);
        expect(status.totals.in_use).toBe(8);
        for (const c of granted) {
          expect(status.shards[c.shard_id]).toMatchObject({ assigned_to: c.worker_id, epoch: 1 });
        }
      },
      options.concurrencyTimeoutMs,
    );
  });
}
