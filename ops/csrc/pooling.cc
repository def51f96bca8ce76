// Max and average pooling behind mindplug.ops.MaxPool2d / AvgPool2d: any window, stride, dilation (max),
// explicit or "same" padding, ceil mode, count_include_pad either way, divisor override; and their
// gradients. Global average pooling is the window = whole plane case.
//
// cfg (16 entries): [kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
//                    dilation_h, dilation_w, mode (0 max, 1 avg), count_include_pad, divisor_override (0 none),
//                    same, ceil_mode, 0]
// Output size (PyTorch/MindSpore rule): floor or ceil((H + pt + pb - dilated window) / stride) + 1, and with
// ceil mode the last window must start inside the input or its top/left padding. Average divisor: the
// window clipped to the padded input (count_include_pad) or to the input itself, unless overridden.
#include <algorithm>
#include <cmath>
#include <memory>

#include "common.h"
#include "planes.h"
#include "threads.h"

namespace {

constexpr const char *kFwd = "PoolForward";
constexpr const char *kBwd = "PoolBackward";
constexpr int64_t kCfg = 16;

struct PoolSpec {
  mp::Geo g;
  bool avg, include_pad;
  int64_t divisor;
};

int64_t out_size(int64_t n, int64_t lo, int64_t hi, int64_t ext, int64_t s, bool ceil_mode) {
  const int64_t span = n + lo + hi - ext;
  if (span < 0) return 0;
  int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (o - 1) * s >= n + lo) --o;
  return o;
}

bool read_pool(const char *fn, const mp::Arg &cfg, const mp::Arg &x, PoolSpec &p) {
  if (!mp::expect_shape(fn, cfg, {kCfg})) return false;
  int64_t c[kCfg];
  std::copy(cfg.i64, cfg.i64 + kCfg, c);
  static const char *names[] = {"kernel_h", "kernel_w", "stride_h", "stride_w", "pad_top", "pad_left",
                                "pad_bottom", "pad_right", "dilation_h", "dilation_w", "mode", "count_include_pad",
                                "divisor_override", "same", "ceil_mode"};
  const int64_t lo[] = {1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
  const int64_t hi[] = {4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 1, 1, 1 << 30, 1, 1};
  for (int k = 0; k < 15; ++k)
    if (c[k] < lo[k] || c[k] > hi[k]) {
      mp::fail(fn, "cfg %s = %lld is out of range [%lld, %lld]", names[k], static_cast<long long>(c[k]),
               static_cast<long long>(lo[k]), static_cast<long long>(hi[k]));
      return false;
    }
  p.avg = c[10] != 0;
  p.include_pad = c[11] != 0;
  p.divisor = c[12];
  if (p.avg && (c[8] != 1 || c[9] != 1)) return mp::fail(fn, "average pooling has no dilation"), false;
  const int64_t H = x.dim(2), W = x.dim(3);
  if (H * W >= (int64_t{1} << 31)) return mp::fail(fn, "input planes are too large"), false;
  const int64_t ekh = c[8] * (c[0] - 1) + 1, ekw = c[9] * (c[1] - 1) + 1;
  int64_t pt = c[4], pl = c[5], pb = c[6], pr = c[7];
  const bool same = c[13] != 0, ceil_mode = c[14] != 0 && !same;
  if (same) {
    mp::same_pads(H, ekh, c[2], pt, pb);
    mp::same_pads(W, ekw, c[3], pl, pr);
  }
  if (pt >= ekh || pb >= ekh || pl >= ekw || pr >= ekw) {
    mp::fail(fn, "padding (%lld,%lld,%lld,%lld) must be smaller than the %lldx%lld window", static_cast<long long>(pt),
             static_cast<long long>(pl), static_cast<long long>(pb), static_cast<long long>(pr),
             static_cast<long long>(ekh), static_cast<long long>(ekw));
    return false;
  }
  p.g = mp::Geo::make(H, W, c[0], c[1], c[2], c[3], pt, pl, pb, pr, c[8], c[9]);
  p.g.OH = out_size(H, pt, pb, ekh, c[2], ceil_mode);
  p.g.OW = out_size(W, pl, pr, ekw, c[3], ceil_mode);
  if (!p.g.valid()) {
    mp::fail(fn, "window %lldx%lld gives no output on a %lldx%lld input", static_cast<long long>(ekh),
             static_cast<long long>(ekw), static_cast<long long>(H), static_cast<long long>(W));
    return false;
  }
  return true;
}

// [lo, hi) of the valid taps / input positions of window o along one axis, and the window's extent inside
// the padded input (for count_include_pad).
struct Span {
  int64_t lo, hi, padded;
};
Span span(int64_t o, int64_t n, int64_t k, int64_t s, int64_t lo_pad, int64_t hi_pad) {
  const int64_t start = o * s - lo_pad, end = std::min(start + k, n + hi_pad);
  return {std::max<int64_t>(start, 0), std::min(end, n), end - start};
}

// Per-output divisors of an average pool, separable: rows(oh) * cols(ow).
struct Divisors {
  std::vector<float> inv;  // [OH*OW] reciprocal divisors (0 where the window is empty)
  Divisors(const PoolSpec &p) {
    const mp::Geo &g = p.g;
    inv.resize(static_cast<size_t>(g.OH * g.OW));
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const Span r = span(oh, g.H, g.KH, g.sh, g.pt, g.pb);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const Span q = span(ow, g.W, g.KW, g.sw, g.pl, g.pr);
        double d = p.divisor ? double(p.divisor)
                   : p.include_pad ? double(r.padded) * double(q.padded)
                                   : double(std::max<int64_t>(r.hi - r.lo, 0)) * double(std::max<int64_t>(q.hi - q.lo, 0));
        inv[oh * g.OW + ow] = d > 0 ? static_cast<float>(1.0 / d) : 0.f;
      }
    }
  }
};

