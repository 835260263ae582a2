/**
 * The blob store on Cloud Storage (`@google-cloud/storage`). The `Storage` client is created
 * by the composition root and passed in; this module never reads the environment.
 */
import type { Bucket, File, Storage } from '@google-cloud/storage';
import { PassThrough, type Readable, type Writable } from 'node:stream';

import { ShardlineError, errorCode } from '../errors';
import type { BlobInfo, BlobStore, BlobWriter, ByteRange, WriteOptions } from './store';
import { checkKey } from './store';

/** Objects at or above this size are uploaded with a resumable session. */
const RESUMABLE_FROM_BYTES = 8 << 20;

function httpStatus(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

function mapError(what: string, e: unknown): ShardlineError {
  if (e instanceof ShardlineError) return e;
  const status = httpStatus(e);
  if (status === 404)
    return new ShardlineError('NOT_FOUND', `no such object: ${what}`, { cause: e });
  if (status === 412)
    return new ShardlineError('ALREADY_EXISTS', `${what} already exists`, { cause: e });
  const message = e instanceof Error ? e.message : String(e);
  return new ShardlineError('STORAGE', `${what}: ${message}`, { cause: e });
}

/** Extra tries of a download whose connection was reset (`readAll`). */
const READ_RETRIES = 2;

/** A connection reset by the other end: worth one more try of an idempotent request. */
function isConnectionReset(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || /socket hang up/.test(String(e));
}

function infoOf(key: string, metadata: File['metadata']): BlobInfo {
  return {
    key,
    size: Number(metadata.size ?? 0),
    generation: String(metadata.generation ?? ''),
    ...(typeof metadata.crc32c === 'string' ? { crc32c: metadata.crc32c } : {}),
  };
}

class GcsWriter implements BlobWriter {
  private stream: Writable | undefined;
  private finished: Promise<void> | undefined;
  private bytes = 0;
  private buffered: Uint8Array[] = [];
  private closed = false;

  constructor(
    private readonly store: GcsBlobStore,
    private readonly file: File,
    private readonly key: string,
    private readonly options: WriteOptions,
  ) {}

  private open(resumable: boolean): Writable {
    const stream = this.file.createWriteStream({
      resumable,
      contentType: this.options.contentType ?? 'application/octet-stream',
      validation: 'crc32c',
      ...(this.options.createOnly ? { preconditionOpts: { ifGenerationMatch: 0 } } : {}),
    });
    this.finished = new Promise<void>((resolve, reject) => {
      stream.on('finish', resolve);
      stream.on('error', reject);
    });
    this.finished.catch(() => undefined);
    return stream;
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.closed) throw new ShardlineError('INTERNAL', `write after close: ${this.key}`);
    this.bytes += data.byteLength;
    if (!this.stream) {
      // Small objects go up in one request; switch to a resumable session once large.
      this.buffered.push(data);
      if (this.bytes < RESUMABLE_FROM_BYTES) return;
      this.stream = this.open(true);
      const head = this.buffered;
      this.buffered = [];
      for (const b of head) await this.push(b);
      return;
    }
    await this.push(data);
  }

  private async push(data: Uint8Array): Promise<void> {
    const stream = this.stream!;
    if (stream.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        stream.off('error', onError);
        resolve();
      };
      const onError = (e: unknown): void => {
        stream.off('drain', onDrain);
        reject(mapError(`writing ${this.key}`, e));
      };
      stream.once('drain', onDrain);
      stream.once('error', onError);
    });
  }

  async close(): Promise<BlobInfo> {
    if (this.closed) throw new ShardlineError('INTERNAL', `close after close: ${this.key}`);
    this.closed = true;
    try {
      if (!this.stream) {
        await this.file.save(Buffer.concat(this.buffered), {
          resumable: false,
          contentType: this.options.contentType ?? 'application/octet-stream',
          validation: 'crc32c',
          ...(this.options.createOnly ? { preconditionOpts: { ifGenerationMatch: 0 } } : {}),
        });
        this.buffered = [];
      } else {
        this.stream.end();
        await this.finished;
      }
    } catch (e: unknown) {
      throw mapError(`writing ${this.key}`, e);
    }
    const info = await this.store.stat(this.key);
    if (!info) throw new ShardlineError('STORAGE', `${this.key} is missing right after its upload`);
    return info;
  }

  abort(): Promise<void> {
    this.closed = true;
    this.buffered = [];
    // Destroying an unfinished upload stream leaves no object behind.
    this.stream?.destroy(new ShardlineError('INTERRUPTED', `upload of ${this.key} aborted`));
    return Promise.resolve();
  }
}

