/**
 * The input of a split: one JSONL (or gzip-compressed JSONL) object, local or in Cloud Storage,
 * opened as a fresh stream of decompressed bytes for each of the two phases.
 */
import { PassThrough, Transform, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

import { LocalBlobStore } from '../blob/local';
import type { BlobStore } from '../blob/store';
import { ShardlineError, errorCode } from '../errors';

/** An input that can be read from the start as often as needed. */
export interface Source {
  /** As the user named it (path or `gs://`). */
  uri: string;
  /** Cloud Storage generation, or null for local files. */
  generation: string | null;
  /** Size of the stored (possibly compressed) object in bytes. */
  storedBytes: number;
  /** Whether the stored object is gzip-compressed (name ends in `.gz`). */
  gzip: boolean;
  /** The file's path when it is a local, uncompressed file (phase 1 may then use threads). */
  localPath: string | null;
  /**
   * A new stream of the decompressed bytes. `onStoredBytes` receives the running count of
   * stored bytes consumed, for progress against `storedBytes`.
   */
  open(onStoredBytes?: (bytes: number) => void): Readable;
}

/** The blob-store object `key` as a Source; fails with NOT_FOUND when it does not exist. */
export async function sourceFromStore(store: BlobStore, key: string): Promise<Source> {
  const info = await store.stat(key);
  const uri = store.uriOf(key);
  if (!info) throw new ShardlineError('NOT_FOUND', `input not found: ${uri}`);
  const gzip = /\.gz$/i.test(key);
  return {
    uri,
    generation: uri.startsWith('gs://') ? info.generation : null,
    storedBytes: info.size,
    gzip,
    localPath: store instanceof LocalBlobStore && !gzip ? store.pathOf(key) : null,
    open(onStoredBytes) {
      const stored = store.read(key);
      const raw = onStoredBytes ? counted(stored, onStoredBytes) : stored;
      return gzip ? gunzipped(raw, uri) : raw;
    },
  };
}

/** Passes bytes through, reporting the running count. Errors of `stream` are forwarded. */
function counted(stream: Readable, onBytes: (bytes: number) => void): Readable {
  let seen = 0;
  const counter = new Transform({
    readableHighWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      onBytes(seen);
      callback(null, chunk);
    },
  });
  stream.on('error', (e) => counter.destroy(e));
  counter.on('close', () => stream.destroy());
  return stream.pipe(counter);
}

/** The two bytes every gzip member starts with. */
const GZIP_MAGIC = [0x1f, 0x8b] as const;

/**
 * Decompresses `raw`; errors become `INVALID_INPUT` messages that say what is wrong with the
 * file. Whether it is gzip at all is decided by its first bytes, not by zlib's message: zlib
 * says "incorrect header check" both for a file that is not gzip and for gzip data followed
 * by other bytes. A zero-byte `.gz` is an empty input, like a zero-byte `.jsonl`.
 */
function gunzipped(raw: Readable, uri: string): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  const head: number[] = [];
  let storedSeen = 0;
  const sniff = new Transform({
    readableHighWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback) {
      for (let k = 0; head.length < 2 && k < chunk.length; k++) head.push(chunk[k]!);
      storedSeen += chunk.length;
      callback(null, chunk);
    },
  });
  const fail = (e: unknown): void => {
    if (e instanceof ShardlineError) {
      out.destroy(e);
      return;
    }
    const code = errorCode(e);
    const message = (e as Error).message;
    const isGzip = head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1];
    if (storedSeen === 0 && code === 'Z_BUF_ERROR') {
      out.end();
      return;
    }
    const what = !isGzip
      ? 'is not gzip data, though its name ends in .gz'
      : code === 'Z_BUF_ERROR' || /unexpected end/i.test(message)
        ? 'is truncated: the gzip stream ends early'
        : /incorrect header check/i.test(message)
          ? 'has bytes after its gzip data that are not gzip (trailing garbage?)'
          : `could not be decompressed (${message})`;
    out.destroy(new ShardlineError('INVALID_INPUT', `${uri} ${what}`, { cause: e }));
  };
  raw.on('error', fail);
  gunzip.on('error', fail);
  out.on('close', () => {
    raw.destroy();
    sniff.destroy();
    gunzip.destroy();
  });
  raw.pipe(sniff).pipe(gunzip).pipe(out);
  return out;
}
