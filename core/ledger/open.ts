/**
 * Opens the ledger for a dataset location, for composition roots (CLI, worker, functions):
 * SQLite beside a local dataset by default, Firestore for `gs://`, or what `kind` says.
 * Neither implementation loads the Firestore client library; the client comes from the
 * caller's factory, called only when the ledger is Firestore (local runs never pay its load,
 * test/integration/cli/lazy-clients.test.ts checks it).
 */
import * as path from 'node:path';

import type { Location } from '../blob/location';
import { formatLocation } from '../blob/location';
import type { Clock } from '../clock';
import { LOCAL_LEDGER_FILE } from '../dataset/paths';
import { ConfigError } from '../errors';
import type { Firestore } from './firestore';
import { FirestoreLedger } from './firestore';
import type { Ledger, LedgerKind } from './ledger';
import { SqliteLedger } from './sqlite';

/** The ledger kinds, as `--ledger` accepts them. */
export const LEDGER_KINDS: readonly LedgerKind[] = ['sqlite', 'firestore'];

/** Options of `openLedger`. */
export interface OpenLedgerOptions {
  /** The dataset's location (its folder or `gs://` prefix). */
  location: Location;
  /** Which ledger; default `sqlite` for a local folder, `firestore` for `gs://`. */
  kind?: LedgerKind;
  clock: Clock;
  /**
   * The Firestore client when the ledger is Firestore (called at most once). The caller owns
   * it (a composition root's `CloudClients`): the ledger's `close()` leaves it open.
   */
  firestore?: () => Firestore | Promise<Firestore>;
  /** The Firestore datasets collection; default `datasets`. */
  firestoreRoot?: string;
  /** Jitter for Firestore claim backoff; default Math.random. */
  random?: () => number;
}

/** The ledger kind a location gets unless told otherwise. */
export function defaultLedgerKind(location: Location): LedgerKind {
  return location.kind === 'local' ? 'sqlite' : 'firestore';
}

/** The SQLite ledger file of a local dataset folder. */
export function localLedgerPath(datasetDir: string): string {
  return path.join(datasetDir, LOCAL_LEDGER_FILE);
}

/**
 * The ledger kind for a location: `kind` when given and possible, else the default. An SQLite
 * ledger lives in a file beside the dataset, so it needs a local folder (`INVALID_ARGUMENT`).
 */
export function resolveLedgerKind(location: Location, kind?: LedgerKind): LedgerKind {
  const chosen = kind ?? defaultLedgerKind(location);
  if (chosen === 'sqlite' && location.kind !== 'local') {
    throw new ConfigError(
      `--ledger sqlite needs a local dataset folder; ${formatLocation(location)} is in Cloud Storage (use --ledger firestore)`,
    );
  }
  return chosen;
}

/** Opens the ledger; see `OpenLedgerOptions`. */
export async function openLedger(options: OpenLedgerOptions): Promise<Ledger> {
  const kind = resolveLedgerKind(options.location, options.kind);
  if (kind === 'sqlite' && options.location.kind === 'local') {
    return SqliteLedger.open(localLedgerPath(options.location.path), { clock: options.clock });
  }
  if (!options.firestore)
    throw new ConfigError('--ledger firestore: no Firestore client was configured');
  return new FirestoreLedger(await options.firestore(), {
    clock: options.clock,
    ...(options.firestoreRoot === undefined ? {} : { root: options.firestoreRoot }),
    ...(options.random === undefined ? {} : { random: options.random }),
  });
}
