/**
 * The blob store port: the few object operations shardline needs, with a local-filesystem
 * and a Cloud Storage implementation side by side (docs/conventions.md#narrow-ports). Both pass
 * one contract suite (test/support/blob-contract.ts).
 *
 * Keys are `/`-separated paths relative to the store's root. `checkKey` refuses anything that
 * could leave the root (`..`, absolute paths, backslashes, NUL), whatever the implementation.
 */
import type { Readable } from 'node:stream';

import { ShardlineError } from '../errors';

/** What a store knows about one object. */
export interface BlobInfo {
  /** Key relative to the store root. */
  key: string;
  /** Size in bytes. */
  size: number;
  /**
   * Version of the object, a decimal number: the Cloud Storage generation, or locally the
   * file's modification time in nanoseconds, which the local store keeps unique per key
   * (core/blob/local.ts). Changes whenever the content is replaced, and is never one the key
   * had before.
   */
  generation: string;
  /** CRC32C (big-endian, base64) when the store knows it without reading the object. */
  crc32c?: string;
}

/** A half-open byte range `[start, end)`; `end` omitted means "to the end". */
export interface ByteRange {
  start: number;
  end?: number;
}

/** Options for writing an object. */
export interface WriteOptions {
  /** MIME type; default `application/octet-stream`. */
  contentType?: string;
  /**
   * Only write when the object does not exist yet (Cloud Storage `ifGenerationMatch: 0`;
   * locally an exclusive create). Fails with code `ALREADY_EXISTS` otherwise.
   */
  createOnly?: boolean;
}

/** A streaming write of one object; nothing is visible under the key until `close()`. */
export interface BlobWriter {
  /**
   * Appends bytes. Resolves when the writer can take more (back-pressure); the bytes may be
   * written later, so the caller must not change them afterwards.
   */
  write(data: Uint8Array): Promise<void>;
  /** Finishes the object and makes it visible; resolves with what was stored. */
  close(): Promise<BlobInfo>;
  /** Abandons the write; nothing is left under the key. Safe to call more than once. */
  abort(): Promise<void>;
}

/** The port. */
export interface BlobStore {
  /** The root as a user would write it: an absolute path, or `gs://bucket/prefix`. */
  readonly root: string;
  /** A readable stream of the object (or of a byte range of it). Errors with `NOT_FOUND`. */
  read(key: string, range?: ByteRange): Readable;
  /** The whole object in memory; for small documents (metadata, manifests). */
  readAll(key: string): Promise<Buffer>;
  /** Starts a streaming write. */
  writer(key: string, options?: WriteOptions): BlobWriter;
  /** Writes a whole object at once; for small documents. */
  writeAll(key: string, data: Uint8Array | string, options?: WriteOptions): Promise<BlobInfo>;
  /** Facts about the object, or null when it does not exist. */
  stat(key: string): Promise<BlobInfo | null>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<BlobInfo>;
  /** Removes the object; a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** The URI a user would use for `key` (`/abs/path/key` or `gs://bucket/prefix/key`). */
  uriOf(key: string): string;
}

/**
 * Validates a key: relative, `/`-separated, no empty, `.` or `..` segment, no backslash or
 * control character, at most 1024 bytes (Cloud Storage's object-name limit). Returns it.
 * An empty key is allowed only where `allowEmpty` (a list prefix of "everything").
 */
export function checkKey(key: string, allowEmpty = false): string {
  if (key === '' && allowEmpty) return key;
  const bad = (why: string): never => {
    throw new ShardlineError('INVALID_ARGUMENT', `blob key ${JSON.stringify(key)} ${why}`);
  };
  if (key === '') bad('is empty');
  if (Buffer.byteLength(key) > 1024) bad('is longer than 1024 bytes');
  if (key.startsWith('/')) bad('must be relative');
  if (/[\\\u0000-\u001f\u007f]/.test(key)) bad('contains a backslash or a control character');
  const segments = key.split('/');
  // A trailing slash is allowed for prefixes ("shard_000/"), but no segment may be empty elsewhere.
  segments.forEach((s, i) => {
    if (s === '' && !(allowEmpty && i === segments.length - 1)) bad('has an empty path segment');
    if (s === '.' || s === '..') bad('has a "." or ".." segment');
  });
  return key;
}

/** Joins key segments with `/`, validating the result. */
export function joinKey(...parts: string[]): string {
  return checkKey(parts.filter((p) => p !== '').join('/'));
}
