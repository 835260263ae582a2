/**
 * `shardline verify`: checks a dataset's outputs end to end before anyone trains on them
 * (cli/verify.ts does the checking): files present and intact (CRC32C), every task once,
 * counts against the ledger and the manifests, one run fingerprint, statistics consistent with
 * their parts. Exit 9 when it finds a problem, each printed with the file it concerns.
 */
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { formatBytes } from '../format';
import { OUTPUT_DIR_FLAG, locateOutputs } from '../outputs';
import { ProgressBar } from '../progress';
import { renderVerifyReport } from '../verify-report';
import {
  DEFAULT_VERIFY_CONCURRENCY,
  MANIFEST_STATS_TOLERANCE,
  RECOMPUTE_STATS_TOLERANCE,
  verifyOutputs,
} from '../verify';
import type { VerifyProgress } from '../verify';
import { DATASET_DIR_FLAG, LEDGER_FLAGS, openDatasetSession } from '../wiring';

/** Off a terminal, one progress line on stderr this often. */
const PROGRESS_LINE_EVERY_MS = 10_000;

/** `shardline verify`. */
export const verifyCommand: Command = {
  name: 'verify',
  summary:
    "check a dataset's outputs end to end: checksums, every task once, counts, fingerprint, statistics",
  usage: '--dataset_dir DIR [--output_dir DIR] [--recompute_stats] [--json]',
  description:
    'Reads every part listed by the shard manifests (and, while the dataset runs, every part ' +
    'committed in the ledger) once, streamed, and checks: both files present with the recorded ' +
    'sizes and CRC32C; each part consistent with itself (tensors, index lines, metadata); every ' +
    'task of a completed shard present exactly once or recorded as skipped with a reason; ' +
    'samples, rows, tokens, parts and bytes equal across parts, manifests and the ledger; one ' +
    "run fingerprint throughout; the manifests' statistics equal to the merge of their parts' " +
    `(within ${MANIFEST_STATS_TOLERANCE} relative). --recompute_stats also recomputes each ` +
    `part's statistics from its rows in float64 (within ${RECOMPUTE_STATS_TOLERANCE} relative ` +
    'to the largest magnitude of each vector). Writes nothing. Exits 9 when anything is wrong, ' +
    'naming the file and the problem; --json gives the same report as one document.',
  flags: [
    DATASET_DIR_FLAG,
    OUTPUT_DIR_FLAG,
    ...Object.values(LEDGER_FLAGS),
    {
      name: 'recompute_stats',
      type: 'boolean',
      description: "recompute every part's statistics from its rows (float64) and compare",
    },
    {
      name: 'parallel',
      type: 'int',
      min: 1,
      max: 64,
      default: DEFAULT_VERIFY_CONCURRENCY,
      placeholder: 'N',
      description: 'parts read at once',
    },
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline verify --dataset_dir ./sharded_dataset',
    'shardline verify --dataset_dir gs://bucket/datasets/arc --recompute_stats --json > verify.json',
  ],
  async run(args, ctx) {
    const session = await openDatasetSession(args, ctx);
    try {
      const { store } = await locateOutputs(args, ctx);
      const bar = new ProgressBar(ctx.stderr, ctx.clock, 'verify');
      let lastLineMs = ctx.clock.nowMs();
      const startedMs = lastLineMs;
      const onProgress = (p: VerifyProgress): void => {
        if (bar.enabled) {
          bar.update(p.bytesDone, p.bytesTotal);
          return;
        }
        const now = ctx.clock.nowMs();
        if (now - lastLineMs < PROGRESS_LINE_EVERY_MS) return;
        lastLineMs = now;
        ctx.log.info('verify progress', {
          parts: `${p.partsDone}/${p.partsTotal}`,
          checked: `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}`,
          mb_per_s: Number((p.bytesDone / 1e3 / Math.max(1, now - startedMs)).toFixed(1)),
        });
      };
      const report = await verifyOutputs({
        output: store,
        master: session.master,
        ledger: session.ledger,
        clock: ctx.clock,
        recomputeStats: args.bool('recompute_stats'),
        concurrency: args.num('parallel'),
        onProgress,
        signal: ctx.signal,
      });
      bar.finish();
      ctx.stdout.write(
        args.bool('json') ? `${JSON.stringify(report, null, 2)}\n` : renderVerifyReport(report),
      );
      return report.problems.length === 0 ? EXIT.OK : EXIT.VERIFY_FAILED;
    } finally {
      await session.close();
    }
  },
};
