/**
 * A fault-injecting TCP proxy on loopback, between the soak's workers and one emulator. It
 * passes bytes through until told otherwise, then, for as long as a fault is set:
 *
 * - `reset`: resets a share of connections (new ones as they open, live ones when the fault
 *   starts) with a TCP RST;
 * - `drop`: a share of new connections is accepted and then black-holed (nothing forwarded,
 *   nothing answered: the client must time out);
 * - `delay`: every chunk in either direction waits `delayMs` first;
 * - `unavailable`: every HTTP request is answered `503 Service Unavailable` and its connection
 *   closed (for the Storage emulator's JSON API, which speaks HTTP/1.1).
 *
 * Loopback only: it listens on 127.0.0.1 and connects to 127.0.0.1.
 */
import * as net from 'node:net';

/** A fault, or none. `share` is the fraction of connections affected (0-1). */
export type Fault =
  | { kind: 'none' }
  | { kind: 'reset'; share: number }
  | { kind: 'drop'; share: number }
  | { kind: 'delay'; delayMs: number }
  | { kind: 'unavailable' };

/** What the proxy did, for the soak's report. */
export interface ProxyCounts {
  connections: number;
  resets: number;
  dropped: number;
  answered503: number;
}

const RESPONSE_503 = Buffer.from(
  'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 57\r\nConnection: close\r\n\r\n{"error":{"code":503,"message":"injected by the soak"}}\r\n',
);

/** One proxy. Create with `FaultProxy.start`. */
export class FaultProxy {
  private fault: Fault = { kind: 'none' };
  private readonly live = new Set<net.Socket>();
  readonly counts: ProxyCounts = { connections: 0, resets: 0, dropped: 0, answered503: 0 };

  private constructor(
    private readonly server: net.Server,
    /** The port clients connect to. */
    readonly port: number,
    private readonly targetPort: number,
    private readonly random: () => number,
  ) {}

  /** Listens on an ephemeral loopback port and forwards to `127.0.0.1:targetPort`. */
  static async start(targetPort: number, random: () => number): Promise<FaultProxy> {
    // The server exists before the proxy that handles its connections.
    const ref: { proxy?: FaultProxy } = {};
    const server = net.createServer((client) => ref.proxy?.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const port = (server.address() as net.AddressInfo).port;
    ref.proxy = new FaultProxy(server, port, targetPort, random);
    return ref.proxy;
  }

  /** Sets the fault from now on (`{ kind: 'none' }` to heal). */
  set(fault: Fault): void {
    this.fault = fault;
    if (fault.kind === 'reset')
      for (const s of [...this.live]) if (this.random() < fault.share) this.reset(s);
  }

  private reset(s: net.Socket): void {
    this.counts.resets++;
    s.resetAndDestroy();
  }

  private accept(client: net.Socket): void {
    this.counts.connections++;
    const f = this.fault;
    if (f.kind === 'reset' && this.random() < f.share) return this.reset(client);
    if (f.kind === 'drop' && this.random() < f.share) {
      this.counts.dropped++;
      this.live.add(client);
      client.on('close', () => this.live.delete(client));
      client.on('error', () => undefined);
      client.resume(); // read and discard: a black hole
      return;
    }
    if (f.kind === 'unavailable') {
      client.once('data', () => {
        this.counts.answered503++;
        client.end(RESPONSE_503);
      });
      client.on('error', () => undefined);
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    this.live.add(client);
    const pipe = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk: Buffer) => {
        const now = this.fault;
        if (now.kind === 'unavailable' && from === client) {
          this.counts.answered503++;
          client.end(RESPONSE_503);
          upstream.destroy();
          return;
        }
        if (now.kind === 'delay') {
          from.pause();
          setTimeout(() => {
            if (!to.destroyed) to.write(chunk);
            from.resume();
          }, now.delayMs);
        } else if (!to.destroyed) to.write(chunk);
      });
      from.on('end', () => to.end());
      from.on('error', () => to.destroy());
      from.on('close', () => {
        this.live.delete(from);
        if (!to.destroyed) to.destroy();
      });
    };
    pipe(client, upstream);
    pipe(upstream, client);
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    for (const s of this.live) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
