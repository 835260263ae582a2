/**
 * Opens blob stores for the CLI (a composition root): local folders, or Cloud Storage with a
 * client built once from the environment (Application Default Credentials; the client honours
 * STORAGE_EMULATOR_HOST itself).
 */
import type { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../core/blob/gcs';
import { createStorageClient } from '../core/blob/gcs-client';
import { LocalBlobStore } from '../core/blob/local';
import type { Location } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';

let storage: Storage | undefined;

/** The process's Cloud Storage client, created on first use. */
export function storageClient(env: Readonly<Record<string, string | undefined>>): Storage {
  storage ??= createStorageClient(env.GOOGLE_CLOUD_PROJECT ?? env.GCLOUD_PROJECT);
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
