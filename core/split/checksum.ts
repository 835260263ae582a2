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
