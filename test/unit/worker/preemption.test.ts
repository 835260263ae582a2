/**
 * Preemption notices (worker/preemption.ts) against a fake metadata server on loopback: when
 * the watch runs at all, what it asks (always with `Metadata-Flavor: Google`, long polls from
 * the last ETag), which values are notices, and that a broken or foreign server is retried, not
 * trusted.
 */
import { silentLogger } from '../../../core/log';
import { PreemptionWatcher, isNotice, watchPreemption } from '../../../worker/preemption';
import type { PreemptionNotice } from '../../../worker/preemption';
import { FakeMetadataServer } from '../../support/fake-metadata';
import { waitFor } from '../../support/worker-fixtures';

let server: FakeMetadataServer;
beforeEach(async () => {
  server = await FakeMetadataServer.start();
});
afterEach(() => server.close());

function watcher(extra: Partial<ConstructorParameters<typeof PreemptionWatcher>[0]> = {}) {
  const notices: PreemptionNotice[] = [];
  const w = new PreemptionWatcher({
    host: server.host,
    log: silentLogger,
    maxBackoffMs: 50,
    ...extra,
  });
  const ended = w.watch((n) => notices.push(n));
  return { w, notices, ended };
}

test('auto watches on a Compute Engine VM or where GCE_METADATA_HOST is set, nowhere else; on and off say so', () => {
  expect(watchPreemption('auto', 'Google Compute Engine\n', undefined)).toBe(true);
  expect(watchPreemption('auto', 'Google', undefined)).toBe(true);
  expect(watchPreemption('auto', null, '127.0.0.1:8080')).toBe(true);
  expect(watchPreemption('auto', 'Standard PC (Q35 + ICH9, 2009)', undefined)).toBe(false);
  expect(watchPreemption('auto', null, undefined)).toBe(false);
  expect(watchPreemption('auto', null, '')).toBe(false);
  expect(watchPreemption('on', null, undefined)).toBe(true);
  expect(watchPreemption('off', 'Google Compute Engine', '127.0.0.1:1')).toBe(false);
  expect(isNotice('preempted', 'TRUE')).toBe(true);
  expect(isNotice('preempted', 'FALSE')).toBe(false);
  expect(isNotice('maintenance-event', 'TERMINATE_ON_HOST_MAINTENANCE')).toBe(true);
  expect(isNotice('maintenance-event', 'MIGRATE_ON_HOST_MAINTENANCE')).toBe(false);
  expect(isNotice('maintenance-event', 'NONE')).toBe(false);
});

test('reads each value, then waits at the server from its ETag; preempted turning TRUE is one notice, and the watch ends', async () => {
  const { notices, ended } = watcher();
  await waitFor('both long polls held', () => server.held === 2, 10_000);
  expect(notices).toEqual([]);
  server.set('preempted', 'TRUE');
  await ended;
  expect(notices).toEqual([{ key: 'preempted', value: 'TRUE' }]);
  // Every request carried the header; the first of each key read the value, the next waited.
  expect(server.requests.every((r) => r.flavor === 'Google')).toBe(true);
  const preempted = server.requests.filter((r) => r.path.endsWith('/preempted'));
  expect(preempted[0]!.query).toEqual({});
  expect(preempted[1]!.query).toMatchObject({ wait_for_change: 'true', last_etag: '1' });
  expect(server.held).toBe(0);
});

test('a VM already preempted is noticed at once; a stop for host maintenance is a notice, a migration is not', async () => {
  server.set('preempted', 'TRUE');
  const first = watcher();
  await first.ended;
  expect(first.notices).toEqual([{ key: 'preempted', value: 'TRUE' }]);

  server.set('preempted', 'FALSE');
  const second = watcher();
  await waitFor('both long polls held', () => server.held === 2, 10_000);
  server.set('maintenance-event', 'MIGRATE_ON_HOST_MAINTENANCE');
  await waitFor('the poll after the migration held', () => server.held === 2, 10_000);
  expect(second.notices).toEqual([]);
  server.set('maintenance-event', 'TERMINATE_ON_HOST_MAINTENANCE');
  await second.ended;
  expect(second.notices).toEqual([
    { key: 'maintenance-event', value: 'TERMINATE_ON_HOST_MAINTENANCE' },
  ]);
});

test('a failing server, or one that does not answer as a metadata server, is retried and never trusted; stop ends the watch', async () => {
  server.failWith = 503;
  const { w, notices, ended } = watcher();
  await waitFor('retries', () => server.requests.length >= 6, 10_000);
  server.failWith = null;
  server.noFlavor = true;
  server.set('preempted', 'TRUE');
  const seen = server.requests.length;
  await waitFor('more retries', () => server.requests.length >= seen + 4, 10_000);
  expect(notices).toEqual([]);
  w.stop();
  await ended;
  expect(notices).toEqual([]);
  expect(server.held).toBe(0);
});
