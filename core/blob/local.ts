/**
 * The blob store on the local filesystem. Writes go to a temporary file in the same folder
 * and are renamed into place on `close()`, so a reader never sees half an object.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { ShardlineError, errorCode } from '../errors';
import type { BlobInfo, BlobStore, BlobWriter, ByteRange, WriteOptions } from './store';
import { checkKey } from './store';

/** Suffix of in-progress writes; `list` never shows them. */
const TMP_MARK = '.shardline-tmp-';
/** Bytes per read from disk. 2 MiB keeps syscalls rare without holding much memory. */
const READ_BYTES = 2 << 20;
/** Bytes gathered before one `writev` to disk (at most two batches are held). */
const WRITE_BATCH_BYTES = 2 << 20;

function notFound(key: string, cause: unknown): ShardlineError {
  return new ShardlineError('NOT_FOUND', `no such object: ${key}`, { cause });
}

function storageError(what: string, cause: unknown): ShardlineError {
  if (errorCode(cause) === 'ENOENT') return notFound(what, cause);
  return new ShardlineError('STORAGE', `${what}: ${(cause as Error).message}`, { cause });
}

/** A Readable over a byte range of one file, read in large blocks. */
class FileRangeReadable extends Readable {
  private handle: FileHandle | undefined;
  private position: number;
  private readonly end: number | undefined;

  constructor(
    private readonly file: string,
    private readonly key: string,
    range: ByteRange | undefined,
  ) {
    super({ highWaterMark: READ_BYTES });
    this.position = range?.start ?? 0;
    this.end = range?.end;
  }

  override _construct(callback: (error?: Error | null) => void): void {
    fsp.open(this.file, 'r').then(
      (h) => {
        this.handle = h;
        callback();
      },
      (e: unknown) => callback(storageError(this.key, e)),
    );
  }

  override _read(size: number): void {
    const handle = this.handle;
    if (!handle) return;
    const remaining = this.end === undefined ? Infinity : this.end - this.position;
    if (remaining <= 0) {
      this.push(null);
      return;
    }
    const want = Math.min(Math.max(size, READ_BYTES), remaining);
    const buf = Buffer.allocUnsafe(want);
    handle.read(buf, 0, want, this.position).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) {
          this.push(null);
          return;
        }
        this.position += bytesRead;
        this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead));
      },
      (e: unknown) => this.destroy(storageError(this.key, e)),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const h = this.handle;
    this.handle = undefined;
    if (!h) {
      callback(error);
      return;
    }
    h.close().then(
      () => callback(error),
      () => callback(error),
    );
  }
}

class LocalWriter implements BlobWriter {
  private opened: Promise<FileHandle> | undefined;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private done = false;
  /** Flushes run one after another, so callers may issue writes without awaiting each. */
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: LocalBlobStore,
    private readonly key: string,
    private readonly target: string,
    private readonly tmp: string,
    private readonly options: WriteOptions,
  ) {}

  /** The temporary file, created on first need (a writer that is aborted unused leaves no trace). */
  private get handle(): Promise<FileHandle> {
    this.opened ??= fsp
      .mkdir(path.dirname(this.tmp), { recursive: true })
      .then(() =>
        fsp.open(this.tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL),
      );
    return this.opened;
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.done) throw new ShardlineError('INTERNAL', `write after close: ${this.key}`);
    if (data.byteLength === 0) return;
    this.pending.push(data);
    this.pendingBytes += data.byteLength;
    if (this.pendingBytes >= WRITE_BATCH_BYTES) {
      // One batch on its way to disk while the caller fills the next: wait only for the
      // batch before this one (back-pressure), not for this one.
      const previous = this.flushing;
      this.flush().catch(() => undefined); // the error surfaces at the next wait, or close()
      await previous;
    }
  }

  private flush(): Promise<void> {
    if (this.pending.length === 0) return this.flushing;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.flushing = this.flushing.then(() => this.writeBatch(batch));
    return this.flushing;
  }

  private async writeBatch(batch: Uint8Array[]): Promise<void> {
    try {
      const h = await this.handle;
      // writev may write less than asked; loop until every byte is down.
      let views: Uint8Array[] = batch;
      for (;;) {
        const total = views.reduce((n, v) => n + v.byteLength, 0);
        const { bytesWritten } = await h.writev(views);
        if (bytesWritten === total) break;
        views = dropBytes(views, bytesWritten);
      }
    } catch (e: unknown) {
      throw storageError(`writing ${this.key}`, e);
    }
  }

  async close(): Promise<BlobInfo> {
    if (this.done) throw new ShardlineError('INTERNAL', `close after close: ${this.key}`);
    try {
      await this.flush();
      const h = await this.handle;
      await h.close();
      this.done = true;
      if (this.options.createOnly) {
        try {
          await fsp.link(this.tmp, this.target);
        } catch (e: unknown) {
          if (errorCode(e) === 'EEXIST') {
            throw new ShardlineError('ALREADY_EXISTS', `${this.key} already exists`, { cause: e });
          }
          throw e;
        } finally {
          await fsp.rm(this.tmp, { force: true });
        }
      } else {
        await fsp.rename(this.tmp, this.target);
      }
    } catch (e: unknown) {
      await this.abort();
      if (e instanceof ShardlineError) throw e;
      throw storageError(`writing ${this.key}`, e);
    }
    const info = await this.store.stat(this.key);
    if (!info)
      throw new ShardlineError('STORAGE', `${this.key} vanished right after it was written`);
    return info;
  }

  async abort(): Promise<void> {
    this.done = true;
    this.pending = [];
    if (!this.opened) return;
    await this.flushing.catch(() => undefined);
    let handle: FileHandle;
    try {
      handle = await this.opened;
    } catch {
      // The temporary file was never created (its folder could not be made, say, because a
      // file has that name): nothing to remove, and the caller reports the original error.
      return;
    }
    try {
      await handle.close();
    } catch {
      // already closed
    }
    await fsp.rm(this.tmp, { force: true });
  }
}

