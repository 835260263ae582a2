/**
 * The functions' composition root: clients, clock, logger, ledger and configuration, built
 * once per instance on the first invocation (never at import time), shared by the four
 * entry points. Tests replace them with `useDepsForTesting`.
 */
import type { Firestore } from '@google-cloud/firestore';
import type { PubSub } from '@google-cloud/pubsub';
import type { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../core/blob/gcs';
import { createStorageClient } from '../core/blob/gcs-client';
import { parseLocation } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import { systemClock } from '../core/clock';
import { ShardlineError } from '../core/errors';
import type { IngestDeps } from '../core/ingest/ingest';
import { IngestRecords } from '../core/ingest/records';
import { FirestoreLedger } from '../core/ledger/firestore';
import type { Ledger } from '../core/ledger/ledger';
import type { Logger } from '../core/log';
import { createLogger } from '../core/log';
import type { Publisher } from '../core/wakeup/publisher';
import { PubSubPublisher } from '../core/wakeup/publisher';
import { SHARDLINE_VERSION } from '../core/version';
import type { FunctionsConfig } from './config';
import { parseFunctionsConfig } from './config';

/** What every entry point gets. */
export interface FunctionDeps {
  config: FunctionsConfig;
  clock: Clock;
  log: Logger;
  ledger: Ledger;
  publisher: Publisher;
  ingest: IngestDeps;
  /** A blob store at a `gs://` folder URI. */
  storeAt: (uri: string) => BlobStore;
  /** Closes the clients (tests; an instance lives as long as its process). */
  close(): Promise<void>;
}

let current: Promise<FunctionDeps> | undefined;

/** Builds the real dependencies from the environment. */
export function createDeps(
  env: Readonly<Record<string, string | undefined>>,
  clock: Clock = systemClock,
): FunctionDeps {
  const config = parseFunctionsConfig(env);
  const log = createLogger({
    format: 'json',
    minSeverity: config.logLevel,
    clock,
    sink: (line) => void process.stdout.write(`${line}\n`),
    fields: { service: 'shardline-functions' },
  });
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded on first use, not at import */
  const { Firestore: FirestoreClient } = require('@google-cloud/firestore') as {
    Firestore: typeof Firestore;
  };
  const { PubSub: PubSubClient } = require('@google-cloud/pubsub') as { PubSub: typeof PubSub };
  /* eslint-enable @typescript-eslint/no-require-imports */
  const firestore = new FirestoreClient({
    ...(config.projectId ? { projectId: config.projectId } : {}),
    databaseId: config.firestoreDatabase,
    ignoreUndefinedProperties: true,
  });
  const storage: Storage = createStorageClient(config.projectId);
  const pubsub = new PubSubClient(config.projectId ? { projectId: config.projectId } : {});
  const publisher = new PubSubPublisher(pubsub);
  const ledger = new FirestoreLedger(firestore, { clock, root: config.ledgerRoot });
  const store = (bucket: string, prefix: string): BlobStore =>
    new GcsBlobStore(storage, bucket, prefix);
  return {
    config,
    clock,
    log,
    ledger,
    publisher,
    ingest: {
      records: new IngestRecords(firestore, clock, config.ingestCollections),
      ledger,
      publisher,
      store,
      clock,
      log,
      config: config.ingest,
      createdBy: `shardline ${SHARDLINE_VERSION}`,
    },
    close: async () => {
      await publisher.close();
      await pubsub.close();
      await firestore.terminate();
    },
    storeAt: (uri) => {
      const loc = parseLocation(uri, '/');
      if (loc.kind !== 'gcs')
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `functions write only to gs:// locations, not ${uri}`,
        );
      return store(loc.bucket, loc.prefix);
    },
  };
}

/** The instance's dependencies, created on first use. */
export function deps(): Promise<FunctionDeps> {
  current ??= Promise.resolve().then(() => createDeps(process.env));
  return current;
}

/** Replaces the dependencies (tests), or resets them to be rebuilt from the environment. */
export function useDepsForTesting(replacement: FunctionDeps | undefined): void {
  current = replacement ? Promise.resolve(replacement) : undefined;
}
