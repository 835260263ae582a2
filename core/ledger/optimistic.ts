/**
 * Optimistic transactions on Firestore: read without locks, decide, then commit every write in
 * one atomic batch whose writes are conditioned on the documents being unchanged since they
 * were read (`lastUpdateTime`, or create-only for documents read as missing). A lost race
 * fails the commit and the callback runs again on fresh reads.
 *
 * Why not `runTransaction`: the server SDK's transactions lock what they read, and under
 * contention readers starve writers. Measured in the soak run (bench/soak) on the Firestore
 * emulator: several workers and the reaper retrying a claim of the same expired shard kept
 * each other's write locks waiting into the 2 s lock timeout, round after round, for 15
 * minutes; no transaction on that shard ever committed. A conditional write holds no lock, so
 * one contender always wins. The atomicity and fencing are the same: a batch commits all its
 * writes or none, and a write based on a stale read is refused.
 *
 * The callback has the shape of a transaction callback (reads, then writes, pure) and may run
 * several times.
 */
import type * as FirestoreLib from '@google-cloud/firestore';
import type {
  DocumentData,
  DocumentReference,
  DocumentSnapshot,
  Firestore,
  Query,
  QuerySnapshot,
  Timestamp,
} from '@google-cloud/firestore';

import { ShardlineError, errorCode } from '../errors';

/** The part of a Firestore transaction shardline's verbs use. */
export interface TxLike {
  get(ref: DocumentReference): Promise<DocumentSnapshot>;
  get(query: Query): Promise<QuerySnapshot>;
  getAll(...refs: DocumentReference[]): Promise<DocumentSnapshot[]>;
  /** Replaces the document; with `merge`, writes only the given top-level fields. */
  set(ref: DocumentReference, data: DocumentData, options?: { merge: true }): TxLike;
  create(ref: DocumentReference, data: DocumentData): TxLike;
  /** Writes the given top-level fields of an existing document. */
  update(ref: DocumentReference, data: DocumentData): TxLike;
  delete(ref: DocumentReference): TxLike;
}

interface Seen {
  /** Update time when read, or null when the document did not exist. */
  updateTime: Timestamp | null;
  /** Field names it had. */
  fields: string[];
}

type Write =
  | { kind: 'set' | 'merge' | 'create' | 'update'; ref: DocumentReference; data: DocumentData }
  | { kind: 'delete'; ref: DocumentReference };

class Attempt implements TxLike {
  readonly seen = new Map<string, Seen>();
  readonly writes: Write[] = [];

  constructor(private readonly db: Firestore) {}

  private note(snap: DocumentSnapshot): void {
    this.seen.set(
      snap.ref.path,
      snap.exists
        ? { updateTime: snap.updateTime!, fields: Object.keys(snap.data() ?? {}) }
        : { updateTime: null, fields: [] },
    );
  }

  get(ref: DocumentReference): Promise<DocumentSnapshot>;
  get(query: Query): Promise<QuerySnapshot>;
  async get(target: DocumentReference | Query): Promise<DocumentSnapshot | QuerySnapshot> {
    if (typeof (target as Query).where === 'function') {
      const snap = await (target as Query).get();
      for (const d of snap.docs) this.note(d);
      return snap;
    }
    const snap = await (target as DocumentReference).get();
    this.note(snap);
    return snap;
  }

  async getAll(...refs: DocumentReference[]): Promise<DocumentSnapshot[]> {
    const snaps = refs.length ? await this.db.getAll(...refs) : [];
    snaps.forEach((s) => this.note(s));
    return snaps;
  }

  set(ref: DocumentReference, data: DocumentData, options?: { merge: true }): TxLike {
    this.writes.push({ kind: options?.merge ? 'merge' : 'set', ref, data });
    return this;
  }

  update(ref: DocumentReference, data: DocumentData): TxLike {
    this.writes.push({ kind: 'update', ref, data });
    return this;
  }

  create(ref: DocumentReference, data: DocumentData): TxLike {
    this.writes.push({ kind: 'create', ref, data });
    return this;
  }

  delete(ref: DocumentReference): TxLike {
    this.writes.push({ kind: 'delete', ref });
    return this;
  }

  /** Commits the writes as one batch, each conditioned on what was read. */
  async commit(): Promise<void> {
    const batch = this.db.batch();
    for (const w of this.writes) {
      const seen = this.seen.get(w.ref.path);
      if (
        w.kind === 'create' ||
        ((w.kind === 'set' || w.kind === 'merge') && seen?.updateTime === null)
      ) {
        batch.create(w.ref, w.data);
      } else if (w.kind === 'merge' || w.kind === 'update') {
        if (seen?.updateTime) batch.update(w.ref, w.data, { lastUpdateTime: seen.updateTime });
        else if (w.kind === 'merge') batch.set(w.ref, w.data, { merge: true });
        else batch.update(w.ref, w.data);
      } else if (w.kind === 'set') {
        if (!seen) {
          batch.set(w.ref, w.data); // never read: a plain write
          continue;
        }
        // A whole-document replacement, conditioned: fields it no longer has are deleted.
        const data: DocumentData = { ...w.data };
        for (const f of seen.fields) if (!(f in data)) data[f] = deleteField();
        batch.update(w.ref, data, { lastUpdateTime: seen.updateTime! });
      } else {
        batch.delete(w.ref, seen?.updateTime ? { lastUpdateTime: seen.updateTime } : undefined);
      }
    }
    await batch.commit();
  }
}

/**
 * Firestore's field-deletion sentinel. The library is required here, on first use, not at
 * import: this module is loaded with the ledger code by every process, and only processes
 * that already hold a Firestore client (so have loaded the library) ever get here.
 */
function deleteField(): FirestoreLib.FieldValue {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use
  const lib = require('@google-cloud/firestore') as typeof FirestoreLib;
  return lib.FieldValue.delete();
}

// A lost race: the document changed since it was read (9 FAILED_PRECONDITION), appeared
// (6 ALREADY_EXISTS), vanished (5 NOT_FOUND), or the service asked for a retry (10 ABORTED).
const RACE_CODES = new Set(['5', '6', '9', '10']);

/** Options of `runOptimistic`. */
export interface OptimisticOptions {
  /** Attempts before giving up with `LEDGER` (each one re-reads). */
  maxAttempts: number;
  /** Jitter source; default Math.random. */
  random?: () => number;
}

/**
 * Runs `fn` as an optimistic transaction; see the module comment. Resolves with what the
 * attempt that committed returned. Our own errors from `fn` pass through untouched.
 */
export async function runOptimistic<T>(
  db: Firestore,
  fn: (tx: TxLike) => Promise<T>,
  options: OptimisticOptions,
): Promise<T> {
  const random = options.random ?? Math.random;
  let lastError: unknown;
  for (let attempt = 1; attempt <= options.maxAttempts; attempt++) {
    const tx = new Attempt(db);
    const result = await fn(tx);
    if (tx.writes.length === 0) return result;
    try {
      await tx.commit();
      return result;
    } catch (e: unknown) {
      const code = errorCode(e);
      if (code === undefined || !RACE_CODES.has(code)) throw e;
      lastError = e;
      // Full jitter, 10 ms doubling to 1 s: contenders spread out instead of colliding again.
      await new Promise((r) => setTimeout(r, random() * Math.min(1000, 10 * 2 ** attempt)));
    }
  }
  throw new ShardlineError(
    'LEDGER',
    `gave up after ${options.maxAttempts} attempts lost to concurrent updates`,
    { cause: lastError, details: { contended: true } },
  );
}
