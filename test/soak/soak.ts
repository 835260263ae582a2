/**
 * The soak run (issue 9): the cloud path on the emulators, a few hundred tasks in at least 16
 * shards, at least 4 worker processes, and a chaos driver that for a bounded time kills workers
 * with SIGKILL at random points, sends SIGTERM to others, redelivers doorbells, replays the
 * ingest event and restarts workers. Then it waits for the dataset to complete and checks what
 * a researcher relies on: every shard completed, every expected sample exactly once in the
 * outputs, no lease held.
 *
 * The functions run in this process (their entry points, called as Eventarc and Pub/Sub would
 * call them); the workers are separate processes of the built CLI.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';

import type { CloudEvent } from '@google-cloud/functions-framework';
import { PubSub } from '@google-cloud/pubsub';
import type { Message } from '@google-cloud/pubsub';

import { generateArcTasks } from '../../synthetic/arc-puzzles';
import { ingestIdOf } from '../../core/ingest/object';
import { MESSAGE_VERSION, encodeMessage } from '../../core/messages';
import { seededRandom } from '../../core/random';
import { createDeps, useDepsForTesting } from '../../functions/deps';
import { ingest } from '../../functions/ingest';
import { progress } from '../../functions/progress';
import { reap } from '../../functions/reap';
import { generateQwen2Model } from '../../synthetic/qwen2';
import type { ShardManifest } from '../../worker/manifest';

/** Soak settings. */
export interface SoakOptions {
  projectId: string;
  /** Scratch folder (model, logs). */
  workDir: string;
  tasks: number;
  shards: number;
  workers: number;
  /** How long the chaos lasts (ms); kills continue past it until `minKills` is reached. */
  chaosMs: number;
  minKills: number;
  leaseSeconds: number;
  /** Attempts a shard may fail (killed holders with no committed part) before it is `failed`. */
  maxAttempts: number;
  predictionsPerTask: number;
  seed: number;
  /** Progress lines. */
  say: (line: string) => void;
  /** Give up waiting for completion after this long (ms). */
  timeoutMs: number;
}

/** What the soak saw and checked. */
export interface SoakReport {
  tasks: number;
  shards: number;
  workersAtOnce: number;
  samplesExpected: number;
  samplesFound: number;
  /** Samples present more than once (must be 0). */
  duplicateSamples: number;
  /** Expected samples absent (must be 0). */
  missingSamples: number;
  shardsCompleted: number;
  /** Shards still `in_use` at the end (must be 0). */
  leasesHeld: number;
  kills: number;
  sigterms: number;
  restarts: number;
  doorbellsRedelivered: number;
  ingestReplays: number;
  /** Replayed ingest events that changed nothing. */
  duplicateIngestsSuppressed: number;
  /** Failed attempts counted over all shards (holders killed before committing a part). */
  attemptsCounted: number;
  /** Claims beyond the first, over all shards (each is a reclaim after a kill, release or failure). */
  reclaims: number;
  /** Committed parts kept from an earlier holder and resumed after (not redone). */
  resumedParts: number;
  /** Milliseconds from a SIGKILL to another worker's claim of a shard the killed worker held. */
  reclaimAfterKillMs: { count: number; median: number; max: number };
  /** Completion events the progress function handled (duplicates included). */
  progressEvents: number;
  datasetManifest: boolean;
  wallMs: number;
}

interface Worker {
  id: string;
  child: ChildProcess;
  exited: Promise<void>;
  alive: boolean;
}

// The built CLI, from dist/test/soak (npm run soak) or from the sources (the test).
const CLI = __filename.endsWith('.ts')
  ? path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js')
  : path.resolve(__dirname, '..', '..', 'cli', 'main.js');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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

