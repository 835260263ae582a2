// The N-API surface of the native splitter: line classification over whole blocks (on the
// calling thread, or on the libuv thread pool so that blocks are checked on several cores),
// CRC-32C, and kernel-side copies of file ranges. core/split/native.ts loads it and describes
// each function; the layout of the `out` array is core/split/native.ts's BLOCK_* constants.
#include <node_api.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__linux__)
#include <unistd.h>
#else
#include <unistd.h>
#endif

#include "crc32c.h"
#include "json_line.h"

namespace shardline {
namespace {

// out[] header of scanBlock; entries follow as (line index, start, end) triples.
constexpr int kOutLines = 0;
constexpr int kOutTasks = 1;
constexpr int kOutBlank = 2;
constexpr int kOutCrLines = 3;
constexpr int kOutStop = 4;
constexpr int kOutExceptions = 5;
constexpr int kOutCrc = 6;
constexpr int kOutHeader = 8;

struct BlockJob {
  const uint8_t* buf;
  size_t length;  // of buf (the validator may load up to here)
  size_t from, to;
  int64_t crc_from;  // < 0: no checksum
  size_t max_line;
  double* out;
  size_t capacity;  // exception entries that fit in out
  Classifier classify;
};

// Classifies the lines of buf[from, to): counts tasks, blank lines and lines ending in `\r`,
// records every other line (a line to reject, or one over max_line) until `capacity` are
// recorded, and stops before the line that would not fit (kOutStop says where).
void RunBlock(const BlockJob& job) {
  double* out = job.out;
  if (job.crc_from >= 0) {
    const size_t s = static_cast<size_t>(job.crc_from);
    out[kOutCrc] = Crc32c(0, job.buf + s, job.to - s);
  }
  size_t lines = 0, tasks = 0, blank = 0, cr = 0, exceptions = 0;
  size_t s = job.from;
  size_t stop = job.to;
  while (s < job.to) {
    const void* nl = std::memchr(job.buf + s, '\n', job.to - s);
    const size_t e = nl ? static_cast<size_t>(static_cast<const uint8_t*>(nl) - job.buf) : job.to;
    const size_t len = e - s;
    const LineKind kind =
        len > job.max_line ? kReject : job.classify(job.buf + s, len, job.length - e);
    if (kind == kTask) {
      tasks++;
    } else if (kind == kBlank) {
      blank++;
    } else {
      if (exceptions == job.capacity) {
        stop = s;
        break;
      }
      double* entry = out + kOutHeader + 3 * exceptions;
      entry[0] = static_cast<double>(lines);
      entry[1] = static_cast<double>(s);
      entry[2] = static_cast<double>(e);
      exceptions++;
    }
    if (len > 0 && job.buf[e - 1] == '\r') cr++;
    lines++;
    s = e + 1;
  }
  out[kOutLines] = static_cast<double>(lines);
  out[kOutTasks] = static_cast<double>(tasks);
  out[kOutBlank] = static_cast<double>(blank);
  out[kOutCrLines] = static_cast<double>(cr);
  out[kOutStop] = static_cast<double>(stop);
  out[kOutExceptions] = static_cast<double>(exceptions);
}

// --- argument helpers ---

napi_value Throw(napi_env env, const char* message) {
  napi_throw_type_error(env, nullptr, message);
  return nullptr;
}

// A typed array of `want` type: its data and element count.
bool GetTyped(napi_env env, napi_value v, napi_typedarray_type want, void** data, size_t* length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &type, length, data, &ab, &offset) != napi_ok) return false;
  return type == want;
}

bool GetBytes(napi_env env, napi_value v, uint8_t** data, size_t* length) {
  void* raw = nullptr;
  if (!GetTyped(env, v, napi_uint8_array, &raw, length)) return false;
  *data = static_cast<uint8_t*>(raw);
  return true;
}

bool GetDoubles(napi_env env, napi_value v, double** data, size_t* length) {
  void* raw = nullptr;
  if (!GetTyped(env, v, napi_float64_array, &raw, length)) return false;
  *data = static_cast<double*>(raw);
  return true;
}

bool GetNumber(napi_env env, napi_value v, double* out) {
  return napi_get_value_double(env, v, out) == napi_ok;
}