__attribute__((target_clones("avx512f", "avx2", "default")))
void avg_plane(const float *x, const mp::Geo &g, const float *inv, float *y, float *rowsum) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const Span r = span(oh, g.H, g.KH, g.sh, g.pt, g.pb);
    std::fill(rowsum, rowsum + g.W, 0.f);
    for (int64_t h = r.lo; h < r.hi; ++h) {
      const float *xr = x + h * g.W;
#pragma omp simd
      for (int64_t w = 0; w < g.W; ++w) rowsum[w] += xr[w];
    }
    float *yr = y + oh * g.OW;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const Span q = span(ow, g.W, g.KW, g.sw, g.pl, g.pr);
      float s = 0.f;
      for (int64_t w = q.lo; w < q.hi; ++w) s += rowsum[w];
      yr[ow] = s * inv[oh * g.OW + ow];
    }
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void avg_plane_bwd(const float *dy, const mp::Geo &g, const float *inv, float *dx, float *t) {
  std::fill(dx, dx + g.H * g.W, 0.f);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const Span r = span(oh, g.H, g.KH, g.sh, g.pt, g.pb);
    if (r.hi <= r.lo) continue;
    std::fill(t, t + g.W, 0.f);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const Span q = span(ow, g.W, g.KW, g.sw, g.pl, g.pr);
      const float v = dy[oh * g.OW + ow] * inv[oh * g.OW + ow];
      for (int64_t w = q.lo; w < q.hi; ++w) t[w] += v;
    }
    for (int64_t h = r.lo; h < r.hi; ++h) {
      float *d = dx + h * g.W;
#pragma omp simd
      for (int64_t w = 0; w < g.W; ++w) d[w] += t[w];
    }
  }
}

// Max pooling with dilation (the undilated case uses planes.cc): taps in row-major order, the first
// maximum wins; an empty window gives -inf and no gradient.
void max_plane_dilated(const float *x, const mp::Geo &g, float *y) {
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      float m = -INFINITY;
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const int64_t iw = ow * g.sw - g.pl + kw * g.dw;
          if (iw >= 0 && iw < g.W) m = std::max(m, x[ih * g.W + iw]);
        }
      }
      y[oh * g.OW + ow] = m;
    }
}

