/**
 * The bench's dataset: master and shard metadata for N shards in the seed layout (no chunk
 * contents: claiming reads only metadata), written through a BlobStore so the same dataset
 * serves the local and the Cloud Storage baselines, and registered in our ledgers.
 */
import type { BlobStore } from '../../core/blob/store';
import type { MasterMetadata, ShardMetadata } from '../../core/dataset/metadata';
import { encodeJson, masterEntryOf } from '../../core/dataset/metadata';
import {
  FORMAT_VERSION,
  MASTER_METADATA,
  chunkFileName,
  shardMetadataKey,
} from '../../core/dataset/paths';

/** Tasks per shard in the bench dataset (the seed's 10 000 tasks over 8 shards: 1250). */
const TASKS_PER_SHARD = 1250;

/** Master and shard metadata of a bench dataset with `numShards` shards of one chunk each. */
export function benchDataset(
  datasetId: string,
  numShards: number,
): { master: MasterMetadata; shards: ShardMetadata[] } {
  const shards: ShardMetadata[] = Array.from({ length: numShards }, (_, k) => ({
    shard_id: k,
    total_shards: numShards,
    status: 'available',
    total_tasks: TASKS_PER_SHARD,
    num_chunks: 1,
    chunks: [
      {
        chunk_id: 0,
        file: chunkFileName(0),
        num_tasks: TASKS_PER_SHARD,
        size_mb: 98.5,
        bytes: 103_284_736,
        crc32c: 'AAAAAA==',
        first_task_index: k * TASKS_PER_SHARD,
      },
    ],
    assigned_to: null,
    started_at: null,
    completed_at: null,
    format_version: FORMAT_VERSION,
    dataset_id: datasetId,
    first_task_index: k * TASKS_PER_SHARD,
    total_bytes: 103_284_736,
  }));
  const master: MasterMetadata = {
    total_tasks: TASKS_PER_SHARD * numShards,
    num_shards: numShards,
    chunk_size_mb: 100,
    shards: shards.map(masterEntryOf),
    format_version: FORMAT_VERSION,
    dataset_id: datasetId,
    created_at: new Date(0).toISOString(),
    created_by: 'bench/claims',
    source: {
      uri: `bench://${datasetId}`,
      generation: null,
      bytes: 0,
      crc32c: 'AAAAAA==',
      gzip: false,
    },
    requested_num_shards: numShards,
    input_lines: TASKS_PER_SHARD * numShards,
    blank_lines: 0,
    rejected_lines: 0,
  };
  return { master, shards };
}

/** Writes the dataset's metadata files through `store`. */
export async function writeBenchDataset(
  store: BlobStore,
  dataset: { master: MasterMetadata; shards: ShardMetadata[] },
): Promise<void> {
  await Promise.all(
    dataset.shards.map((s) => store.writeAll(shardMetadataKey(s.shard_id), encodeJson(s))),
  );
  await store.writeAll(MASTER_METADATA, encodeJson(dataset.master));
}