// A whole number in [lo, hi].
bool GetIndex(napi_env env, napi_value v, double lo, double hi, int64_t* out) {
  double d;
  if (!GetNumber(env, v, &d)) return false;
  if (!(d >= lo && d <= hi) || d != static_cast<double>(static_cast<int64_t>(d))) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

// scanBlock(buf, from, to, crcFrom, maxLineBytes, out) -> parses into a BlockJob.
bool ParseBlockJob(napi_env env, napi_value* argv, BlockJob* job) {
  uint8_t* buf;
  size_t length;
  double* out;
  size_t out_length;
  int64_t from, to, crc_from, max_line;
  if (!GetBytes(env, argv[0], &buf, &length)) return false;
  const double n = static_cast<double>(length);
  if (!GetIndex(env, argv[1], 0, n, &from) || !GetIndex(env, argv[2], 0, n, &to) || from > to)
    return false;
  if (!GetIndex(env, argv[3], -1, n, &crc_from) || crc_from > from) return false;
  if (!GetIndex(env, argv[4], 0, 9007199254740991.0, &max_line)) return false;
  if (!GetDoubles(env, argv[5], &out, &out_length) || out_length < kOutHeader + 3) return false;
  job->buf = buf;
  job->length = length;
  job->from = static_cast<size_t>(from);
  job->to = static_cast<size_t>(to);
  job->crc_from = crc_from;
  job->max_line = static_cast<size_t>(max_line);
  job->out = out;
  job->capacity = (out_length - kOutHeader) / 3;
  job->classify = BestClassifier().classify;
  return true;
}

constexpr const char* kBlockUsage =
    "scanBlock(buf: Uint8Array, from, to, crcFrom, maxLineBytes, out: Float64Array): "
    "0 <= from <= to <= buf.length, -1 <= crcFrom <= from, out.length >= 11";

napi_value ScanBlock(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  BlockJob job;
  if (argc < 6 || !ParseBlockJob(env, argv, &job)) return Throw(env, kBlockUsage);
  RunBlock(job);
  return nullptr;
}

struct AsyncBlock {
  BlockJob job;
  napi_ref buf_ref = nullptr;
  napi_ref out_ref = nullptr;
  napi_deferred deferred = nullptr;
  napi_async_work work = nullptr;
};

void ExecuteBlock(napi_env, void* data) { RunBlock(static_cast<AsyncBlock*>(data)->job); }

void CompleteBlock(napi_env env, napi_status status, void* data) {
  auto* a = static_cast<AsyncBlock*>(data);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (status == napi_ok) {
    napi_resolve_deferred(env, a->deferred, undefined);
  } else {
    napi_value message, error;
    napi_create_string_utf8(env, "the block scan was cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, nullptr, message, &error);
    napi_reject_deferred(env, a->deferred, error);
  }
  napi_delete_reference(env, a->buf_ref);
  napi_delete_reference(env, a->out_ref);
  napi_delete_async_work(env, a->work);
  delete a;
}

napi_value ScanBlockAsync(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  auto* a = new AsyncBlock();
  if (argc < 6 || !ParseBlockJob(env, argv, &a->job)) {
    delete a;
    return Throw(env, kBlockUsage);
  }
  napi_value promise, name;
  napi_create_promise(env, &a->deferred, &promise);
  napi_create_reference(env, argv[0], 1, &a->buf_ref);
  napi_create_reference(env, argv[5], 1, &a->out_ref);
  napi_create_string_utf8(env, "shardline.scanBlock", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, nullptr, name, ExecuteBlock, CompleteBlock, a, &a->work);
  napi_queue_async_work(env, a->work);
  return promise;
}

// checkLine(buf, start, end, variant?) -> 0 task, 1 blank, 2 reject (no length limit).
napi_value CheckLine(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* buf;
  size_t length;
  int64_t start, end;
  constexpr const char* usage = "checkLine(buf: Uint8Array, start, end, variant?: string)";
  if (argc < 3 || !GetBytes(env, argv[0], &buf, &length)) return Throw(env, usage);
  const double n = static_cast<double>(length);
  if (!GetIndex(env, argv[1], 0, n, &start) || !GetIndex(env, argv[2], 0, n, &end) || start > end)
    return Throw(env, usage);
  Classifier classify = BestClassifier().classify;
  napi_valuetype type = napi_undefined;
  if (argc >= 4) napi_typeof(env, argv[3], &type);
  if (type == napi_string) {
    char wanted[32];
    size_t got = 0;
    napi_get_value_string_utf8(env, argv[3], wanted, sizeof(wanted), &got);
    size_t count = 0;
    const ClassifierVariant* variants = ClassifierVariants(&count);
    classify = nullptr;
    for (size_t i = 0; i < count; i++) {
      if (std::strcmp(variants[i].name, wanted) == 0 && variants[i].supported)
        classify = variants[i].classify;
    }
    if (classify == nullptr) return Throw(env, "checkLine: no such variant on this CPU");
  }
  napi_value result;
  const size_t line = static_cast<size_t>(end - start);
  const size_t slack = length - static_cast<size_t>(end);
  napi_create_int32(env, classify(buf + start, line, slack), &result);
  return result;
}

// crc32c(buf, crc?, variant?: 'portable') -> the CRC32C of crc's bytes followed by buf.
napi_value Crc32cJs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* buf;
  size_t length;
  if (argc < 1 || !GetBytes(env, argv[0], &buf, &length))
    return Throw(env, "crc32c(buf: Uint8Array, crc?: number)");
  int64_t crc = 0;
  if (argc >= 2) {
    napi_valuetype type;
    napi_typeof(env, argv[1], &type);
    if (type != napi_undefined && !GetIndex(env, argv[1], 0, 4294967295.0, &crc))
      return Throw(env, "crc32c: crc must be a whole number from 0 to 2^32 - 1");
  }
  bool portable = false;
  if (argc >= 3) {
    napi_valuetype type;
    napi_typeof(env, argv[2], &type);
    portable = type == napi_string;
  }
  const uint32_t c = portable ? Crc32cPortable(static_cast<uint32_t>(crc), buf, length)
                              : Crc32c(static_cast<uint32_t>(crc), buf, length);
  napi_value result;
  napi_create_uint32(env, c, &result);
  return result;
}

// --- copyFileRange(fdIn, offIn, fdOut, offOut, length): Promise<void> ---

struct AsyncCopy {
  int fd_in, fd_out;
  int64_t off_in, off_out, length;
  int error = 0;         // errno of the failure
  bool short_input = false;  // the input ended before `length` bytes
  napi_deferred deferred = nullptr;
  napi_async_work work = nullptr;
};

// pread/pwrite through a buffer: for kernels and filesystems without copy_file_range.
void CopyByReading(AsyncCopy* c) {
  constexpr size_t kBuf = 1 << 20;
  uint8_t* buf = static_cast<uint8_t*>(std::malloc(kBuf));
  if (buf == nullptr) {
    c->error = ENOMEM;
    return;
  }
  while (c->length > 0) {
    const size_t want = c->length < static_cast<int64_t>(kBuf) ? static_cast<size_t>(c->length) : kBuf;
    const ssize_t got = pread(c->fd_in, buf, want, c->off_in);
    if (got < 0) {
      if (errno == EINTR) continue;
      c->error = errno;
      break;
    }
    if (got == 0) {
      c->short_input = true;
      break;
    }
    size_t done = 0;
    while (done < static_cast<size_t>(got)) {
      const ssize_t put = pwrite(c->fd_out, buf + done, static_cast<size_t>(got) - done,
                                 c->off_out + static_cast<int64_t>(done));
      if (put < 0) {
        if (errno == EINTR) continue;
        c->error = errno;
        break;
      }
      done += static_cast<size_t>(put);
    }
    if (c->error != 0) break;
    c->off_in += got;
    c->off_out += got;
    c->length -= got;
  }
  std::free(buf);
}

void ExecuteCopy(napi_env, void* data) {
  auto* c = static_cast<AsyncCopy*>(data);
#if defined(__linux__)
  bool kernel = true;
  while (c->length > 0 && kernel) {
    loff_t in = c->off_in, out = c->off_out;
    const size_t want = c->length > (1LL << 30) ? (1u << 30) : static_cast<size_t>(c->length);
    const ssize_t n = copy_file_range(c->fd_in, &in, c->fd_out, &out, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSYS || errno == EXDEV || errno == EOPNOTSUPP || errno == EINVAL) {
        kernel = false;  // not possible here: copy through a buffer instead
        break;
      }
      c->error = errno;
      return;
    }
    if (n == 0) {
      c->short_input = true;
      return;
    }
    c->off_in += n;
    c->off_out += n;
    c->length -= n;
  }
  if (c->length == 0) return;
#endif
  CopyByReading(c);
}

