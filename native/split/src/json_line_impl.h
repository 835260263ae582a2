// The JSON line validator, included once per instruction set by json_line.cc (inside a
// namespace that provides `Masks`, `ClassMasks64` and `StringStops`, see there).
//
// It answers one question with exactly the verdict of core/split/json-check.ts + the UTF-8
// check of core/split/classify.ts: is this line one JSON object (RFC 8259, nesting at most
// 512, every string valid UTF-8)? It gives no reasons: a rejected line is checked again by
// the JavaScript checker, which names the column and what is wrong.
//
// Where the speed comes from: arrays of one-digit numbers and nested arrays of them (ARC
// grids: 94 % of the bytes of an ARC JSONL) are validated 64 bytes at a time with bit masks
// (see ArrayRun), strings 16 or 32 bytes at a time; everything else goes through a plain
// byte-at-a-time state machine like the JavaScript one.

enum State : int {
  kValue,          // a value must come
  kValueOrClose,   // just after `[`
  kKeyOrClose,     // just after `{`
  kKey,            // after `,` in an object
  kColon,          // after a key
  kCommaOrClose,   // after a value
};

static inline bool IsWs(uint8_t c) { return c == 0x20 || c == 0x09 || c == 0x0d || c == 0x0a; }
static inline bool IsDigit(uint8_t c) { return static_cast<uint8_t>(c - '0') < 10; }
static inline bool IsHex(uint8_t c) {
  return IsDigit(c) || static_cast<uint8_t>((c | 0x20) - 'a') < 6;
}

// Length of the well-formed UTF-8 sequence at p (its first byte is >= 0x80), or 0 when it is
// not one (Unicode table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
static inline int Utf8Length(const uint8_t* p, const uint8_t* end) {
  const uint8_t c = p[0];
  int n;
  uint8_t lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 1;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 2;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 3;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (end - p <= n) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (int k = 2; k <= n; k++) {
    if (p[k] < 0x80 || p[k] > 0xbf) return 0;
  }
  return n + 1;
}

// A string body from just after its opening quote: the position after the closing quote, or
// nullptr when the string is not valid (bad escape, control byte, bad UTF-8, unterminated).
static inline const uint8_t* ScanString(const uint8_t* p, const uint8_t* end) {
  for (;;) {
    while (end - p >= kStringStep) {
      const uint64_t stops = StringStops(p);
      if (stops == 0) {
        p += kStringStep;
        continue;
      }
      p += __builtin_ctzll(stops);
      break;
    }
    if (p >= end) return nullptr;
    const uint8_t c = *p;
    if (c == '"') return p + 1;
    if (c == '\\') {
      if (end - p < 2) return nullptr;
      const uint8_t e = p[1];
      if (e == 'u') {
        if (end - p < 6) return nullptr;
        if (!IsHex(p[2]) || !IsHex(p[3]) || !IsHex(p[4]) || !IsHex(p[5])) return nullptr;
        p += 6;
        continue;
      }
      if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
          e == 't') {
        p += 2;
        continue;
      }
      return nullptr;
    }
    if (c < 0x20) return nullptr;
    if (c >= 0x80) {
      const int n = Utf8Length(p, end);
      if (n == 0) return nullptr;
      p += n;
      continue;
    }
    p++;
  }
}

// A number at p: the position after it, or nullptr when it is malformed. What may follow it
// is the state machine's business (kCommaOrClose).
static inline const uint8_t* ScanNumber(const uint8_t* p, const uint8_t* end) {
  if (*p == '-') p++;
  if (p >= end) return nullptr;
  if (*p == '0') {
    p++;
  } else if (IsDigit(*p)) {
    while (p < end && IsDigit(*p)) p++;
  } else {
    return nullptr;
  }
  if (p < end && *p == '.') {
    p++;
    if (p >= end || !IsDigit(*p)) return nullptr;
    while (p < end && IsDigit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !IsDigit(*p)) return nullptr;
    while (p < end && IsDigit(*p)) p++;
  }
  return p;
}

static inline bool Literal(const uint8_t* p, const uint8_t* end, const char* word, int n) {
  return end - p >= n && std::memcmp(p, word, n) == 0;
}

// Byte classes of the fast array path.
enum Class : int { kClassDigit, kClassComma, kClassOpen, kClassClose };

