/**
 * `shardline claim`: claims one shard for a worker through the ledger and prints where its
 * chunks are, in the seed's words (`✓ Claimed shard 3` / `✗ No available shards`).
 */
import { formatLocation } from '../../core/blob/location';
import { ShardMetadataSchema, decodeJson } from '../../core/dataset/metadata';
import { chunkKey, shardDirName, shardMetadataKey } from '../../core/dataset/paths';
import { toError } from '../../core/errors';
import type { Claim } from '../../core/ledger/ledger';
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import type { DatasetSession } from '../wiring';
import {
  DATASET_DIR_FLAG,
  LEDGER_FLAGS,
  WORKER_FLAGS,
  openDatasetSession,
  workerIdFrom,
} from '../wiring';
import { formatDuration } from '../format';

const MINUTE_MS = 60_000;

/** A word as a shell would need it typed: as is when plain, else single-quoted. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** What `claim --json` prints for a granted claim. */
interface ClaimReport {
  claimed: true;
  claim: Claim;
  shard_dir: string;
  total_tasks: number;
  first_task_index: number;
  /** Where to resume: after the last committed part (the first task when none). */
  next_task_index: number;
  parts_committed: number;
  chunks: Array<{
    chunk_id: number;
    path: string;
    num_tasks: number;
    bytes: number;
    first_task_index: number;
  }>;
}

async function describe(session: DatasetSession, claim: Claim): Promise<ClaimReport> {
  const { store, ledger } = session;
  const key = shardMetadataKey(claim.shard_id);
  const shard = decodeJson(
    ShardMetadataSchema,
    (await store.readAll(key)).toString('utf8'),
    store.uriOf(key),
  );
  const record = await ledger.getShard(claim.dataset_id, claim.shard_id, claim.unit ?? 0);
  return {
    claimed: true,
    claim,
    shard_dir: store.uriOf(shardDirName(claim.shard_id)),
    total_tasks: shard.total_tasks,
    first_task_index: shard.first_task_index,
    next_task_index: record?.next_task_index ?? shard.first_task_index,
    parts_committed: record?.parts_committed ?? 0,
    chunks: shard.chunks.map((c) => ({
      chunk_id: c.chunk_id,
      path: store.uriOf(chunkKey(claim.shard_id, c.chunk_id)),
      num_tasks: c.num_tasks,
      bytes: c.bytes,
      first_task_index: c.first_task_index,
    })),
  };
}

/** `shardline claim`. */
export const claimCommand: Command = {
  name: 'claim',
  summary: 'claim an available shard for a worker and print its chunk files',
  usage:
    '--dataset_dir DIR [--worker_id ID | --machine_id X --host_id Y] [--preferred_shard_id K] [--json]',
  description:
    'Every worker may run the same command: each gets a different shard, atomically. A shard is ' +
    'claimable when available, or when its holder stopped renewing its lease. The claim holds for ' +
    '--lease_minutes; finish with `shardline complete` (or `fail`) under the same --worker_id.',
  flags: [
    DATASET_DIR_FLAG,
    ...Object.values(WORKER_FLAGS),
    {
      name: 'preferred_shard_id',
      type: 'int',
      min: 0,
      placeholder: 'K',
      description: 'try this shard first; another one when it is taken',
    },
    {
      name: 'lease_minutes',
      type: 'number',
      min: 1 / 60,
      max: 7 * 24 * 60,
      default: 60,
      placeholder: 'MIN',
      description:
        'how long the claim holds without a heartbeat; then another worker may take the shard',
    },
    ...Object.values(LEDGER_FLAGS),
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline claim --dataset_dir ./sharded_dataset --worker_id worker_0',
    'shardline claim --dataset_dir gs://bucket/sharded_dataset --machine_id 0 --host_id 2 --preferred_shard_id 3',
  ],
  async run(args, ctx) {
    const workerId = workerIdFrom(args);
    const preferred = args.optNum('preferred_shard_id');
    const leaseMs = Math.round(args.num('lease_minutes') * MINUTE_MS);
    const session = await openDatasetSession(args, ctx);
    try {
      const datasetId = session.master.dataset_id;
      const claim = await session.ledger.claim(datasetId, workerId, {
        leaseMs,
        ...(preferred === undefined ? {} : { preferredShardId: preferred }),
      });
      if (!claim) {
        if (args.bool('json'))
          ctx.stdout.write(
            `${JSON.stringify({ claimed: false, claim: null, worker_id: workerId })}\n`,
          );
        else ctx.stdout.write('✗ No available shards\n');
        return EXIT.NOTHING_AVAILABLE;
      }
      ctx.log.debug('claimed', {
        dataset_id: datasetId,
        shard_id: claim.shard_id,
        worker_id: workerId,
        epoch: claim.epoch,
      });
      let report: ClaimReport;
      try {
        report = await describe(session, claim);
      } catch (e: unknown) {
        // The shard's files are unreadable: give the claim back rather than hold it for nobody.
        await session.ledger.release(claim).catch((r: unknown) =>
          ctx.log.warn('could not release the claim', {
            shard_id: claim.shard_id,
            error: toError(r),
          }),
        );
        throw e;
      }
      if (args.bool('json')) {
        ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return EXIT.OK;
      }
      const leaseLeft = Date.parse(claim.lease_expires_at) - ctx.clock.nowMs();
      const lines = [
        `✓ Claimed shard ${claim.shard_id}`,
        `  Directory: ${report.shard_dir}`,
        `  Tasks: ${report.total_tasks}`,
        // A unit split off the shard: only its tasks are this claim's.
        ...(claim.unit
          ? [
              `  Work unit: ${claim.unit} (tasks ${report.next_task_index}-${(claim.end_task_index ?? 0) - 1})`,
            ]
          : []),
        `  Chunks: ${report.chunks.length}`,
        ...report.chunks.map((c) => `    ${c.path}`),
        `  Worker: ${claim.worker_id}`,
        `  Epoch: ${claim.epoch}`,
        `  Lease expires: ${claim.lease_expires_at} (in ${formatDuration(leaseLeft)})`,
      ];
      if (report.parts_committed > 0)
        lines.push(
          `  Resume at task: ${report.next_task_index} (${report.parts_committed} parts committed)`,
        );
      lines.push(
        `Finish with: shardline complete --dataset_dir ${shellWord(formatLocation(session.location))} ` +
          `--shard_id ${claim.shard_id}${claim.unit ? ` --unit ${claim.unit}` : ''} --worker_id ${shellWord(claim.worker_id)}`,
        '',
      );
      ctx.stdout.write(lines.join('\n'));
      return EXIT.OK;
    } finally {
      await session.close();
    }
  },
};
