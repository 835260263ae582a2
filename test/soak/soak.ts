/**
 * The soak run: the cloud path on the emulators (the functions called in this process as
 * Eventarc and Pub/Sub would call them; the workers separate processes of the built CLI), a
 * few hundred tasks in at least 16 shards, at least 4 workers, and a schedule of faults
 * (test/soak/schedule.ts) fired as the dataset makes progress: workers killed before and after
 * their first part, SIGTERMs, redelivered doorbells, a replayed ingest event; and, for the
 * outage soak, the services themselves: an emulator frozen (SIGSTOP, then SIGCONT), and a
 * fault-injecting proxy between the workers and an emulator that resets, drops or delays
 * connections, or answers 503. Then it checks what a researcher relies on: every shard
 * completed, every expected sample exactly once, no lease held, no shard failed; and it
 * reports each fault, with how long the workers took to commit again after a service came back.
 *
 * It stops at once, with the report and its workers killed, when a shard ends `failed`, and
 * gives up at `timeoutMs`.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';

import type { CloudEvent } from '@google-cloud/functions-framework';
import { PubSub } from '@google-cloud/pubsub';
import type { Message } from '@google-cloud/pubsub';

import { errorCode } from '../../core/errors';
import { ingestIdOf } from '../../core/ingest/object';
import type { Claim, LedgerStatus } from '../../core/ledger/ledger';
import { MAX_LEASE_MS } from '../../core/ledger/ledger';
import { MESSAGE_VERSION, encodeMessage } from '../../core/messages';
import { seededRandom } from '../../core/random';
import { createDeps, useDepsForTesting } from '../../functions/deps';
import { ingest } from '../../functions/ingest';
import { progress } from '../../functions/progress';
import { reap } from '../../functions/reap';
import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { generateQwen2Model } from '../../synthetic/qwen2';
import type { ShardManifest } from '../../core/rollup/manifests';
import type { Fault } from './fault-proxy';
import { FaultProxy } from './fault-proxy';
import type { FaultAction, FaultStep, Service } from './schedule';
import { faultName } from './schedule';

/** Soak settings. */
export interface SoakOptions {
  projectId: string;
  /** Scratch folder (model, logs). */
  workDir: string;
  tasks: number;
  shards: number;
  workers: number;
  leaseSeconds: number;
  /**
   * The shards' attempt budget, registered through the upload's `shardline-max-attempts`
   * metadata (the knob a user has), and printed in the report as the ledger holds it.
   */
  maxAttempts: number;
  predictionsPerTask: number;
  seed: number;
  /** The faults, in order. */
  schedule: FaultStep[];
  /** Route the workers through fault proxies (needed for connection faults). */
  proxies: boolean;
  /**
   * The workers' `--reserve_seconds` (default the product's): a short one leaves a unit's holder
   * little out of reach of splits, so idle workers split shards in a short run too.
   */
  reserveSeconds?: number;
  /**
   * Shards held back from the workers while faults remain to be placed (default 0): claimed by
   * the soak itself with its whole range reserved (so nobody can split them). One is kept for
   * each fault not placed yet, and given out only when the workers have run out of work between
   * faults; any others whenever the workers would run short; all once the last fault is placed.
   * Every fault then finds work to trigger it and to resume after it, however fast the machine.
   */
  holdBackShards?: number;
  /** The workers' retries per Cloud Storage request (default the product's, 5). */
  storageRetries?: number;
  /** Progress lines. */
  say: (line: string) => void;
  /** Give up after this long (ms), checks and all. */
  timeoutMs: number;
}

/** One fault as it happened. */
export interface FaultRecord {
  name: string;
  kind: FaultAction['kind'];
  /** Committed parts when it fired. */
  atParts: number;
  /** Ms from the soak's start. */
  firedAtMs: number;
  /** For service faults: ms from the start when the service was back. */
  recoveredAtMs: number | null;
  /** For service faults: ms from recovery to the next committed part. */
  resumeMs: number | null;
  /** Attempts counted over all shards when it fired, and once the next part was committed. */
  attemptsBefore: number;
  attemptsAfter: number | null;
}