void CompleteCopy(napi_env env, napi_status status, void* data) {
  auto* c = static_cast<AsyncCopy*>(data);
  if (status == napi_ok && c->error == 0 && !c->short_input) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, c->deferred, undefined);
  } else {
    std::string text;
    const char* code = "EIO";
    if (status != napi_ok) {
      text = "the copy was cancelled";
    } else if (c->short_input) {
      code = "ESHORT";
      text = "the input ended " + std::to_string(c->length) + " bytes early";
    } else {
      text = std::strerror(c->error);
      code = c->error == ENOSPC ? "ENOSPC" : c->error == EBADF ? "EBADF" : "EIO";
    }
    napi_value message, code_value, error;
    napi_create_string_utf8(env, text.c_str(), NAPI_AUTO_LENGTH, &message);
    napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
    napi_create_error(env, code_value, message, &error);
    napi_reject_deferred(env, c->deferred, error);
  }
  napi_delete_async_work(env, c->work);
  delete c;
}

napi_value CopyFileRange(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int64_t fd_in, off_in, fd_out, off_out, length;
  constexpr double kMax = 9007199254740991.0;
  if (argc < 5 || !GetIndex(env, argv[0], 0, 2147483647.0, &fd_in) ||
      !GetIndex(env, argv[1], 0, kMax, &off_in) ||
      !GetIndex(env, argv[2], 0, 2147483647.0, &fd_out) ||
      !GetIndex(env, argv[3], 0, kMax, &off_out) || !GetIndex(env, argv[4], 0, kMax, &length))
    return Throw(env, "copyFileRange(fdIn, offsetIn, fdOut, offsetOut, length): whole numbers >= 0");
  auto* c = new AsyncCopy();
  c->fd_in = static_cast<int>(fd_in);
  c->fd_out = static_cast<int>(fd_out);
  c->off_in = off_in;
  c->off_out = off_out;
  c->length = length;
  napi_value promise, name;
  napi_create_promise(env, &c->deferred, &promise);
  napi_create_string_utf8(env, "shardline.copyFileRange", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, nullptr, name, ExecuteCopy, CompleteCopy, c, &c->work);
  napi_queue_async_work(env, c->work);
  return promise;
}

