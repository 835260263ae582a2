/**
 * Finding a dataset's outputs from the command line (`stats`, `verify`): `--output_dir`, else
 * `--dataset_dir` itself when it holds the outputs (the user pointed at them), else
 * `DATASET/activations`, where `work` writes by default. Reads the manifests found there.
 */
import type { FlagSpec, ParsedArgs } from './args';
import type { CommandContext } from './command';
import { childLocation, formatLocation, parseLocation } from '../core/blob/location';
import type { Location } from '../core/blob/location';
import type { BlobStore } from '../core/blob/store';
import { ACTIVATIONS_DIR, MASTER_METADATA } from '../core/dataset/paths';
import { ShardlineError } from '../core/errors';
import { MANIFEST_FILE } from '../core/rollup/manifests';
import type { DatasetManifest, ShardManifest } from '../core/rollup/manifests';

/** `--output_dir`, for commands that read outputs. */
export const OUTPUT_DIR_FLAG = {
  name: 'output_dir',
  type: 'string',
  placeholder: 'DIR',
  env: 'SHARDLINE_OUTPUT_DIR',
  description: 'where the parts are (local or gs://); default DATASET/activations',
} as const satisfies FlagSpec;

/** A dataset's outputs: where they are and what their manifests say. */
export interface Outputs {
  location: Location;
  store: BlobStore;
  /** `_MANIFEST.json`, once every shard is completed; null before. */
  dataset: DatasetManifest | null;
  /** Every `shard_XXX/_MANIFEST.json` present, in shard order. */
  shards: ShardManifest[];
}

/** Where the outputs are (see the file comment); fails with `NOT_FOUND` when nowhere. */
export async function locateOutputs(
  args: ParsedArgs,
  ctx: Pick<CommandContext, 'cwd' | 'cloud'>,
): Promise<{ location: Location; store: BlobStore }> {
  const explicit = args.optStr('output_dir');
  if (explicit) {
    const location = parseLocation(explicit, ctx.cwd);
    return { location, store: ctx.cloud.openStore(location) };
  }
  const datasetDir = parseLocation(args.str('dataset_dir'), ctx.cwd);
  const here = ctx.cloud.openStore(datasetDir);
  const holdsOutputs =
    (await here.stat(MANIFEST_FILE)) !== null || (await here.stat(MASTER_METADATA)) === null;
  if (holdsOutputs) return { location: datasetDir, store: here };
  const location = childLocation(datasetDir, ACTIVATIONS_DIR);
  return { location, store: ctx.cloud.openStore(location) };
}

/** Reads the manifests of the outputs at `store`; `NOT_FOUND` when there is none at all. */
export async function readOutputs(location: Location, store: BlobStore): Promise<Outputs> {
  const shards: ShardManifest[] = [];
  for await (const info of store.list('shard_')) {
    if (!/^shard_\d{3,}\/_MANIFEST\.json$/.test(info.key)) continue;
    shards.push(JSON.parse((await store.readAll(info.key)).toString('utf8')) as ShardManifest);
  }
  shards.sort((a, b) => a.shard_id - b.shard_id);
  const top = await store.stat(MANIFEST_FILE);
  const dataset = top
    ? (JSON.parse((await store.readAll(MANIFEST_FILE)).toString('utf8')) as DatasetManifest)
    : null;
  if (!dataset && shards.length === 0)
    throw new ShardlineError(
      'NOT_FOUND',
      `${formatLocation(location)} holds no manifest: no shard has completed there yet ` +
        '(pass --output_dir if the parts were written elsewhere)',
    );
  return { location, store, dataset, shards };
}