// At a `[` where a value may start: validates the array 64 bytes at a time while it holds
// only one-digit numbers, commas and nested arrays (no whitespace). Inside such a run, JSON
// validity is local: every byte is allowed or not by the byte before it alone
//   a value start (digit or `[`) must follow `[` or `,`;
//   `,` must follow a value end (digit or `]`);
//   `]` must not follow `,`
// plus the bracket depth, which must not return to zero before the array's own `]`.
// So each window is checked with a few mask operations. At the first byte that is anything
// else (a second digit, a space, a string, an object), the run hands over to the state
// machine at the last token boundary, with the arrays it opened pushed on the stack, and the
// state machine goes on (and rejects, when the byte is wrong). The run itself never rejects.
// `readable`: how far bytes may be loaded (at or after `end`; bytes past `end` are ignored).
static inline void ArrayRun(const uint8_t*& at, const uint8_t* end, const uint8_t* readable,
                            int& depth, uint8_t* stack, int& state) {
  const uint8_t* p = at;
  // The class of the byte before the window, as bit 0 of each mask (start: as after `,`).
  uint64_t prev_d = 0, prev_c = 1, prev_o = 0, prev_k = 0;
  int open = 0;  // arrays opened by this run and not yet closed
  uint8_t pad[64];
  for (;;) {
    int stop = 0;  // index in the window where the run stops
    uint64_t d = 0, c = 0, o = 0, k = 0;
    // Near the depth limit the state machine takes over (it counts every `[`).
    if (depth + open + 64 <= kMaxDepth) {
      const int64_t avail = end - p;
      Masks m;
      if (avail >= 64) {
        m = ClassMasks64(p, open);
      } else {
        if (readable - p >= 64) {
          m = ClassMasks64(p, open);  // bytes past the line's end are loaded, then masked off
        } else {
          // (Only at the very end of a buffer: a copy costs a store-forwarding stall.)
          std::memcpy(pad, p, static_cast<size_t>(avail));
          std::memset(pad + avail, 0, static_cast<size_t>(64 - avail));  // 0 is no class
          m = ClassMasks64(pad, open);
        }
        const uint64_t valid = (1ULL << avail) - 1;
        m.digit &= valid;
        m.comma &= valid;
        m.open &= valid;
        m.close &= valid;
        m.dip &= valid;
      }
      d = m.digit;
      c = m.comma;
      o = m.open;
      k = m.close;
      const uint64_t pd = (d << 1) | prev_d, pc = (c << 1) | prev_c;
      const uint64_t po = (o << 1) | prev_o, pk = (k << 1) | prev_k;
      const uint64_t bad =
          ~(d | c | o | k) | ((d | o) & (pd | pk)) | (c & (po | pc)) | (k & pc);
      stop = bad == 0 ? 64 : __builtin_ctzll(bad);
      const uint64_t before = stop == 64 ? ~0ULL : ((1ULL << stop) - 1);
      // The depth returns to zero at a `]` before the stop: the array is closed there.
      const uint64_t dips = m.dip & before;
      if (dips != 0) {
        at = p + __builtin_ctzll(dips) + 1;
        state = kCommaOrClose;
        return;
      }
      if (stop == 64) {
        open += __builtin_popcountll(o) - __builtin_popcountll(k);
        prev_d = d >> 63;
        prev_c = c >> 63;
        prev_o = o >> 63;
        prev_k = k >> 63;
        p += 64;
        continue;
      }
      open += __builtin_popcountll(o & before) - __builtin_popcountll(k & before);
    }
    // Hand over at p + stop, knowing the class of the byte before it.
    int before_class;
    if (stop == 0) {
      before_class = prev_d ? kClassDigit : prev_c ? kClassComma : prev_o ? kClassOpen : kClassClose;
    } else {
      const uint64_t bit = 1ULL << (stop - 1);
      before_class = (d & bit)   ? kClassDigit
                     : (c & bit) ? kClassComma
                     : (o & bit) ? kClassOpen
                                 : kClassClose;
    }
    const uint8_t* resume = p + stop;
    int next;
    switch (before_class) {
      case kClassDigit:
        // A number continues (or something wrong follows it): start again at its digit, which
        // followed `[` or `,`, so a value is expected there.
        resume -= 1;
        next = kValue;
        break;
      case kClassComma:
        next = kValue;
        break;
      case kClassOpen:
        next = kValueOrClose;
        break;
      default:
        next = kCommaOrClose;
        break;
    }
    for (int i = 0; i < open; i++) stack[depth + i] = kArray;
    depth += open;
    at = resume;
    state = next;
    return;
  }
}

