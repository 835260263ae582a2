/**
 * The CLI's wiring: builds the real things commands need (ledger, dataset session, worker
 * identity) from parsed flags and the command's context, whose cloud clients (core/cloud-clients.ts)
 * are created from the same flags by main.ts. Part of the CLI's composition root, with main.ts;
 * commands call these and stay thin.
 */
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';

import type { Location } from '../core/blob/location';
import type { CloudSettings } from '../core/cloud-clients';
import { DEFAULT_STORAGE_RETRIES, resolveProjectId } from '../core/cloud-clients';
import type { Env } from '../core/config';
import { envNumber } from '../core/config';
import { formatLocation, parseLocation } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';
import type { MasterMetadata } from '../core/dataset/metadata';
import { readMasterMetadata } from '../core/dataset/metadata';
import type { Ledger, LedgerKind } from '../core/ledger/ledger';
import { LEDGER_KINDS, openLedger, resolveLedgerKind } from '../core/ledger/open';
import { workerIdentity } from '../core/ledger/worker-id';
import type { FlagSpec, ParsedArgs } from './args';
import type { CommandContext } from './command';

/** `--dataset_dir`, as the seed names it. */
export const DATASET_DIR_FLAG = {
  name: 'dataset_dir',
  type: 'string',
  required: true,
  placeholder: 'DIR',
  env: 'SHARDLINE_DATASET_DIR',
  description: 'the dataset: a local folder or gs://BUCKET/PREFIX (where master_metadata.json is)',
} as const satisfies FlagSpec;

/** `--num_shards`, as `create` (and `plan --input_file`, for what `create` would make) read it. */
export const NUM_SHARDS_FLAG = {
  name: 'num_shards',
  type: 'int',
  default: 8,
  min: 1,
  max: 100_000,
  placeholder: 'N',
  description: 'number of shards',
} as const satisfies FlagSpec;

/** Flags that choose and locate the ledger. */
export const LEDGER_FLAGS = {
  ledger: {
    name: 'ledger',
    type: 'string',
    choices: LEDGER_KINDS,
    placeholder: 'KIND',
    env: 'SHARDLINE_LEDGER',
    description:
      'where shard status lives; default sqlite beside a local dataset, firestore for gs://',
  },
  firestore_project: {
    name: 'firestore_project',
    type: 'string',
    placeholder: 'ID',
    env: 'GOOGLE_CLOUD_PROJECT',
    description:
      'Google Cloud project of the Firestore ledger (also GCLOUD_PROJECT; default: detected)',
  },
  firestore_database: {
    name: 'firestore_database',
    type: 'string',
    placeholder: 'ID',
    env: 'SHARDLINE_FIRESTORE_DATABASE',
    description: 'Firestore database id (default: "(default)")',
  },
  firestore_root: {
    name: 'firestore_root',
    type: 'string',
    placeholder: 'PATH',
    env: 'SHARDLINE_FIRESTORE_ROOT',
    default: 'datasets',
    description: 'Firestore collection that holds the datasets',
  },
} as const satisfies Record<string, FlagSpec>;

/** Flags that name the worker (the seed's `--worker_id`, and its machine/host numbering). */
export const WORKER_FLAGS = {
  worker_id: {
    name: 'worker_id',
    type: 'string',
    placeholder: 'ID',
    env: 'SHARDLINE_WORKER_ID',
    description: 'who is acting; default unique (host-pid-random)',
  },
  machine_id: {
    name: 'machine_id',
    type: 'int',
    min: 0,
    placeholder: 'X',
    description: 'with --host_id, names the worker machine{X}_host{Y} as the original did',
  },
  host_id: {
    name: 'host_id',
    type: 'int',
    min: 0,
    placeholder: 'Y',
    description: 'host number within a multi-host machine (see --machine_id)',
  },
} as const satisfies Record<string, FlagSpec>;

