/**
 * An increasing list of line numbers, stored compactly, read back in order.
 *
 * Phase 1 records the rejected lines here so phase 2 can skip them without validating every
 * line a second time. 8 bytes a line: a million rejected lines take 8 MB.
 */
export class LineNumberList {
  private data = new Float64Array(1024);
  private size = 0;

  /** Appends a line number; numbers must arrive in increasing order. */
  push(line: number): void {
    if (this.size > 0 && line <= this.data[this.size - 1]!) {
      throw new Error(`line numbers must increase: ${line} after ${this.data[this.size - 1]}`);
    }
    if (this.size === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.size++] = line;
  }

  /** How many numbers are stored. */
  get length(): number {
    return this.size;
  }

  /** The i-th number (0-based). */
  at(i: number): number | undefined {
    return i < this.size ? this.data[i] : undefined;
  }

  /** A cursor that answers "is line n in the list?" for increasing n in O(1) amortised. */
  cursor(): { has(line: number): boolean } {
    let i = 0;
    return {
      has: (line: number): boolean => {
        while (i < this.size && this.data[i]! < line) i++;
        return i < this.size && this.data[i] === line;
      },
    };
  }
}