/** Runs the soak; resolves with the report (it does not throw on a failed check: read the report). */
export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const started = Date.now();
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
    // The chaos SIGKILLs a worker every few seconds, far more often than any real fleet loses
    // machines; a holder killed before its first committed part costs its shard an attempt
    // (the rule that stops a shard that kills every worker). The default budget (5) is sized
    // for real fleets; here the soak tests that nothing is lost or duplicated, not the budget.
    SHARDLINE_INGEST_MAX_ATTEMPTS: String(o.maxAttempts),
    SHARDLINE_LOG_LEVEL: 'ERROR',
  });
  useDepsForTesting(deps);
  const report: SoakReport = {
    tasks: o.tasks,
    shards: o.shards,
    workersAtOnce: o.workers,
    samplesExpected: o.tasks * o.predictionsPerTask,
    samplesFound: 0,
    duplicateSamples: 0,
    missingSamples: 0,
    shardsCompleted: 0,
    leasesHeld: 0,
    kills: 0,
    sigterms: 0,
    restarts: 0,
    doorbellsRedelivered: 0,
    ingestReplays: 0,
    duplicateIngestsSuppressed: 0,
    reclaims: 0,
    attemptsCounted: 0,
    resumedParts: 0,
    reclaimAfterKillMs: { count: 0, median: 0, max: 0 },
    progressEvents: 0,
    datasetManifest: false,
    wallMs: 0,
  };
  const workers: Worker[] = [];
  // Whatever ends this process (an error, a signal the caller turns into exit) ends its workers.
  const killWorkers = (): void => {
    for (const w of workers) if (w.alive) w.child.kill('SIGKILL');
  };
  process.on('exit', killWorkers);
  const eventsSub = pubsub.subscription(`${topics.events}-sub`);
  let reaper: NodeJS.Timeout | undefined;
  try {
    // The model and the upload.
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
      metadata: { 'shardline-num-shards': String(o.shards) },
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
    o.say(`dataset ${datasetId}: ${o.tasks} tasks in ${o.shards} shards at ${record.dataset_uri}`);

    // The progress function on the events topic, the reaper on a 2 s tick.
    eventsSub.on('message', (m: Message) => {
      report.progressEvents++;
      progress(pubsubEvent(topics.events, o.projectId, m.data, m.id)).then(
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
      void reap(pubsubEvent('tick', o.projectId, Buffer.from('{}'), `tick-${ticks++}`))
        .catch(() => undefined)
        .finally(() => (ticking = false));
    }, 2000);

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
      ];
      const child = spawn(process.execPath, args, {
        stdio: ['ignore', 'ignore', 'ignore'],
        env: process.env,
      });
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
    for (let i = 0; i < o.workers; i++) start();
    const running = (): Worker[] => workers.filter((w) => w.alive);
    const ledger = deps.ledger;
    const reclaimWaits: Array<{ at: number; shards: Map<number, number> }> = [];
    const reclaimTimes: number[] = [];
    const watchReclaims = async (): Promise<void> => {
      if (reclaimWaits.length === 0) return;
      const status = await ledger.status(datasetId);
      const epochOf = new Map(status.shards.map((s) => [s.shard_id, s.epoch]));
      for (const wait of reclaimWaits) {
        for (const [shard, epoch] of [...wait.shards]) {
          if ((epochOf.get(shard) ?? 0) > epoch) {
            reclaimTimes.push(Date.now() - wait.at);
            wait.shards.delete(shard);
          }
        }
      }
      reclaimWaits.splice(0, reclaimWaits.length, ...reclaimWaits.filter((w) => w.shards.size > 0));
    };

    // Chaos.
    // Let the fleet start working before the chaos does.
    const ready = Date.now() + 120_000;
    while (
      (await ledger.status(datasetId)).totals.in_use < Math.min(2, o.workers) &&
      Date.now() < ready
    )
      await sleep(250);
    o.say(`chaos for ${Math.round(o.chaosMs / 1000)} s with ${o.workers} workers`);
    const chaosEnd = Date.now() + o.chaosMs;
    const status0 = async () => ledger.status(datasetId);
    while (Date.now() < chaosEnd || report.kills < o.minKills) {
      await sleep(500 + random() * 1000);
      await watchReclaims();
      const status = await status0();
      // Done early: nothing is left to kill workers in (the report shows how many kills).
      if (status.totals.completed === status.totals.shards) break;
      const roll = random();
      const victims = running();
      if (roll < 0.6 && victims.length > 0) {
        // SIGKILL a worker in the middle of a shard (at a random point of its work),
        // remembering what it held.
        const holding = victims.filter((w) =>
          status.shards.some((s) => s.status === 'in_use' && s.assigned_to === w.id),
        );
        if (holding.length === 0) continue;
        const w = holding[Math.floor(random() * holding.length)]!;
        const held = new Map(
          status.shards
            .filter((s) => s.status === 'in_use' && s.assigned_to === w.id)
            .map((s) => [s.shard_id, s.epoch]),
        );
        w.child.kill('SIGKILL');
        report.kills++;
        reclaimWaits.push({ at: Date.now(), shards: held });
        await w.exited;
      } else if (roll < 0.68 && victims.length > 1) {
        const w = victims[Math.floor(random() * victims.length)]!;
        w.child.kill('SIGTERM');
        report.sigterms++;
      } else if (roll < 0.84) {
        // A doorbell delivered again (at least once delivery), for a random shard.
        const shard = Math.floor(random() * o.shards);
        await pubsub.topic(topics.work).publishMessage(
          encodeMessage({
            type: 'shard.available',
            version: MESSAGE_VERSION,
            dataset_id: datasetId,
            shard_id: shard,
            dataset_uri: record.dataset_uri,
            reason: 'ingest',
            published_at: new Date().toISOString(),
          }),
        );
        report.doorbellsRedelivered++;
      } else {
        // The upload's event delivered again.
        report.ingestReplays++;
        const again = await ingest({ ...finalized, id: `upload-replay-${report.ingestReplays}` });
        if (again.kind === 'duplicate') report.duplicateIngestsSuppressed++;
      }
      // Keep the fleet at strength.
      while (running().length < o.workers) {
        start();
        report.restarts++;
      }
    }
    o.say(
      `chaos over: ${report.kills} kills, ${report.sigterms} SIGTERMs, ${report.restarts} restarts; waiting for the dataset to complete`,
    );

    const deadline = Date.now() + o.timeoutMs;
    for (;;) {
      await watchReclaims();
      while (running().length < o.workers) {
        start();
        report.restarts++;
      }
      const status = await status0();
      const manifest = await deps
        .storeAt(`${record.dataset_uri}/activations`)
        .stat('_MANIFEST.json');
      if (status.totals.completed === status.totals.shards && manifest) break;
      const failed = status.shards.filter((x) => x.status === 'failed');
      if (failed.length > 0) {
        // Nothing will change without a `shardline reset`: stop, and let the checks fail.
        o.say(
          `shard ${failed.map((x) => x.shard_id).join(', ')} failed after ${failed[0]!.attempts} attempts (${failed[0]!.last_error ?? 'no error'}); stopping`,
        );
        break;
      }
      if (Date.now() > deadline) {
        o.say(`timed out: ${status.totals.completed}/${status.totals.shards} shards completed`);
        break;
      }
      await sleep(500);
    }

    // Stop the fleet, then check the outputs.
    for (const w of running()) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    const status = await status0();
    report.shardsCompleted = status.totals.completed;
    report.leasesHeld = status.totals.in_use;
    report.attemptsCounted = status.totals.attempts;
    report.reclaims = status.shards.reduce((n, s) => n + Math.max(0, s.epoch - 1), 0);
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
      report.resumedParts += m.parts.filter((p) => p.epoch < m.epoch).length;
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
    report.wallMs = Date.now() - started;
    return report;
  } finally {
    clearInterval(reaper);
    killWorkers();
    process.off('exit', killWorkers);
    await eventsSub.close().catch(() => undefined);
    await pubsub.close().catch(() => undefined);
    useDepsForTesting(undefined);
    await deps.close().catch(() => undefined);
  }
}

/** The report as a markdown table. */
export function formatReport(r: SoakReport): string {
  const rows: Array<[string, string]> = [
    ['tasks / shards / workers at once', `${r.tasks} / ${r.shards} / ${r.workersAtOnce}`],
    ['samples expected / found', `${r.samplesExpected} / ${r.samplesFound}`],
    ['samples duplicated / missing', `${r.duplicateSamples} / ${r.missingSamples}`],
    ['shards completed / leases still held', `${r.shardsCompleted} / ${r.leasesHeld}`],
    ['dataset manifest written', String(r.datasetManifest)],
    ['SIGKILLs / SIGTERMs / restarts', `${r.kills} / ${r.sigterms} / ${r.restarts}`],
    ['reclaims (claims beyond the first)', String(r.reclaims)],
    ['attempts counted (holder killed before its first part)', String(r.attemptsCounted)],
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
    ['wall time', `${(r.wallMs / 1000).toFixed(0)} s`],
  ];
  return ['| | |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n');
}
