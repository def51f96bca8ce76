// Shared helpers of the mindplug kernels: error reporting, argument checks, thread count.
// Everything here is plain C++17 with no MindSpore headers; entry points use the AOT C ABI.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#define MP_EXPORT extern "C" __attribute__((visibility("default")))

namespace mp {

// Records a message (readable by MindplugLastError) and prints it to stderr; returns 1 so that
// an entry point can `return fail(...)` and MindSpore raises.
int fail(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *last_error();

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

// Conv/pool geometry of one spatial plane.
struct Geo {
  int64_t H, W, KH, KW, sh, sw, pt, pl, pb, pr, OH, OW;
  bool valid() const { return OH > 0 && OW > 0 && KH > 0 && KW > 0 && sh > 0 && sw > 0; }
  static Geo make(int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t pt,
                  int64_t pl, int64_t pb, int64_t pr) {
    Geo g{H, W, KH, KW, sh, sw, pt, pl, pb, pr, 0, 0};
    g.OH = sh > 0 ? (H + pt + pb - KH) / sh + 1 : 0;
    g.OW = sw > 0 ? (W + pl + pr - KW) / sw + 1 : 0;
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

// A grow-only per-thread scratch buffer (kernels run on OpenMP pool threads that persist).
// Slots 0-7 belong to the kernel being run, slot 8 to maxpool_plane.
constexpr int kScratchSlots = 9;
float *scratch(int slot, size_t count);

}  // namespace mp