/** What the soak saw and checked. */
export interface SoakReport {
  tasks: number;
  shards: number;
  workersAtOnce: number;
  /** The shards' attempt budget, read back from the ledger. */
  maxAttempts: number;
  samplesExpected: number;
  samplesFound: number;
  /** Samples present more than once (must be 0). */
  duplicateSamples: number;
  /** Expected samples absent (must be 0). */
  missingSamples: number;
  shardsCompleted: number;
  /** Shards that ended `failed`, with why (must be none). */
  failedShards: Array<{ shard_id: number; attempts: number; last_error: string | null }>;
  /** Shards still `in_use` at the end (must be 0). */
  leasesHeld: number;
  killsMid: number;
  killsEarly: number;
  sigterms: number;
  restarts: number;
  doorbellsRedelivered: number;
  ingestReplays: number;
  /** Replayed ingest events that changed nothing. */
  duplicateIngestsSuppressed: number;
  /** Failed attempts counted over all shards. */
  attemptsCounted: number;
  /** Claims beyond the first, over all units (each is a reclaim after a kill, release or failure). */
  reclaims: number;
  /** Work units split off by the workers themselves (idle, nothing to claim). */
  workerSplits: number;
  /** Units split off by the schedule's `split` faults (a splitter that dies at once). */
  faultSplits: number;
  /** Shards that ended with more than one work unit. */
  shardsSplit: number;
  /** Committed parts kept from an earlier holder and resumed after (not redone). */
  resumedParts: number;
  /** Milliseconds from a SIGKILL to another worker's claim of the shard it held. */
  reclaimAfterKillMs: { count: number; median: number; max: number };
  /** Completion events the progress function handled (duplicates included). */
  progressEvents: number;
  /**
   * Times a worker retried a step after a transient failure, keeping its lease (from the
   * workers' logs): an outage longer than the client libraries' own retries shows here.
   */
  workerRetries: number;
  datasetManifest: boolean;
  /** Every fault, in order. */
  faults: FaultRecord[];
  /** Scheduled faults that never found their moment (the run ended first). */
  missedFaults: string[];
  /** Why the run stopped before the dataset completed, if it did. */
  stoppedEarly: string | null;
  wallMs: number;
}

interface Worker {
  id: string;
  child: ChildProcess;
  exited: Promise<void>;
  alive: boolean;
}

// The built CLI, from dist/test/soak (npm run soak) or from the sources (the tests).
const CLI = __filename.endsWith('.ts')
  ? path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js')
  : path.resolve(__dirname, '..', '..', 'cli', 'main.js');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `p`, or null when it takes longer than `ms` (a frozen emulator never answers). */
function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.catch(() => null),
    new Promise<null>((r) => (timer = setTimeout(() => r(null), ms))),
  ]).finally(() => clearTimeout(timer));
}

function pubsubEvent(
  topic: string,
  projectId: string,
  data: Buffer,
  id: string,
): CloudEvent<unknown> {
  return {
    specversion: '1.0',
    type: 'google.cloud.pubsub.topic.v1.messagePublished',
    source: `//pubsub.googleapis.com/projects/${projectId}/topics/${topic}`,
    id,
    data: { message: { data: data.toString('base64'), messageId: id } },
  };
}

/** The emulators' process groups, as test/emulators/with-emulators.sh exports them. */
function emulatorGroups(): Partial<Record<Service, number>> {
  const out: Partial<Record<Service, number>> = {};
  for (const pair of (process.env.SHARDLINE_EMULATOR_PGIDS ?? '').split(',')) {
    const [name, pid] = pair.split('=');
    if (name && pid && /^\d+$/.test(pid)) out[name as Service] = Number(pid);
  }
  return out;
}

/** Host and port of an emulator from its variable (`127.0.0.1:8081` or `http://…`). */
function portOf(v: string | undefined): number {
  const m = /:(\d+)\/?$/.exec(v ?? '');
  if (!m) throw new Error(`cannot read an emulator port from ${JSON.stringify(v)}`);
  return Number(m[1]);
}

