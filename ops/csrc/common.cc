#include "common.h"

#include <omp.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace mp {

static thread_local char g_err[512];
static int g_threads = 0;

int fail(const char *fn, const char *fmt, ...) {
  int n = std::snprintf(g_err, sizeof(g_err), "mindplug kernel %s: ", fn);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && n < static_cast<int>(sizeof(g_err))) std::vsnprintf(g_err + n, sizeof(g_err) - n, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s\n", g_err);
  return 1;
}

const char *last_error() { return g_err; }

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }
void set_num_threads(int n) { g_threads = n > 0 ? n : 0; }

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
MP_EXPORT void MindplugSetNumThreads(int n) { mp::set_num_threads(n); }
MP_EXPORT int MindplugGetNumThreads() { return mp::num_threads(); }
