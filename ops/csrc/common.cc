#include "common.h"

#include <omp.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace mp {

static thread_local char g_err[512];
// MindSpore runs kernels on its own threads: a copy for whoever reports the error on another thread.
static std::mutex g_any_mu;
static char g_any_err[512];
static std::atomic<int> g_threads{0};  // written from Python (ctypes) while kernels may run

int fail(const char *fn, const char *fmt, ...) {
  int n = std::snprintf(g_err, sizeof(g_err), "mindplug kernel %s: ", fn);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && n < static_cast<int>(sizeof(g_err))) std::vsnprintf(g_err + n, sizeof(g_err) - n, fmt, ap);
  va_end(ap);
  {
    std::lock_guard<std::mutex> lock(g_any_mu);
    std::memcpy(g_any_err, g_err, sizeof(g_err));
  }
  // The engine's CLI reports the message itself as one error line; anyone else sees it on stderr.
  const char *quiet = std::getenv("MINDPLUG_KERNELS_QUIET");
  if (!(quiet && quiet[0] && quiet[0] != '0')) std::fprintf(stderr, "%s\n", g_err);
  return 1;
}

const char *last_error() { return g_err; }

void last_error_any(char *out, size_t size) {
  std::lock_guard<std::mutex> lock(g_any_mu);
  std::snprintf(out, size, "%s", g_any_err);
}

int num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}
void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

bool bind(const char *fn, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
          const std::vector<const char *> &spec, std::vector<Arg> &out) {
  if (nparam != static_cast<int>(spec.size())) {
    fail(fn, "expected %zu tensors (inputs then outputs), got %d", spec.size(), nparam);
    return false;
  }
  if (!params || !ndims || !shapes || !dtypes) {
    fail(fn, "null parameter arrays");
    return false;
  }
  out.clear();
  for (int k = 0; k < nparam; ++k) {
    const char *s = spec[k];
    const char *colon = std::strchr(s, ':');
    static thread_local char name[64];
    size_t len = colon ? static_cast<size_t>(colon - s) : std::strlen(s);
    Arg a{};
    a.name = s;
    a.ndim = ndims[k];
    a.shape = shapes[k];
    a.dtype = dtypes[k] ? dtypes[k] : "(null)";
    char kind = colon[1];
    int rank = std::atoi(colon + 2);
    std::snprintf(name, sizeof(name), "%.*s", static_cast<int>(len), s);
    const char *want = kind == 'f' ? "float32" : "int64";
    if (std::strcmp(a.dtype, want) != 0) {
      fail(fn, "tensor '%s' must be %s, got %s", name, want, a.dtype);
      return false;
    }
    if (a.ndim != rank) {
      fail(fn, "tensor '%s' must have %d dims, got %d", name, rank, a.ndim);
      return false;
    }
    if (!params[k] || (rank > 0 && !a.shape)) {
      fail(fn, "tensor '%s' has no data", name);
      return false;
    }
    for (int d = 0; d < rank; ++d)
      if (a.shape[d] <= 0) {
        fail(fn, "tensor '%s' has empty or negative dim %d (%lld)", name, d, static_cast<long long>(a.shape[d]));
        return false;
      }
    if (kind == 'f')
      a.f = static_cast<float *>(params[k]);
    else
      a.i64 = static_cast<const int64_t *>(params[k]);
    out.push_back(a);
  }
  return true;
}

bool expect_shape(const char *fn, const Arg &a, std::initializer_list<int64_t> dims) {
  int k = 0;
  bool ok = static_cast<int>(dims.size()) == a.ndim;
  for (int64_t d : dims) {
    if (ok && a.shape[k] != d) ok = false;
    ++k;
  }
  if (ok) return true;
  char want[160] = "", got[160] = "";
  int n = 0;
  for (int64_t d : dims) n += std::snprintf(want + n, sizeof(want) - n, "%s%lld", n ? "," : "", static_cast<long long>(d));
  n = 0;
  for (int d = 0; d < a.ndim; ++d)
    n += std::snprintf(got + n, sizeof(got) - n, "%s%lld", n ? "," : "", static_cast<long long>(a.shape[d]));
  const char *colon = std::strchr(a.name, ':');
  fail(fn, "tensor '%.*s' has shape (%s), expected (%s)", static_cast<int>(colon - a.name), a.name, got, want);
  return false;
}

float *scratch(int slot, size_t count) {
  if (slot < 0 || slot >= kScratchSlots) std::abort();
  static thread_local std::vector<float> bufs[kScratchSlots];
  std::vector<float> &b = bufs[slot];
  if (b.size() < count) {
    b.clear();
    b.shrink_to_fit();
    b.resize(count);
  }
  return b.data();
}

}  // namespace mp

MP_EXPORT const char *MindplugLastError() { return mp::last_error(); }
// The most recent error on any thread, copied into `out`.
MP_EXPORT void MindplugLastErrorAnyThread(char *out, size_t size) { mp::last_error_any(out, size); }
MP_EXPORT void MindplugSetNumThreads(int n) { mp::set_num_threads(n); }
MP_EXPORT int MindplugGetNumThreads() { return mp::num_threads(); }
