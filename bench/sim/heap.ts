/**
 * The simulation's event queue: a binary min-heap on (time, insertion order), so events at the
 * same millisecond run in the order they were scheduled and a run is repeatable.
 */

/** One scheduled event. */
interface Entry<T> {
  atMs: number;
  seq: number;
  item: T;
}

/** A min-heap of items keyed by time; `pop` returns the earliest, ties in insertion order. */
export class EventQueue<T> {
  private readonly entries: Array<Entry<T>> = [];
  private seq = 0;

  /** Items waiting. */
  get size(): number {
    return this.entries.length;
  }

  /** Schedules `item` at `atMs`. */
  push(atMs: number, item: T): void {
    const e = { atMs, seq: this.seq++, item };
    const a = this.entries;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(e, a[parent]!)) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = e;
  }

  /** The earliest entry's time, or undefined when empty. */
  peekMs(): number | undefined {
    return this.entries[0]?.atMs;
  }

  /** Removes and returns the earliest item with its time, or undefined when empty. */
  pop(): { atMs: number; item: T } | undefined {
    const a = this.entries;
    const top = a[0];
    if (top === undefined) return undefined;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const child = r < a.length && before(a[r]!, a[l]!) ? r : l;
        if (!before(a[child]!, last)) break;
        a[i] = a[child]!;
        i = child;
      }
      a[i] = last;
    }
    return { atMs: top.atMs, item: top.item };
  }
}

function before<T>(x: Entry<T>, y: Entry<T>): boolean {
  return x.atMs < y.atMs || (x.atMs === y.atMs && x.seq < y.seq);
}