/** Runs the soak; resolves with the report (it does not throw on a failed check: read the report). */
/** The worker id under which the soak holds shards back (`holdBackShards`). */
const HOLD_BACK_WORKER = 'soak-hold-back';

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const started = Date.now();
  const since = (): number => Date.now() - started;
  const random = seededRandom(o.seed);
  const ns = `soak-${Date.now().toString(36)}`;
  const bucket = ns;
  const pubsub = new PubSub({ projectId: o.projectId });
  const topics = { work: `${ns}-work`, events: `${ns}-events`, ingest: `${ns}-ingest` };
  for (const t of Object.values(topics)) {
    const [topic] = await pubsub.createTopic(t);
    await topic.createSubscription(`${t}-sub`, { ackDeadlineSeconds: 30 });
  }
  const root = `${ns}-datasets`;
  const deps = createDeps({
    GCLOUD_PROJECT: o.projectId,
    SHARDLINE_WORK_TOPIC: topics.work,
    SHARDLINE_EVENTS_TOPIC: topics.events,
    SHARDLINE_INGEST_TOPIC: topics.ingest,
    SHARDLINE_FIRESTORE_ROOT: root,
    SHARDLINE_INGESTS_COLLECTION: `${ns}-ingests`,
    SHARDLINE_INGEST_OBJECTS_COLLECTION: `${ns}-objects`,
    SHARDLINE_CHUNK_SIZE_MB: '0.004',
    SHARDLINE_LOG_LEVEL: 'ERROR',
  });
  useDepsForTesting(deps);
  const report: SoakReport = {
    tasks: o.tasks,
    shards: o.shards,
    workersAtOnce: o.workers,
    maxAttempts: 0,
    samplesExpected: o.tasks * o.predictionsPerTask,
    samplesFound: 0,
    duplicateSamples: 0,
    missingSamples: 0,
    shardsCompleted: 0,
    failedShards: [],
    leasesHeld: 0,
    killsMid: 0,
    killsEarly: 0,
    sigterms: 0,
    restarts: 0,
    doorbellsRedelivered: 0,
    ingestReplays: 0,
    duplicateIngestsSuppressed: 0,
    reclaims: 0,
    workerSplits: 0,
    faultSplits: 0,
    shardsSplit: 0,
    attemptsCounted: 0,
    resumedParts: 0,
    reclaimAfterKillMs: { count: 0, median: 0, max: 0 },
    progressEvents: 0,
    workerRetries: 0,
    datasetManifest: false,
    faults: [],
    missedFaults: [],
    stoppedEarly: null,
    wallMs: 0,
  };
  const workers: Worker[] = [];
  // Whatever ends this process (an error, a signal the caller turns into exit) ends its workers
  // and thaws any frozen emulator.
  const groups = emulatorGroups();
  const frozen = new Set<Service>();
  const thaw = (service: Service): void => {
    const pgid = groups[service];
    if (pgid !== undefined) process.kill(-pgid, 'SIGCONT');
    frozen.delete(service);
  };
  const killWorkers = (): void => {
    for (const w of workers) if (w.alive) w.child.kill('SIGKILL');
    for (const s of [...frozen]) thaw(s);
  };
  process.on('exit', killWorkers);
  const eventsSub = pubsub.subscription(`${topics.events}-sub`);
  // Requests to the services still running (a status read given up on, a reaper tick, a
  // progress event): awaited before the clients close, so none of them meets a closed client.
  const inflight = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    inflight.add(p);
    void p.then(
      () => inflight.delete(p),
      () => inflight.delete(p),
    );
    return p;
  };
  const proxies: Partial<Record<Service, FaultProxy>> = {};
  let reaper: NodeJS.Timeout | undefined;
  try {
    // The model and the upload (its metadata sets the shard count and the attempt budget).
    const modelDir = path.join(o.workDir, 'model');
    mkdirSync(path.join(o.workDir, 'logs'), { recursive: true });
    generateQwen2Model({
      dir: modelDir,
      shape: {
        vocabSize: 151936,
        hiddenSize: 16,
        numLayers: 2,
        numHeads: 2,
        numKvHeads: 1,
        intermediateSize: 32,
      },
      seed: 5,
      lmHead: false,
      externalData: true,
    });
    const tasks = generateArcTasks(o.tasks, o.seed, 4);
    const store = deps.storeAt(`gs://${bucket}`);
    const body = Buffer.from(tasks.map((t) => JSON.stringify(t)).join('\n') + '\n');
    const info = await store.writeAll('incoming/soak.jsonl', body);
    const object = {
      bucket,
      name: 'incoming/soak.jsonl',
      generation: info.generation,
      size: info.size,
      metadata: {
        'shardline-num-shards': String(o.shards),
        'shardline-max-attempts': String(o.maxAttempts),
      },
    };
    const finalized = {
      specversion: '1.0',
      type: 'google.cloud.storage.object.v1.finalized',
      source: `//storage.googleapis.com/projects/_/buckets/${bucket}`,
      id: 'upload-1',
      data: object,
    } as CloudEvent<unknown>;
    const first = await ingest(finalized);
    if (first.kind !== 'completed')
      throw new Error(`the ingest did not complete: ${JSON.stringify(first)}`);
    const record = (await deps.ingest.records.get(ingestIdOf(object)))!;
    const datasetId = record.dataset_id;
    const ledger = deps.ledger;
    report.maxAttempts = (await ledger.getDataset(datasetId))!.max_attempts;
    o.say(
      `dataset ${datasetId}: ${o.tasks} tasks in ${o.shards} shards, attempt budget ${report.maxAttempts}`,
    );

    // The progress function on the events topic, the reaper on a 2 s tick.
    eventsSub.on('message', (m: Message) => {
      report.progressEvents++;
      track(progress(pubsubEvent(topics.events, o.projectId, m.data, m.id))).then(
        () => m.ack(),
        () => m.nack(),
      );
    });
    // Ticks never overlap (Cloud Scheduler's are a minute apart; here 2 s, to be quick).
    let ticks = 0;
    let ticking = false;
    reaper = setInterval(() => {
      if (ticking) return;
      ticking = true;
      void track(reap(pubsubEvent('tick', o.projectId, Buffer.from('{}'), `tick-${ticks++}`)))
        .catch(() => undefined)
        .finally(() => (ticking = false));
    }, 2000);

    // The proxies the workers talk through.
    // The workers never watch a metadata server (the soak's host may be a Compute Engine VM).
    const workerEnv: NodeJS.ProcessEnv = { ...process.env, SHARDLINE_PREEMPTION_NOTICES: 'off' };
    if (o.proxies) {
      const targets: Record<Service, string | undefined> = {
        firestore: process.env.FIRESTORE_EMULATOR_HOST,
        pubsub: process.env.PUBSUB_EMULATOR_HOST,
        storage: process.env.STORAGE_EMULATOR_HOST,
      };
      for (const s of ['firestore', 'pubsub', 'storage'] as const)
        proxies[s] = await FaultProxy.start(portOf(targets[s]), random);
      workerEnv.FIRESTORE_EMULATOR_HOST = `127.0.0.1:${proxies.firestore!.port}`;
      workerEnv.PUBSUB_EMULATOR_HOST = `127.0.0.1:${proxies.pubsub!.port}`;
      workerEnv.STORAGE_EMULATOR_HOST = `http://127.0.0.1:${proxies.storage!.port}`;
    }
    if (o.storageRetries !== undefined)
      workerEnv.SHARDLINE_STORAGE_RETRIES = String(o.storageRetries);

    // Workers.
    let generation = 0;
    const start = (): Worker => {
      const id = `soak-w${generation++}`;
      const args = [
        CLI,
        'work',
        '--sharded_dataset_dir',
        record.dataset_uri,
        '--subscription',
        `${topics.work}-sub`,
        '--follow',
        '--poll_seconds',
        '1',
        '--lease_seconds',
        String(o.leaseSeconds),
        '--grace_seconds',
        '5',
        // Steps here take well under a second: a pass stuck 30 s on a request that never
        // answers (a connection the fault proxy killed silently) is abandoned and retried.
        '--stall_seconds',
        '30',
        '--model_path',
        path.join(modelDir, 'model.onnx'),
        '--predictions_per_task',
        String(o.predictionsPerTask),
        '--part_size_mb',
        '0.02',
        '--threads',
        '1',
        '--firestore_root',
        root,
        '--events_topic',
        topics.events,
        '--work_topic',
        topics.work,
        '--worker_id',
        id,
        '--log_format',
        'json',
        ...(o.reserveSeconds === undefined ? [] : ['--reserve_seconds', String(o.reserveSeconds)]),
      ];
      const log = openSync(path.join(o.workDir, 'logs', `${id}.log`), 'w');
      const child = spawn(process.execPath, args, { stdio: ['ignore', log, log], env: workerEnv });
      closeSync(log);
      const w: Worker = {
        id,
        child,
        alive: true,
        exited: new Promise((r) => child.on('exit', () => r())),
      };
      void w.exited.then(() => (w.alive = false));
      workers.push(w);
      return w;
    };
    // The held-back shards: the last ones, claimed before any worker starts.
    const heldBack: Claim[] = [];
    for (let k = 0; k < Math.min(o.holdBackShards ?? 0, o.shards - 1); k++) {
      const claim = await ledger.claim(datasetId, HOLD_BACK_WORKER, {
        preferredShardId: o.shards - 1 - k,
        leaseMs: MAX_LEASE_MS,
      });
      if (!claim) throw new Error('could not hold a shard back');
      heldBack.push(
        await ledger.heartbeat(claim, {
          leaseMs: MAX_LEASE_MS,
          reserveTo: Number.MAX_SAFE_INTEGER,
        }),
      );
    }
    let givingBack = false;
    /** Gives one held-back shard (or all) back to the workers, as far as the ledger answers. */
    const giveBack = async (all: boolean): Promise<void> => {
      givingBack = true;
      try {
        while (heldBack.length > 0) {
          // Given back, or already (a release that answered after it was given up on).
          const released = await within(
            track(
              ledger.release(heldBack[heldBack.length - 1]!).then(
                () => true,
                (e: unknown) => errorCode(e) === 'LEASE_LOST',
              ),
            ),
            5000,
          );
          if (!released) return; // a frozen or failing ledger: try again on a later turn
          heldBack.pop();
          o.say(`${(since() / 1000).toFixed(1)} s: a held-back shard given to the workers`);
          if (!all) return;
        }
      } finally {
        givingBack = false;
      }
    };
    for (let i = 0; i < o.workers; i++) start();
    const running = (): Worker[] => workers.filter((w) => w.alive);
    // Faults act on work units: a shard split by the workers has several, each with its holder.
    type Unit = LedgerStatus['shards'][number]['units'][number];
    const unitsOf = (status: LedgerStatus): Unit[] => status.shards.flatMap((s) => s.units);
    const keyOf = (u: Unit): string => `${u.shard_id}.${u.unit}`;
    const holderOf = (u: Unit): Worker | undefined =>
      u.status === 'in_use' ? running().find((w) => w.id === u.assigned_to) : undefined;

    // Kills wait for the killed unit's next claim, to time the reclaim.
    const reclaimWaits: Array<{ at: number; key: string; epoch: number }> = [];
    const reclaimTimes: number[] = [];
    /** Committed parts of each unit when its current epoch was first seen (kill-early). */
    const epochStart = new Map<string, { epoch: number; parts: number }>();
    let splitters = 0;

    let next = 0;
    // Set inside `fire`: a cast keeps TypeScript from narrowing it to null in the loop.
    let active = null as { record: FaultRecord; action: FaultAction; until: number } | null;
    let lastParts = 0;
    /** Committed parts when the last service fault was over. */
    let partsAtRecovery = 0;
    let lastStatus: LedgerStatus | null = null;
    const deadline = started + o.timeoutMs;

    const heal = (a: FaultAction): void => {
      if (a.kind === 'freeze') thaw(a.service);
      else if ('service' in a) proxies[a.service]?.set({ kind: 'none' });
    };
    const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;

    /** Tries to fire `step`; false when it has no target yet. */
    const fire = async (step: FaultStep, status: LedgerStatus): Promise<boolean> => {
      const a = step.action;
      const faultRecord: FaultRecord = {
        name: faultName(a),
        kind: a.kind,
        atParts: status.totals.parts_committed,
        firedAtMs: since(),
        recoveredAtMs: null,
        resumeMs: null,
        attemptsBefore: status.totals.attempts,
        attemptsAfter: null,
      };
      const kill = (unit: Unit, signal: NodeJS.Signals): void => {
        const w = holderOf(unit)!;
        if (signal === 'SIGKILL')
          reclaimWaits.push({ at: Date.now(), key: keyOf(unit), epoch: unit.epoch });
        w.child.kill(signal);
        faultRecord.name = `${faultName(a)} (shard ${unit.shard_id}${unit.unit ? ` unit ${unit.unit}` : ''}, ${w.id})`;
      };
      const units = unitsOf(status);
      switch (a.kind) {
        case 'kill-mid': {
          const targets = units.filter(
            (u) =>
              holderOf(u) && u.parts_committed > 0 && u.tasks_done <= u.unit_end - u.unit_start - 2,
          );
          if (targets.length === 0) return false;
          kill(pick(targets), 'SIGKILL');
          report.killsMid++;
          break;
        }
        case 'kill-early': {
          const targets = units.filter(
            (u) =>
              holderOf(u) &&
              epochStart.get(keyOf(u))?.epoch === u.epoch &&
              epochStart.get(keyOf(u))?.parts === u.parts_committed &&
              u.tasks_done < u.unit_end - u.unit_start,
          );
          if (targets.length === 0) return false;
          kill(pick(targets), 'SIGKILL');
          report.killsEarly++;
          break;
        }
        case 'sigterm': {
          const targets = units.filter((u) => holderOf(u));
          if (targets.length === 0) return false;
          kill(pick(targets), 'SIGTERM');
          report.sigterms++;
          break;
        }
        case 'split': {
          // A worker splits a unit and dies at once: the new unit's lease must run out and
          // another worker take it over, while the split unit's holder works to its new end.
          const split = await ledger.split(datasetId, `soak-splitter-${splitters++}`, {
            leaseMs: o.leaseSeconds * 1000,
          });
          if (!split) return false;
          report.faultSplits++;
          faultRecord.name = `${faultName(a)} (shard ${split.claim.shard_id} unit ${split.from.unit ?? 0} at task ${split.from.end_task_index}, held by ${split.from.holder ?? 'nobody'})`;
          break;
        }
        case 'doorbell':
          await pubsub.topic(topics.work).publishMessage(
            encodeMessage({
              type: 'shard.available',
              version: MESSAGE_VERSION,
              dataset_id: datasetId,
              shard_id: a.shard,
              dataset_uri: record.dataset_uri,
              reason: 'ingest',
              published_at: new Date().toISOString(),
            }),
          );
          report.doorbellsRedelivered++;
          break;
        case 'ingest-replay': {
          report.ingestReplays++;
          const again = await ingest({ ...finalized, id: `upload-replay-${report.ingestReplays}` });
          if (again.kind === 'duplicate') report.duplicateIngestsSuppressed++;
          break;
        }
        case 'freeze': {
          const pgid = groups[a.service];
          if (pgid === undefined)
            throw new Error(
              `no process group for the ${a.service} emulator (SHARDLINE_EMULATOR_PGIDS)`,
            );
          process.kill(-pgid, 'SIGSTOP');
          frozen.add(a.service);
          active = { record: faultRecord, action: a, until: Date.now() + a.ms };
          break;
        }
        default: {
          const proxy = proxies[a.service];
          if (!proxy) throw new Error(`the ${a.kind} fault needs the proxies (proxies: true)`);
          const fault: Fault =
            a.kind === 'resets'
              ? { kind: 'reset', share: a.share }
              : a.kind === 'drops'
                ? { kind: 'drop', share: a.share }
                : a.kind === 'delays'
                  ? { kind: 'delay', delayMs: a.delayMs }
                  : { kind: 'unavailable' };
          proxy.set(fault);
          active = { record: faultRecord, action: a, until: Date.now() + a.ms };
        }
      }
      report.faults.push(faultRecord);
      o.say(`${(since() / 1000).toFixed(1)} s, ${faultRecord.atParts} parts: ${faultRecord.name}`);
      return true;
    };

    for (;;) {
      // A frozen service is thawed on time, whatever else is slow.
      if (active && Date.now() >= active.until) {
        heal(active.action);
        active.record.recoveredAtMs = since();
        o.say(`${(since() / 1000).toFixed(1)} s: ${active.record.name}: over`);
        active = null;
        partsAtRecovery = lastParts;
      }
      const status = await within(track(ledger.status(datasetId)), 3000);
      if (status) {
        lastStatus = status;
        const failed = status.shards.filter((s) => s.status === 'failed');
        if (failed.length > 0) {
          report.stoppedEarly = `shard ${failed.map((s) => s.shard_id).join(', ')} failed: ${failed[0]!.last_error ?? 'no reason'}`;
          o.say(report.stoppedEarly);
          break;
        }
        const byKey = new Map(unitsOf(status).map((u) => [keyOf(u), u]));
        for (const [key, u] of byKey) {
          const seen = epochStart.get(key);
          if (!seen || seen.epoch !== u.epoch)
            epochStart.set(key, { epoch: u.epoch, parts: u.parts_committed });
        }
        for (const wait of [...reclaimWaits]) {
          const u = byKey.get(wait.key);
          if (u && u.epoch > wait.epoch) {
            reclaimTimes.push(Date.now() - wait.at);
            reclaimWaits.splice(reclaimWaits.indexOf(wait), 1);
          }
        }
        const parts = status.totals.parts_committed;
        if (parts > lastParts) {
          for (const f of report.faults)
            if (f.recoveredAtMs !== null && f.resumeMs === null) {
              f.resumeMs = since() - f.recoveredAtMs;
              f.attemptsAfter = status.totals.attempts;
            }
          lastParts = parts;
        }
        if (status.totals.completed === status.totals.shards) {
          const manifest = await within(
            track(deps.storeAt(`${record.dataset_uri}/activations`).stat('_MANIFEST.json')),
            3000,
          );
          if (manifest) break;
        }
        const step = o.schedule[next];
        const due = step && parts >= step.afterParts + (step.sincePrevious ? partsAtRecovery : 0);
        if (!active && step && due && (await fire(step, status))) next++;
        // Work for the faults still to come. One held-back shard is kept for each fault not
        // placed yet, given out only when the workers have nothing else and no fault is on (so
        // that fault is placed, or the last one's recovery measured, on fresh work); the rest
        // whenever fewer units are left to the workers than there are workers; all of them
        // once the last fault is placed.
        if (heldBack.length > 0 && !givingBack) {
          const left = unitsOf(status).filter(
            (u) =>
              u.status === 'available' ||
              (u.status === 'in_use' && u.assigned_to !== HOLD_BACK_WORKER),
          ).length;
          const unplaced = o.schedule.length - next;
          const surplus = heldBack.length > unplaced;
          if (unplaced === 0) void giveBack(true);
          else if ((surplus && left < o.workers) || (left === 0 && !active)) void giveBack(false);
        }
      }
      if (Date.now() > deadline) {
        report.stoppedEarly = `timed out after ${Math.round(o.timeoutMs / 1000)} s: ${lastStatus?.totals.completed ?? '?'}/${o.shards} shards completed`;
        o.say(report.stoppedEarly);
        break;
      }
      // Keep the fleet at strength.
      while (running().length < o.workers) {
        start();
        report.restarts++;
      }
      await sleep(50);
    }
    if (active) {
      heal(active.action);
      active.record.recoveredAtMs = since();
    }
    report.missedFaults = o.schedule.slice(next).map((s) => faultName(s.action));

    // Stop the fleet (at once after a failure or a timeout), then check the outputs.
    for (const w of running()) w.child.kill(report.stoppedEarly ? 'SIGKILL' : 'SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    const status = await ledger.status(datasetId);
    report.shardsCompleted = status.totals.completed;
    report.leasesHeld = status.totals.in_use;
    report.attemptsCounted = status.totals.attempts;
    report.failedShards = status.shards
      .filter((s) => s.status === 'failed')
      .map((s) => ({ shard_id: s.shard_id, attempts: s.attempts, last_error: s.last_error }));
    // Not counted as reclaims: the workers' first claims of the shards the soak held back.
    report.reclaims =
      unitsOf(status).reduce((n, u) => n + Math.max(0, u.epoch - 1), 0) -
      Math.min(o.holdBackShards ?? 0, o.shards - 1);
    report.shardsSplit = status.shards.filter((s) => s.units.length > 1).length;
    report.workerSplits =
      status.shards.reduce((n, s) => n + s.units.length - 1, 0) - report.faultSplits;
    const out = deps.storeAt(`${record.dataset_uri}/activations`);
    report.datasetManifest = (await out.stat('_MANIFEST.json')) !== null;
    const seen = new Map<string, number>();
    for (let k = 0; k < o.shards; k++) {
      const dir = `shard_${String(k).padStart(3, '0')}`;
      const m = await out.readAll(`${dir}/_MANIFEST.json`).then(
        (b) => JSON.parse(b.toString()) as ShardManifest,
        () => null,
      );
      if (!m) continue;
      // Parts each unit's last committer found committed by an earlier holder of that unit.
      const lastEpoch = new Map<number, number>();
      for (const p of m.parts)
        lastEpoch.set(p.unit ?? 0, Math.max(lastEpoch.get(p.unit ?? 0) ?? 0, p.epoch));
      report.resumedParts += m.parts.filter((p) => p.epoch < lastEpoch.get(p.unit ?? 0)!).length;
      for (const p of m.parts) {
        const index = (await out.readAll(`${dir}/${p.name}.index.jsonl`)).toString();
        for (const line of index.split('\n'))
          if (line) {
            const id = (JSON.parse(line) as { sample_id: string }).sample_id;
            seen.set(id, (seen.get(id) ?? 0) + 1);
          }
      }
    }
    report.samplesFound = [...seen.values()].reduce((a, b) => a + b, 0);
    report.duplicateSamples = [...seen.values()].filter((n) => n > 1).length;
    for (let t = 0; t < o.tasks; t++)
      for (let a = 0; a < o.predictionsPerTask; a++)
        if (!seen.has(`${t}.0.${a}`)) report.missingSamples++;
    const sorted = [...reclaimTimes].sort((a, b) => a - b);
    report.reclaimAfterKillMs = {
      count: sorted.length,
      median: sorted[Math.floor(sorted.length / 2)] ?? 0,
      max: sorted.at(-1) ?? 0,
    };
    const logs = path.join(o.workDir, 'logs');
    for (const f of readdirSync(logs))
      report.workerRetries += readFileSync(path.join(logs, f), 'utf8')
        .split('\n')
        .filter((l) => l.includes('transient failure; retrying')).length;
    report.wallMs = since();
    return report;
  } finally {
    clearInterval(reaper);
    killWorkers();
    process.off('exit', killWorkers);
    for (const p of Object.values(proxies)) await p.close().catch(() => undefined);
    await eventsSub.close().catch(() => undefined);
    await within(Promise.allSettled([...inflight]), 30_000);
    await pubsub.close().catch(() => undefined);
    useDepsForTesting(undefined);
    await deps.close().catch(() => undefined);
  }
}

