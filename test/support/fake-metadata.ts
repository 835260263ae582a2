/**
 * A fake Compute Engine metadata server on loopback, for the preemption-notice tests: it serves
 * `instance/preempted` and `instance/maintenance-event` the way the real one does (the
 * `Metadata-Flavor: Google` header both ways, an ETag per value, `wait_for_change` held open
 * until the value differs from `last_etag` or `timeout_sec` passes), and records every request.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the server saw. */
export interface MetadataRequest {
  path: string;
  query: Record<string, string>;
  /** The `Metadata-Flavor` header it carried (undefined when none). */
  flavor: string | undefined;
}

/** A running fake metadata server. */
export class FakeMetadataServer {
  readonly requests: MetadataRequest[] = [];
  private readonly values = new Map<string, { value: string; etag: number }>([
    ['preempted', { value: 'FALSE', etag: 1 }],
    ['maintenance-event', { value: 'NONE', etag: 1 }],
  ]);
  private readonly waiting = new Set<() => void>();
  /** Answer every request with this status instead (a broken server), while set. */
  failWith: number | null = null;
  /** Leave out the `Metadata-Flavor` header of answers (not a metadata server), while set. */
  noFlavor = false;

  private constructor(private readonly server: Server) {}

  /** Starts a server on 127.0.0.1 at a free port. */
  static async start(): Promise<FakeMetadataServer> {
    const holder: { self?: FakeMetadataServer } = {};
    const server = createServer((req, res) => holder.self!.handle(req, res));
    const self = new FakeMetadataServer(server);
    holder.self = self;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return self;
  }

  /** `127.0.0.1:PORT`: what `GCE_METADATA_HOST` would say. */
  get host(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Sets a value (a new ETag), waking the requests waiting on it. */
  set(key: 'preempted' | 'maintenance-event', value: string): void {
    const old = this.values.get(key)!;
    this.values.set(key, { value, etag: old.etag + 1 });
    for (const wake of [...this.waiting]) wake();
  }

  /** Requests held open right now. */
  get held(): number {
    return this.waiting.size;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://metadata');
    const query = Object.fromEntries(url.searchParams);
    const flavor = req.headers['metadata-flavor'] as string | undefined;
    this.requests.push({ path: url.pathname, query, flavor });
    const answer = (status: number, body: string, etag?: number): void => {
      res.writeHead(status, {
        'content-type': 'application/text',
        ...(this.noFlavor ? {} : { 'metadata-flavor': 'Google' }),
        ...(etag === undefined ? {} : { etag: String(etag) }),
      });
      res.end(body);
    };
    if (flavor !== 'Google') return answer(403, 'Missing Metadata-Flavor:Google header.');
    if (this.failWith !== null) return answer(this.failWith, 'unavailable');
    const key = /^\/computeMetadata\/v1\/instance\/(preempted|maintenance-event)$/.exec(
      url.pathname,
    )?.[1];
    if (!key) return answer(404, 'not found');
    const reply = (): void => {
      const v = this.values.get(key)!;
      answer(200, v.value, v.etag);
    };
    if (query.wait_for_change !== 'true' || query.last_etag !== String(this.values.get(key)!.etag))
      return reply();
    // Held until the value changes, the timeout passes, or the client goes away.
    const done = (): void => {
      clearTimeout(timer);
      this.waiting.delete(wake);
      res.off('close', done);
    };
    const wake = (): void => {
      done();
      reply();
    };
    const timer = setTimeout(wake, Number(query.timeout_sec ?? 300) * 1000);
    this.waiting.add(wake);
    res.on('close', done);
  }

  /** Stops the server, dropping held requests. */
  async close(): Promise<void> {
    for (const wake of [...this.waiting]) wake();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
