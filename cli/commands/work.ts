/**
 * `shardline work`: the worker. Every machine runs the same command; each claims a different
 * shard, extracts its activations, commits parts as it goes, and completes it; then the next.
 */
import { ConfigError } from '../../core/errors';
import type { LedgerKind } from '../../core/ledger/ledger';
import { MAX_LEASE_MS } from '../../core/ledger/ledger';
import { DEFAULT_TOPICS } from '../../core/messages';
import type { WorkConfig } from '../../worker/main';
import { runWork } from '../../worker/main';
import type { ShardProgress } from '../../worker/shard-job';
import { DEFAULT_OUTAGE_BUDGET_MS } from '../../worker/shard-job';
import type { ParsedArgs } from '../args';
import type { Command, CommandContext } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { formatDuration } from '../format';
import { parsePositions } from '../../worker/extraction/positions';
import { LEDGER_FLAGS, WORKER_FLAGS, cloudSettings, workerIdFrom } from '../wiring';

/** `all`, `10,11,12`, `10-23`, or a mix: the layers to extract (undefined = all). */
export function parseLayers(text: string): number[] | undefined {
  if (text.trim() === 'all') return undefined;
  const layers = new Set<number>();
  for (const part of text.split(',').map((p) => p.trim())) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m)
      throw new ConfigError(
        `--layers must be "all" or a list like 10,11,12 or 10-23, got ${JSON.stringify(text)}`,
      );
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new ConfigError(`--layers range ${part} goes backwards`);
    for (let l = a; l <= b; l++) layers.add(l);
  }
  return [...layers].sort((x, y) => x - y);
}

function configOf(args: ParsedArgs, ctx: CommandContext): WorkConfig {
  const hostId = args.optNum('host_id');
  const numHosts = args.optNum('num_hosts');
  if (hostId !== undefined && numHosts !== undefined && hostId >= numHosts) {
    throw new ConfigError(`--host_id ${hostId} must be less than --num_hosts ${numHosts}`);
  }
  const opt = <T>(name: string, v: T | undefined): Partial<Record<string, T>> =>
    v === undefined ? {} : { [name]: v };
  const explicitPreferred = args.optNum('preferred_shard_id');
  return {
    ...opt('datasetDir', args.optStr('sharded_dataset_dir')),
    ...opt('outputDir', args.optStr('output_dir')),
    modelPath: args.str('model_path'),
    ...opt('modelName', args.optStr('model_name')),
    ...opt('tokenizerPath', args.optStr('tokenizer_path')),
    ...opt('tokenizerConfigPath', args.optStr('tokenizer_config_path')),
    ...opt('chatTemplatePath', args.optStr('chat_template_path')),
    ...opt('promptTemplatePath', args.optStr('prompt_template')),
    ...opt('layers', parseLayers(args.str('layers'))),
    positions: parsePositions(args.str('positions')),
    backend: args.optStr('backend_command') ? 'command' : (args.str('backend') as 'onnx' | 'jax'),
    ...opt('backendCommand', args.optStr('backend_command')?.trim().split(/\s+/)),
    jaxArray: args.str('jax_array') as 'auto' | 'jax' | 'numpy',
    computeDtype: args.str('compute_dtype') as 'auto' | 'float32' | 'bfloat16',
    extractorTimeoutMs: Math.round(args.num('extractor_timeout_seconds') * 1000),
    dtype: args.str('dtype') === 'fp32' ? 'float32' : 'float16',
    batchSize: args.num('batch_size'),
    maxBatchTokens: args.num('max_batch_tokens'),
    maxSeqLength: args.num('max_seq_length'),
    predictionsPerTask: args.num('predictions_per_task'),
    augment: args.bool('augment'),
    seed: args.num('seed'),
    ...opt('threads', args.optNum('threads')),
    executionProviders: args
      .str('execution_provider')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean),
    partSizeBytes: Math.floor(args.num('part_size_mb') * 1024 * 1024),
    leaseMs: Math.round(args.num('lease_seconds') * 1000),
    outageBudgetMs: Math.round(args.num('outage_seconds') * 1000),
    pollMs: args.num('poll_seconds') * 1000,
    graceMs: args.num('grace_seconds') * 1000,
    follow: args.bool('follow'),
    split: args.str('split') === 'on',
    reserveAheadMs: Math.round(args.num('reserve_seconds') * 1000),
    preemptionNotices: args.str('preemption_notices') as 'auto' | 'on' | 'off',
    ...opt('metadataHost', ctx.env.GCE_METADATA_HOST || undefined),
    ...opt('maxShards', args.optNum('max_shards')),
    // Hosts of one machine start on different shards (host k prefers shard k): less contention.
    ...opt('preferredShardId', explicitPreferred ?? hostId),
    workerId: workerIdFrom(args),
    ...opt('ledger', args.optStr('ledger') as LedgerKind | undefined),
    ...cloudSettings(args, ctx.env),
    firestoreRoot: args.str('firestore_root'),
    ...opt('subscription', args.optStr('subscription')),
    eventsTopic: args.str('events_topic'),
    workTopic: args.str('work_topic'),
    publishEvents: args.given.has('events_topic') || args.optStr('subscription') !== undefined,
  };
}