void max_plane_dilated_bwd(const float *dy, const float *x, const float *y, const mp::Geo &g, float *dx) {
  std::fill(dx, dx + g.H * g.W, 0.f);
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const float m = y[oh * g.OW + ow];
      int64_t at = -1;
      for (int64_t kh = 0; kh < g.KH && at < 0; ++kh) {
        const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const int64_t iw = ow * g.sw - g.pl + kw * g.dw;
          if (iw >= 0 && iw < g.W && x[ih * g.W + iw] == m) {
            at = ih * g.W + iw;
            break;
          }
        }
      }
      if (at >= 0) dx[at] += dy[oh * g.OW + ow];
    }
}

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

bool dilated(const mp::Geo &g) { return g.dh != 1 || g.dw != 1; }

}  // namespace

// inputs cfg[16], x[N,C,H,W]; output y[N,C,OH,OW].
MP_AOT_ENTRY(PoolForward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kFwd, nparam, params, ndims, shapes, dtypes, {"cfg:i1", "x:f4", "y:f4"}, a)) return 1;
  const mp::Arg &x = a[1], &y = a[2];
  PoolSpec p;
  if (!read_pool(kFwd, a[0], x, p)) return 1;
  const mp::Geo &g = p.g;
  const int64_t planes = x.dim(0) * x.dim(1), HW = g.H * g.W, OHW = g.OH * g.OW;
  if (!mp::expect_shape(kFwd, y, {x.dim(0), x.dim(1), g.OH, g.OW})) return 1;
  if (p.avg) {
    const Divisors d(p);
    for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
      float *rowsum = mp::scratch(15, g.W);
      for (int64_t q = p0; q < p1; ++q) avg_plane(x.f + q * HW, g, d.inv.data(), y.f + q * OHW, rowsum);
    });
  } else if (dilated(g)) {
    for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
      for (int64_t q = p0; q < p1; ++q) max_plane_dilated(x.f + q * HW, g, y.f + q * OHW);
    });
  } else {
    for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
      mp::maxpool_planes(x.f + p0 * HW, p1 - p0, g, y.f + p0 * OHW);
    });
  }
  return 0;
}

// inputs cfg, dy[N,C,OH,OW], x, y (the forward output); output dx[N,C,H,W]. Max: each dy goes to the first
// maximum of its window (row-major); average: spread evenly with the forward divisor.
MP_AOT_ENTRY(PoolBackward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kBwd, nparam, params, ndims, shapes, dtypes, {"cfg:i1", "dy:f4", "x:f4", "y:f4", "dx:f4"}, a))
    return 1;
  const mp::Arg &dy = a[1], &x = a[2], &y = a[3], &dx = a[4];
  PoolSpec p;
  if (!read_pool(kBwd, a[0], x, p)) return 1;
  const mp::Geo &g = p.g;
  const int64_t planes = x.dim(0) * x.dim(1), HW = g.H * g.W, OHW = g.OH * g.OW;
  if (!mp::expect_shape(kBwd, dy, {x.dim(0), x.dim(1), g.OH, g.OW}) ||
      !mp::expect_shape(kBwd, y, {x.dim(0), x.dim(1), g.OH, g.OW}) ||
      !mp::expect_shape(kBwd, dx, {x.dim(0), x.dim(1), g.H, g.W}))
    return 1;
  if (p.avg) {
    const Divisors d(p);
    for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
      float *t = mp::scratch(15, g.W);
      for (int64_t q = p0; q < p1; ++q) avg_plane_bwd(dy.f + q * OHW, g, d.inv.data(), dx.f + q * HW, t);
    });
  } else if (dilated(g)) {
    for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
      for (int64_t q = p0; q < p1; ++q)
        max_plane_dilated_bwd(dy.f + q * OHW, x.f + q * HW, y.f + q * OHW, g, dx.f + q * HW);
    });
  } else {
    for_plane_blocks(planes, [&](int64_t p0, int64_t p1) {
      mp::maxpool_planes_bwd(dy.f + p0 * OHW, x.f + p0 * HW, y.f + p0 * OHW, p1 - p0, g, dx.f + p0 * HW);
    });
  }
  return 0;
}
