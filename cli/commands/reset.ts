/**
 * `shardline reset`: an operator returns a shard to `available` (no holder, no lease, no
 * `completed_at`, attempts 0). Unlike the original, it clears `completed_at`, and a worker that
 * still held the shard is fenced: its next heartbeat or commit fails instead of writing twice.
 */
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import {
  DATASET_DIR_FLAG,
  LEDGER_FLAGS,
  WORKER_FLAGS,
  openDatasetSession,
  operatorName,
} from '../wiring';
import { SHARD_ID_FLAG } from '../holder-verbs';
import { formatLeaseLeft } from '../status-view';

/** `shardline reset`. */
export const resetCommand: Command = {
  name: 'reset',
  summary: 'return a shard to available (clears holder, lease, completed_at and attempts)',
  usage: '--dataset_dir DIR --shard_id N [--discard_parts] [--json]',
  description:
    'Committed parts are kept, so the next holder resumes after them; --discard_parts starts ' +
    'the shard over. The reset is recorded with your name (--worker_id, else user@host).',
  flags: [
    DATASET_DIR_FLAG,
    SHARD_ID_FLAG,
    WORKER_FLAGS.worker_id,
    {
      name: 'discard_parts',
      type: 'boolean',
      description: 'forget committed parts too: the next holder starts at the first task',
    },
    ...Object.values(LEDGER_FLAGS),
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: ['shardline reset --dataset_dir ./sharded_dataset --shard_id 5'],
  async run(args, ctx) {
    const shardId = args.num('shard_id');
    const by = operatorName(args, ctx);
    const session = await openDatasetSession(args, ctx);
    try {
      const datasetId = session.master.dataset_id;
      const before = await session.ledger.getShard(datasetId, shardId);
      const after = await session.ledger.reset(datasetId, shardId, by, {
        discardParts: args.bool('discard_parts'),
      });
      const leaseLeft =
        before?.status === 'in_use' && before.lease_expires_at !== null
          ? Date.parse(before.lease_expires_at) - ctx.clock.nowMs()
          : null;
      if (before?.status === 'in_use' && leaseLeft !== null && leaseLeft > 0) {
        ctx.stderr.write(
          `warning: shard ${shardId} was held by ${before.assigned_to ?? '?'} (lease left ${formatLeaseLeft(leaseLeft)}); ` +
            'that worker loses it at its next heartbeat or commit\n',
        );
      }
      if (args.bool('json')) {
        ctx.stdout.write(`${JSON.stringify({ shard: after, previous: before }, null, 2)}\n`);
      } else {
        ctx.stdout.write(`✓ Reset shard ${shardId} to available\n`);
      }
      return EXIT.OK;
    } finally {
      await session.close();
    }
  },
};
