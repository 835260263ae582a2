/**
 * The worker's composition root: builds every real thing (the Storage, Firestore and Pub/Sub
 * clients, ledgers, stores, the ONNX engine, the tokenizer) from one validated `WorkConfig`
 * and runs the loop. `shardline work` parses and checks the flags into a `WorkConfig` at the
 * edge and calls `runWork`; nothing here reads the environment.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { formatLocation, parseLocation } from '../core/blob/location';
import type { Location } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import { CloudClients } from '../core/cloud-clients';
import { MasterMetadataSchema, decodeJson } from '../core/dataset/metadata';
import { MASTER_METADATA } from '../core/dataset/paths';
import { ShardlineError, errorCode } from '../core/errors';
import type { Ledger, LedgerKind } from '../core/ledger/ledger';
import { openLedger, resolveLedgerKind } from '../core/ledger/open';
import type { Logger } from '../core/log';
import { PubSubPublisher } from '../core/wakeup/publisher';
import type { ActivationDtype } from './extraction/activations';
import { ExtractionEngine } from './extraction/engine';
import { runMetadata } from './extraction/part-writer';
import { loadPromptTemplate } from './extraction/prompt-template';
import { resolveSampleOptions } from './extraction/samples';
import { loadTokenizer } from './extraction/tokenizer';
import type { DoorbellSource } from './doorbells';
import { PubSubDoorbells } from './doorbells';
import type { DatasetHandle, WorkerSummary } from './loop';
import { runWorker } from './loop';
import type { JobMessaging, ShardProgress } from './shard-job';

/** Everything `shardline work` was told. */
export interface WorkConfig {
  /** `--sharded_dataset_dir`: the dataset to work on; optional with a subscription (any announced dataset). */
  datasetDir?: string;
  /** `--output_dir`; default `<dataset>/activations`. */
  outputDir?: string;
  modelPath: string;
  /** Model name recorded in the parts (default: the model folder's name). */
  modelName?: string;
  tokenizerPath?: string;
  tokenizerConfigPath?: string;
  chatTemplatePath?: string;
  promptTemplatePath?: string;
  /** Layers to extract; undefined = all. */
  layers?: number[];
  dtype: ActivationDtype;
  batchSize: number;
  maxBatchTokens: number;
  maxSeqLength: number;
  predictionsPerTask: number;
  augment: boolean;
  seed: number;
  threads?: number;
  executionProviders: string[];
  partSizeBytes: number;
  leaseMs: number;
  pollMs: number;
  graceMs: number;
  follow: boolean;
  maxShards?: number;
  preferredShardId?: number;
  workerId: string;
  ledger?: LedgerKind;
  /** Google Cloud project (resolved at the edge; undefined lets the libraries detect it). */
  projectId?: string;
  /** Firestore database id; default `(default)`. */
  firestoreDatabase?: string;
  /** The ledger's datasets collection in Firestore. */
  firestoreRoot: string;
  /** Pub/Sub: `projects/P/subscriptions/S` or `S`. */
  subscription?: string;
  eventsTopic: string;
  workTopic: string;
  /** Publish events even without a subscription (`--events_topic` given). */
  publishEvents: boolean;
}

/** What `runWork` needs from its caller (the CLI): the process's place in the world. */
export interface WorkIo {
  /** Relative paths in the config are resolved against it. */
  cwd: string;
  clock: Clock;
  log: Logger;
  /** Shutdown (SIGTERM/SIGINT). */
  stop: AbortSignal;
  onProgress?: (p: ShardProgress) => void;
}

/** Finds the tokenizer files of a Hugging Face style model folder (`onnx/model.onnx` or `model.onnx`). */
function tokenizerBeside(
  modelPath: string,
): { tokenizerPath: string; tokenizerConfigPath?: string } | null {
  for (const dir of [path.dirname(modelPath), path.dirname(path.dirname(modelPath))]) {
    const tok = path.join(dir, 'tokenizer.json');
    if (existsSync(tok)) {
      const cfg = path.join(dir, 'tokenizer_config.json');
      return { tokenizerPath: tok, ...(existsSync(cfg) ? { tokenizerConfigPath: cfg } : {}) };
    }
  }
  return null;
}

