/** Worker ids, candidate order and the ledger factory: the small pure parts of the ledger. */
import { parseLocation } from '../../../core/blob/location';
import { ConfigError } from '../../../core/errors';
import { candidateOrder } from '../../../core/ledger/candidates';
import { openLedger, resolveLedgerKind } from '../../../core/ledger/open';
import { workerIdentity } from '../../../core/ledger/worker-id';
import { FakeClock } from '../../support/ledger-fixtures';
import { makeTempDir } from '../../support/tmp';

const base = { hostname: 'TPU-VM.us-central2', pid: 4242, randomHex: 'a1b2c3' };

test('worker ids: unique by default, the seed form from machine/host numbers, --worker_id as given', () => {
  expect(workerIdentity(base)).toBe('tpu-vm.us-central2-4242-a1b2c3');
  expect(workerIdentity({ ...base, randomHex: 'ffffff' })).not.toBe(workerIdentity(base));
  expect(workerIdentity({ ...base, machineId: 3, hostId: 1 })).toBe('machine3_host1');
  expect(workerIdentity({ ...base, hostId: 2 })).toBe('machine0_host2');
  expect(workerIdentity({ ...base, machineId: 5 })).toBe('machine5_host0');
  expect(workerIdentity({ ...base, workerId: 'worker_0', machineId: 3 })).toBe('worker_0');
  expect(workerIdentity({ ...base, hostname: '???' })).toBe('host-4242-a1b2c3');
  expect(() => workerIdentity({ ...base, workerId: '' })).toThrow(ConfigError);
  expect(() => workerIdentity({ ...base, workerId: 'x'.repeat(129) })).toThrow(/1-128 printable/);
});

test('candidate order: preferred first, every shard once, and an order that differs per worker', () => {
  const ids = [0, 1, 2, 3, 4, 5, 6, 7];
  const a = candidateOrder(ids, 'worker-a');
  expect([...a].sort()).toEqual(ids);
  expect(candidateOrder(ids, 'worker-a')).toEqual(a);
  expect(candidateOrder(ids, 'worker-a', 5)[0]).toBe(5);
  expect([...candidateOrder(ids, 'worker-a', 5)].sort()).toEqual(ids);
  expect(candidateOrder(ids, 'worker-a', 99)).toEqual(a);
  expect(candidateOrder(ids, 'worker-a', undefined, 1)).not.toEqual(a);
  // 64 workers spread their first pick over the shards instead of all racing for shard 0.
  const firsts = new Set(Array.from({ length: 64 }, (_, i) => candidateOrder(ids, `w${i}`)[0]));
  expect(firsts.size).toBeGreaterThanOrEqual(6);
  expect(candidateOrder([], 'w')).toEqual([]);
});

test('openLedger: SQLite beside a local dataset, Firestore for gs://, --ledger overrides where possible', async () => {
  const local = parseLocation('/data/ds', '/');
  const gcs = parseLocation('gs://bucket/ds', '/');
  expect(resolveLedgerKind(local)).toBe('sqlite');
  expect(resolveLedgerKind(gcs)).toBe('firestore');
  expect(resolveLedgerKind(local, 'firestore')).toBe('firestore');
  expect(() => resolveLedgerKind(gcs, 'sqlite')).toThrow(/needs a local dataset folder/);
  const { dir, cleanup } = makeTempDir('open');
  try {
    const ledger = await openLedger({ location: parseLocation(dir, '/'), clock: new FakeClock() });
    expect(ledger.kind).toBe('sqlite');
    expect(ledger.location).toBe(`${dir}/ledger.sqlite`);
    await ledger.close();
    await expect(openLedger({ location: gcs, clock: new FakeClock() })).rejects.toThrow(
      /no Firestore client/,
    );
  } finally {
    cleanup();
  }
});
