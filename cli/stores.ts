/**
 * Opens blob stores for the CLI (a composition root): local folders, or Cloud Storage with a
 * client built once from the environment (Application Default Credentials; the client honours
 * STORAGE_EMULATOR_HOST itself). The Cloud Storage library is loaded only when a `gs://`
 * location is used: it costs ~0.1 s of start-up that local runs need not pay.
 */
import type * as StorageLib from '@google-cloud/storage';
import type { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../core/blob/gcs';
import { LocalBlobStore } from '../core/blob/local';
import type { Location } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';

let storage: Storage | undefined;

/** The process's Cloud Storage client, created on first use. */
export function storageClient(env: Readonly<Record<string, string | undefined>>): Storage {
  if (!storage) {
    // A CommonJS require, not import(): TypeScript would turn import() into an ESM load of
    // the library's other build.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const lib = require('@google-cloud/storage') as typeof StorageLib;
    const projectId = env.GOOGLE_CLOUD_PROJECT ?? env.GCLOUD_PROJECT;
    storage = new lib.Storage({
      ...(projectId ? { projectId } : {}),
      // Every object shardline writes has deterministic content, so retrying a write is safe.
      retryOptions: {
        autoRetry: true,
        maxRetries: 5,
        idempotencyStrategy: lib.IdempotencyStrategy.RetryAlways,
      },
    });
  }
  return storage;
}

/** A blob store rooted at `loc`. */
export function openStore(
  loc: Location,
  env: Readonly<Record<string, string | undefined>>,
): BlobStore {
  if (loc.kind === 'local') return new LocalBlobStore(loc.path);
  return new GcsBlobStore(storageClient(env), loc.bucket, loc.prefix);
}
