/**
 * Parses where data lives: a local path or a `gs://bucket/prefix` URI.
 */
import * as path from 'node:path';

import { ShardlineError } from '../errors';

/** A parsed location. */
export type Location =
  | { kind: 'local'; /** Absolute path. */ path: string }
  | {
      kind: 'gcs';
      bucket: string;
      /** Object-name prefix without leading or trailing `/`. */ prefix: string;
    };

// Cloud Storage bucket names: 3-63 characters of lowercase letters, digits, `-`, `_`, `.`,
// starting and ending with a letter or digit (dotted names may be longer; rare, allowed to 222).
const BUCKET = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;

/** Parses a path or `gs://` URI. `cwd` resolves relative local paths. */
export function parseLocation(uri: string, cwd: string): Location {
  if (uri.startsWith('gs://')) {
    const rest = uri.slice('gs://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash === -1 ? rest : rest.slice(0, slash);
    const prefix = slash === -1 ? '' : rest.slice(slash + 1).replace(/\/+$/, '');
    if (!BUCKET.test(bucket)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `"${uri}" does not name a valid Cloud Storage bucket`,
      );
    }
    if (prefix.split('/').some((s) => s === '.' || s === '..') || prefix.includes('//')) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `"${uri}" has an empty, "." or ".." path segment`,
      );
    }
    return { kind: 'gcs', bucket, prefix };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `"${uri}": only local paths and gs:// URIs are supported`,
    );
  }
  if (uri === '') throw new ShardlineError('INVALID_ARGUMENT', 'a path is empty');
  return { kind: 'local', path: path.resolve(cwd, uri) };
}

/** The location as a user would write it. */
export function formatLocation(loc: Location): string {
  return loc.kind === 'local'
    ? loc.path
    : `gs://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ''}`;
}

/**
 * Splits a location into the store root (the parent) and the last name, for inputs that are
 * one object: `gs://b/incoming/x.jsonl` -> root `gs://b/incoming`, key `x.jsonl`.
 */
export function splitParent(loc: Location): { parent: Location; name: string } {
  if (loc.kind === 'local') {
    return {
      parent: { kind: 'local', path: path.dirname(loc.path) },
      name: path.basename(loc.path),
    };
  }
  const i = loc.prefix.lastIndexOf('/');
  if (loc.prefix === '')
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `gs://${loc.bucket} names a bucket, not an object`,
    );
  return {
    parent: { kind: 'gcs', bucket: loc.bucket, prefix: i === -1 ? '' : loc.prefix.slice(0, i) },
    name: i === -1 ? loc.prefix : loc.prefix.slice(i + 1),
  };
}

/** The location of `name` inside `loc` (a subfolder or an object under it). */
export function childLocation(loc: Location, name: string): Location {
  return loc.kind === 'local'
    ? { kind: 'local', path: path.join(loc.path, name) }
    : { ...loc, prefix: [loc.prefix, name].filter(Boolean).join('/') };
}