/** The checks every soak must pass, as failures (empty when it passed). */
export function soakProblems(r: SoakReport): string[] {
  const problems: string[] = [];
  if (r.stoppedEarly) problems.push(`stopped early: ${r.stoppedEarly}`);
  if (r.missedFaults.length > 0) problems.push(`faults never placed: ${r.missedFaults.join('; ')}`);
  if (r.failedShards.length > 0) problems.push(`${r.failedShards.length} shard(s) failed`);
  if (r.duplicateSamples > 0) problems.push(`${r.duplicateSamples} samples duplicated`);
  if (r.missingSamples > 0) problems.push(`${r.missingSamples} samples missing`);
  if (r.samplesFound !== r.samplesExpected)
    problems.push(`${r.samplesFound} samples found, ${r.samplesExpected} expected`);
  if (r.shardsCompleted !== r.shards) problems.push(`${r.shardsCompleted}/${r.shards} completed`);
  if (r.leasesHeld > 0) problems.push(`${r.leasesHeld} leases still held`);
  if (!r.datasetManifest) problems.push('no dataset manifest');
  return problems;
}

/** The report as a markdown table, the faults after it. */
export function formatReport(r: SoakReport): string {
  const rows: Array<[string, string]> = [
    ['tasks / shards / workers at once', `${r.tasks} / ${r.shards} / ${r.workersAtOnce}`],
    ['attempt budget (max_attempts, from the upload)', String(r.maxAttempts)],
    ['samples expected / found', `${r.samplesExpected} / ${r.samplesFound}`],
    ['samples duplicated / missing', `${r.duplicateSamples} / ${r.missingSamples}`],
    [
      'shards completed / failed / leases still held',
      `${r.shardsCompleted} / ${r.failedShards.length} / ${r.leasesHeld}`,
    ],
    ['dataset manifest written', String(r.datasetManifest)],
    [
      'SIGKILLs after / before a first part, SIGTERMs, restarts',
      `${r.killsMid} / ${r.killsEarly}, ${r.sigterms}, ${r.restarts}`,
    ],
    ['reclaims (claims beyond the first)', String(r.reclaims)],
    [
      'work units split off by idle workers / by split faults; shards split',
      `${r.workerSplits} / ${r.faultSplits}; ${r.shardsSplit}`,
    ],
    ['attempts counted', String(r.attemptsCounted)],
    ['parts resumed from an earlier holder', String(r.resumedParts)],
    [
      'time to reclaim after a kill (median / max, n)',
      `${(r.reclaimAfterKillMs.median / 1000).toFixed(1)} s / ${(r.reclaimAfterKillMs.max / 1000).toFixed(1)} s (${r.reclaimAfterKillMs.count})`,
    ],
    ['doorbells redelivered', String(r.doorbellsRedelivered)],
    [
      'ingest events replayed / suppressed as duplicates',
      `${r.ingestReplays} / ${r.duplicateIngestsSuppressed}`,
    ],
    ['completion events handled by progress', String(r.progressEvents)],
    ['steps retried by workers through a transient failure (lease kept)', String(r.workerRetries)],
    ['wall time', `${(r.wallMs / 1000).toFixed(0)} s`],
  ];
  const lines = ['| | |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)];
  const services = r.faults.filter((f) => f.recoveredAtMs !== null);
  if (services.length > 0) {
    lines.push(
      '',
      '| service fault | at parts | recovery to next commit | attempts counted during |',
      '|---|---:|---:|---:|',
      ...services.map(
        (f) =>
          `| ${f.name} | ${f.atParts} | ${f.resumeMs === null ? 'none' : `${(f.resumeMs / 1000).toFixed(1)} s`} | ${f.attemptsAfter === null ? '-' : f.attemptsAfter - f.attemptsBefore} |`,
      ),
    );
  }
  if (r.stoppedEarly) lines.push('', `stopped early: ${r.stoppedEarly}`);
  if (r.missedFaults.length > 0)
    lines.push('', `faults never placed: ${r.missedFaults.join('; ')}`);
  return lines.join('\n');
}
