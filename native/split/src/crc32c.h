// CRC-32C (Castagnoli), as Cloud Storage reports it and core/checksum.ts combines it.
#ifndef SHARDLINE_SPLIT_CRC32C_H_
#define SHARDLINE_SPLIT_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace shardline {

/** The CRC32C of `crc`'s bytes followed by p[0, n) (crc = 0 for the first piece). */
uint32_t Crc32c(uint32_t crc, const uint8_t* p, size_t n);

/** The same, computed a byte at a time from a table (the reference for tests). */
uint32_t Crc32cPortable(uint32_t crc, const uint8_t* p, size_t n);

/** Whether Crc32c uses the CPU's crc32 instruction. */
bool Crc32cIsHardware();

}  // namespace shardline

#endif  // SHARDLINE_SPLIT_CRC32C_H_
