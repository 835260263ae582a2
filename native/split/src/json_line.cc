// Compiles the validator (json_line_impl.h) twice: for AVX2 (chosen at run time when the
// CPU has it) and portably (SSE2 on x86-64, plain C++ elsewhere). The two differ only in how
// a 64-byte window is classified and how a string is searched for its next special byte.
// Defining SHARDLINE_PORTABLE_ONLY builds the plain C++ variant alone, as on other CPUs (to
// test it on x86).
#include "json_line.h"

#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(SHARDLINE_PORTABLE_ONLY)
#define SHARDLINE_X86 1
#include <immintrin.h>
#endif

namespace shardline {
namespace {

constexpr int kMaxDepth = 512;  // core/split/json-check.ts MAX_JSON_DEPTH
constexpr uint8_t kObject = 1;
constexpr uint8_t kArray = 2;

/**
 * Bit i of each mask: whether byte i of a 64-byte window is of that class; `dip`: byte i is a
 * `]` where the bracket depth (`open` arrays at the window's start, +1 at each `[`, -1 at each
 * `]`) comes back to zero.
 */
struct Masks {
  uint64_t digit, comma, open, close, dip;
};

/** The `dip` mask from the other ones, a `]` at a time (the portable way). */
inline uint64_t DipsOneByOne(uint64_t opens, uint64_t closes, int open) {
  uint64_t dips = 0;
  if (__builtin_popcountll(closes) < open) return 0;  // cannot reach zero in 64 bytes
  uint64_t rest = closes;
  while (rest != 0) {
    const int q = __builtin_ctzll(rest);
    const uint64_t upto = q == 63 ? ~0ULL : ((2ULL << q) - 1);
    if (open + __builtin_popcountll(opens & upto) - __builtin_popcountll(closes & upto) == 0)
      dips |= 1ULL << q;
    rest &= rest - 1;
  }
  return dips;
}

namespace portable {

#if SHARDLINE_X86
constexpr int64_t kStringStep = 16;

inline uint64_t Movemask(__m128i x) { return static_cast<uint32_t>(_mm_movemask_epi8(x)); }

inline Masks ClassMasks64(const uint8_t* p, int open) {
  Masks m{0, 0, 0, 0, 0};
  const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
  for (int i = 0; i < 4; i++) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i));
    const __m128i t = _mm_sub_epi8(x, zero);
    const int s = 16 * i;
    m.digit |= Movemask(_mm_cmpeq_epi8(_mm_min_epu8(t, nine), t)) << s;
    m.comma |= Movemask(_mm_cmpeq_epi8(x, _mm_set1_epi8(','))) << s;
    m.open |= Movemask(_mm_cmpeq_epi8(x, _mm_set1_epi8('['))) << s;
    m.close |= Movemask(_mm_cmpeq_epi8(x, _mm_set1_epi8(']'))) << s;
  }
  m.dip = DipsOneByOne(m.open, m.close, open);
  return m;
}

// Bit i: byte i is `"`, `\`, a control byte (< 0x20) or not ASCII.
inline uint64_t StringStops(const uint8_t* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i special =
      _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
                   _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f)));
  return Movemask(special) | Movemask(x);
}
#else
constexpr int64_t kStringStep = 8;

inline Masks ClassMasks64(const uint8_t* p, int open) {
  Masks m{0, 0, 0, 0, 0};
  for (int i = 0; i < 64; i++) {
    const uint8_t c = p[i];
    const uint64_t bit = 1ULL << i;
    if (static_cast<uint8_t>(c - '0') < 10) m.digit |= bit;
    else if (c == ',') m.comma |= bit;
    else if (c == '[') m.open |= bit;
    else if (c == ']') m.close |= bit;
  }
  m.dip = DipsOneByOne(m.open, m.close, open);
  return m;
}

inline uint64_t StringStops(const uint8_t* p) {
  uint64_t stops = 0;
  for (int i = 0; i < 8; i++) {
    const uint8_t c = p[i];
    if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) stops |= 1ULL << i;
  }
  return stops;
}
#endif

#include "json_line_impl.h"

}  // namespace portable

