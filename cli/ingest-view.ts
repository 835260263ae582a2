/**
 * How the CLI shows ingest records (core/ingest/records.ts, kept in Firestore): what became of an upload.
 */
import type { Firestore } from '@google-cloud/firestore';

import { systemClock } from '../core/clock';
import type { IngestRecord } from '../core/ingest/records';
import {
  DEFAULT_INGEST_COLLECTIONS,
  FirestoreIngestRecords,
} from '../core/ingest/firestore-records';
import type { IngestRecords } from '../core/ingest/records';
import type { FlagSpec, ParsedArgs } from './args';

/** `--ingests_collection`. */
export const INGESTS_COLLECTION_FLAG = {
  name: 'ingests_collection',
  type: 'string',
  default: DEFAULT_INGEST_COLLECTIONS.ingests,
  env: 'SHARDLINE_INGESTS_COLLECTION',
  placeholder: 'NAME',
  description: 'Firestore collection of the ingest records (cloud uploads)',
} as const satisfies FlagSpec;

/** The ingest-records store for the CLI. */
export function ingestRecords(db: Firestore, args: ParsedArgs): IngestRecords {
  return new FirestoreIngestRecords(db, systemClock, { ingests: args.str('ingests_collection') });
}

/** One line (or a few) describing an ingest. */
export function describeIngest(r: IngestRecord): string {
  const what = `gs://${r.bucket}/${r.object} (generation ${r.generation}) -> dataset ${r.dataset_id}`;
  switch (r.state) {
    case 'completed':
      return `Ingest: completed ${r.finished_at ?? ''}: ${what}${r.stats ? `; ${r.stats.total_tasks} tasks in ${r.stats.num_shards} shards, ${r.stats.rejected_lines} rejected lines` : ''}`;
    case 'failed': {
      const bad = r.bad_line
        ? `\n  first bad line: line ${r.bad_line.line}: ${r.bad_line.reason}: ${r.bad_line.preview}`
        : '';
      return `Ingest: FAILED ${r.finished_at ?? ''}: ${what}\n  error: ${r.error ?? 'unknown'}${bad}`;
    }
    case 'running': {
      const progress =
        r.mode === 'fanout'
          ? r.phase === 'scan'
            ? `scanning ${r.ranges_done}/${r.ranges.length} ranges`
            : r.phase === 'write'
              ? `writing ${r.shards_done}/${r.shards} shards`
              : r.phase
          : r.phase;
      return `Ingest: running (${progress}, ${r.mode}, attempt ${r.attempts + 1}) since ${r.started_at}: ${what}${r.error ? `\n  last error: ${r.error}` : ''}`;
    }
  }
}
