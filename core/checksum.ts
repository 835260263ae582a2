/**
 * CRC32C helpers. shardline records CRC32C the way Cloud Storage reports it (big-endian,
 * base64), so a chunk's recorded checksum can be compared with the object's `crc32c`.
 */

/** Encodes a CRC32C value as Cloud Storage does: 4 bytes big-endian, base64. */
export function crc32cBase64(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return b.toString('base64');
}

/** CRC-32C (Castagnoli) polynomial, bit-reflected. */
const CRC32C_POLY = 0x82f63b78;

function gf2Times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  let v = vec >>> 0;
  for (let i = 0; v !== 0; i++, v >>>= 1) if (v & 1) sum ^= mat[i]!;
  return sum >>> 0;
}

function gf2Square(square: Uint32Array, mat: Uint32Array): void {
  for (let n = 0; n < 32; n++) square[n] = gf2Times(mat, mat[n]!);
}

/**
 * The CRC32C of `A + B` from `crc(A)`, `crc(B)` and the length of B, without the bytes
 * (the GF(2) operator method also used by zlib's crc32_combine). Lets ranges of one input be
 * checksummed in parallel and still give the checksum of the whole.
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  const even = new Uint32Array(32); // operator for 2^k zero bits, squared as we go
  const odd = new Uint32Array(32);
  odd[0] = CRC32C_POLY; // one zero bit
  for (let n = 1, row = 1; n < 32; n++, row <<= 1) odd[n] = row >>> 0;
  gf2Square(even, odd); // two zero bits
  gf2Square(odd, even); // four zero bits
  let crc = crcA >>> 0;
  let len = lengthB;
  for (;;) {
    gf2Square(even, odd); // applies 8, 32, 128... zero bits: one byte, 4 bytes, ...
    if (len % 2 === 1) crc = gf2Times(even, crc);
    len = Math.floor(len / 2);
    if (len === 0) break;
    gf2Square(odd, even);
    if (len % 2 === 1) crc = gf2Times(odd, crc);
    len = Math.floor(len / 2);
    if (len === 0) break;
  }
  return (crc ^ crcB) >>> 0;
}
