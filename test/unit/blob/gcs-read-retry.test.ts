/**
 * `GcsBlobStore.readAll` against a client whose downloads fail as a kept-alive connection the
 * server closed makes them fail ("socket hang up", ECONNRESET): tried again on a new request,
 * twice at most; any other error at once.
 */
import type { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../../../core/blob/gcs';
import { errorCode } from '../../../core/errors';

/** A client whose downloads throw `failures` in turn, then answer `data`; it counts them. */
function storageFailing(failures: Error[], data = Buffer.from('ok')) {
  const calls: string[] = [];
  const storage = {
    bucket: () => ({
      file: (name: string) => ({
        download: () => {
          calls.push(name);
          const failure = failures.shift();
          return failure === undefined ? Promise.resolve([data]) : Promise.reject(failure);
        },
      }),
    }),
  } as unknown as Storage;
  return { storage, calls };
}

const hangUp = (): Error =>
  Object.assign(new Error('request to http://127.0.0.1/b/x/o/k failed, reason: socket hang up'), {
    code: 'ECONNRESET',
  });

test('a download whose connection was reset is tried again and succeeds', async () => {
  const { storage, calls } = storageFailing([hangUp(), hangUp()]);
  const store = new GcsBlobStore(storage, 'b', 'p');
  expect((await store.readAll('k')).toString()).toBe('ok');
  expect(calls).toEqual(['p/k', 'p/k', 'p/k']);
});

test('a connection reset three times in a row reaches the caller as a STORAGE error', async () => {
  const { storage, calls } = storageFailing([hangUp(), hangUp(), hangUp()]);
  const store = new GcsBlobStore(storage, 'b', 'p');
  const e = await store.readAll('k').then(
    () => null,
    (err: unknown) => err,
  );
  expect(errorCode(e)).toBe('STORAGE');
  expect(String(e)).toMatch(/k: .*socket hang up/);
  expect(calls).toHaveLength(3);
});

test('a missing object is not tried again', async () => {
  const { storage, calls } = storageFailing([
    Object.assign(new Error('No such object'), { code: 404 }),
  ]);
  const store = new GcsBlobStore(storage, 'b', '');
  const e = await store.readAll('k').then(
    () => null,
    (err: unknown) => err,
  );
  expect(errorCode(e)).toBe('NOT_FOUND');
  expect(calls).toEqual(['k']);
});
