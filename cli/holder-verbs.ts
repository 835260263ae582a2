/**
 * The holder-only verbs' shared parts (`complete`, `fail`) and the `--shard_id` flag that the
 * shard verbs share: a command never imports a sibling command.
 */
import { LeaseLostError, ShardlineError, isLeaseLost } from '../core/errors';
import type { Claim, Ledger, ShardRecord } from '../core/ledger/ledger';
import type { FlagSpec, ParsedArgs } from './args';
import type { CommandContext } from './command';
import {
  DATASET_DIR_FLAG,
  WORKER_FLAGS,
  openDatasetSession,
  operatorName,
  workerIdFrom,
  workerNamed,
} from './wiring';

/** `--shard_id`, required: a missing one is a usage error (the original exited 0). */
export const SHARD_ID_FLAG = {
  name: 'shard_id',
  type: 'int',
  min: 0,
  required: true,
  placeholder: 'N',
  description: 'the shard to act on',
} as const satisfies FlagSpec;

/** Flags of the holder-only verbs (`complete`, `fail`). */
export const HOLDER_FLAGS: readonly FlagSpec[] = [
  DATASET_DIR_FLAG,
  SHARD_ID_FLAG,
  {
    name: 'unit',
    type: 'int',
    min: 0,
    placeholder: 'U',
    description:
      'the work unit of a split shard (as `claim` printed it; default: the unit --worker_id holds)',
  },
  ...Object.values(WORKER_FLAGS),
  {
    name: 'epoch',
    type: 'int',
    min: 1,
    placeholder: 'E',
    description: "the claim's epoch as `claim` printed it (default: the shard's current epoch)",
  },
  {
    name: 'force',
    type: 'boolean',
    description: 'act even if you do not hold the shard; recorded as forced, with your name',
  },
];

/** What a holder-only verb did. */
export interface HolderOutcome {
  before: ShardRecord;
  after: ShardRecord;
  /** Set when done with --force by someone who was not the holder. */
  forcedBy: string | null;
}

/** `it is held by W at epoch 2` / `it was available`. */
export function describeHolder(s: ShardRecord, tense: 'is' | 'was' = 'is'): string {
  if (s.status === 'in_use')
    return `it ${tense} held by ${s.assigned_to ?? '?'} at epoch ${s.epoch}`;
  return `it ${tense} ${s.status}`;
}

/**
 * Runs a holder-only verb: as the holder when the named worker holds the shard, else with
 * `--force` as an operator, else fails with `LEASE_LOST` (exit 6) and a message that says who
 * holds it. Opens and closes the dataset's ledger.
 */
export async function asHolderOrForced(
  verb: 'complete' | 'fail',
  args: ParsedArgs,
  ctx: CommandContext,
  asHolder: (ledger: Ledger, claim: Claim) => Promise<ShardRecord>,
  forced: (ledger: Ledger, datasetId: string, shardId: number, by: string) => Promise<ShardRecord>,
): Promise<HolderOutcome> {
  const shardId = args.num('shard_id');
  const session = await openDatasetSession(args, ctx);
  try {
    const { ledger } = session;
    const datasetId = session.master.dataset_id;
    const before = await ledger.getShard(datasetId, shardId);
    if (!before) {
      throw new ShardlineError(
        'NOT_FOUND',
        `dataset ${datasetId} has no shard ${shardId} (it has ${session.master.num_shards})`,
      );
    }
    const workerId = workerNamed(args) ? workerIdFrom(args) : null;
    if (workerId !== null) {
      // A split shard: the unit given, else the one this worker holds, else unit 0.
      let held = before;
      const unit = args.optNum('unit');
      if (unit !== undefined) held = (await ledger.getShard(datasetId, shardId, unit)) ?? before;
      else
        for (let u = 1; u < before.unit_count && held.assigned_to !== workerId; u++) {
          const other = await ledger.getShard(datasetId, shardId, u);
          if (other?.status === 'in_use' && other.assigned_to === workerId) held = other;
        }
      const claim: Claim = {
        dataset_id: datasetId,
        shard_id: shardId,
        ...(held.unit ? { unit: held.unit } : {}),
        worker_id: workerId,
        epoch: args.optNum('epoch') ?? held.epoch,
        lease_expires_at: held.lease_expires_at ?? '',
      };
      try {
        return { before, after: await asHolder(ledger, claim), forcedBy: null };
      } catch (e: unknown) {
        if (!isLeaseLost(e)) throw e;
      }
    }
    if (!args.bool('force')) {
      const current = (await ledger.getShard(datasetId, shardId)) ?? before;
      const who =
        workerId === null
          ? 'no --worker_id was given'
          : `${workerId}${args.given.has('epoch') ? ` at epoch ${args.num('epoch')}` : ''} does not hold it`;
      throw new LeaseLostError(
        `cannot ${verb} shard ${shardId}: ${who}; ${describeHolder(current)}. ` +
          'Pass --force to do it anyway (recorded as forced, with your name).',
        { dataset_id: datasetId, shard_id: shardId, current_holder: before.assigned_to },
      );
    }
    const by = operatorName(args, ctx);
    return { before, after: await forced(ledger, datasetId, shardId, by), forcedBy: by };
  } finally {
    await session.close();
  }
}
