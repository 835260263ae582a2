/**
 * The functions' settings, from their environment (set by infra/deploy.sh), parsed once.
 */
import { resolveProjectId } from '../core/cloud-clients';
import type { Env } from '../core/config';
import { DEFAULT_MAX_ATTEMPTS } from '../core/ledger/ledger';
import { envNumber, envPrefix, envString } from '../core/config';
import { ConfigError } from '../core/errors';
import { DEFAULT_INGEST_COLLECTIONS } from '../core/ingest/firestore-records';
import type { IngestConfig } from '../core/ingest/ingest';
import { DEFAULT_TOPICS } from '../core/messages';
import type { Topics } from '../core/messages';

/** Everything the four functions are configured with. */
export interface FunctionsConfig {
  projectId: string | undefined;
  firestoreDatabase: string;
  /** The ledger's datasets collection. */
  ledgerRoot: string;
  ingestCollections: { ingests: string; objects: string };
  topics: Topics;
  ingest: IngestConfig;
  logLevel: 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR';
}

const MB = 1024 * 1024;

/**
 * `SHARDLINE_DATA_BUCKET`: where datasets go (infra/deploy.sh sets it to the data bucket, apart
 * from the uploads bucket that triggers `ingest`). Unset or empty: each dataset goes to its
 * upload's own bucket, as single-bucket deployments did.
 */
function dataBucketOf(env: Env): string | undefined {
  const name = 'SHARDLINE_DATA_BUCKET';
  const v = envString(env, name, '');
  if (v === '') return undefined;
  if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(v))
    throw new ConfigError(
      `environment variable ${name} must be a bucket name (no gs://, no path), got ${JSON.stringify(v)}`,
    );
  return v;
}

/** Parses the configuration; throws `ConfigError` naming a bad variable. */
export function parseFunctionsConfig(env: Env): FunctionsConfig {
  const topics: Topics = {
    work: envString(env, 'SHARDLINE_WORK_TOPIC', DEFAULT_TOPICS.work),
    events: envString(env, 'SHARDLINE_EVENTS_TOPIC', DEFAULT_TOPICS.events),
    tick: envString(env, 'SHARDLINE_TICK_TOPIC', DEFAULT_TOPICS.tick),
    ingest: envString(env, 'SHARDLINE_INGEST_TOPIC', DEFAULT_TOPICS.ingest),
  };
  const dataBucket = dataBucketOf(env);
  return {
    projectId: resolveProjectId(undefined, env),
    firestoreDatabase: envString(env, 'SHARDLINE_FIRESTORE_DATABASE', '(default)'),
    ledgerRoot: envString(env, 'SHARDLINE_FIRESTORE_ROOT', 'datasets'),
    ingestCollections: {
      ingests: envString(env, 'SHARDLINE_INGESTS_COLLECTION', DEFAULT_INGEST_COLLECTIONS.ingests),
      objects: envString(
        env,
        'SHARDLINE_INGEST_OBJECTS_COLLECTION',
        DEFAULT_INGEST_COLLECTIONS.objects,
      ),
    },
    topics,
    ingest: {
      incomingPrefix: envPrefix(env, 'SHARDLINE_INGEST_PREFIX', 'incoming/'),
      datasetsPrefix: envPrefix(env, 'SHARDLINE_DATASETS_PREFIX', 'datasets/'),
      ...(dataBucket === undefined ? {} : { dataBucket }),
      defaultNumShards: envNumber(env, 'SHARDLINE_DEFAULT_NUM_SHARDS', 8, 1, 100_000, true),
      defaultChunkSizeMb: envNumber(env, 'SHARDLINE_CHUNK_SIZE_MB', 100, 0.001, 10_000),
      defaultMaxAttempts: envNumber(
        env,
        'SHARDLINE_SHARD_MAX_ATTEMPTS',
        DEFAULT_MAX_ATTEMPTS,
        1,
        100,
        true,
      ),
      // 540 s is the limit of an event-driven function; keep well inside it.
      stepBudgetMs: envNumber(env, 'SHARDLINE_STEP_BUDGET_SECONDS', 360, 0, 530) * 1000,
      directMaxBytes: Math.floor(envNumber(env, 'SHARDLINE_DIRECT_MAX_MB', 1024, 0, 1e6) * MB),
      gzipMaxBytes: Math.floor(envNumber(env, 'SHARDLINE_GZIP_MAX_MB', 256, 0, 1e6) * MB),
      rangeBytes: Math.max(
        1,
        Math.floor(envNumber(env, 'SHARDLINE_RANGE_MB', 512, 0.000001, 1e5) * MB),
      ),
      maxLineBytes: Math.floor(envNumber(env, 'SHARDLINE_MAX_LINE_MB', 64, 0.001, 1024) * MB),
      staleMs: envNumber(env, 'SHARDLINE_INGEST_STALE_SECONDS', 180, 1, 86_400) * 1000,
      maxAttempts: envNumber(env, 'SHARDLINE_INGEST_MAX_ATTEMPTS', 5, 1, 100, true),
      topics,
    },
    logLevel:
      (['DEBUG', 'INFO', 'WARNING', 'ERROR'] as const).find((l) => l === env.SHARDLINE_LOG_LEVEL) ??
      'INFO',
  };
}