/** How long past --grace_seconds a shutdown may take before the process exits regardless. */
const BACKSTOP_MARGIN_MS = 15_000;

function progressPrinter(ctx: CommandContext): (p: ShardProgress) => void {
  if (!ctx.stderr.isTTY) return () => undefined;
  const started = new Map<number, number>();
  let last = 0;
  return (p) => {
    const now = ctx.clock.nowMs();
    if (!started.has(p.shardId)) started.set(p.shardId, now);
    if (now - last < 200 && p.tasksDone < p.tasksToDo) return;
    last = now;
    const elapsed = Math.max(1, now - started.get(p.shardId)!);
    const frac = p.tasksToDo > 0 ? p.tasksDone / p.tasksToDo : 1;
    const bar = '#'.repeat(Math.round(frac * 20)).padEnd(20, '.');
    const rate = (p.tokens / elapsed) * 1000;
    const eta =
      frac > 0 && frac < 1 ? `  ETA ${formatDuration((elapsed / frac) * (1 - frac))}` : '';
    ctx.stderr.write(
      `\rshard ${String(p.shardId).padStart(3, '0')} [${bar}] ${p.tasksDone}/${p.tasksToDo} tasks  ${p.partsCommitted} parts  ${rate.toFixed(0)} tok/s${eta}   ${p.tasksDone === p.tasksToDo ? '\n' : ''}`,
    );
  };
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const config = configOf(args, ctx);
  ctx.log.info('worker starting', {
    worker_id: config.workerId,
    dataset: config.datasetDir ?? null,
    subscription: config.subscription ?? null,
  });
  // The backstop behind the shutdown promise: the worker releases its lease and returns within
  // --grace_seconds, but closing clients of an unreachable ledger or Pub/Sub can wait on their
  // own retry deadlines, and their channels can keep the process alive after the command has
  // returned. Past grace + 15 s the process exits anyway (an unreleased lease then expires).
  let backstop: NodeJS.Timeout | undefined;
  const armBackstop = (): void => {
    backstop = setTimeout(() => {
      ctx.log.error('the worker did not exit in time after the signal; exiting now', {
        waited_ms: config.graceMs + BACKSTOP_MARGIN_MS,
        hint: 'is the ledger (Firestore) or Pub/Sub reachable?',
      });
      process.exit(typeof process.exitCode === 'number' ? process.exitCode : EXIT.INTERRUPTED);
    }, config.graceMs + BACKSTOP_MARGIN_MS);
    backstop.unref();
  };
  if (ctx.signal.aborted) armBackstop();
  else ctx.signal.addEventListener('abort', armBackstop, { once: true });
  let summary: Awaited<ReturnType<typeof runWork>>;
  try {
    summary = await runWork(config, {
      cwd: ctx.cwd,
      clock: ctx.clock,
      log: ctx.log.child({ worker_id: config.workerId }),
      stop: ctx.signal,
      onProgress: progressPrinter(ctx),
    });
  } finally {
    // After a signal the backstop stays armed (unref'd: it never keeps the process alive).
    if (!ctx.signal.aborted) clearTimeout(backstop);
    ctx.signal.removeEventListener('abort', armBackstop);
  }
  const line = `${summary.completed} completed (${summary.splits} of them work units split off held shards), ${summary.stopped} released at shutdown, ${summary.released} released after an outage, ${summary.failed} failed, ${summary.lost} lost to another worker`;
  if (args.bool('json'))
    ctx.stdout.write(`${JSON.stringify({ worker_id: config.workerId, ...summary }, null, 2)}\n`);
  else {
    ctx.stdout.write(`Worker ${config.workerId}: ${line}.\n`);
    for (const f of summary.failedShards)
      ctx.stdout.write(
        `  shard ${f.shard_id} of ${f.dataset_id} is failed for good: ${f.last_error ?? 'no reason recorded'}\n`,
      );
  }
  if (summary.refused > 0) {
    ctx.stderr.write(
      `shardline work: a dataset's parts were extracted with other settings; see the log for what differs.\n`,
    );
    return EXIT.CONFLICT;
  }
  if (summary.failedShards.length > 0) {
    ctx.stderr.write(
      `shardline work: ${summary.failedShards.length} shard(s) failed for good; \`shardline status\` shows why, \`shardline reset\` runs them again.\n`,
    );
    return EXIT.FAILED_SHARDS;
  }
  return EXIT.OK;
}

