/**
 * `shardline complete`: marks a shard completed. Only its holder may (the worker named by
 * `--worker_id`, at the claim's epoch); anyone else needs `--force`, and the ledger records
 * who forced it and when. The original let anyone mark anything completed.
 */
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { HOLDER_FLAGS, asHolderOrForced, describeHolder } from '../holder-verbs';
import { LEDGER_FLAGS } from '../wiring';

/** `shardline complete`. */
export const completeCommand: Command = {
  name: 'complete',
  summary: 'mark a shard completed (its holder; anyone else with --force, recorded)',
  usage: '--dataset_dir DIR --shard_id N --worker_id ID [--epoch E] [--force] [--json]',
  flags: [
    ...HOLDER_FLAGS,
    ...Object.values(LEDGER_FLAGS),
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline complete --dataset_dir ./sharded_dataset --shard_id 0 --worker_id worker_0',
    'shardline complete --dataset_dir ./sharded_dataset --shard_id 5 --force',
  ],
  async run(args, ctx) {
    const outcome = await asHolderOrForced(
      'complete',
      args,
      ctx,
      (ledger, claim) => ledger.complete(claim),
      (ledger, ds, id, by) => ledger.forceComplete(ds, id, by),
    );
    const { before, after, forcedBy } = outcome;
    if (args.bool('json')) {
      ctx.stdout.write(`${JSON.stringify({ shard: after, forced_by: forcedBy }, null, 2)}\n`);
      return EXIT.OK;
    }
    const id = after.shard_id;
    if (forcedBy !== null && before.status === 'completed') {
      ctx.stdout.write(`✓ Shard ${id} was already completed\n`);
    } else if (forcedBy !== null) {
      ctx.stdout.write(
        `✓ Marked shard ${id} as completed (forced by ${forcedBy}; ${describeHolder(before, 'was')})\n`,
      );
    } else {
      ctx.stdout.write(`✓ Marked shard ${id} as completed\n`);
    }
    return EXIT.OK;
  },
};
