/**
 * Creates the Cloud Storage client for composition roots. The library is loaded on first use
 * (a CommonJS require: TypeScript would turn `import()` into an ESM load of its other build),
 * so processes that never touch `gs://` do not pay its start-up.
 */
import type * as StorageLib from '@google-cloud/storage';
import type { Storage } from '@google-cloud/storage';

/** A Storage client with retries on for every request: all shardline writes are idempotent. */
export function createStorageClient(projectId: string | undefined): Storage {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const lib = require('@google-cloud/storage') as typeof StorageLib;
  return new lib.Storage({
    ...(projectId ? { projectId } : {}),
    retryOptions: {
      autoRetry: true,
      maxRetries: 5,
      idempotencyStrategy: lib.IdempotencyStrategy.RetryAlways,
    },
  });
}