#if SHARDLINE_X86
#pragma GCC push_options
#pragma GCC target("avx2,bmi,bmi2,popcnt,lzcnt")
namespace avx2 {

constexpr int64_t kStringStep = 32;

inline uint64_t Movemask(__m256i x) { return static_cast<uint32_t>(_mm256_movemask_epi8(x)); }

// Inclusive prefix sums of 32 signed bytes.
inline __m256i PrefixSum(__m256i x) {
  x = _mm256_add_epi8(x, _mm256_slli_si256(x, 1));
  x = _mm256_add_epi8(x, _mm256_slli_si256(x, 2));
  x = _mm256_add_epi8(x, _mm256_slli_si256(x, 4));
  x = _mm256_add_epi8(x, _mm256_slli_si256(x, 8));
  // The high lane adds the low lane's total.
  const __m256i last = _mm256_shuffle_epi8(x, _mm256_set1_epi8(15));
  return _mm256_add_epi8(x, _mm256_permute2x128_si256(last, last, 0x08));
}

// All 32 bytes set to byte 31 of x.
inline __m256i Last(__m256i x) {
  const __m256i last = _mm256_shuffle_epi8(x, _mm256_set1_epi8(15));
  return _mm256_permute2x128_si256(last, last, 0x11);
}

inline Masks ClassMasks64(const uint8_t* p, int open) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
  const __m256i zero = _mm256_set1_epi8('0'), nine = _mm256_set1_epi8(9);
  const __m256i comma = _mm256_set1_epi8(','), opening = _mm256_set1_epi8('['),
                closing = _mm256_set1_epi8(']');
  const __m256i ta = _mm256_sub_epi8(a, zero), tb = _mm256_sub_epi8(b, zero);
  const __m256i oa = _mm256_cmpeq_epi8(a, opening), ob = _mm256_cmpeq_epi8(b, opening);
  const __m256i ka = _mm256_cmpeq_epi8(a, closing), kb = _mm256_cmpeq_epi8(b, closing);
  Masks m;
  m.digit = Movemask(_mm256_cmpeq_epi8(_mm256_min_epu8(ta, nine), ta)) |
            Movemask(_mm256_cmpeq_epi8(_mm256_min_epu8(tb, nine), tb)) << 32;
  m.comma = Movemask(_mm256_cmpeq_epi8(a, comma)) | Movemask(_mm256_cmpeq_epi8(b, comma)) << 32;
  m.open = Movemask(oa) | Movemask(ob) << 32;
  m.close = Movemask(ka) | Movemask(kb) << 32;
  m.dip = 0;
  if (open <= 64 && m.close != 0) {
    // Depth change per byte (compare results are -1): +1 at `[`, -1 at `]`; summed in order,
    // a `]` dips where the sum is -open.
    const __m256i sa = PrefixSum(_mm256_sub_epi8(ka, oa));
    const __m256i sb = _mm256_add_epi8(PrefixSum(_mm256_sub_epi8(kb, ob)), Last(sa));
    const __m256i target = _mm256_set1_epi8(static_cast<char>(-open));
    m.dip = (Movemask(_mm256_and_si256(_mm256_cmpeq_epi8(sa, target), ka)) |
             Movemask(_mm256_and_si256(_mm256_cmpeq_epi8(sb, target), kb)) << 32);
  }
  return m;
}

inline uint64_t StringStops(const uint8_t* p) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i ctl = _mm256_set1_epi8(0x1f);
  const __m256i special = _mm256_or_si256(
      _mm256_or_si256(_mm256_cmpeq_epi8(x, _mm256_set1_epi8('"')),
                      _mm256_cmpeq_epi8(x, _mm256_set1_epi8('\\'))),
      _mm256_cmpeq_epi8(_mm256_max_epu8(x, ctl), ctl));
  return Movemask(special) | Movemask(x);
}

#include "json_line_impl.h"

}  // namespace avx2
#pragma GCC pop_options
#endif

}  // namespace

#if SHARDLINE_X86
static bool HasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") != 0;
}
#endif

const ClassifierVariant* ClassifierVariants(size_t* count) {
  static const ClassifierVariant variants[] = {
#if SHARDLINE_X86
      {"avx2", avx2::ClassifyLine, HasAvx2()},
      {"sse2", portable::ClassifyLine, true},
#else
      {"portable", portable::ClassifyLine, true},
#endif
  };
  *count = sizeof(variants) / sizeof(variants[0]);
  return variants;
}

const ClassifierVariant& BestClassifier() {
  size_t count = 0;
  const ClassifierVariant* variants = ClassifierVariants(&count);
  for (size_t i = 0; i < count; i++) {
    if (variants[i].supported) return variants[i];
  }
  return variants[count - 1];
}

}  // namespace shardline
