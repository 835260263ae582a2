/**
 * `shardline ingests`: what became of recent uploads to `incoming/` (the cloud ingest's
 * records): which dataset each became, or why it failed and on which line.
 */
import { COMMON_FLAGS } from '../command';
import type { Command } from '../command';
import { EXIT } from '../exit-codes';
import { formatTable } from '../format';
import { INGESTS_COLLECTION_FLAG, describeIngest, ingestRecords } from '../ingest-view';
import { LEDGER_FLAGS } from '../wiring';

/** The `ingests` command. */
export const ingestsCommand: Command = {
  name: 'ingests',
  summary: 'list recent cloud uploads and what became of them (dataset id, state, error, bad line)',
  usage: '[--bucket BUCKET] [--limit N] [--json]',
  flags: [
    {
      name: 'bucket',
      type: 'string',
      placeholder: 'BUCKET',
      description: 'only uploads to this bucket',
    },
    {
      name: 'limit',
      type: 'int',
      default: 20,
      min: 1,
      max: 1000,
      placeholder: 'N',
      description: 'how many, newest first',
    },
    LEDGER_FLAGS.firestore_project,
    LEDGER_FLAGS.firestore_database,
    INGESTS_COLLECTION_FLAG,
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: ['shardline ingests --bucket my-bucket', 'shardline ingests --limit 5 --json'],
  async run(args, ctx) {
    const bucket = args.optStr('bucket');
    const all = await ingestRecords(ctx.cloud.firestore(), args).recent(
      bucket ? args.num('limit') * 5 : args.num('limit'),
    );
    const records = all.filter((r) => !bucket || r.bucket === bucket).slice(0, args.num('limit'));
    if (args.bool('json')) {
      ctx.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
      return EXIT.OK;
    }
    if (records.length === 0) {
      ctx.stdout.write('No uploads have been ingested yet.\n');
      return EXIT.OK;
    }
    ctx.stdout.write(
      `${formatTable(
        ['started', 'object', 'dataset', 'state', 'shards', 'tasks'],
        records.map((r) => [
          r.started_at.slice(0, 19).replace('T', ' '),
          `gs://${r.bucket}/${r.object}`,
          r.dataset_id,
          r.state === 'running' ? `running (${r.phase})` : r.state,
          r.stats ? String(r.stats.num_shards) : '-',
          r.stats ? String(r.stats.total_tasks) : '-',
        ]),
        ['left', 'left', 'left', 'left', 'right', 'right'],
      )}\n`,
    );
    const failed = records.filter((r) => r.state === 'failed');
    for (const r of failed) ctx.stdout.write(`\n${describeIngest(r)}\n`);
    return EXIT.OK;
  },
};
