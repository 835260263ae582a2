/**
 * The ledger's records, each defined once (core/ledger/record-schema.ts says what follows from
 * a table): a dataset, a shard, a committed part. Field names are the glossary's words
 * (docs/glossary.md#ledger-fields) and the Firestore field and SQLite column names too. Keys
 * (`dataset_id`, `shard_id`) live outside the shard's table: they name the row.
 */
import { z } from 'zod';

import { SHARD_STATUSES } from '../dataset/metadata';
import type { Fields, RecordOf } from './record-schema';

const int = z.number().int();

/** What `complete` records about the shard's `_MANIFEST.json`. */
export const ManifestSummarySchema = z.object({
  /** Parts listed; must equal the parts committed in the ledger. */
  parts: int,
  samples: int,
  bytes: int,
  /** Where the manifest was written. */
  uri: z.string().optional(),
  /** Checksum of the manifest file. */
  checksum: z.string().optional(),
});

/** What happened to a shard, as its history keeps it (heartbeats and commits are not kept). */
export const SHARD_EVENT_KINDS = [
  'claim',
  'release',
  'expire',
  'fail',
  'complete',
  'force-complete',
  'force-fail',
  'reset',
  'split',
] as const;

/** One event of a shard's history: when (ms), what, who, and the claim's epoch. */
export const ShardEventSchema = z.object({
  at: int,
  kind: z.enum(SHARD_EVENT_KINDS),
  /** The worker (or operator) it concerns. */
  worker: z.string().nullable(),
  /** The epoch of the claim it concerns. */
  epoch: int,
  /** Set when it counted a failed attempt. */
  attempt: z.boolean().optional(),
  /** Why (an error, a reason), cut to 200 characters. */
  note: z.string().optional(),
});

/** A shard event. */
export type ShardEvent = z.infer<typeof ShardEventSchema>;

/** Events a shard keeps: the most recent; `history_dropped` counts the older ones let go. */
export const MAX_SHARD_HISTORY = 100;

/** A shard, as the ledger stores it (times in ms; callers see ISO strings). */
export const SHARD_FIELDS = {
  /** `available`, `in_use`, `completed` or `failed`. */
  status: { kind: 'enum', values: SHARD_STATUSES },
  /** The holder while `in_use`; who completed it once `completed`; null otherwise. */
  assigned_to: { kind: 'text', nullable: true },
  /** When the current (or last) claim was granted. */
  started_at: { kind: 'ms', nullable: true },
  completed_at: { kind: 'ms', nullable: true },
  /** When the lease runs out; another worker may claim the shard after it. */
  lease_expires_at: { kind: 'ms', nullable: true },
  /** Last heartbeat (or claim). */
  heartbeat_at: { kind: 'ms', nullable: true },
  /** The lease length of the current claim, renewed by each heartbeat. */
  lease_ms: { kind: 'int', nullable: true },
  /** Raised by every claim; the fencing token. 0 before the first claim. */
  epoch: { kind: 'int' },
  /** Failed attempts so far (fail, or an expired lease). */
  attempts: { kind: 'int' },
  /** After this many failed attempts the shard is `failed`. */
  max_attempts: { kind: 'int' },
  /** Why the last attempt failed. */
  last_error: { kind: 'text', nullable: true },
  /**
   * Backoff after a failed attempt: the shard is not claimable before this time (null: at
   * once). Grows with the attempts (shard-state.ts `retryDelayMs`).
   */
  retry_at: { kind: 'ms', nullable: true },
  /**
   * When the last holder lost without notice (its lease expired) went silent: its last
   * heartbeat. Other holders silent at the same time make it a fleet-wide loss, which counts
   * no attempt (shard-state.ts `applyExpiry`).
   */
  lost_at: { kind: 'ms', nullable: true },
  total_tasks: { kind: 'int' },
  first_task_index: { kind: 'int' },
  num_chunks: { kind: 'int' },
  total_bytes: { kind: 'int' },
  /**
   * The unit's range, for a shard that was split into work units (docs/architecture.md#work-units):
   * its first task (null: the shard's `first_task_index`, as for every unit 0) and its end,
   * exclusive (null: the shard's end). A split moves the split unit's end down and gives the
   * new unit the rest; the ends of a shard's units only ever move down.
   */
  start_task_index: { kind: 'int', nullable: true },
  end_task_index: { kind: 'int', nullable: true },
  /**
   * The holder's reservation: tasks below it may be in its hands (read, queued, extracted, not
   * yet committed), so a split never cuts below it. The holder raises it with its heartbeats
   * before it reads further (shard-state.ts `applyHeartbeat`). Null when nobody holds the unit
   * or the holder has reserved nothing beyond what it committed.
   */
  reserved_task_index: { kind: 'int', nullable: true },
  /** The unit this one was split from (null for unit 0). */
  split_from: { kind: 'int', nullable: true },
  /**
   * Tasks per part as the unit it was split from knew it when the split was made (its own
   * committed parts' measure, else what it had itself been given this way); null for unit 0,
   * for a unit split off before any part was measured, and after a reset that discards the
   * parts. Until the unit commits a part of its own, its splits keep at least this many tasks a
   * side (shard-state.ts `tasksPerPart`, `splitPoint`).
   */
  split_tasks_per_part: { kind: 'int', nullable: true },
  /**
   * On unit 0 only (the shard's own row): how many units the shard has (1 until it is split;
   * units are numbered 0, 1, 2… in the order they were split off) and how many of them are
   * completed. Every split and every completion writes unit 0, so concurrent completions are
   * ordered and exactly one of them is the shard's last (shard-state.ts `applyComplete`).
   * 0 on the other units.
   */
  unit_count: { kind: 'int', absent: 1 },
  units_completed: { kind: 'int', absent: 0 },
  /** Where the next holder resumes: the last committed part's `next_task_index`. */
  next_task_index: { kind: 'int' },
  /**
   * And the sample within that task to resume at: parts are cut by size, so a task's samples
   * may span two parts (0 when the last part ended at a task boundary).
   */
  next_sample: { kind: 'int', absent: 0 },
  /**
   * What the shard's committed parts were extracted with (a hash of the model, tokenizer,
   * template, layers, dtype, positions and prompt settings), fixed by its first part: a worker
   * with other settings cannot commit into it. Null before the first part, and after a reset
   * that discards the parts.
   */
  run_fingerprint: { kind: 'text', nullable: true },
  /**
   * `next_task_index` and `next_sample` when the current claim was granted (null when not
   * held): an expired lease whose holder committed parts since counts no attempt (shard-state.ts
   * `applyExpiry`). The sample counts too: parts may end inside a task.
   */
  claim_next_task_index: { kind: 'int', nullable: true },
  claim_next_sample: { kind: 'int', nullable: true },
  parts_committed: { kind: 'int' },
  samples_committed: { kind: 'int' },
  bytes_committed: { kind: 'int' },
  /** Set when the shard was completed or failed with `--force`; cleared by claim and reset. */
  forced_action: { kind: 'enum', values: ['complete', 'fail'], nullable: true },
  forced_by: { kind: 'text', nullable: true },
  forced_at: { kind: 'ms', nullable: true },
  /** Who last reset the shard, and when. */
  reset_by: { kind: 'text', nullable: true },
  reset_at: { kind: 'ms', nullable: true },
  manifest: { kind: 'json', schema: ManifestSummarySchema, nullable: true },
  /**
   * Claims, releases, expiries, failures, completions, resets, splits: the shard's past for
   * `shardline report`, the most recent `MAX_SHARD_HISTORY` of them.
   */
  history: { kind: 'json', schema: z.array(ShardEventSchema), absent: [] },
  /** Events dropped from the front of `history` to keep it bounded. */
  history_dropped: { kind: 'int', absent: 0 },
  updated_at: { kind: 'ms' },
} as const satisfies Fields;

