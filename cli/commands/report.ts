/**
 * `shardline report`: what happened in a run (or is happening), in pictures: one self-contained
 * HTML file with a timeline per shard, throughput over time, attempts and failures, skipped
 * samples, per-layer statistics and the totals (cli/report/).
 */
import * as path from 'node:path';

import type { Location } from '../../core/blob/location';
import { formatLocation, parseLocation, splitParent } from '../../core/blob/location';
import { outputRootOf } from '../../core/rollup/progress';
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { formatBytes, formatCount } from '../format';
import { buildReportData } from '../report/data';
import { renderReportHtml } from '../report/render';
import { DATASET_DIR_FLAG, LEDGER_FLAGS, openDatasetSession } from '../wiring';

/** Where the parts are: the flag, else where the ledger's manifests were written, else DATASET/activations. */
function outputLocation(
  flag: string | undefined,
  manifestUri: string | undefined,
  dataset: Location,
  cwd: string,
): Location {
  if (flag !== undefined) return parseLocation(flag, cwd);
  if (manifestUri !== undefined) return parseLocation(outputRootOf(manifestUri), cwd);
  return dataset.kind === 'local'
    ? { kind: 'local', path: path.join(dataset.path, 'activations') }
    : { ...dataset, prefix: [dataset.prefix, 'activations'].filter(Boolean).join('/') };
}

/** The `report` command. */
export const reportCommand: Command = {
  name: 'report',
  summary: 'draw what happened in a run (running or finished) as one self-contained HTML file',
  usage: '--dataset_dir DIR [--output report.html] [--output_dir PARTS_DIR]',
  description: [
    "Reads the ledger (every shard's claims, releases, expiries, failures and completions, and its",
    'committed parts) and the outputs (manifests, and the headers of parts no manifest lists yet), and',
    'writes one HTML file that needs nothing else to open: no network, no script. It shows a timeline',
    'per shard, and per work unit of a split shard (who held it when, each part as a tick, expired',
    'leases, reclaims and splits marked),',
    'tokens per second over time for all workers and each, attempts and failures with their reasons,',
    'skipped samples by reason, per-layer statistics when the manifests carry them, and the totals.',
    'The output may be a local path or gs://BUCKET/NAME.html. --json prints the data it drew.',
  ].join('\n'),
  flags: [
    DATASET_DIR_FLAG,
    {
      name: 'output',
      type: 'string',
      placeholder: 'FILE',
      description: 'the HTML file to write, local or gs://; default report-DATASET_ID.html here',
    },
    {
      name: 'output_dir',
      type: 'string',
      placeholder: 'DIR',
      env: 'SHARDLINE_OUTPUT_DIR',
      description:
        "where the run's parts are (work's --output_dir); default where its manifests went, else DATASET/activations",
    },
    ...Object.values(LEDGER_FLAGS),
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline report --dataset_dir ./sharded_dataset',
    'shardline report --dataset_dir gs://bucket/datasets/arc --output gs://bucket/reports/arc.html',
    'shardline report --dataset_dir .shardline-demo/dataset --output report.html --json',
  ],
  async run(args, ctx) {
    const session = await openDatasetSession(args, ctx);
    try {
      const status = await session.ledger.status(session.master.dataset_id);
      const manifestUri = status.shards.find((s) => s.manifest?.uri)?.manifest?.uri;
      const outputLoc = outputLocation(
        args.optStr('output_dir'),
        manifestUri,
        session.location,
        ctx.cwd,
      );
      let shown = -1;
      const data = await buildReportData({
        ledger: session.ledger,
        datasetId: session.master.dataset_id,
        output: ctx.cloud.openStore(outputLoc),
        nowMs: ctx.clock.nowMs(),
        onProgress: (done, total) => {
          if (!ctx.stderr.isTTY || total < 20) return;
          const pct = Math.floor((100 * done) / total);
          if (pct === shown) return;
          shown = pct;
          ctx.stderr.write(`\rreading shards: ${done}/${total}${done === total ? '\n' : ''}`);
        },
      });
      const html = renderReportHtml(data);
      const target = parseLocation(
        args.optStr('output') ?? `report-${session.master.dataset_id}.html`,
        ctx.cwd,
      );
      const { parent, name } = splitParent(target);
      await ctx.cloud
        .openStore(parent)
        .writeAll(name, html, { contentType: 'text/html; charset=utf-8' });
      const where = formatLocation(target);
      for (const w of data.warnings.slice(0, 5)) ctx.log.warn(w);
      if (args.bool('json')) {
        ctx.stdout.write(`${JSON.stringify({ output: where, ...data }, null, 2)}\n`);
      } else {
        const t = data.totals;
        ctx.stdout.write(
          `Report of ${data.dataset.dataset_id} (${data.state === 'in_use' ? 'running' : data.state}): ${where} (${formatBytes(Buffer.byteLength(html))})\n` +
            `  ${t.completed}/${t.shards} shards completed${t.splits ? ` (${t.units} work units, ${t.splits} split off)` : ''}, ${formatCount(t.parts)} parts, ${formatCount(t.tokens)} tokens, ${formatBytes(t.bytes)}; ` +
            `${t.claims} claims, ${t.reclaims} reclaims, ${t.expiries} expired leases, ${t.failures} failures, ${formatCount(t.skipped)} skipped samples` +
            `${data.warnings.length ? `; ${data.warnings.length} warning(s) in the report` : ''}.\n`,
        );
      }
      return EXIT.OK;
    } finally {
      await session.close();
    }
  },
};