/** The worker id from `--worker_id`, `--machine_id/--host_id`, or a unique default. */
export function workerIdFrom(args: ParsedArgs): string {
  const workerId = args.optStr('worker_id');
  const machineId = args.optNum('machine_id');
  const hostId = args.optNum('host_id');
  return workerIdentity({
    ...(workerId === undefined ? {} : { workerId }),
    ...(machineId === undefined ? {} : { machineId }),
    ...(hostId === undefined ? {} : { hostId }),
    hostname: os.hostname(),
    pid: process.pid,
    randomHex: randomBytes(3).toString('hex'),
  });
}

/** True when the user named the worker (so it may be the holder of a claim). */
export function workerNamed(args: ParsedArgs): boolean {
  return args.given.has('worker_id') || args.given.has('machine_id') || args.given.has('host_id');
}

/** Who an operator action is recorded as: the named worker, else `user@host`. */
export function operatorName(args: ParsedArgs, ctx: Pick<CommandContext, 'env'>): string {
  if (workerNamed(args)) return workerIdFrom(args);
  let user = ctx.env.USER ?? ctx.env.LOGNAME;
  if (!user) {
    try {
      user = os.userInfo().username;
    } catch {
      user = 'unknown';
    }
  }
  return `${user}@${os.hostname()}`;
}

/** The dataset location from `--dataset_dir`. */
export function datasetLocation(args: ParsedArgs, ctx: Pick<CommandContext, 'cwd'>): Location {
  return parseLocation(args.str('dataset_dir'), ctx.cwd);
}

/**
 * The cloud settings of a command: `--firestore_project` (or GOOGLE_CLOUD_PROJECT /
 * GCLOUD_PROJECT) and `--firestore_database`, for commands that have those flags, and
 * `SHARDLINE_STORAGE_RETRIES` (retries per Cloud Storage request, default 5).
 */
export function cloudSettings(args: ParsedArgs, env: Env): CloudSettings {
  const projectId = resolveProjectId(args.optStr('firestore_project'), env);
  const firestoreDatabase = args.optStr('firestore_database');
  const storageRetries = envNumber(
    env,
    'SHARDLINE_STORAGE_RETRIES',
    DEFAULT_STORAGE_RETRIES,
    0,
    20,
    true,
  );
  return {
    ...(projectId === undefined ? {} : { projectId }),
    ...(firestoreDatabase === undefined ? {} : { firestoreDatabase }),
    storageRetries,
  };
}

/** Opens the ledger for a dataset location, honouring `--ledger` and the Firestore flags. */
export function openLedgerFor(
  location: Location,
  args: ParsedArgs,
  ctx: Pick<CommandContext, 'clock' | 'cloud'>,
): Promise<Ledger> {
  const kind = args.optStr('ledger') as LedgerKind | undefined;
  return openLedger({
    location,
    ...(kind === undefined ? {} : { kind }),
    clock: ctx.clock,
    firestore: () => ctx.cloud.firestore(),
    firestoreRoot: args.str('firestore_root'),
  });
}

/** A dataset opened for a ledger command: where it is, its master metadata, its ledger. */
export interface DatasetSession {
  location: Location;
  store: BlobStore;
  master: MasterMetadata;
  ledger: Ledger;
  /** Closes the ledger (and the client it owns). */
  close(): Promise<void>;
}

/**
 * Reads the dataset's master metadata and opens its ledger, registering the dataset there if
 * it is not yet (idempotent; a different dataset under the same id fails with
 * `DATASET_CONFLICT`). A folder without master_metadata.json is not a dataset, or `create`
 * has not finished: `NOT_FOUND`, and nothing is registered.
 */
export async function openDatasetSession(
  args: ParsedArgs,
  ctx: Pick<CommandContext, 'clock' | 'cwd' | 'cloud'>,
): Promise<DatasetSession> {
  const location = datasetLocation(args, ctx);
  resolveLedgerKind(location, args.optStr('ledger') as LedgerKind | undefined);
  const store = ctx.cloud.openStore(location);
  const master = await readMasterMetadata(store);
  const ledger = await openLedgerFor(location, args, ctx);
  try {
    await ledger.registerDataset(master, { datasetUri: formatLocation(location) });
  } catch (e: unknown) {
    await ledger.close();
    throw e;
  }
  return { location, store, master, ledger, close: () => ledger.close() };
}
