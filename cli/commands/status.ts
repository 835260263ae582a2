/**
 * `shardline status`: every shard of a dataset as the ledger sees it (the source of truth; the
 * status fields in the metadata files are the creation-time snapshot), and the totals.
 */
import { formatLocation } from '../../core/blob/location';
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import type { IngestRecord } from '../../core/ingest/records';
import type { LedgerKind } from '../../core/ledger/ledger';
import { resolveLedgerKind } from '../../core/ledger/open';
import { INGESTS_COLLECTION_FLAG, describeIngest, ingestRecords } from '../ingest-view';
import { watchStatus } from '../live-status';
import { renderStatus } from '../status-view';
import { DATASET_DIR_FLAG, LEDGER_FLAGS, datasetLocation, openDatasetSession } from '../wiring';

/** `shardline status`. */
export const statusCommand: Command = {
  name: 'status',
  summary: 'show every shard of a dataset: status, holder, progress, lease, attempts, errors',
  usage: '--dataset_dir DIR [--watch] [--json]',
  description:
    'Reads the ledger (the source of truth), not the status fields of the metadata files, which ' +
    'are the creation-time snapshot. Registers the dataset in the ledger if it is not yet.',
  flags: [
    DATASET_DIR_FLAG,
    ...Object.values(LEDGER_FLAGS),
    INGESTS_COLLECTION_FLAG,
    {
      name: 'watch',
      type: 'boolean',
      description:
        'keep a live view (progress, holders, leases, throughput, ETA) until the dataset is done',
    },
    {
      name: 'interval',
      type: 'number',
      default: 2,
      min: 0.1,
      placeholder: 'S',
      description: 'refresh interval of --watch',
    },
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline status --dataset_dir ./sharded_dataset',
    'shardline status --dataset_dir gs://bucket/datasets/arc --json',
    'shardline status --dataset_dir ./sharded_dataset --watch',
  ],
  async run(args, ctx) {
    const location = datasetLocation(args, ctx);
    // A dataset made by an upload has an ingest record: show it, even before the dataset exists.
    let ingest: IngestRecord | undefined;
    if (
      location.kind === 'gcs' &&
      resolveLedgerKind(location, args.optStr('ledger') as LedgerKind | undefined) === 'firestore'
    ) {
      const id = location.prefix.split('/').pop() ?? '';
      ingest = (await ingestRecords(ctx.cloud.firestore(), args).findByDataset(id))[0];
      if (ingest && ingest.state !== 'completed') {
        if (args.bool('json'))
          ctx.stdout.write(
            `${JSON.stringify({ dataset_dir: formatLocation(location), ingest }, null, 2)}\n`,
          );
        else ctx.stdout.write(`${describeIngest(ingest)}\n`);
        return ingest.state === 'failed' ? EXIT.INVALID_INPUT : EXIT.OK;
      }
    }
    const session = await openDatasetSession(args, ctx);
    try {
      if (args.bool('watch')) {
        // Live until every shard is completed or failed (or Ctrl-C), then the full table.
        await watchStatus(session.ledger, session.master.dataset_id, {
          out: ctx.stdout,
          clock: ctx.clock,
          intervalMs: args.num('interval') * 1000,
          signal: ctx.signal,
        });
        ctx.stdout.write('\n');
      }
      const status = await session.ledger.status(session.master.dataset_id);
      if (args.bool('json')) {
        ctx.stdout.write(
          `${JSON.stringify({ ...status, dataset_dir: formatLocation(session.location), ledger: { kind: session.ledger.kind, location: session.ledger.location }, ...(ingest ? { ingest } : {}) }, null, 2)}\n`,
        );
      } else {
        ctx.stdout.write(renderStatus(status, `${session.ledger.kind} ${session.ledger.location}`));
        if (ingest) ctx.stdout.write(`${describeIngest(ingest)}\n`);
      }
      return EXIT.OK;
    } finally {
      await session.close();
    }
  },
};
