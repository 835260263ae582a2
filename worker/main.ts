/**
 * The worker's composition root: builds every real thing (the Storage, Firestore and Pub/Sub
 * clients, ledgers, stores, the ONNX engine, the tokenizer) from one validated `WorkConfig`
 * and runs the loop. `shardline work` parses and checks the flags into a `WorkConfig` at the
 * edge and calls `runWork`; nothing here reads the environment.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { childLocation, formatLocation, parseLocation } from '../core/blob/location';
import type { Location } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';
import type { Clock } from '../core/clock';
import { CloudClients } from '../core/cloud-clients';
import { MasterMetadataSchema, decodeJson } from '../core/dataset/metadata';
import { ACTIVATIONS_DIR, MASTER_METADATA } from '../core/dataset/paths';
import { ShardlineError, errorCode } from '../core/errors';
import type { Ledger, LedgerKind } from '../core/ledger/ledger';
import { openLedger, resolveLedgerKind } from '../core/ledger/open';
import type { Logger } from '../core/log';
import { PubSubPublisher } from '../core/wakeup/publisher';
import type { ActivationDtype } from './extraction/activations';
import type { Extractor } from './extraction/engine';
import { ExtractionEngine } from './extraction/engine';
import { partKeys, provenanceDiff, runFingerprint, runMetadata } from './extraction/part-writer';
import type { PositionSpec } from './extraction/positions';
import { formatPositions } from './extraction/positions';
import { ProtocolExtractor } from './extraction/protocol-extractor';
import { loadPromptTemplate } from './extraction/prompt-template';
import { resolveSampleOptions } from './extraction/samples';
import { loadTokenizer } from './extraction/tokenizer';
import type { DoorbellSource } from './doorbells';
import { PubSubDoorbells } from './doorbells';
import type { DatasetHandle, WorkerSummary } from './loop';
import { partMetadata } from './manifest';
import { runWorker } from './loop';
import { resolveModelPath } from './model-path';
import type { JobMessaging, ShardProgress } from './shard-job';
import type { PreemptionMode } from './preemption';
import { DMI_PRODUCT_NAME, PreemptionWatcher, watchPreemption } from './preemption';

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
  /** Which token positions are stored (`--positions`). */
  positions: PositionSpec;
  dtype: ActivationDtype;
  /**
   * What runs the model: `onnx` (onnxruntime in this process, the default), `jax` (the JAX
   * extractor of worker/jax in a child process), or `command` (`backendCommand`, a user's own
   * implementation of the extractor protocol).
   */
  backend: 'onnx' | 'jax' | 'command';
  /** The child's command line with `backend: 'command'`. */
  backendCommand?: string[];
  /** The JAX extractor's array library: `jax`, `numpy`, or `auto` (jax when installed). */
  jaxArray: 'auto' | 'jax' | 'numpy';
  /** What the protocol's backends compute in; `auto`: bfloat16 with JAX, float32 with numpy. */
  computeDtype: 'auto' | 'float32' | 'bfloat16';
  /** How long one batch may take in a child extractor before it is killed (ms). */
  extractorTimeoutMs: number;
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
  /** How long a shard rides through an outage before it is released (`--outage_seconds`). */
  outageBudgetMs: number;
  pollMs: number;
  graceMs: number;
  follow: boolean;
  /** Split held work units when nothing is claimable (`--split on`). */
  split: boolean;
  /** Work a holder reserves ahead, in time (`--reserve_seconds`). */
  reserveAheadMs: number;
  /** Watch the metadata server for preemption notices (`--preemption_notices`). */
  preemptionNotices: PreemptionMode;
  /** `GCE_METADATA_HOST`: the metadata server's `host[:port]`, when set. */
  metadataHost?: string;
  maxShards?: number;
  preferredShardId?: number;
  workerId: string;
  ledger?: LedgerKind;
  /** Google Cloud project (resolved at the edge; undefined lets the libraries detect it). */
  projectId?: string;
  /** Firestore database id; default `(default)`. */
  firestoreDatabase?: string;
  /** Retries per Cloud Storage request (`SHARDLINE_STORAGE_RETRIES`). */
  storageRetries?: number;
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

