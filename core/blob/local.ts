/**
 * The blob store on the local filesystem. Writes go to a temporary file in the same folder
 * and are renamed into place on `close()`, so a reader never sees half an object.
 *
 * Generations. An object's generation is its file's modification time in nanoseconds (as it
 * always was, so datasets written before keep reading the same). The kernel stamps files from
 * a coarse clock (4 ms ticks here), so two writes of one key within a tick would share it and
 * a "has it changed since generation G?" check could be fooled. So each write stamps its file,
 * before the rename, with a generation it claimed for the key: a whole number of microseconds,
 * at least the wall clock, above the current object's generation, and above every claim in
 * flight. A claim is an empty file created exclusively (O_EXCL) in a folder beside the object
 * (`<name>.shardline-gen/`, never listed, removed when the write is done), so two processes
 * writing one key never take the same value. Consequences:
 * - writes one after another (any process) get strictly increasing generations;
 * - concurrent writes of one key get distinct generations (the last rename wins; it may carry
 *   the smaller one, as its writer claimed first);
 * - a key deleted and written again starts from the wall clock, as Cloud Storage's
 *   microsecond-timestamp generations do.
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
/** Suffix of the folder of generation claims beside an object being written; never listed. */
const GEN_MARK = '.shardline-gen';
/** Suffix of a finished write's claim kept as a mark (see `releaseClaim`). */
const DONE_MARK = '.done';
/** A claim older than this (by its value) was left by a writer that died: it is removed. */
const STALE_CLAIM_US = 600_000_000n;
/** Bound on claim attempts of one write (each lost race is another writer's success). */
const MAX_CLAIM_ATTEMPTS = 1000;
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
    let info: BlobInfo;
    let release = (_landed: boolean): Promise<void> => Promise.resolve();
    let landed = false;
    try {
      await this.flush();
      const h = await this.handle;
      const claim = await claimGeneration(this.target, this.key, this.store.nowUs());
      release = claim.release;
      info = await stampGeneration(h, this.key, claim.generationUs);
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
      landed = true;
    } catch (e: unknown) {
      await this.abort();
      if (e instanceof ShardlineError) throw e;
      throw storageError(`writing ${this.key}`, e);
    } finally {
      // A claim or mark left behind by a failed release only pushes later generations up.
      await release(landed).catch(() => undefined);
    }
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

/** Microseconds since the Unix epoch, from the wall clock (sub-millisecond). */
function wallClockUs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/** A file's modification time rounded up to whole microseconds; 0 when there is no file. */
async function generationUsOf(file: string): Promise<bigint> {
  try {
    const s = await fsp.stat(file, { bigint: true });
    return (s.mtimeNs + 999n) / 1000n;
  } catch (e: unknown) {
    if (errorCode(e) === 'ENOENT' || errorCode(e) === 'ENOTDIR') return 0n;
    throw e;
  }
}

/** What a claim folder holds: claims of writes in flight, and marks of finished ones. */
interface ClaimFolder {
  claims: bigint[];
  marks: bigint[];
}

/** Reads a claim folder; empty when it does not exist. */
async function readClaims(dir: string): Promise<ClaimFolder> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e: unknown) {
    if (errorCode(e) === 'ENOENT') return { claims: [], marks: [] };
    throw e;
  }
  const out: ClaimFolder = { claims: [], marks: [] };
  for (const name of names) {
    const m = /^(\d{1,20})(\.done)?$/.exec(name);
    if (m) (m[2] ? out.marks : out.claims).push(BigInt(m[1]!));
  }
  return out;
}

const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);

/**
 * Claims the generation (whole microseconds) of the next version of `target`: at least
 * `nowUs`, above the current file's, and above every claim and mark beside it; taken by no
 * other writer (the claim file is created exclusively; a claim that then finds a higher one,
 * or a newer file, yields and tries again). `release` ends the claim once the file is in place
 * (or the write failed): see `releaseClaim`.
 */
async function claimGeneration(
  target: string,
  key: string,
  nowUs: bigint,
): Promise<{ generationUs: bigint; release: (landed: boolean) => Promise<void> }> {
  const dir = `${target}${GEN_MARK}`;
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    // Not recursive: the object's folder exists (the temporary file is in it), and a
    // recursive mkdir racing another writer's rmdir of the claim folder can fail with ENOENT.
    await fsp.mkdir(dir).catch((e: unknown) => {
      if (errorCode(e) !== 'EEXIST') throw e;
    });
    const { claims, marks } = await readClaims(dir);
    let next = max(nowUs, (await generationUsOf(target)) + 1n);
    for (const c of claims) {
      // A writer that died between claiming and renaming left this claim.
      if (c < nowUs - STALE_CLAIM_US) await fsp.rm(path.join(dir, c.toString()), { force: true });
      else next = max(next, c + 1n);
    }
    for (const m of marks) next = max(next, m + 1n);
    const file = path.join(dir, next.toString());
    try {
      await (await fsp.open(file, 'wx')).close();
    } catch (e: unknown) {
      // Taken by another writer, or the folder went with another writer's release: again.
      if (errorCode(e) === 'EEXIST' || errorCode(e) === 'ENOENT') continue;
      throw e;
    }
    const mine = next;
    const after = await readClaims(dir);
    if (after.claims.some((c) => c > mine) || (await generationUsOf(target)) >= mine) {
      await fsp.rm(file, { force: true });
      continue;
    }
    return {
      generationUs: mine,
      release: (landed: boolean) => releaseClaim(dir, target, mine, landed),
    };
  }
  throw new ShardlineError(
    'STORAGE',
    `could not claim a generation for ${key} in ${MAX_CLAIM_ATTEMPTS} attempts (too many writers of one key)`,
  );
}

