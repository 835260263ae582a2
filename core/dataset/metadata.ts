/**
 * The dataset's metadata documents: `master_metadata.json` and `shard_XXX/metadata.json`.
 *
 * Field names and order follow the seed document exactly (`total_tasks`, `num_shards`,
 * `chunk_size_mb`, `shards[{shard_id, directory, status}]`; `shard_id`, `total_shards`,
 * `status`, `total_tasks`, `num_chunks`, `chunks[{chunk_id, file, num_tasks, size_mb}]`,
 * `assigned_to`, `started_at`, `completed_at`); our additions come after them. The status
 * fields are the creation-time snapshot: the ledger is the source of truth.
 */
import { z } from 'zod';

import type { BlobStore } from '../blob/store';
import { ShardlineError, errorCode } from '../errors';
import { FORMAT_VERSION, MASTER_METADATA, chunkFileName, shardDirName } from './paths';

/** The status words of the seed, plus `failed` (max attempts reached). */
export const SHARD_STATUSES = ['available', 'in_use', 'completed', 'failed'] as const;
/** A shard's status in the ledger. */
export type ShardStatus = (typeof SHARD_STATUSES)[number];

const count = z.number().int().nonnegative();
const isoTime = z.string().min(1);

/** One chunk file of a shard. */
export const ChunkInfoSchema = z.object({
  chunk_id: count,
  file: z.string().regex(/^chunk_\d{4,}\.jsonl$/),
  num_tasks: count,
  /** bytes / 1048576, as the seed reports it. */
  size_mb: z.number().nonnegative(),
  /** Exact size in bytes. */
  bytes: count,
  /** CRC32C of the file, big-endian, base64: the same form as Cloud Storage's `crc32c`. */
  crc32c: z.string(),
  /** Global index of the chunk's first task. */
  first_task_index: count,
});
/** One chunk file of a shard. */
export type ChunkInfo = z.infer<typeof ChunkInfoSchema>;

/** `shard_XXX/metadata.json`. */
export const ShardMetadataSchema = z.object({
  shard_id: count,
  total_shards: count,
  status: z.enum(SHARD_STATUSES),
  total_tasks: count,
  num_chunks: count,
  chunks: z.array(ChunkInfoSchema),
  assigned_to: z.string().nullable(),
  started_at: isoTime.nullable(),
  completed_at: isoTime.nullable(),
  format_version: z.literal(FORMAT_VERSION),
  dataset_id: z.string(),
  /** Global index of the shard's first task; the shard holds `[first, first + total_tasks)`. */
  first_task_index: count,
  /** Bytes of all chunks together. */
  total_bytes: count,
});
/** `shard_XXX/metadata.json`. */
export type ShardMetadata = z.infer<typeof ShardMetadataSchema>;

/** One shard's entry in `master_metadata.json`. */
export const MasterShardEntrySchema = z.object({
  shard_id: count,
  directory: z.string(),
  status: z.enum(SHARD_STATUSES),
  total_tasks: count,
  first_task_index: count,
  num_chunks: count,
  total_bytes: count,
});
/** One shard's entry in `master_metadata.json`. */
export type MasterShardEntry = z.infer<typeof MasterShardEntrySchema>;

/** Where the dataset came from. */
export const SourceInfoSchema = z.object({
  /** The input as given: a local path or `gs://bucket/object`. */
  uri: z.string(),
  /** Cloud Storage object generation, when the input is an object. */
  generation: z.string().nullable(),
  /** Bytes read from the input (after gunzip for `.gz`). */
  bytes: count,
  /** CRC32C of those bytes (big-endian, base64). */
  crc32c: z.string(),
  /** Whether the input was gzip-compressed. */
  gzip: z.boolean(),
});
/** Where the dataset came from. */
export type SourceInfo = z.infer<typeof SourceInfoSchema>;

