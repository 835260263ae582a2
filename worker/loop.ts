/**
 * The worker loop: wait for work (a doorbell, or a poll when idle), claim (the doorbell's
 * shard first), process the shard, repeat; when nothing is claimable, split the held work unit
 * with the most work left and process the new unit (`split`, docs/decisions.md#work-units-split-the-tail);
 * stop when nothing is left to claim or split (unless following), after `maxShards`, or on
 * shutdown.
 *
 * Shutdown (SIGTERM, e.g. spot preemption): stop claiming, let the shard job finish the batch
 * in hand and release its lease (no attempt counted), and return within `graceMs`; if the
 * batch takes longer, the lease is released from here and the loop returns anyway.
 */
import type { BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import { isRetryable } from '../core/errors';
import type { Claim, Ledger } from '../core/ledger/ledger';
import type { Logger } from '../core/log';
import { rollUpDataset } from '../core/rollup/progress';
import type { DoorbellSource } from './doorbells';
import type { ShardJobDeps, ShardJobSettings, ShardOutcome, ShardProgress } from './shard-job';
import { processShard } from './shard-job';

/** One dataset the worker can claim in. */
export interface DatasetHandle {
  datasetId: string;
  datasetUri: string;
  ledger: Ledger;
  dataset: BlobStore;
  output: BlobStore;
}

/** What the loop needs. */
export interface WorkerDeps {
  workerId: string;
  /** Datasets known from the start (`--sharded_dataset_dir`). */
  datasets: DatasetHandle[];
  /** Opens a dataset announced by a doorbell (by its URI). */
  openDataset?: (datasetUri: string, datasetId: string) => Promise<DatasetHandle>;
  doorbells?: DoorbellSource;
  /** Everything a shard job needs except the dataset-specific parts. */
  job: Omit<
    ShardJobDeps,
    'ledger' | 'dataset' | 'output' | 'datasetUri' | 'stop' | 'onProgress' | 'log'
  >;
  clock: Clock;
  log: Logger;
  /** Shutdown. */
  stop: AbortSignal;
  /**
   * A preemption notice (worker/preemption.ts): stop claiming, let the job commit the part in
   * hand and release its unit within the grace period, then return.
   */
  drain?: AbortSignal;
  onProgress?: (p: ShardProgress) => void;
  /** Jitter source for poll intervals. */
  random?: () => number;
}

/** Loop settings. */
export interface WorkerSettings extends ShardJobSettings {
  /** Keep waiting for work when nothing is claimable (`--follow`). */
  follow: boolean;
  /** Stop after this many shards (completed or not). */
  maxShards?: number;
  /** Tried first on the first claim (`--preferred_shard_id`). */
  preferredShardId?: number;
  /** Idle poll interval (ms). */
  pollMs: number;
  /** How long shutdown may take (ms). */
  graceMs: number;
  /**
   * When nothing is claimable, split the held unit with the most work left and take the new
   * unit (`work --split on`, the default). Off: wait for claimable work only.
   */
  split?: boolean;
}

/** What the worker did. */
export interface WorkerSummary {
  completed: number;
  failed: number;
  lost: number;
  stopped: number;
  /** Shards given back after an outage outlasted the retry budget. */
  released: number;
  /** Shards refused for another run's settings (the worker then left their dataset). */
  refused: number;
  /** Work units this worker split off others' units and took (each also counted by its outcome). */
  splits: number;
  /** True when shutdown outran the grace period and the lease was released from the loop. */
  forcedExit: boolean;
  /**
   * Shards left `failed` for good when the worker stopped for want of work (not after a
   * shutdown): those it failed itself and any other of its datasets. A script or batch job sees
   * them in the exit code (`shardline work` exits 8).
   */
  failedShards: Array<{ dataset_id: string; shard_id: number; last_error: string | null }>;
  outcomes: ShardOutcome[];
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/** Runs the worker until there is no work (or `maxShards`, or shutdown). */
export async function runWorker(
  deps: WorkerDeps,
  settings: WorkerSettings,
): Promise<WorkerSummary> {
  const summary: WorkerSummary = {
    completed: 0,
    failed: 0,
    lost: 0,
    stopped: 0,
    released: 0,
    refused: 0,
    splits: 0,
    forcedExit: false,
    failedShards: [],
    outcomes: [],
  };
  const datasets = new Map(deps.datasets.map((d) => [d.datasetId, d]));
  const random = deps.random ?? Math.random;
  let preferred = settings.preferredShardId;
  /** Datasets whose manifest is known written: not checked again. */
  const rolledUp = new Set<string>();
  const log = deps.log.child({ worker_id: deps.workerId });

  /** Shards this worker failed lately, by dataset: tried last (another worker may do better). */
  const failedHere = new Map<string, number[]>();
  const claimIn = async (d: DatasetHandle, preferredShardId?: number): Promise<Claim | null> => {
    try {
      return await d.ledger.claim(d.datasetId, deps.workerId, {
        leaseMs: settings.leaseMs,
        ...(preferredShardId === undefined ? {} : { preferredShardId }),
        avoidShardIds: failedHere.get(d.datasetId) ?? [],
      });
    } catch (e: unknown) {
      // A busy or briefly unreachable ledger is not a reason to stop working: try again later.
      if (!isRetryable(e)) throw e;
      log.warn('claim failed; will try again', { dataset_id: d.datasetId, error: e });
      return null;
    }
  };

  /** A claim in any known dataset, or null. */
  const claimAny = async (): Promise<{ claim: Claim; dataset: DatasetHandle } | null> => {
    for (const d of datasets.values()) {
      const claim = await claimIn(d, preferred);
      preferred = undefined;
      if (claim) return { claim, dataset: d };
    }
    return null;
  };

  /** A new unit split off the held unit with the most work left, in any known dataset, or null. */
  const splitAny = async (): Promise<{ claim: Claim; dataset: DatasetHandle } | null> => {
    for (const d of datasets.values()) {
      try {
        const split = await d.ledger.split(d.datasetId, deps.workerId, {
          leaseMs: settings.leaseMs,
          fingerprint: deps.job.fingerprint,
        });
        if (!split) continue;
        summary.splits++;
        log.info('split a unit: took the rest of its tasks', {
          dataset_id: d.datasetId,
          shard_id: split.claim.shard_id,
          unit: split.claim.unit ?? 0,
          from_unit: split.from.unit ?? 0,
          from_holder: split.from.holder,
          first_task: split.from.end_task_index,
          end_task: split.claim.end_task_index,
        });
        return { claim: split.claim, dataset: d };
      } catch (e: unknown) {
        if (!isRetryable(e)) throw e;
        log.warn('split failed; will try again', { dataset_id: d.datasetId, error: e });
      }
    }
    return null;
  };

  const stopping = (): boolean => deps.stop.aborted || deps.drain?.aborted === true;
  while (
    !stopping() &&
    (settings.maxShards === undefined || summary.outcomes.length < settings.maxShards)
  ) {
    let next = await claimAny();
    if (!next && settings.split !== false && !stopping()) next = await splitAny();
    if (!next && deps.doorbells) {
      const received = await deps.doorbells.wait(settings.pollMs, deps.stop);
      if (received) {
        const { bell } = received;
        try {
          let d = datasets.get(bell.dataset_id);
          if (!d && deps.openDataset) {
            d = await deps.openDataset(bell.dataset_uri, bell.dataset_id);
            datasets.set(d.datasetId, d);
            log.info('dataset announced by a doorbell', {
              dataset_id: d.datasetId,
              dataset_uri: d.datasetUri,
            });
          }
          if (d) {
            const claim = await claimIn(d, bell.shard_id);
            if (claim) next = { claim, dataset: d };
          } else {
            log.info('doorbell for a dataset this worker does not serve', {
              dataset_id: bell.dataset_id,
            });
          }
        } finally {
          received.done();
        }
      }
      if (!next) continue; // a doorbell for a taken shard, or a timeout: look again
    }
    if (!next) {
      // Nothing to claim: if a dataset is done, make sure its manifest exists (a completion
      // event can be lost with a worker killed right after completing the last shard).
      for (const d of datasets.values())
        if (!rolledUp.has(d.datasetId) && (await rollUp(d, log))) rolledUp.add(d.datasetId);
      if (!settings.follow) break;
      await sleep(settings.pollMs * (0.75 + random() / 2), deps.stop);
      continue;
    }
    const outcome = await runJob(next.claim, next.dataset, deps, settings, log, summary);
    summary.outcomes.push(outcome);
    if (outcome.kind === 'refused') {
      log.error('leaving the dataset: its parts were extracted with other settings', {
        dataset_id: next.dataset.datasetId,
        reason: outcome.reason,
      });
      datasets.delete(next.dataset.datasetId);
    }
    if (outcome.kind === 'failed') {
      const ids = failedHere.get(outcome.claim.dataset_id) ?? [];
      failedHere.set(outcome.claim.dataset_id, [...ids.slice(-63), outcome.claim.shard_id]);
    }
    if (outcome.kind === 'completed' && outcome.shardCompleted && (await rollUp(next.dataset, log)))
      rolledUp.add(next.dataset.datasetId);
    if (summary.forcedExit) break;
  }
  for (const o of summary.outcomes) summary[o.kind]++;
  if (!stopping() && !summary.forcedExit) {
    for (const d of datasets.values()) {
      try {
        for (const s of (await d.ledger.status(d.datasetId)).shards)
          if (s.status === 'failed')
            summary.failedShards.push({
              dataset_id: d.datasetId,
              shard_id: s.shard_id,
              last_error: s.last_error,
            });
      } catch (e: unknown) {
        log.warn('could not read the final status of a dataset', {
          dataset_id: d.datasetId,
          error: e,
        });
      }
    }
  }
  return summary;
}

/** Writes the dataset manifest when every shard is done; true once it exists. */
async function rollUp(d: DatasetHandle, log: Logger): Promise<boolean> {
  try {
    const out = await rollUpDataset(
      d.ledger,
      d.datasetId,
      d.output,
      log.child({ dataset_id: d.datasetId }),
    );
    return out.kind !== 'in-progress';
  } catch (e: unknown) {
    log.warn('could not check whether the dataset is complete', {
      dataset_id: d.datasetId,
      error: e,
    });
    return false;
  }
}

async function runJob(
  claim: Claim,
  d: DatasetHandle,
  deps: WorkerDeps,
  settings: WorkerSettings,
  log: Logger,
  summary: WorkerSummary,
): Promise<ShardOutcome> {
  log.info('shard claimed', {
    dataset_id: claim.dataset_id,
    shard_id: claim.shard_id,
    ...(claim.unit ? { unit: claim.unit, end_task: claim.end_task_index } : {}),
    epoch: claim.epoch,
    lease_expires_at: claim.lease_expires_at,
  });
  const job = processShard(
    claim,
    {
      ...deps.job,
      ledger: d.ledger,
      dataset: d.dataset,
      output: d.output,
      datasetUri: d.datasetUri,
      stop: deps.stop,
      ...(deps.drain ? { drain: deps.drain } : {}),
      log,
      ...(deps.onProgress ? { onProgress: deps.onProgress } : {}),
    },
    settings,
  );
  // Shutdown must not wait for a long batch beyond the grace period.
  let graceTimer: NodeJS.Timeout | undefined;
  const grace = new Promise<'grace'>((resolve) => {
    const arm = (): void => {
      graceTimer ??= setTimeout(() => resolve('grace'), settings.graceMs);
    };
    // Shutdown, or a preemption notice: either way the machine is going away.
    if (deps.stop.aborted || deps.drain?.aborted) arm();
    else {
      deps.stop.addEventListener('abort', arm, { once: true });
      deps.drain?.addEventListener('abort', arm, { once: true });
    }
  });
  const first = await Promise.race([job, grace]);
  clearTimeout(graceTimer);
  if (first !== 'grace') return first;
  summary.forcedExit = true;
  log.warn('shutdown grace period over: releasing the shard without waiting for the batch', {
    grace_ms: settings.graceMs,
  });
  try {
    await d.ledger.release(claim);
  } catch (e: unknown) {
    log.warn('could not release the shard; its lease will expire', { error: e });
  }
  return { kind: 'stopped', claim };
}
