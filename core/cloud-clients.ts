/**
 * The Google Cloud clients (Storage, Firestore, Pub/Sub) of one process, built from one
 * settings object by a composition root (the worker's `runWork`, the CLI's wiring, the
 * functions' `createDeps`) and handed down. Nothing deeper creates a client.
 *
 * Each library is loaded on first use (a CommonJS `require`: TypeScript would turn `import()`
 * into an ESM load of the libraries' other build), so a local run that never touches `gs://`,
 * Firestore or Pub/Sub does not pay their start-up (most of a second each), and a test can
 * check that it did not. The clients honour the emulator variables themselves
 * (`FIRESTORE_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`, `STORAGE_EMULATOR_HOST`).
 */
import type * as FirestoreLib from '@google-cloud/firestore';
import type { Firestore } from '@google-cloud/firestore';
import type * as PubSubLib from '@google-cloud/pubsub';
import type { PubSub } from '@google-cloud/pubsub';
import type * as StorageLib from '@google-cloud/storage';
import type { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from './blob/gcs';
import { LocalBlobStore } from './blob/local';
import type { Location } from './blob/location';
import type { BlobStore } from './blob/store';
import type { Env } from './config';

/** What the clients are built from. */
export interface CloudSettings {
  /** The project; undefined lets each library detect it (metadata server, gcloud config). */
  projectId?: string;
  /** Firestore database id; default `(default)`. */
  firestoreDatabase?: string;
  /**
   * Retries per Cloud Storage request; default `DEFAULT_STORAGE_RETRIES`. With the library's
   * backoff (1 s doubling, plus up to 1 s of jitter each) 5 retries ride through about 31-36 s
   * of unavailability; a longer outage reaches the caller (the worker then retries the step
   * itself: docs/decisions.md#failures-transient-permanent-or-not-known).
   */
  storageRetries?: number;
}

/** Retries per Cloud Storage request unless configured. */
export const DEFAULT_STORAGE_RETRIES = 5;

/**
 * The one place the project id is resolved: the explicit value (a flag), else
 * `GOOGLE_CLOUD_PROJECT`, else `GCLOUD_PROJECT`, else undefined (detected by the libraries).
 */
export function resolveProjectId(explicit: string | undefined, env: Env): string | undefined {
  for (const v of [explicit, env.GOOGLE_CLOUD_PROJECT, env.GCLOUD_PROJECT])
    if (v !== undefined && v.trim() !== '') return v.trim();
  return undefined;
}

/** A Storage client with retries on for every request: all shardline writes are idempotent. */
export function createStorageClient(
  projectId: string | undefined,
  retries = DEFAULT_STORAGE_RETRIES,
): Storage {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use
  const lib = require('@google-cloud/storage') as typeof StorageLib;
  return new lib.Storage({
    ...(projectId ? { projectId } : {}),
    retryOptions: {
      autoRetry: true,
      maxRetries: retries,
      idempotencyStrategy: lib.IdempotencyStrategy.RetryAlways,
    },
  });
}

/** A Firestore client for `settings`; `undefined` fields are dropped rather than stored. */
export function createFirestoreClient(settings: CloudSettings): Firestore {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use
  const lib = require('@google-cloud/firestore') as typeof FirestoreLib;
  return new lib.Firestore({
    ...(settings.projectId ? { projectId: settings.projectId } : {}),
    ...(settings.firestoreDatabase ? { databaseId: settings.firestoreDatabase } : {}),
    ignoreUndefinedProperties: true,
  });
}

/** A Pub/Sub client for `settings`. */
export function createPubSubClient(settings: CloudSettings): PubSub {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use
  const lib = require('@google-cloud/pubsub') as typeof PubSubLib;
  return new lib.PubSub(settings.projectId ? { projectId: settings.projectId } : {});
}

/** The clients of one process, each created on first use and closed together. */
export class CloudClients {
  private storageClient: Storage | undefined;
  private firestoreClient: Firestore | undefined;
  private pubsubClient: PubSub | undefined;

  constructor(readonly settings: CloudSettings) {}

  /** The Storage client. */
  storage(): Storage {
    this.storageClient ??= createStorageClient(
      this.settings.projectId,
      this.settings.storageRetries,
    );
    return this.storageClient;
  }

  /** The Firestore client (one per process: its channels are shared by every ledger). */
  firestore(): Firestore {
    this.firestoreClient ??= createFirestoreClient(this.settings);
    return this.firestoreClient;
  }

  /** The Pub/Sub client. */
  pubsub(): PubSub {
    this.pubsubClient ??= createPubSubClient(this.settings);
    return this.pubsubClient;
  }

  /** A blob store rooted at `loc`: a local folder, or a Cloud Storage prefix. */
  openStore(loc: Location): BlobStore {
    return loc.kind === 'local'
      ? new LocalBlobStore(loc.path)
      : new GcsBlobStore(this.storage(), loc.bucket, loc.prefix);
  }

  /** Closes the clients that were created (Storage holds nothing to close). */
  async close(): Promise<void> {
    const pubsub = this.pubsubClient;
    const firestore = this.firestoreClient;
    this.pubsubClient = undefined;
    this.firestoreClient = undefined;
    await Promise.all([pubsub?.close(), firestore?.terminate()]);
  }
}
