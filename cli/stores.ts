/**
 * Opens blob stores for the CLI (a composition root): local folders, or Cloud Storage with a
 * client built once from the environment (Application Default Credentials; the client honours
 * STORAGE_EMULATOR_HOST itself).
 */
import { IdempotencyStrategy, Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../core/blob/gcs';
import { LocalBlobStore } from '../core/blob/local';
import type { Location } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';

let storage: Storage | undefined;

/** The process's Cloud Storage client, created on first use. */
export function storageClient(env: Readonly<Record<string, string | undefined>>): Storage {
  if (!storage) {
    const projectId = env.GOOGLE_CLOUD_PROJECT ?? env.GCLOUD_PROJECT;
    storage = new Storage({
      ...(projectId ? { projectId } : {}),
      // Every object shardline writes has deterministic content, so retrying a write is safe.
      retryOptions: {
        autoRetry: true,
        maxRetries: 5,
        idempotencyStrategy: IdempotencyStrategy.RetryAlways,
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
  return loc.kind === 'local'
    ? new LocalBlobStore(loc.path)
    : new GcsBlobStore(storageClient(env), loc.bucket, loc.prefix);
}