// A key from just after its opening quote, and the colon when it follows at once (most keys):
// the position after them, with `state` set to what comes next; nullptr for a bad string.
static inline const uint8_t* ScanKey(const uint8_t* p, const uint8_t* end, int& state) {
  p = ScanString(p, end);
  if (p == nullptr) return nullptr;
  if (p < end && *p == ':') {
    state = kValue;
    return p + 1;
  }
  state = kColon;
  return p;
}

// Whether [p, end) is exactly one JSON object with optional whitespace after it; *p == '{'.
static bool ValidObject(const uint8_t* p, const uint8_t* end, const uint8_t* readable) {
  uint8_t stack[kMaxDepth];
  int depth = 0;
  int state = kValue;
  for (;;) {
    while (p < end && IsWs(*p)) p++;
    if (p == end) return false;
    const uint8_t c = *p;
    switch (state) {
      case kValue:
      case kValueOrClose:
        if (c == '[') {
          if (depth == kMaxDepth) return false;
          // The fast run pays off for arrays that start with a digit or another array.
          if (depth + 64 < kMaxDepth && p + 1 < end &&
              (IsDigit(p[1]) || p[1] == '[' || p[1] == ']')) {
            ArrayRun(p, end, readable, depth, stack, state);  // never closes the top (an object)
            continue;
          }
          stack[depth++] = kArray;
          state = kValueOrClose;
          p++;
          continue;
        }
        if (c == '{') {
          if (depth == kMaxDepth) return false;
          stack[depth++] = kObject;
          state = kKeyOrClose;
          p++;
          continue;
        }
        if (c == ']' && state == kValueOrClose) {
          depth--;
          p++;
          state = kCommaOrClose;
          break;
        }
        if (c == '"') {
          p = ScanString(p + 1, end);
          if (p == nullptr) return false;
          state = kCommaOrClose;
          continue;
        }
        if (c == '-' || IsDigit(c)) {
          p = ScanNumber(p, end);
          if (p == nullptr) return false;
          state = kCommaOrClose;
          continue;
        }
        if (c == 't' && Literal(p, end, "true", 4)) {
          p += 4;
        } else if (c == 'f' && Literal(p, end, "false", 5)) {
          p += 5;
        } else if (c == 'n' && Literal(p, end, "null", 4)) {
          p += 4;
        } else {
          return false;
        }
        state = kCommaOrClose;
        continue;
      case kKeyOrClose:
      case kKey:
        if (c == '"') {
          p = ScanKey(p + 1, end, state);
          if (p == nullptr) return false;
          continue;
        }
        if (c == '}' && state == kKeyOrClose) {
          depth--;
          p++;
          state = kCommaOrClose;
          break;
        }
        return false;
      case kColon:
        if (c != ':') return false;
        p++;
        state = kValue;
        continue;
      default: {  // kCommaOrClose
        const uint8_t top = stack[depth - 1];
        if (c == ',') {
          p++;
          if (top == kObject && p < end && *p == '"') {
            p = ScanKey(p + 1, end, state);  // `,"key":` at once, the common case
            if (p == nullptr) return false;
            continue;
          }
          state = top == kObject ? kKey : kValue;
          continue;
        }
        if ((c == '}' && top == kObject) || (c == ']' && top == kArray)) {
          depth--;
          p++;
          break;
        }
        return false;
      }
    }
    if (depth == 0) {
      while (p < end && IsWs(*p)) p++;
      return p == end;
    }
  }
}

// The verdict on one line (without its `\n`); `slack` bytes after it may be read (not judged).
static LineKind ClassifyLine(const uint8_t* b, size_t n, size_t slack) {
  const uint8_t* p = b;
  const uint8_t* end = b + n;
  while (p < end && IsWs(*p)) p++;
  if (p == end) return kBlank;
  if (*p != '{') return kReject;
  return ValidObject(p, end, end + slack) ? kTask : kReject;
}
