// Shared helpers of the mindplug kernels: error reporting, argument checks, thread count.
// Everything here is plain C++17 with no MindSpore headers; entry points use the AOT C ABI.
#pragma once
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

#define MP_EXPORT extern "C" __attribute__((visibility("default")))

// Defines an AOT entry point `Name` (the MindSpore Custom op ABI) whose body runs behind mp::guarded:
//   MP_AOT_ENTRY(Name) { ... return 0; }   (nparam, params, ndims, shapes, dtypes in scope)
#define MP_AOT_ENTRY(Name)                                                                                  \
  static int Name##_impl(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes);     \
  MP_EXPORT int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,   \
                     void *) {                                                                              \
    return mp::guarded(#Name, [&] { return Name##_impl(nparam, params, ndims, shapes, dtypes); });           \
  }                                                                                                         \
  static int Name##_impl(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes)

namespace mp {

// Records a message (readable by MindplugLastError) and prints it to stderr; returns 1 so that
// an entry point can `return fail(...)` and MindSpore raises.
int fail(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *last_error();
void last_error_any(char *out, size_t size);  // the latest on any thread

int num_threads();
void set_num_threads(int n);

// A view of one AOT parameter (input, output or workspace) with checks that report by name.
struct Arg {
  const char *name;
  float *f;
  const int64_t *i64;
  int ndim;
  const int64_t *shape;
  const char *dtype;
  int64_t dim(int k) const { return shape[k]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int k = 0; k < ndim; ++k) n *= shape[k];
    return n;
  }
};

// Binds the AOT arrays to named args after checking the count, ranks and dtypes.
// spec is e.g. {"x:f4", "w:f4", "cfg:i1"}: name, then f=float32 / i=int64, then the rank.
bool bind(const char *fn, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
          const std::vector<const char *> &spec, std::vector<Arg> &out);

bool expect_shape(const char *fn, const Arg &a, std::initializer_list<int64_t> dims);

// Conv/pool geometry of one spatial plane; tap (kh, kw) of output (oh, ow) reads input
// (oh*sh - pt + kh*dh, ow*sw - pl + kw*dw).
struct Geo {
  int64_t H, W, KH, KW, sh, sw, pt, pl, pb, pr, OH, OW, dh = 1, dw = 1;
  bool valid() const { return OH > 0 && OW > 0 && KH > 0 && KW > 0 && sh > 0 && sw > 0 && dh > 0 && dw > 0; }
  int64_t ekh() const { return dh * (KH - 1) + 1; }  // the dilated window's extent
  int64_t ekw() const { return dw * (KW - 1) + 1; }
  static Geo make(int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t pt,
                  int64_t pl, int64_t pb, int64_t pr, int64_t dh = 1, int64_t dw = 1) {
    Geo g{H, W, KH, KW, sh, sw, pt, pl, pb, pr, 0, 0, dh, dw};
    g.OH = sh > 0 && H + pt + pb >= g.ekh() ? (H + pt + pb - g.ekh()) / sh + 1 : 0;
    g.OW = sw > 0 && W + pl + pr >= g.ekw() ? (W + pl + pr - g.ekw()) / sw + 1 : 0;
    return g;
  }
};

// TensorFlow/MindSpore "same" padding along one axis: output ceil(n / s), the odd pixel at the end.
inline void same_pads(int64_t n, int64_t k, int64_t s, int64_t &lo, int64_t &hi) {
  const int64_t out = (n + s - 1) / s;
  const int64_t total = (out - 1) * s + k - n > 0 ? (out - 1) * s + k - n : 0;
  lo = total / 2;
  hi = total - lo;
}

// The exception barrier of every entry point: no C++ exception (bad_alloc, a failed thread start, ...)
// crosses the C ABI; it becomes an error message and a non-zero return like any argument error.
template <class F>
int guarded(const char *fn, F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail(fn, "out of memory");
  } catch (const std::exception &e) {
    return fail(fn, "internal error: %s", e.what());
  } catch (...) {
    return fail(fn, "unknown internal error");
  }
}

// cfg entries that carry a float (activation slope, BatchNorm epsilon/momentum) hold the bits of a double.
inline double cfg_double(int64_t bits) {
  double d;
  std::memcpy(&d, &bits, sizeof(d));
  return d;
}

// A grow-only per-thread scratch buffer (kernels run on pool threads that persist).
// Slots 0-7 belong to the kernel being run, slot 8 to maxpool_plane, 9-12 to Winograd, 13-15 to the
// depthwise and pooling planes.
constexpr int kScratchSlots = 16;
float *scratch(int slot, size_t count);

}  // namespace mp