function dropBytes(views: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = n;
  for (const v of views) {
    if (skip >= v.byteLength) {
      skip -= v.byteLength;
      continue;
    }
    out.push(skip > 0 ? v.subarray(skip) : v);
    skip = 0;
  }
  return out;
}

/** The local-filesystem blob store rooted at an absolute directory. */
export class LocalBlobStore implements BlobStore {
  /** @param root absolute directory; created on the first write. */
  constructor(readonly root: string) {
    if (!path.isAbsolute(root))
      throw new ShardlineError('INVALID_ARGUMENT', `local root must be absolute: ${root}`);
  }

  /** The absolute path of a key. */
  pathOf(key: string): string {
    return path.join(this.root, ...checkKey(key).split('/'));
  }

  uriOf(key: string): string {
    return this.pathOf(key);
  }

  read(key: string, range?: ByteRange): Readable {
    return new FileRangeReadable(this.pathOf(key), key, range);
  }

  async readAll(key: string): Promise<Buffer> {
    try {
      return await fsp.readFile(this.pathOf(key));
    } catch (e: unknown) {
      throw storageError(key, e);
    }
  }

  writer(key: string, options: WriteOptions = {}): BlobWriter {
    const target = this.pathOf(key);
    const tmp = `${target}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    return new LocalWriter(this, key, target, tmp, options);
  }

  async writeAll(
    key: string,
    data: Uint8Array | string,
    options: WriteOptions = {},
  ): Promise<BlobInfo> {
    const w = this.writer(key, options);
    await w.write(typeof data === 'string' ? Buffer.from(data) : data);
    return w.close();
  }

  async stat(key: string): Promise<BlobInfo | null> {
    try {
      const s = await fsp.stat(this.pathOf(key), { bigint: true });
      if (!s.isFile()) return null;
      return { key, size: Number(s.size), generation: s.mtimeNs.toString() };
    } catch (e: unknown) {
      if (errorCode(e) === 'ENOENT' || errorCode(e) === 'ENOTDIR') return null;
      throw storageError(key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    checkKey(prefix, true);
    // Walk only the folder the prefix points into.
    const dirKey = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const keys: string[] = [];
    await this.walk(dirKey, keys);
    keys.sort();
    for (const key of keys) {
      if (!key.startsWith(prefix)) continue;
      const info = await this.stat(key);
      if (info) yield info;
    }
  }

  private async walk(dirKey: string, into: string[]): Promise<void> {
    const dir = dirKey === '' ? this.root : path.join(this.root, ...dirKey.split('/'));
    let entries;
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (e: unknown) {
      if (errorCode(e) === 'ENOENT' || errorCode(e) === 'ENOTDIR') return;
      throw storageError(dirKey || this.root, e);
    }
    for (const entry of entries) {
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      if (entry.isDirectory()) await this.walk(key, into);
      else if (entry.isFile() && !entry.name.includes(TMP_MARK)) into.push(key);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathOf(key);
    try {
      await fsp.rm(file, { force: true });
    } catch (e: unknown) {
      throw storageError(`deleting ${key}`, e);
    }
    // Remove folders the delete left empty, up to (not including) the root.
    let dir = path.dirname(file);
    while (dir.startsWith(this.root + path.sep)) {
      try {
        await fsp.rmdir(dir);
      } catch {
        break; // not empty, or gone
      }
      dir = path.dirname(dir);
    }
  }
}
