/**
 * Dataset ids: safe in every place they are used (Firestore document ids, object names,
 * log fields, folder names): 1 to 63 characters of `a-z`, `0-9`, `-`, `_`, `.`, starting with a
 * letter or digit, never `.` or `..`.
 */
import { ShardlineError } from '../errors';

/** Longest dataset id. */
export const MAX_DATASET_ID = 63;
const VALID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Checks a dataset id given by a user; returns it. */
export function checkDatasetId(id: string): string {
  if (!VALID.test(id) || id.includes('..')) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `dataset id ${JSON.stringify(id)} must be 1-${MAX_DATASET_ID} characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit`,
    );
  }
  return id;
}

/**
 * A dataset id derived from any name (a folder or an object name): lower-cased, unsafe runs
 * replaced by `-`, extensions `.jsonl`/`.gz` dropped, cut to fit. Never empty.
 */
export function slugDatasetId(name: string, maxLength = MAX_DATASET_ID): string {
  const base = trimEndToAlnum(
    trimEndToAlnum(
      name
        .normalize('NFKD')
        .replace(/\.(jsonl|json|ndjson)(\.gz)?$/i, '')
        .replace(/\.gz$/i, '')
        .toLowerCase()
        .replace(/[^a-z0-9._-]+/g, '-')
        .replace(/\.{2,}/g, '.')
        .replace(/^[^a-z0-9]+/, ''),
    ).slice(0, maxLength),
  );
  return base === '' ? 'dataset' : base;
}

/**
 * Drops trailing characters other than `a-z0-9`. A loop, not `/[^a-z0-9]+$/`: that regex
 * backtracks over every run of separators in the string, quadratic in the run's length
 * (6 s for a 50 000-character name).
 */
function trimEndToAlnum(s: string): string {
  let end = s.length;
  while (end > 0 && !/[a-z0-9]/.test(s[end - 1]!)) end--;
  return s.slice(0, end);
}
