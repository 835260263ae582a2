// CRC-32C with the SSE4.2 crc32 instruction when the CPU has it, else from a table.
//
// One crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle, so one
// stream of them runs at a third of the speed the unit can give. The hardware path keeps
// three streams over three consecutive lanes of a block in flight and joins them with a
// precomputed "shift by one lane" operator (the CRC of a lane followed by zeros is linear in
// the starting value), as in Intel's crc_pcl paper.
#include "crc32c.h"

#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(SHARDLINE_PORTABLE_ONLY)
#define SHARDLINE_X86 1
#include <immintrin.h>
#endif

namespace shardline {
namespace {

constexpr uint32_t kPoly = 0x82f63b78;  // reflected Castagnoli polynomial

struct Table {
  uint32_t t[256];
  Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
      t[i] = c;
    }
  }
};

const Table& ByteTable() {
  static const Table table;
  return table;
}

// The raw register (no pre/post inversion) after bytes p[0, n).
uint32_t RawPortable(uint32_t reg, const uint8_t* p, size_t n) {
  const uint32_t* t = ByteTable().t;
  for (size_t i = 0; i < n; i++) reg = (reg >> 8) ^ t[(reg ^ p[i]) & 0xff];
  return reg;
}

#if SHARDLINE_X86
constexpr size_t kLane = 8192;

// reg -> the register after kLane zero bytes, as four byte-indexed tables (it is linear).
struct LaneShift {
  uint32_t t[4][256];
  LaneShift() {
    uint32_t basis[32];
    const uint8_t zeros[256] = {0};
    for (int bit = 0; bit < 32; bit++) {
      uint32_t reg = 1u << bit;
      for (size_t done = 0; done < kLane; done += sizeof(zeros)) {
        reg = RawPortable(reg, zeros, sizeof(zeros));
      }
      basis[bit] = reg;
    }
    for (int byte = 0; byte < 4; byte++) {
      for (uint32_t v = 0; v < 256; v++) {
        uint32_t out = 0;
        for (int b = 0; b < 8; b++) {
          if (v & (1u << b)) out ^= basis[8 * byte + b];
        }
        t[byte][v] = out;
      }
    }
  }
  uint32_t operator()(uint32_t reg) const {
    return t[0][reg & 0xff] ^ t[1][(reg >> 8) & 0xff] ^ t[2][(reg >> 16) & 0xff] ^ t[3][reg >> 24];
  }
};

const LaneShift& Shift() {
  static const LaneShift shift;
  return shift;
}

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

__attribute__((target("sse4.2"))) uint32_t RawHardware(uint32_t reg32, const uint8_t* p,
                                                        size_t n) {
  uint64_t reg = reg32;
  if (n >= 3 * kLane) {
    const LaneShift& shift = Shift();
    while (n >= 3 * kLane) {
      uint64_t a = reg, b = 0, c = 0;
      const uint8_t* pb = p + kLane;
      const uint8_t* pc = p + 2 * kLane;
      for (size_t i = 0; i < kLane; i += 8) {
        a = _mm_crc32_u64(a, Load64(p + i));
        b = _mm_crc32_u64(b, Load64(pb + i));
        c = _mm_crc32_u64(c, Load64(pc + i));
      }
      reg = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
            static_cast<uint32_t>(c);
      p += 3 * kLane;
      n -= 3 * kLane;
    }
  }
  while (n >= 8) {
    reg = _mm_crc32_u64(reg, Load64(p));
    p += 8;
    n -= 8;
  }
  uint32_t r = static_cast<uint32_t>(reg);
  while (n > 0) {
    r = _mm_crc32_u8(r, *p++);
    n--;
  }
  return r;
}

bool DetectHardware() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") != 0;
}
#else
bool DetectHardware() { return false; }
#endif

const bool kHardware = DetectHardware();

}  // namespace

uint32_t Crc32cPortable(uint32_t crc, const uint8_t* p, size_t n) {
  return ~RawPortable(~crc, p, n);
}

uint32_t Crc32c(uint32_t crc, const uint8_t* p, size_t n) {
#if SHARDLINE_X86
  if (kHardware) return ~RawHardware(~crc, p, n);
#endif
  return Crc32cPortable(crc, p, n);
}

bool Crc32cIsHardware() { return kHardware; }

}  // namespace shardline