/** The `work` command. */
export const workCommand: Command = {
  name: 'work',
  summary: 'claim shards one after another and extract their activations (run it on every machine)',
  usage: '--sharded_dataset_dir DIR --model_path MODEL.onnx [flags]',
  description: [
    'Claims a shard (the preferred one first, else another), streams its chunks, builds the prompts,',
    'runs the model on a worker thread, writes parts and commits each in the ledger, then writes the',
    "shard's _MANIFEST.json and completes it; then the next shard, until none is left (or forever with",
    '--follow). A worker that claims a shard with committed parts resumes after the last one. The',
    'lease is renewed every third of --lease_seconds. On SIGTERM it finishes the batch in hand,',
    'releases the shard (no attempt counted) and exits 0; a second signal exits at once. If the',
    'ledger or Pub/Sub is unreachable it exits 130 anyway, 15 s after --grace_seconds.',
    '',
    'A worker that finds nothing to claim splits the held shard with the most work left (--split on,',
    'the default): the holder keeps what it has in hand, the splitter takes the rest as a work unit.',
    'On a Compute Engine VM it watches for preemption notices: on one it stops claiming, commits the',
    'part in hand and releases its shard (no attempt counted) before the machine stops.',
    '',
    'With --subscription it also wakes on doorbells (Pub/Sub shard.available), serving any announced',
    'dataset when --sharded_dataset_dir is not given, and publishes shard.completed / shard.failed.',
  ].join('\n'),
  flags: [
    {
      name: 'sharded_dataset_dir',
      type: 'string',
      placeholder: 'DIR',
      env: 'SHARDLINE_DATASET_DIR',
      description: 'the dataset (local folder or gs://); optional with --subscription',
    },
    {
      name: 'output_dir',
      type: 'string',
      placeholder: 'DIR',
      env: 'SHARDLINE_OUTPUT_DIR',
      description: 'where parts go (local or gs://); default DATASET/activations',
    },
    {
      name: 'model_path',
      type: 'string',
      required: true,
      placeholder: 'PATH',
      env: 'SHARDLINE_MODEL_PATH',
      description:
        'onnx: the decoder (model.onnx, with model.onnx_data beside it) or a folder holding one; jax: a Hugging Face checkpoint folder',
    },
    {
      name: 'model_name',
      type: 'string',
      placeholder: 'NAME',
      description: "recorded in the parts' metadata; default the model folder's name",
    },
    {
      name: 'tokenizer_path',
      type: 'string',
      placeholder: 'FILE',
      description: "tokenizer.json; default the model folder's, else the bundled Qwen tokenizer",
    },
    {
      name: 'tokenizer_config_path',
      type: 'string',
      placeholder: 'FILE',
      description: 'tokenizer_config.json (chat template, special tokens)',
    },
    {
      name: 'chat_template_path',
      type: 'string',
      placeholder: 'FILE',
      description: "a Jinja chat template overriding the tokenizer config's",
    },
    {
      name: 'prompt_template',
      type: 'string',
      placeholder: 'FILE',
      description:
        'the ARC instruction template (see worker/extraction/templates/arc-default.prompt)',
    },
    {
      name: 'layers',
      type: 'string',
      default: 'all',
      placeholder: 'LIST',
      description: 'layers to extract: all, 10,11,12 or 10-23',
    },
    {
      name: 'positions',
      type: 'string',
      default: 'all',
      placeholder: 'WHICH',
      description:
        'token positions stored: all, last, answer (ARC: where the answer grid opens), or a list like 0,16-31,-1',
    },
    {
      name: 'backend',
      type: 'string',
      default: 'onnx',
      choices: ['onnx', 'jax'],
      description:
        'what runs the model: onnx (onnxruntime here; --model_path an ONNX export) or jax (the JAX extractor in a child process, on TPU/GPU; --model_path a Hugging Face folder)',
    },
    {
      name: 'backend_command',
      type: 'string',
      placeholder: 'CMD',
      description:
        'your own extractor: a command speaking the extractor protocol (docs/extractor-protocol.md)',
    },
    {
      name: 'jax_array',
      type: 'string',
      default: 'auto',
      choices: ['auto', 'jax', 'numpy'],
      description: '--backend jax: the array library (auto: jax when it is installed)',
    },
    {
      name: 'compute_dtype',
      type: 'string',
      default: 'auto',
      choices: ['auto', 'float32', 'bfloat16'],
      description:
        'what a child extractor computes in (auto: bfloat16 with jax, float32 with numpy)',
    },
    {
      name: 'extractor_timeout_seconds',
      type: 'number',
      default: 600,
      min: 1,
      placeholder: 'S',
      description: 'a child extractor that takes longer for one batch is killed (the claim fails)',
    },
    {
      name: 'dtype',
      type: 'string',
      default: 'fp16',
      choices: ['fp16', 'fp32'],
      description: 'stored activation type',
    },
    {
      name: 'batch_size',
      type: 'int',
      default: 4,
      min: 1,
      max: 1024,
      placeholder: 'N',
      description: 'prompts per model run',
    },
    {
      name: 'max_batch_tokens',
      type: 'int',
      default: 4096,
      min: 1,
      placeholder: 'N',
      description: 'padded tokens per model run',
    },
    {
      name: 'max_seq_length',
      type: 'int',
      default: 2048,
      min: 8,
      placeholder: 'N',
      description:
        'longest prompt; longer ARC prompts drop trailing train examples, else are skipped',
    },
    {
      name: 'predictions_per_task',
      type: 'int',
      default: 8,
      min: 1,
      max: 1024,
      placeholder: 'N',
      description: 'augmented prompts per ARC test input',
    },
    {
      name: 'augment',
      type: 'boolean',
      default: true,
      description:
        'augment ARC tasks (flips/rotations x colour permutation); --no-augment for one plain prompt',
    },
    { name: 'seed', type: 'int', default: 0, placeholder: 'N', description: 'augmentation seed' },
    {
      name: 'threads',
      type: 'int',
      min: 1,
      max: 1024,
      placeholder: 'N',
      description: 'onnxruntime threads; default all cores',
    },
    {
      name: 'execution_provider',
      type: 'string',
      default: 'cpu',
      placeholder: 'LIST',
      description: 'onnxruntime providers in order, e.g. cuda,cpu (needs a CUDA build)',
    },
    {
      name: 'part_size_mb',
      type: 'number',
      default: 256,
      min: 0.000001,
      placeholder: 'MB',
      description: 'cut an output part at a task boundary once it holds this much',
    },
    {
      name: 'lease_seconds',
      type: 'number',
      default: 600,
      min: 1,
      max: MAX_LEASE_MS / 1000,
      placeholder: 'S',
      description: 'lease length; renewed every third of it',
    },
    {
      name: 'outage_seconds',
      type: 'number',
      default: DEFAULT_OUTAGE_BUDGET_MS / 1000,
      min: 0,
      max: 7 * 24 * 3600,
      placeholder: 'S',
      description:
        'how long a shard rides through an outage (Storage, the ledger, the model backend unavailable) before it is released',
    },
    {
      name: 'poll_seconds',
      type: 'number',
      default: 30,
      min: 0.05,
      placeholder: 'S',
      description: 'idle poll interval with --follow or --subscription',
    },
    {
      name: 'grace_seconds',
      type: 'number',
      default: 25,
      min: 0,
      placeholder: 'S',
      description: 'how long shutdown may take before the shard is released anyway',
    },
    {
      name: 'follow',
      type: 'boolean',
      description: 'keep waiting for work when nothing is claimable',
    },
    {
      name: 'split',
      type: 'string',
      default: 'on',
      choices: ['on', 'off'],
      description:
        'when nothing is claimable, split the held shard (work unit) with the most work left and take its tail',
    },
    {
      name: 'preemption_notices',
      type: 'string',
      default: 'auto',
      choices: ['auto', 'on', 'off'],
      env: 'SHARDLINE_PREEMPTION_NOTICES',
      description:
        'watch the metadata server for a preemption or maintenance stop and drain early (auto: on a Compute Engine VM, or when GCE_METADATA_HOST is set)',
    },
    {
      name: 'reserve_seconds',
      type: 'number',
      default: 30,
      min: 0,
      placeholder: 'S',
      description:
        'work a holder keeps out of reach of splits, in time at its own pace (at most half the lease; a ledger write each time it is used up)',
    },
    {
      name: 'max_shards',
      type: 'int',
      min: 1,
      placeholder: 'N',
      description: 'stop after this many shards',
    },
    {
      name: 'preferred_shard_id',
      type: 'int',
      min: 0,
      placeholder: 'K',
      description: 'try this shard first (default: --host_id)',
    },
    ...Object.values(WORKER_FLAGS),
    {
      name: 'num_hosts',
      type: 'int',
      min: 1,
      placeholder: 'N',
      description: 'hosts of this machine (checks --host_id)',
    },
    ...Object.values(LEDGER_FLAGS),
    {
      name: 'subscription',
      type: 'string',
      placeholder: 'SUB',
      env: 'SHARDLINE_SUBSCRIPTION',
      description: 'Pub/Sub doorbell subscription (projects/P/subscriptions/S or S)',
    },
    {
      name: 'events_topic',
      type: 'string',
      default: DEFAULT_TOPICS.events,
      placeholder: 'TOPIC',
      env: 'SHARDLINE_EVENTS_TOPIC',
      description: 'where shard.completed / shard.failed go (with Pub/Sub)',
    },
    {
      name: 'work_topic',
      type: 'string',
      default: DEFAULT_TOPICS.work,
      placeholder: 'TOPIC',
      env: 'SHARDLINE_WORK_TOPIC',
      description: 'doorbell topic (a released shard rings again)',
    },
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline work --sharded_dataset_dir sharded_dataset --model_path models/qwen2.5-0.5b/onnx/model.onnx --layers 10-23',
    'shardline work --sharded_dataset_dir gs://bucket/datasets/arc --output_dir gs://bucket/activations/arc --model_path /models/model.onnx --machine_id 0 --host_id 2 --num_hosts 4',
    'shardline work --subscription projects/my-project/subscriptions/shardline-work-workers --model_path /models/model.onnx --follow',
  ],
  run,
};
