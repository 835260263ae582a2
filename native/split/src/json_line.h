// The JSON line validator of the splitter (see json_line_impl.h for what it decides and how).
#ifndef SHARDLINE_SPLIT_JSON_LINE_H_
#define SHARDLINE_SPLIT_JSON_LINE_H_

#include <cstddef>
#include <cstdint>

namespace shardline {

/** The verdict on one line: a task, a blank (whitespace-only) line, or a line to reject. */
enum LineKind : int { kTask = 0, kBlank = 1, kReject = 2 };

/**
 * Classifies b[0, n), a line without its `\n`; the `slack` bytes after it are in the same
 * buffer and may be loaded (never judged). The line's length limit is the caller's.
 */
using Classifier = LineKind (*)(const uint8_t* b, size_t n, size_t slack);

/** One compiled variant of the validator. */
struct ClassifierVariant {
  const char* name;
  Classifier classify;
  /** Whether this CPU can run it. */
  bool supported;
};

/** The variants compiled in, fastest first; at least the portable one. */
const ClassifierVariant* ClassifierVariants(size_t* count);

/** The fastest variant this CPU supports. */
const ClassifierVariant& BestClassifier();

}  // namespace shardline

#endif  // SHARDLINE_SPLIT_JSON_LINE_H_
