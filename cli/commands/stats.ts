/**
 * `shardline stats`: the per-layer statistics of a dataset's stored activations, from its
 * manifests (core/layer-stats.ts): rows, mean norm, the SAE scaling factor
 * `sqrt(hidden) / mean_norm`, mean variance; `--json` adds the mean and variance vectors.
 * Before the dataset is complete it merges the shards completed so far, and says so.
 */
import type { Command } from '../command';
import { COMMON_FLAGS } from '../command';
import { EXIT } from '../exit-codes';
import { formatTable } from '../format';
import { OUTPUT_DIR_FLAG, locateOutputs, readOutputs } from '../outputs';
import { DATASET_DIR_FLAG } from '../wiring';
import { formatLocation } from '../../core/blob/location';
import { ShardlineError } from '../../core/errors';
import { mergeStats, summarize } from '../../core/layer-stats';
import type { LayerStats } from '../../core/layer-stats';

/** The layer number of a `resid_post.L` key. */
function layerOf(key: string): number {
  return Number(key.slice(key.lastIndexOf('.') + 1));
}

/** `shardline stats`. */
export const statsCommand: Command = {
  name: 'stats',
  summary: "per-layer statistics of a dataset's activations (mean, variance, norm, scaling factor)",
  usage: '--dataset_dir DIR [--output_dir DIR] [--layer L] [--json]',
  description:
    'Read from the manifests: figures over every stored row, merged exactly over parts and ' +
    'shards (float64). The scaling factor sqrt(hidden) / mean_norm scales rows to an expected ' +
    'squared norm of hidden, as SAE trainers normalise. Before every shard is completed the ' +
    'figures cover the completed shards only, and the output says so.',
  flags: [
    DATASET_DIR_FLAG,
    OUTPUT_DIR_FLAG,
    {
      name: 'layer',
      type: 'int',
      min: 0,
      placeholder: 'L',
      description: 'only this layer',
    },
    COMMON_FLAGS.json,
    COMMON_FLAGS.verbose,
    COMMON_FLAGS.log_format,
  ],
  examples: [
    'shardline stats --dataset_dir ./sharded_dataset',
    'shardline stats --dataset_dir gs://bucket/datasets/arc --layer 12 --json > layer12.json',
  ],
  async run(args, ctx) {
    const { location, store } = await locateOutputs(args, ctx);
    const outputs = await readOutputs(location, store);
    const complete = outputs.dataset !== null;
    const head = outputs.dataset ?? outputs.shards[0]!;
    const all: Record<string, LayerStats> =
      outputs.dataset?.stats ?? mergeStats(outputs.shards.map((s) => s.stats));
    const fingerprints = [...new Set(outputs.shards.map((s) => s.fingerprint))];
    const wanted = args.optNum('layer');
    const keys = Object.keys(all)
      .filter((k) => wanted === undefined || layerOf(k) === wanted)
      .sort((a, b) => layerOf(a) - layerOf(b));
    if (keys.length === 0) {
      const have = Object.keys(all)
        .map(layerOf)
        .sort((a, b) => a - b);
      throw new ShardlineError(
        'NOT_FOUND',
        wanted === undefined
          ? `${formatLocation(location)}: the manifests carry no statistics (parts written before format version 2?)`
          : `layer ${wanted} was not extracted; the outputs hold layers ${have.join(', ')}`,
      );
    }
    const layers = keys.map((k) => ({ layer: layerOf(k), ...summarize(all[k]!), stats: all[k]! }));
    const shardsDone = outputs.dataset?.num_shards ?? outputs.shards.length;
    if (args.bool('json')) {
      const doc = {
        output_dir: formatLocation(location),
        complete,
        shards_completed: shardsDone,
        fingerprint: complete ? outputs.dataset!.fingerprint : fingerprints.join(','),
        model: head.model,
        dtype: head.dtype,
        positions: head.positions,
        hidden_size: head.hidden_size,
        layers: layers.map(({ stats, ...summary }) => ({
          ...summary,
          mean: stats.mean,
          variance: stats.m2.map((v) => (stats.count > 0 ? v / stats.count : 0)),
        })),
      };
      ctx.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
      return EXIT.OK;
    }
    const fmt = (x: number): string =>
      Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(4) : x.toFixed(4);
    ctx.stdout.write(
      `Statistics of ${formatLocation(location)}\n` +
        (complete
          ? `  complete: ${shardsDone} shards, fingerprint ${head.fingerprint}\n`
          : `  partial: ${shardsDone} shard(s) completed so far (no dataset manifest yet)\n`) +
        `  model ${head.model}, ${head.dtype}, positions ${head.positions}, hidden ${head.hidden_size}\n\n` +
        `${formatTable(
          ['layer', 'rows', 'mean norm', 'scaling factor', 'mean variance', '|mean|'],
          layers.map((l) => [
            String(l.layer),
            l.rows.toLocaleString('en-US'),
            fmt(l.mean_norm),
            fmt(l.norm_scaling_factor),
            fmt(l.mean_variance),
            fmt(l.mean_vector_norm),
          ]),
          ['right', 'right', 'right', 'right', 'right', 'right'],
        )}\n\n` +
        'scaling factor = sqrt(hidden) / mean norm; --json adds the mean and variance vectors\n',
    );
    if (!complete && fingerprints.length > 1)
      ctx.stderr.write(
        `warning: the completed shards carry ${fingerprints.length} run fingerprints; run shardline verify\n`,
      );
    return EXIT.OK;
  },
};
