// Max pooling (any window, stride and explicit padding; padding never wins) and its gradient.
#include <algorithm>

#include "common.h"
#include "planes.h"
#include "threads.h"

namespace {

constexpr const char *kFwd = "MaxPoolForward";
constexpr const char *kBwd = "MaxPoolBackward";

// cfg = [kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, same]; same = 1
// ignores the explicit pads and pads "same" for the actual input size.
bool read_cfg(const char *fn, const mp::Arg &cfg, const mp::Arg &x, mp::Geo &g) {
  if (!mp::expect_shape(fn, cfg, {9})) return false;
  int64_t c[9];
  std::copy(cfg.i64, cfg.i64 + 9, c);
  for (int k = 0; k < 8; ++k)
    if (c[k] < (k < 4 ? 1 : 0) || c[k] > 4096) {
      mp::fail(fn, "cfg[%d] = %lld is out of range (kernel, strides >= 1, pads >= 0)", k,
               static_cast<long long>(c[k]));
      return false;
    }
  if (c[8]) {
    mp::same_pads(x.dim(2), c[0], c[2], c[4], c[6]);
    mp::same_pads(x.dim(3), c[1], c[3], c[5], c[7]);
  }
  g = mp::Geo::make(x.dim(2), x.dim(3), c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
  if (!g.valid() || c[4] >= g.KH || c[6] >= g.KH || c[5] >= g.KW || c[7] >= g.KW) {
    mp::fail(fn, "window %lldx%lld with padding (%lld,%lld,%lld,%lld) does not fit a %lldx%lld input",
             static_cast<long long>(c[0]), static_cast<long long>(c[1]), static_cast<long long>(c[4]),
             static_cast<long long>(c[5]), static_cast<long long>(c[6]), static_cast<long long>(c[7]),
             static_cast<long long>(g.H), static_cast<long long>(g.W));
    return false;
  }
  return true;
}

// fn(first, end) over contiguous blocks of planes, a few per thread (a slowed core takes fewer).
template <class F>
void for_plane_blocks(int64_t planes, F fn) {
  const int threads = mp::num_threads();
  const int64_t blocks = std::min<int64_t>(planes, 4 * threads);
  mp::parallel_for(blocks, threads, [&](int64_t b) {
    int64_t p0, p1;
    mp::split_range(planes, blocks, b, p0, p1);
    fn(p0, p1);
  });
}

}  // namespace

// inputs x[N,C,H,W], cfg[9] int64; output y[N,C,OH,OW].
MP_AOT_ENTRY(MaxPoolForward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kFwd, nparam, params, ndims, shapes, dtypes, {"x:f4", "cfg:i1", "y:f4"}, a)) return 1;
  const mp::Arg &x = a[0], &cfg = a[1], &y = a[2];
  mp::Geo g;
  if (!read_cfg(kFwd, cfg, x, g)) return 1;
  const int64_t planes = x.dim(0) * x.dim(1), HW = g.H * g.W, OHW = g.OH * g.OW;
  if (!mp::expect_shape(kFwd, y, {x.dim(0), x.dim(1), g.OH, g.OW})) return 1;
  for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
    mp::maxpool_planes(x.f + p0 * HW, p1 - p0, g, y.f + p0 * OHW);
  });
  return 0;
}

// inputs dy[N,C,OH,OW], x, y (the forward output), cfg; output dx[N,C,H,W].
MP_AOT_ENTRY(MaxPoolBackward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kBwd, nparam, params, ndims, shapes, dtypes, {"dy:f4", "x:f4", "y:f4", "cfg:i1", "dx:f4"}, a))
    return 1;
  const mp::Arg &dy = a[0], &x = a[1], &y = a[2], &cfg = a[3], &dx = a[4];
  mp::Geo g;
  if (!read_cfg(kBwd, cfg, x, g)) return 1;
  const int64_t planes = x.dim(0) * x.dim(1), HW = g.H * g.W, OHW = g.OH * g.OW;
  if (!mp::expect_shape(kBwd, dy, {x.dim(0), x.dim(1), g.OH, g.OW}) ||
      !mp::expect_shape(kBwd, y, {x.dim(0), x.dim(1), g.OH, g.OW}) ||
      !mp::expect_shape(kBwd, dx, {x.dim(0), x.dim(1), g.H, g.W}))
    return 1;
  for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
    mp::maxpool_planes_bwd(dy.f + p0 * OHW, x.f + p0 * HW, y.f + p0 * OHW, p1 - p0, g, dx.f + p0 * HW);
  });
  return 0;
}
