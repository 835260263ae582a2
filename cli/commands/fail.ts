/**
 * `shardline fail`: the holder gives a shard up as failed, with a reason: attempts + 1, and
 * the shard is available again, or `failed` for good after max attempts. Anyone else needs
 * `--force` (recorded). Not in the original, which had no way to record a failure.
 */
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { formatDuration } from '../format';
import { LEDGER_FLAGS } from '../wiring';
import { HOLDER_FLAGS, asHolderOrForced } from '../holder-verbs';

/** `shardline fail`. */
export const failCommand: Command = {
  name: 'fail',
  summary: 'mark a shard failed with a reason (attempts + 1; failed for good at max attempts)',
  usage: '--dataset_dir DIR --shard_id N --worker_id ID [--reason TEXT] [--force] [--json]',
  flags: [
    ...HOLDER_FLAGS,
    {
      name: 'final',
      type: 'boolean',
      description:
        'fail it for good now (a deterministic failure a retry cannot fix), whatever the attempts left',
    },
    {
      name: 'reason',
      type: 'string',
      placeholder: 'TEXT',
      default: 'marked failed from the command line',
      description: "why; kept as the shard's last_error",
    },
    ...Object.values(LEDGER_FLAGS),
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline fail --dataset_dir ./sharded_dataset --shard_id 2 --worker_id worker_0 --reason "OOM on task 1234"',
    'shardline fail --dataset_dir ./sharded_dataset --shard_id 5 --force --reason "host lost"',
  ],
  async run(args, ctx) {
    const reason = args.str('reason');
    const { after, forcedBy } = await asHolderOrForced(
      'fail',
      args,
      ctx,
      (ledger, claim) => ledger.fail(claim, reason, { final: args.bool('final') }),
      (ledger, ds, id, by) => ledger.forceFail(ds, id, by, reason),
    );
    if (args.bool('json')) {
      ctx.stdout.write(`${JSON.stringify({ shard: after, forced_by: forcedBy }, null, 2)}\n`);
      return EXIT.OK;
    }
    const retryMs = after.retry_at === null ? 0 : Date.parse(after.retry_at) - ctx.clock.nowMs();
    const next =
      after.status === 'failed'
        ? 'failed for good (reset it to run it again)'
        : retryMs > 0
          ? `available again in ${formatDuration(retryMs)}`
          : 'available again';
    const forced = forcedBy === null ? '' : `; forced by ${forcedBy}`;
    ctx.stdout.write(
      `✓ Marked shard ${after.shard_id} as failed: attempt ${after.attempts} of ${after.max_attempts}, ${next}${forced}\n`,
    );
    return EXIT.OK;
  },
};