/** The Cloud Storage blob store rooted at `gs://bucket/prefix`. */
export class GcsBlobStore implements BlobStore {
  private readonly bucket: Bucket;
  readonly root: string;

  /**
   * @param storage a client from the composition root
   * @param bucketName the bucket
   * @param prefix object-name prefix of the root, without leading or trailing `/` ('' for the bucket)
   */
  constructor(
    storage: Storage,
    readonly bucketName: string,
    readonly prefix: string,
  ) {
    this.bucket = storage.bucket(bucketName);
    this.root = `gs://${bucketName}${prefix ? `/${prefix}` : ''}`;
  }

  /** The full object name of a key. */
  objectName(key: string): string {
    checkKey(key);
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  uriOf(key: string): string {
    return `gs://${this.bucketName}/${this.objectName(key)}`;
  }

  read(key: string, range?: ByteRange): Readable {
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    if (range && range.end !== undefined && range.end <= range.start) {
      out.end();
      return out;
    }
    const source = this.bucket.file(this.objectName(key)).createReadStream(
      range
        ? {
            start: range.start,
            ...(range.end !== undefined ? { end: range.end - 1 } : {}),
            validation: false,
          }
        : { validation: 'crc32c' },
    );
    source.on('error', (e: unknown) => out.destroy(mapError(key, e)));
    out.on('close', () => source.destroy());
    source.pipe(out);
    return out;
  }

  async readAll(key: string): Promise<Buffer> {
    // A download on a kept-alive connection the server has just closed fails at once with
    // "socket hang up" (ECONNRESET), which the client library does not retry for downloads:
    // a read is idempotent, so it is tried again, twice at most, on a new connection.
    for (let attempt = 0; ; attempt++) {
      try {
        const [data] = await this.bucket.file(this.objectName(key)).download();
        return data;
      } catch (e: unknown) {
        if (attempt >= READ_RETRIES || !isConnectionReset(e)) throw mapError(key, e);
        await new Promise((r) => setTimeout(r, 100 * 4 ** attempt));
      }
    }
  }

  writer(key: string, options: WriteOptions = {}): BlobWriter {
    return new GcsWriter(this, this.bucket.file(this.objectName(key)), key, options);
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
      const [metadata] = await this.bucket.file(this.objectName(key)).getMetadata();
      return infoOf(key, metadata);
    } catch (e: unknown) {
      if (httpStatus(e) === 404) return null;
      throw mapError(key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    checkKey(prefix, true);
    const full = this.prefix ? `${this.prefix}/${prefix}` : prefix;
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    let query:
      { prefix: string; autoPaginate: false; maxResults: number; pageToken?: string } | undefined =
      {
        prefix: full,
        autoPaginate: false,
        maxResults: 1000,
      };
    while (query) {
      let files: File[];
      let next: { pageToken?: string } | null | undefined;
      try {
        [files, next] = (await this.bucket.getFiles(query)) as unknown as [
          File[],
          { pageToken?: string } | null,
        ];
      } catch (e: unknown) {
        throw mapError(`listing ${full}`, e);
      }
      for (const f of files) yield infoOf(f.name.slice(strip), f.metadata);
      query = next?.pageToken ? { ...query, pageToken: next.pageToken } : undefined;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.bucket.file(this.objectName(key)).delete({ ignoreNotFound: true });
    } catch (e: unknown) {
      if (errorCode(e) === '404') return;
      throw mapError(`deleting ${key}`, e);
    }
  }
}
