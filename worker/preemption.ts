/**
 * Preemption notices on Google Cloud (docs/decisions.md#preemption-notices-drain-early): a spot
 * or preemptible VM is told about 30 s before it is stopped, through its metadata server:
 * `instance/preempted` turns `TRUE`, and a VM about to be stopped for host maintenance sees
 * `instance/maintenance-event` turn `TERMINATE_ON_HOST_MAINTENANCE`. The worker watches both
 * with the metadata server's long poll (`wait_for_change`, from the value's ETag) and on a
 * notice drains: it stops claiming, commits the part in hand if it can within the notice, and
 * releases its unit without an attempt (worker/shard-job.ts), instead of dying with its lease
 * held and leaving the unit idle until the lease runs out.
 *
 * The watch runs only on a Compute Engine VM, which is known without the network (the DMI
 * product name), or where `GCE_METADATA_HOST` names a metadata server (the variable Google's
 * client libraries honour; tests point it at a fake on loopback). Elsewhere nothing is
 * requested, so local runs never reach an address off the machine.
 */
import type { Logger } from '../core/log';
import { toError } from '../core/errors';

/** Where the metadata server answers on every Compute Engine VM. */
export const DEFAULT_METADATA_HOST = 'metadata.google.internal';
/** The header every request must carry, and every answer of a real metadata server carries. */
export const METADATA_FLAVOR = 'Google';
/** The file whose content names a Compute Engine VM (`Google Compute Engine`). */
export const DMI_PRODUCT_NAME = '/sys/class/dmi/id/product_name';

/** `--preemption_notices`: watch on a Compute Engine VM (`auto`), always (`on`), never (`off`). */
export type PreemptionMode = 'auto' | 'on' | 'off';

/** The notice the worker got. */
export interface PreemptionNotice {
  /** What said so. */
  key: 'preempted' | 'maintenance-event';
  /** Its value: `TRUE`, or the maintenance event. */
  value: string;
}

/**
 * Whether to watch: `on` and `off` say so; `auto` watches on a Compute Engine VM (its DMI
 * product name, read by the caller, says `Google`) or where `GCE_METADATA_HOST` is set.
 */
export function watchPreemption(
  mode: PreemptionMode,
  productName: string | null,
  metadataHost: string | undefined,
): boolean {
  if (mode !== 'auto') return mode === 'on';
  return (metadataHost ?? '') !== '' || /^Google\b/.test((productName ?? '').trim());
}

/** Whether `value` of `key` means this VM is about to stop. */
export function isNotice(key: PreemptionNotice['key'], value: string): boolean {
  return key === 'preempted' ? value === 'TRUE' : value.startsWith('TERMINATE');
}

/** Options of `PreemptionWatcher`. */
export interface PreemptionWatcherOptions {
  /** `host[:port]` of the metadata server; default `metadata.google.internal`. */
  host?: string;
  log: Logger;
  /** How long one long poll may wait at the server (`timeout_sec`); default 300 s. */
  pollSeconds?: number;
  /** Backoff after a failed request: full jitter from 1 s doubling to this; default 60 s. */
  maxBackoffMs?: number;
  /** The HTTP client; default the global `fetch`. */
  fetch?: typeof fetch;
  /** Jitter source in [0, 1); default Math.random. */
  random?: () => number;
}

/**
 * Watches the metadata server until a notice comes (then calls `onNotice` once and stops) or
 * `stop()`. Failed requests are retried with jittered backoff, without end: a worker without a
 * metadata server keeps working and only loses the early notice.
 */
export class PreemptionWatcher {
  private readonly controller = new AbortController();
  private readonly base: string;
  private readonly fetch: typeof fetch;
  private readonly random: () => number;
  private noticed = false;

  constructor(private readonly o: PreemptionWatcherOptions) {
    this.base = `http://${o.host ?? DEFAULT_METADATA_HOST}/computeMetadata/v1/instance`;
    this.fetch = o.fetch ?? fetch;
    this.random = o.random ?? Math.random;
  }

  /** Starts watching both keys; resolves when the watch ends (a notice, or `stop`). */
  watch(onNotice: (notice: PreemptionNotice) => void): Promise<void> {
    const fire = (notice: PreemptionNotice): void => {
      if (this.noticed) return;
      this.noticed = true;
      this.o.log.notice('preemption notice: this machine is about to stop; draining', {
        key: notice.key,
        value: notice.value,
      });
      this.stop();
      onNotice(notice);
    };
    return Promise.all([
      this.watchKey('preempted', fire),
      this.watchKey('maintenance-event', fire),
    ]).then(() => undefined);
  }

  /** Ends the watch; requests in flight are aborted. */
  stop(): void {
    this.controller.abort();
  }

  private async watchKey(
    key: PreemptionNotice['key'],
    fire: (n: PreemptionNotice) => void,
  ): Promise<void> {
    const signal = this.controller.signal;
    let etag: string | null = null;
    let failures = 0;
    while (!signal.aborted) {
      // The first request reads the value as it is (a VM may already be preempted); then each
      // waits at the server until it differs from what the last one saw.
      const url =
        etag === null
          ? `${this.base}/${key}`
          : `${this.base}/${key}?wait_for_change=true&last_etag=${encodeURIComponent(etag)}&timeout_sec=${this.o.pollSeconds ?? 300}`;
      try {
        const res = await this.fetch(url, {
          headers: { 'Metadata-Flavor': METADATA_FLAVOR },
          signal,
        });
        const text = (await res.text()).trim();
        if (res.status !== 200)
          throw new Error(`HTTP ${res.status} for ${url}: ${text.slice(0, 200)}`);
        if (res.headers.get('metadata-flavor') !== METADATA_FLAVOR)
          throw new Error(`${url} did not answer as a metadata server (no Metadata-Flavor header)`);
        failures = 0;
        etag = res.headers.get('etag') ?? etag ?? '';
        if (isNotice(key, text)) return fire({ key, value: text });
        if (key === 'maintenance-event' && text !== 'NONE')
          this.o.log.info('host maintenance event (the VM is migrated, not stopped)', {
            value: text,
          });
      } catch (e: unknown) {
        if (signal.aborted) return;
        failures++;
        const waitMs =
          Math.min(this.o.maxBackoffMs ?? 60_000, 1000 * 2 ** Math.min(failures - 1, 10)) *
          (0.5 + this.random() / 2);
        this.o.log.warn('could not read the metadata server; preemption notices may be late', {
          key,
          error: toError(e),
          failures,
          retry_ms: Math.round(waitMs),
        });
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, waitMs);
          function done(): void {
            clearTimeout(t);
            signal.removeEventListener('abort', done);
            resolve();
          }
          signal.addEventListener('abort', done, { once: true });
        });
      }
    }
  }
}