void SetFunction(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn);
  napi_set_named_property(env, exports, name, fn);
}

}  // namespace
}  // namespace shardline

NAPI_MODULE_INIT() {
  using namespace shardline;
  SetFunction(env, exports, "scanBlock", ScanBlock);
  SetFunction(env, exports, "scanBlockAsync", ScanBlockAsync);
  SetFunction(env, exports, "checkLine", CheckLine);
  SetFunction(env, exports, "crc32c", Crc32cJs);
  SetFunction(env, exports, "copyFileRange", CopyFileRange);
  size_t count = 0;
  const ClassifierVariant* variants = ClassifierVariants(&count);
  napi_value list;
  napi_create_array(env, &list);
  uint32_t n = 0;
  for (size_t i = 0; i < count; i++) {
    if (!variants[i].supported) continue;
    napi_value s;
    napi_create_string_utf8(env, variants[i].name, NAPI_AUTO_LENGTH, &s);
    napi_set_element(env, list, n++, s);
  }
  napi_set_named_property(env, exports, "variants", list);
  napi_value best, hw;
  napi_create_string_utf8(env, BestClassifier().name, NAPI_AUTO_LENGTH, &best);
  napi_set_named_property(env, exports, "validator", best);
  napi_get_boolean(env, Crc32cIsHardware(), &hw);
  napi_set_named_property(env, exports, "crc32cHardware", hw);
  return exports;
}
