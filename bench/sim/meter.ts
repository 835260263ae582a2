/**
 * The ledger's traffic in a simulated run, counted the way Firestore bills and limits it: each
 * document written by a transaction is one write, each document a query or a transaction reads
 * is one read (a query that returns nothing still costs one). Kept per second for the whole
 * dataset, and per shard document for the per-document write rate; checked against the limits
 * bench/README.md#simulation cites.
 */

/** What a write was for. */
export type WriteKind =
  'claim' | 'expire' | 'heartbeat' | 'commit' | 'part' | 'complete' | 'reap' | 'split';

/** What a read was for. */
export type ReadKind =
  | 'claim-query'
  | 'claim-tx'
  | 'peers'
  | 'holder-tx'
  | 'reap-query'
  | 'status'
  | 'split-query'
  | 'split-tx';

/** Firestore's documented limits and recommendations the run is checked against. */
export const FIRESTORE_LIMITS = {
  /** Sustained writes to one document: about one per second (best practices; quotas). */
  docWritesPerSecond: 1,
  /** 500/50/5: start a new collection at up to 500 operations per second… */
  rampStartOpsPerSecond: 500,
  /** …and raise it by 50 %… */
  rampGrowth: 1.5,
  /** …every 5 minutes. */
  rampStepMs: 5 * 60_000,
  /**
   * Writes per second to a collection whose documents carry a sequentially increasing indexed
   * field (shard documents carry `lease_expires_at`, `heartbeat_at`, `updated_at`): 500.
   */
  sequentialIndexWritesPerSecond: 500,
} as const;

const SUSTAINED_WINDOW_MS = 60_000;

interface DocMeter {
  /** Times of the writes of the last `SUSTAINED_WINDOW_MS`, oldest first (from `head`). */
  times: number[];
  head: number;
  peak1s: number;
  peak60s: number;
  writes: number;
}

/** The peak of a per-second series: its value and the second it happened in (ms). */
export interface Peak {
  value: number;
  atMs: number;
}

/** What the meter measured, for the report. */
export interface MeterSummary {
  writes: number;
  reads: number;
  writesByKind: Partial<Record<WriteKind, number>>;
  readsByKind: Partial<Record<ReadKind, number>>;
  /** Most writes to one shard document within any 1 s. */
  peakDocWrites1s: number;
  /** Most writes to one shard document within any 60 s, per second (the sustained rate). */
  peakDocWritesPerSecond60s: number;
  /** Most writes to the dataset's documents in one clock second. */
  peakWritesPerSecond: Peak;
  /** Most reads and writes in one clock second. */
  peakOpsPerSecond: Peak;
  /**
   * The highest ratio of operations in one second to what 500/50/5 allows at that time since
   * the first operation (> 1: the ramp-up rule is exceeded).
   */
  rampRatio: Peak;
  /** The same for writes alone. */
  rampRatioWrites: Peak;
  /** Claim transactions and those that found their candidate taken (a lost race). */
  claimTransactions: number;
  lostRaces: number;
}

/** Counts the ledger's reads and writes. */
export class LedgerMeter {
  private readonly docs = new Map<number, DocMeter>();
  private readonly writesPerSecond: number[] = [];
  private readonly readsPerSecond: number[] = [];
  private readonly writesByKind: Partial<Record<WriteKind, number>> = {};
  private readonly readsByKind: Partial<Record<ReadKind, number>> = {};
  private firstMs: number | null = null;
  private writes = 0;
  private reads = 0;
  /** Claim transactions run. */
  claimTransactions = 0;
  /** Claim transactions whose candidate another claimer took since the query read it. */
  lostRaces = 0;

  /** One document written; `doc` names a shard document, null a document written once (a part). */
  write(doc: number | null, atMs: number, kind: WriteKind): void {
    this.writes++;
    this.writesByKind[kind] = (this.writesByKind[kind] ?? 0) + 1;
    bump(this.writesPerSecond, atMs);
    this.firstMs ??= atMs;
    if (doc === null) return;
    let m = this.docs.get(doc);
    if (!m) {
      m = { times: [], head: 0, peak1s: 0, peak60s: 0, writes: 0 };
      this.docs.set(doc, m);
    }
    m.writes++;
    m.times.push(atMs);
    while (m.times[m.head]! <= atMs - SUSTAINED_WINDOW_MS) m.head++;
    if (m.head > 64) {
      m.times.splice(0, m.head);
      m.head = 0;
    }
    m.peak60s = Math.max(m.peak60s, m.times.length - m.head);
    let inSecond = 0;
    for (let i = m.times.length - 1; i >= m.head && m.times[i]! > atMs - 1_000; i--) inSecond++;
    m.peak1s = Math.max(m.peak1s, inSecond);
  }

  /** `count` documents read (at least one: an empty query is billed as one read). */
  read(count: number, atMs: number, kind: ReadKind): void {
    const n = Math.max(1, count);
    this.reads += n;
    this.readsByKind[kind] = (this.readsByKind[kind] ?? 0) + n;
    bump(this.readsPerSecond, atMs, n);
    this.firstMs ??= atMs;
  }

  /** The totals and peaks. */
  summary(): MeterSummary {
    let peakDoc1s = 0;
    let peakDoc60 = 0;
    for (const m of this.docs.values()) {
      peakDoc1s = Math.max(peakDoc1s, m.peak1s);
      peakDoc60 = Math.max(peakDoc60, m.peak60s);
    }
    const seconds = Math.max(this.writesPerSecond.length, this.readsPerSecond.length);
    const first = this.firstMs ?? 0;
    const peakW: Peak = { value: 0, atMs: 0 };
    const peakOps: Peak = { value: 0, atMs: 0 };
    const ramp: Peak = { value: 0, atMs: 0 };
    const rampW: Peak = { value: 0, atMs: 0 };
    for (let s = 0; s < seconds; s++) {
      const w = this.writesPerSecond[s] ?? 0;
      const ops = w + (this.readsPerSecond[s] ?? 0);
      const atMs = s * 1_000;
      const allowed = rampAllowance(Math.max(0, atMs - first));
      if (w > peakW.value) Object.assign(peakW, { value: w, atMs });
      if (ops > peakOps.value) Object.assign(peakOps, { value: ops, atMs });
      if (ops / allowed > ramp.value) Object.assign(ramp, { value: ops / allowed, atMs });
      if (w / allowed > rampW.value) Object.assign(rampW, { value: w / allowed, atMs });
    }
    return {
      writes: this.writes,
      reads: this.reads,
      writesByKind: { ...this.writesByKind },
      readsByKind: { ...this.readsByKind },
      peakDocWrites1s: peakDoc1s,
      peakDocWritesPerSecond60s: peakDoc60 / (SUSTAINED_WINDOW_MS / 1_000),
      peakWritesPerSecond: peakW,
      peakOpsPerSecond: peakOps,
      rampRatio: ramp,
      rampRatioWrites: rampW,
      claimTransactions: this.claimTransactions,
      lostRaces: this.lostRaces,
    };
  }
}

/** Operations per second the 500/50/5 rule allows `sinceMs` after traffic to a collection began. */
export function rampAllowance(sinceMs: number): number {
  const L = FIRESTORE_LIMITS;
  return L.rampStartOpsPerSecond * L.rampGrowth ** Math.floor(sinceMs / L.rampStepMs);
}

function bump(series: number[], atMs: number, n = 1): void {
  const s = Math.floor(atMs / 1_000);
  while (series.length <= s) series.push(0);
  series[s] = (series[s] ?? 0) + n;
}