/**
 * Finds the tokenizer files of a Hugging Face style model folder: beside `model.onnx` (or
 * `onnx/model.onnx`, in the folder above), or in a checkpoint folder itself.
 */
function tokenizerBeside(
  modelPath: string,
): { tokenizerPath: string; tokenizerConfigPath?: string } | null {
  const dirs = statSync(modelPath).isDirectory()
    ? [modelPath, path.dirname(modelPath)]
    : [path.dirname(modelPath), path.dirname(path.dirname(modelPath))];
  for (const dir of dirs) {
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
  // ONNX takes a model file or a folder holding one; the other backends take a checkpoint folder.
  const given = path.resolve(io.cwd, config.modelPath);
  const modelPath = (config.backend ?? 'onnx') === 'onnx' ? resolveModelPath(given) : given;

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
    findAnswerStart: config.positions.kind === 'answer',
  });

  const cloud = new CloudClients({
    ...(config.projectId === undefined ? {} : { projectId: config.projectId }),
    ...(config.firestoreDatabase === undefined
      ? {}
      : { firestoreDatabase: config.firestoreDatabase }),
    ...(config.storageRetries === undefined ? {} : { storageRetries: config.storageRetries }),
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
      return openStore(bound ? out : childLocation(out, datasetId));
    }
    return openStore(childLocation(datasetLoc, ACTIVATIONS_DIR));
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
  let engine: Extractor | undefined;
  // Preemption notices, on a Compute Engine VM (known from its DMI product name, no request).
  let watcher: PreemptionWatcher | undefined;
  const drain = new AbortController();
  if (watchPreemption(config.preemptionNotices, dmiProductName(), config.metadataHost)) {
    watcher = new PreemptionWatcher({
      ...(config.metadataHost ? { host: config.metadataHost } : {}),
      log,
    });
    log.info('watching the metadata server for preemption notices', {
      host: config.metadataHost || 'metadata.google.internal',
    });
    void watcher.watch(() => drain.abort());
  }
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

    engine = await openExtractor(config, modelPath, log);
    const metadata = runMetadata({
      model:
        config.modelName ??
        (statSync(modelPath).isDirectory()
          ? path.basename(modelPath)
          : path.basename(path.dirname(modelPath))),
      engine: engine.info,
      tokenizer: tokenizer.info,
      samples: sampleOptions,
      stored: {
        layers: engine.info.layers,
        dtype: engine.info.dtype,
        positions: formatPositions(config.positions),
      },
      backend: engine.info.backend,
    });
    const fingerprint = runFingerprint(metadata);
    // A dataset whose committed parts were made with other settings is refused up front, with
    // what differs and the ways out.
    for (const d of datasets) await checkRunFingerprint(d, fingerprint, metadata);
    const summary = await runWorker(
      {
        workerId: config.workerId,
        datasets,
        openDataset: async (uri, id) => {
          const d = await openDataset(uri, id, false);
          await checkRunFingerprint(d, fingerprint, metadata);
          return d;
        },
        ...(doorbells ? { doorbells } : {}),
        job: {
          extractor: engine,
          tokenizer,
          sampleOptions,
          runMetadata: metadata,
          positions: config.positions,
          fingerprint,
          clock: io.clock,
          ...(messaging ? { messaging } : {}),
        },
        clock: io.clock,
        log,
        stop: io.stop,
        drain: drain.signal,
        ...(io.onProgress ? { onProgress: io.onProgress } : {}),
      },
      {
        leaseMs: config.leaseMs,
        outageBudgetMs: config.outageBudgetMs,
        partSizeBytes: config.partSizeBytes,
        batch: { maxBatchSize: config.batchSize, maxBatchTokens: config.maxBatchTokens },
        follow: config.follow,
        split: config.split,
        reserveAheadMs: config.reserveAheadMs,
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
    watcher?.stop();
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

/** This machine's DMI product name (`Google Compute Engine` on a Compute Engine VM), or null. */
function dmiProductName(): string | null {
  try {
    return readFileSync(DMI_PRODUCT_NAME, 'utf8');
  } catch {
    return null;
  }
}

/**
 * The folder of the bundled Python extractor (worker/jax), from the compiled worker
 * (dist/worker) or the sources (worker/).
 */
function jaxPackageDir(): string {
  for (const dir of [
    path.resolve(__dirname, 'jax'),
    path.resolve(__dirname, '..', '..', 'worker', 'jax'),
  ])
    if (existsSync(path.join(dir, 'pyproject.toml'))) return dir;
  throw new ShardlineError(
    'NOT_FOUND',
    `the Python extractor (worker/jax) is not beside ${__dirname}; install it (pip install ./worker/jax) and use --backend_command`,
  );
}

/** Opens the configured extractor: onnxruntime here, or a child speaking the protocol. */
async function openExtractor(
  config: WorkConfig,
  modelPath: string,
  log: Logger,
): Promise<Extractor> {
  if (config.backend === 'onnx') {
    return ExtractionEngine.open({
      modelPath,
      ...(config.layers ? { layers: config.layers } : {}),
      dtype: config.dtype,
      executionProviders: config.executionProviders,
      ...(config.threads ? { intraOpNumThreads: config.threads } : {}),
      logger: log,
    });
  }
  if (!statSync(modelPath).isDirectory() || !existsSync(path.join(modelPath, 'config.json')))
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `--backend ${config.backend} needs --model_path to be a Hugging Face checkpoint folder (config.json and *.safetensors); ${modelPath} is not one`,
    );
  const env: NodeJS.ProcessEnv = { ...process.env };
  let command: string[];
  if (config.backend === 'jax') {
    const pkg = jaxPackageDir();
    env.PYTHONPATH = [pkg, env.PYTHONPATH].filter(Boolean).join(path.delimiter);
    command = [
      'python3',
      '-m',
      'shardline_jax',
      ...(config.jaxArray === 'auto' ? [] : ['--array', config.jaxArray]),
    ];
  } else {
    command = config.backendCommand ?? [];
  }
  const computeDtype =
    config.computeDtype !== 'auto'
      ? config.computeDtype
      : config.backend === 'jax' && config.jaxArray !== 'numpy'
        ? 'bfloat16'
        : 'float32';
  return ProtocolExtractor.open({
    command,
    env,
    modelPath,
    ...(config.layers ? { layers: config.layers } : {}),
    computeDtype,
    outputDtype: config.dtype,
    maxBatchSize: config.batchSize,
    maxBatchTokens: config.maxBatchTokens,
    maxSeqLength: config.maxSeqLength,
    backend: config.backend,
    requestTimeoutMs: config.extractorTimeoutMs,
    logger: log,
  });
}

/**
 * Refuses a dataset whose shards committed parts with another run fingerprint (another model,
 * tokenizer, template, layers, dtype, positions or prompt settings): mixing them would make
 * one dataset of two experiments. The message names what differs, read from a committed part.
 */
async function checkRunFingerprint(
  d: DatasetHandle,
  fingerprint: string,
  metadata: Readonly<Record<string, string>>,
): Promise<void> {
  const status = await d.ledger.status(d.datasetId);
  const other = status.shards.filter(
    (s) => s.run_fingerprint !== null && s.run_fingerprint !== fingerprint,
  );
  if (other.length === 0) return;
  const first = other[0]!;
  // Its first committed part says what it was made with (any unit's, once the shard was split).
  const [part] = await d.ledger.listShardParts({
    dataset_id: d.datasetId,
    shard_id: first.shard_id,
  });
  const theirs = part
    ? await partMetadata(d.output, partKeys(first.shard_id, 0, '', part.name).safetensors).catch(
        () => ({}),
      )
    : {};
  const diff = provenanceDiff(metadata, theirs)
    .map(([k, ours, their]) => `${k}: ${their || '?'} there, ${ours} here`)
    .join('; ');
  throw new ShardlineError(
    'FINGERPRINT_MISMATCH',
    `dataset ${d.datasetId} has parts extracted with other settings in ${other.length} shard(s) (shard ${first.shard_id}: ${diff || `fingerprint ${first.run_fingerprint ?? '?'}, this run ${fingerprint}`}). ` +
      'Write this run elsewhere (--output_dir), or run `shardline reset --discard_parts` on those shards to redo them with these settings.',
    {
      details: { shards: other.map((s) => s.shard_id), fingerprint, theirs: first.run_fingerprint },
    },
  );
}