/** A shard's state as stored, times in ms. */
export type ShardState = RecordOf<typeof SHARD_FIELDS>;

/** A committed part, as the ledger records it. */
export const PART_FIELDS = {
  dataset_id: { kind: 'text' },
  shard_id: { kind: 'int' },
  /** The work unit that committed it (0: the shard's own; see the shard's `units`). */
  unit: { kind: 'int', absent: 0 },
  /** 0, 1, 2… within its unit: a unit's parts are committed in order, without gaps. */
  part_index: { kind: 'int' },
  /**
   * File stem in the shard's folder, deterministic from unit, index and where the part was cut:
   * `part_00000` (unit 0), `part_u2_00000` (unit 2), with `_to{task}` when the part was cut at
   * the unit's end where a split put it (worker/extraction/part-writer.ts `unitPartName`).
   */
  name: { kind: 'text' },
  /** Global index of the first task the part covers (= the unit's `next_task_index`). */
  first_task_index: { kind: 'int' },
  /** The first sample of that task in the part (= the unit's `next_sample`; 0 at a task start). */
  first_sample: { kind: 'int', absent: 0 },
  /** Global index of the last task the part has samples of. */
  last_task_index: { kind: 'int' },
  /**
   * Where the worker resumes after this part: the task, and the sample within it
   * (`next_sample`, 0 when the part ends at a task boundary, one past `last_task_index`).
   */
  next_task_index: { kind: 'int' },
  next_sample: { kind: 'int', absent: 0 },
  /** Samples (prompts) written in the part. */
  samples: { kind: 'int' },
  /** Bytes of the part's files together. */
  bytes: { kind: 'int' },
  /** File name -> checksum (e.g. CRC32C base64) of each file of the part. */
  checksums: { kind: 'json', schema: z.record(z.string(), z.string()) },
  /** The run fingerprint the part was extracted with (see the shard's `run_fingerprint`). */
  fingerprint: { kind: 'text', absent: '' },
  /** The claim that committed it. */
  worker_id: { kind: 'text' },
  epoch: { kind: 'int' },
  committed_at: { kind: 'iso' },
} as const satisfies Fields;

/** A registered dataset. */
export const DATASET_FIELDS = {
  dataset_id: { kind: 'text' },
  /** Where the dataset lives (local path or gs:// URI), as registered. */
  dataset_uri: { kind: 'text' },
  num_shards: { kind: 'int' },
  total_tasks: { kind: 'int' },
  /** The attempt budget every shard was registered with. */
  max_attempts: { kind: 'int' },
  /** Hash of what identifies the dataset's content; a different dataset under the same id conflicts. */
  fingerprint: { kind: 'text' },
  registered_at: { kind: 'iso' },
} as const satisfies Fields;