/** `master_metadata.json`. */
export const MasterMetadataSchema = z.object({
  total_tasks: count,
  num_shards: count,
  chunk_size_mb: z.number().positive(),
  shards: z.array(MasterShardEntrySchema),
  format_version: z.literal(FORMAT_VERSION),
  dataset_id: z.string(),
  created_at: isoTime,
  created_by: z.string(),
  source: SourceInfoSchema,
  /** `--num_shards` as asked; `num_shards` is smaller only when there were fewer tasks. */
  requested_num_shards: count,
  /** Lines in the input, blank and rejected included. */
  input_lines: count,
  /** Lines with only whitespace: skipped, counted. */
  blank_lines: count,
  /** Lines that were not a JSON object: listed in `rejected.jsonl`. */
  rejected_lines: count,
});
/** `master_metadata.json`. */
export type MasterMetadata = z.infer<typeof MasterMetadataSchema>;

/** One line of `rejected.jsonl`. */
export const RejectedLineSchema = z.object({
  /** 1-based line number in the input. */
  line: z.number().int().positive(),
  /** Byte offset of the line's start in the (decompressed) input. */
  offset: count,
  /** Why the line was rejected. */
  reason: z.string(),
  /** Byte length of the line. */
  bytes: count,
  /** The line's first bytes, for a person to recognise it (never the whole payload). */
  preview: z.string(),
});
/** One line of `rejected.jsonl`. */
export type RejectedLine = z.infer<typeof RejectedLineSchema>;

/**
 * The master metadata of the dataset in `store`. Fails with `NOT_FOUND` when there is none
 * (not a dataset, or `create` has not finished), `INVALID_INPUT` when it is not valid.
 */
export async function readMasterMetadata(store: BlobStore): Promise<MasterMetadata> {
  let text: string;
  try {
    text = (await store.readAll(MASTER_METADATA)).toString('utf8');
  } catch (e: unknown) {
    if (errorCode(e) !== 'NOT_FOUND') throw e;
    throw new ShardlineError(
      'NOT_FOUND',
      `${store.root} has no ${MASTER_METADATA}: not a shardline dataset, or \`shardline create\` has not finished`,
    );
  }
  return decodeJson(MasterMetadataSchema, text, store.uriOf(MASTER_METADATA));
}

/**
 * Parses and validates a metadata document; a bad one fails with the file named.
 * `what` is a human name for the document (its path or URI).
 */
export function decodeJson<T>(schema: z.ZodType<T>, text: string, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e: unknown) {
    throw new ShardlineError('INVALID_INPUT', `${what} is not valid JSON`, { cause: e });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
    throw new ShardlineError(
      'INVALID_INPUT',
      `${what} is not a valid shardline document${where}: ${issue?.message ?? 'invalid'}`,
      { details: { issues: parsed.error.issues.slice(0, 5) } },
    );
  }
  return parsed.data;
}

/** The master entry for a shard, derived from its metadata. */
export function masterEntryOf(shard: ShardMetadata): MasterShardEntry {
  return {
    shard_id: shard.shard_id,
    directory: shardDirName(shard.shard_id),
    status: shard.status,
    total_tasks: shard.total_tasks,
    first_task_index: shard.first_task_index,
    num_chunks: shard.num_chunks,
    total_bytes: shard.total_bytes,
  };
}

/** Serialises a metadata document the way the seed's files look (2-space indent, newline). */
export function encodeJson(doc: unknown): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Checks the cross-field invariants of a shard's metadata (counts agree with chunks). */
export function checkShardInvariants(shard: ShardMetadata): string[] {
  const problems: string[] = [];
  if (shard.num_chunks !== shard.chunks.length) {
    problems.push(`num_chunks ${shard.num_chunks} != ${shard.chunks.length} chunks listed`);
  }
  let tasks = 0;
  let bytes = 0;
  let next = shard.first_task_index;
  shard.chunks.forEach((c, i) => {
    if (c.chunk_id !== i) problems.push(`chunk ${i} has chunk_id ${c.chunk_id}`);
    if (c.file !== chunkFileName(i)) problems.push(`chunk ${i} is named ${c.file}`);
    if (c.first_task_index !== next)
      problems.push(`chunk ${i} starts at task ${c.first_task_index}, expected ${next}`);
    next += c.num_tasks;
    tasks += c.num_tasks;
    bytes += c.bytes;
  });
  if (tasks !== shard.total_tasks)
    problems.push(`chunks hold ${tasks} tasks, total_tasks says ${shard.total_tasks}`);
  if (bytes !== shard.total_bytes)
    problems.push(`chunks hold ${bytes} bytes, total_bytes says ${shard.total_bytes}`);
  return problems;
}