/**
 * Ends a claim (`landed`: the file was put in place). A value may be forgotten only once the object's generation is at least that
 * value and no write still in flight holds a lower claim (whose rename could still put a
 * lower generation in place). Otherwise the claim stays as a mark (`<value>.done`), so that
 * later claims go above it and no generation a reader may have seen is ever handed out again;
 * the next writer that may forget it removes it, and the folder with it.
 */
async function releaseClaim(
  dir: string,
  target: string,
  mine: bigint,
  landed: boolean,
): Promise<void> {
  const { claims, marks } = await readClaims(dir);
  const others = claims.filter((c) => c !== mine);
  const lowestInFlight = others.length > 0 ? others.reduce((a, b) => (a < b ? a : b)) : null;
  const current = await generationUsOf(target);
  const forgettable = (v: bigint): boolean =>
    v <= current && (lowestInFlight === null || v < lowestInFlight);
  const file = path.join(dir, mine.toString());
  // A write that failed put nothing in place: its value was never seen, it may go.
  if (!landed || forgettable(mine)) await fsp.rm(file, { force: true });
  else await fsp.rename(file, `${file}${DONE_MARK}`).catch(() => undefined);
  for (const m of marks)
    if (forgettable(m)) await fsp.rm(path.join(dir, `${m}${DONE_MARK}`), { force: true });
  await fsp.rmdir(dir).catch(() => undefined); // not empty: other claims or marks stay
}

/**
 * Sets the written file's modification time to the claimed generation and checks that the
 * filesystem kept it to the microsecond (one that rounds timestamps coarser cannot keep
 * generations apart). Returns what the object will be once renamed into place.
 */
async function stampGeneration(
  handle: FileHandle,
  key: string,
  generationUs: bigint,
): Promise<BlobInfo> {
  // Seconds as a double; the half microsecond keeps the conversion from rounding down.
  const seconds = (Number(generationUs) + 0.5) / 1e6;
  await handle.utimes(seconds, seconds);
  const s = await handle.stat({ bigint: true });
  if (s.mtimeNs !== generationUs * 1000n)
    throw new ShardlineError(
      'STORAGE',
      `writing ${key}: the filesystem did not keep a microsecond modification time (set ${generationUs * 1000n} ns, read ${s.mtimeNs} ns); local generations need one`,
    );
  return { key, size: Number(s.size), generation: s.mtimeNs.toString() };
}

/** Options of `LocalBlobStore`. */
export interface LocalBlobStoreOptions {
  /**
   * The wall clock in microseconds, the floor of new generations. Default the system clock;
   * tests pass a frozen or backward clock to show generations do not depend on it.
   */
  nowUs?: () => bigint;
}

/** The local-filesystem blob store rooted at an absolute directory. */
export class LocalBlobStore implements BlobStore {
  /** The floor of new generations, in microseconds (see `LocalBlobStoreOptions`). */
  readonly nowUs: () => bigint;

  /** @param root absolute directory; created on the first write. */
  constructor(
    readonly root: string,
    options: LocalBlobStoreOptions = {},
  ) {
    if (!path.isAbsolute(root))
      throw new ShardlineError('INVALID_ARGUMENT', `local root must be absolute: ${root}`);
    this.nowUs = options.nowUs ?? wallClockUs;
  }

  /**
   * The absolute path of a key. Names the store keeps for itself (in-progress writes and
   * generation claims) are refused as keys.
   */
  pathOf(key: string): string {
    const segments = checkKey(key).split('/');
    for (const s of segments)
      if (s.includes(TMP_MARK) || s.includes(GEN_MARK))
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `blob key ${JSON.stringify(key)} uses a name the local store keeps for itself (${TMP_MARK}, ${GEN_MARK})`,
        );
    return path.join(this.root, ...segments);
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
      if (entry.name.includes(TMP_MARK) || entry.name.includes(GEN_MARK)) continue;
      if (entry.isDirectory()) await this.walk(key, into);
      else if (entry.isFile()) into.push(key);
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
