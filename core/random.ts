/**
 * Seeded randomness, for what must be repeatable. Two generators, one home:
 *
 * - `seededRandom` (mulberry32, one 32-bit seed): the order a worker tries shards in, the demo's
 *   sample puzzles, test inputs, the soak's chaos.
 * - `Prng` (sfc32, 128-bit state keyed by a SHA-256 of its inputs): augmentation (keyed by run
 *   seed, task content and augmentation index, so a task's augmentations never depend on which
 *   shard or worker processed it, or in what order) and the synthetic test model's weights
 *   (keyed by model seed and tensor name).
 *
 * Why keyed streams and not one global one: the original seeded one generator per run, so
 * changing the sharding changed every augmentation (docs/notes/original-system.md §4.3). The
 * exact numbers drawn are not a public contract: every sample records the parameters it used
 * (flip, rotation, colour map, train order).
 */
import { createHash } from 'node:crypto';

/** mulberry32: a tiny seeded generator of floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 2^-32: turns a uint32 into a float in [0, 1). */
const INV_2_32 = 1 / 4294967296;

/** sfc32 (Chris Doty-Humphrey's Small Fast Counting generator), 32-bit output. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** Seeds from four 32-bit words; prefer `Prng.fromKey`. */
  constructor(a: number, b: number, c: number, d: number) {
    this.a = a | 0;
    this.b = b | 0;
    this.c = c | 0;
    this.d = d | 0;
    // Mix the state before first use, as the reference implementation recommends.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /**
   * A generator seeded by SHA-256 over `parts`, joined by NUL, so distinct key tuples give
   * independent streams (`fromKey('aug', seed, task, 3)`).
   */
  static fromKey(...parts: ReadonlyArray<string | number>): Prng {
    const digest = createHash('sha256').update(parts.map(String).join('\u0000')).digest();
    return new Prng(
      digest.readUInt32LE(0),
      digest.readUInt32LE(4),
      digest.readUInt32LE(8),
      digest.readUInt32LE(12),
    );
  }

  /** The next uint32 in [0, 2^32). */
  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1) with 32 random bits. */
  nextFloat(): number {
    return this.nextUint32() * INV_2_32;
  }

  /** An integer in [0, n), unbiased (rejection sampling). `n` must be in [1, 2^32]. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) {
      throw new RangeError(`nextInt: n must be an integer in [1, 2^32], got ${n}`);
    }
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  /** Fills `out` with uniform floats in [-scale, scale); fast path for synthetic weights. */
  fillUniform(out: Float32Array, scale: number): Float32Array {
    const k = 2 * scale * INV_2_32;
    for (let i = 0; i < out.length; i++) out[i] = this.nextUint32() * k - scale;
    return out;
  }
}