/** Runs the worker; resolves with what it did. */
export async function runWork(config: WorkConfig, io: WorkIo): Promise<WorkerSummary> {
  const log = io.log;
  const modelPath = path.resolve(io.cwd, config.modelPath);
  if (!existsSync(modelPath))
    throw new ShardlineError('NOT_FOUND', `--model_path ${modelPath} does not exist`);

  // Tokenizer: the flag, else the model folder's, else the bundled Qwen tokenizer.
  const beside = config.tokenizerPath ? null : tokenizerBeside(modelPath);
  const tokenizer = loadTokenizer({
    ...(config.tokenizerPath
      ? { tokenizerPath: path.resolve(io.cwd, config.tokenizerPath) }
      : (beside ?? {})),
    ...(config.tokenizerConfigPath
      ? { tokenizerConfigPath: path.resolve(io.cwd, config.tokenizerConfigPath) }
      : {}),
    ...(config.chatTemplatePath
      ? { chatTemplatePath: path.resolve(io.cwd, config.chatTemplatePath) }
      : {}),
  });
  log.info('tokenizer loaded', { source: tokenizer.info.tokenizerPath });
  const sampleOptions = resolveSampleOptions({
    template: loadPromptTemplate(
      config.promptTemplatePath ? path.resolve(io.cwd, config.promptTemplatePath) : undefined,
    ),
    predictionsPerTask: config.predictionsPerTask,
    augment: config.augment,
    seed: config.seed,
    maxSeqLength: config.maxSeqLength,
  });

  const cloud = new CloudClients({
    ...(config.projectId === undefined ? {} : { projectId: config.projectId }),
    ...(config.firestoreDatabase === undefined
      ? {}
      : { firestoreDatabase: config.firestoreDatabase }),
  });
  const openStore = (loc: Location): BlobStore => cloud.openStore(loc);

  // Ledgers: one Firestore ledger for every cloud dataset; an SQLite one per local dataset.
  let firestoreLedger: Promise<Ledger> | undefined;
  const ledgers: Ledger[] = [];
  const ledgerFor = async (loc: Location): Promise<Ledger> => {
    const kind = resolveLedgerKind(loc, config.ledger);
    if (kind === 'firestore') {
      firestoreLedger ??= openLedger({
        location: loc,
        kind,
        clock: io.clock,
        firestore: () => cloud.firestore(),
        firestoreRoot: config.firestoreRoot,
      }).then((l) => (ledgers.push(l), l));
      return firestoreLedger;
    }
    const l = await openLedger({ location: loc, kind, clock: io.clock });
    ledgers.push(l);
    return l;
  };
  const outputFor = (datasetLoc: Location, datasetId: string, bound: boolean): BlobStore => {
    if (config.outputDir) {
      const out = parseLocation(config.outputDir, io.cwd);
      // A worker serving several datasets keeps their outputs apart.
      return openStore(
        bound
          ? out
          : out.kind === 'local'
            ? { kind: 'local', path: path.join(out.path, datasetId) }
            : { ...out, prefix: [out.prefix, datasetId].filter(Boolean).join('/') },
      );
    }
    return openStore(
      datasetLoc.kind === 'local'
        ? { kind: 'local', path: path.join(datasetLoc.path, 'activations') }
        : { ...datasetLoc, prefix: `${datasetLoc.prefix}/activations` },
    );
  };
  const openDataset = async (
    uri: string,
    expectedId: string | undefined,
    bound: boolean,
  ): Promise<DatasetHandle> => {
    const loc = parseLocation(uri, io.cwd);
    const store = openStore(loc);
    let text: string;
    try {
      text = (await store.readAll(MASTER_METADATA)).toString('utf8');
    } catch (e: unknown) {
      if (errorCode(e) === 'NOT_FOUND')
        throw new ShardlineError(
          'NOT_FOUND',
          `${formatLocation(loc)} has no ${MASTER_METADATA}: not a dataset, or \`shardline create\` has not finished`,
        );
      throw e;
    }
    const master = decodeJson(MasterMetadataSchema, text, store.uriOf(MASTER_METADATA));
    if (expectedId !== undefined && master.dataset_id !== expectedId) {
      throw new ShardlineError(
        'DATASET_CONFLICT',
        `${formatLocation(loc)} holds dataset ${master.dataset_id}, not ${expectedId}`,
      );
    }
    const ledger = await ledgerFor(loc);
    await ledger.registerDataset(master, { datasetUri: formatLocation(loc) });
    return {
      datasetId: master.dataset_id,
      datasetUri: formatLocation(loc),
      ledger,
      dataset: store,
      output: outputFor(loc, master.dataset_id, bound),
    };
  };

  let doorbells: DoorbellSource | undefined;
  let messaging: JobMessaging | undefined;
  let engine: ExtractionEngine | undefined;
  try {
    const datasets = config.datasetDir
      ? [await openDataset(config.datasetDir, undefined, true)]
      : [];

    // Pub/Sub, when asked for.
    if (config.subscription || config.publishEvents) {
      const pubsub = cloud.pubsub();
      messaging = {
        publisher: new PubSubPublisher(pubsub),
        eventsTopic: config.eventsTopic,
        workTopic: config.workTopic,
      };
      if (config.subscription)
        doorbells = new PubSubDoorbells(
          pubsub,
          config.subscription.replace(/^projects\/[^/]+\/subscriptions\//, ''),
          log,
        );
    }
    if (datasets.length === 0 && !doorbells) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        'nothing to work on: give --sharded_dataset_dir, or --subscription to serve announced datasets',
      );
    }

    engine = await ExtractionEngine.open({
      modelPath,
      ...(config.layers ? { layers: config.layers } : {}),
      dtype: config.dtype,
      executionProviders: config.executionProviders,
      ...(config.threads ? { intraOpNumThreads: config.threads } : {}),
      logger: log,
    });
    const metadata = runMetadata({
      model: config.modelName ?? path.basename(path.dirname(modelPath)),
      engine: engine.info,
      tokenizer: tokenizer.info,
      samples: sampleOptions,
    });
    const summary = await runWorker(
      {
        workerId: config.workerId,
        datasets,
        openDataset: (uri, id) => openDataset(uri, id, false),
        ...(doorbells ? { doorbells } : {}),
        job: {
          extractor: engine,
          tokenizer,
          sampleOptions,
          runMetadata: metadata,
          clock: io.clock,
          ...(messaging ? { messaging } : {}),
        },
        clock: io.clock,
        log,
        stop: io.stop,
        ...(io.onProgress ? { onProgress: io.onProgress } : {}),
      },
      {
        leaseMs: config.leaseMs,
        partSizeBytes: config.partSizeBytes,
        batch: { maxBatchSize: config.batchSize, maxBatchTokens: config.maxBatchTokens },
        follow: config.follow,
        pollMs: config.pollMs,
        graceMs: config.graceMs,
        ...(config.maxShards === undefined ? {} : { maxShards: config.maxShards }),
        ...(config.preferredShardId === undefined
          ? {}
          : { preferredShardId: config.preferredShardId }),
      },
    );
    return summary;
  } finally {
    await messaging?.publisher.close().catch(() => undefined);
    await doorbells?.close().catch(() => undefined);
    if (engine)
      await Promise.race([
        engine.close(),
        new Promise((r) => setTimeout(r, config.graceMs).unref()),
      ]);
    for (const l of ledgers) await l.close().catch(() => undefined);
    await cloud.close().catch(() => undefined);
  }
}
