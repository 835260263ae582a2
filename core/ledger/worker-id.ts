/**
 * Worker identity. Unique by default (host, process id, random suffix), so nobody assigns
 * machine ids by hand and no two workers collide as the original's `machine0_host0` did.
 * `--machine_id X --host_id Y` gives the seed's `machine{X}_host{Y}`; `--worker_id` overrides
 * both. An id is a label for people and logs, not a lock: two processes started with the same
 * id still never both act on one claim, because every claim carries the shard's epoch.
 */
import { checkWorkerId } from './shard-state';

/** Inputs of `workerIdentity`; the composition root supplies host, pid and randomness. */
export interface WorkerIdInput {
  /** `--worker_id`: used as given. */
  workerId?: string;
  /** `--machine_id`: the seed's machine number. */
  machineId?: number;
  /** `--host_id`: the seed's host number within a multi-host machine (TPU VM worker). */
  hostId?: number;
  /** `os.hostname()`. */
  hostname: string;
  /** `process.pid`. */
  pid: number;
  /** A few random hex characters, fresh per process (e.g. `randomBytes(3).toString('hex')`). */
  randomHex: string;
}

/** Host names are cut to this many characters in default ids. */
const MAX_HOST_CHARS = 40;

/**
 * The worker id: `--worker_id` as given; else `machine{X}_host{Y}` when either number is given
 * (the other defaults to 0, as in the original); else `{host}-{pid}-{random}`.
 */
export function workerIdentity(input: WorkerIdInput): string {
  if (input.workerId !== undefined) return checkWorkerId(input.workerId);
  if (input.machineId !== undefined || input.hostId !== undefined) {
    return `machine${input.machineId ?? 0}_host${input.hostId ?? 0}`;
  }
  const host =
    input.hostname
      .toLowerCase()
      .replace(/[^a-z0-9.-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '')
      .slice(0, MAX_HOST_CHARS) || 'host';
  return checkWorkerId(`${host}-${input.pid}-${input.randomHex}`);
}
