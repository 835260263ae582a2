/**
 * The functions' composition root: clients, clock, logger, ledger and configuration, built
 * once per instance on the first invocation (never at import time), shared by the four
 * entry points. Tests replace them with `useDepsForTesting`.
 */
import { parseLocation } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import { systemClock } from '../core/clock';
import { CloudClients } from '../core/cloud-clients';
import { ShardlineError } from '../core/errors';
import type { IngestDeps } from '../core/ingest/ingest';
import { FirestoreIngestRecords } from '../core/ingest/firestore-records';
import { FirestoreLedger } from '../core/ledger/firestore';
import type { Ledger } from '../core/ledger/ledger';
import type { Logger } from '../core/log';
import { createLogger } from '../core/log';
import type { Publisher } from '../core/wakeup/publisher';
import { SHARDLINE_VERSION } from '../core/version';
import { PubSubPublisher } from '../core/wakeup/publisher';
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
  const cloud = new CloudClients({
    ...(config.projectId ? { projectId: config.projectId } : {}),
    firestoreDatabase: config.firestoreDatabase,
  });
  const firestore = cloud.firestore();
  const publisher = new PubSubPublisher(cloud.pubsub());
  const ledger = new FirestoreLedger(firestore, { clock, root: config.ledgerRoot });
  const store = (bucket: string, prefix: string): BlobStore =>
    cloud.openStore({ kind: 'gcs', bucket, prefix });
  return {
    config,
    clock,
    log,
    ledger,
    publisher,
    ingest: {
      records: new FirestoreIngestRecords(firestore, clock, config.ingestCollections),
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
      await cloud.close();
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
