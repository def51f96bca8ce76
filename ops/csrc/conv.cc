// General 2-D convolution (NCHW, OIHW weights, any kernel size / stride / explicit padding) with an
// optional fused ReLU, as im2col + GEMM per image chunk, and its input and weight gradients; 3x3 stride-1
// layers go to Winograd (winograd.cc) wherever its cost model says so, as the general convolution's do.
#include <algorithm>

#include "chunks.h"
#include "common.h"
#include "conv_spec.h"
#include "gemm.h"
#include "planes.h"

namespace {

constexpr const char *kFwd = "Conv2dForward";

// cfg = [stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, relu, same]; same = 1 ignores the
// explicit pads and pads "same" for the actual input size (MindSpore's pad_mode="same").
bool read_cfg(const char *fn, const mp::Arg &cfg, const mp::Arg &x, const mp::Arg &w, mp::Geo &g, bool &relu) {
  if (!mp::expect_shape(fn, cfg, {8})) return false;
  int64_t c[8];
  std::copy(cfg.i64, cfg.i64 + 8, c);
  for (int k = 0; k < 6; ++k)
    if (c[k] < (k < 2 ? 1 : 0) || c[k] > 4096) {
      mp::fail(fn, "cfg[%d] = %lld is out of range (strides >= 1, pads >= 0)", k, static_cast<long long>(c[k]));
      return false;
    }
  if (x.dim(1) != w.dim(1)) {
    mp::fail(fn, "input has %lld channels but the weight expects %lld", static_cast<long long>(x.dim(1)),
             static_cast<long long>(w.dim(1)));
    return false;
  }
  if (c[7]) {
    mp::same_pads(x.dim(2), w.dim(2), c[0], c[2], c[4]);
    mp::same_pads(x.dim(3), w.dim(3), c[1], c[3], c[5]);
  }
  g = mp::Geo::make(x.dim(2), x.dim(3), w.dim(2), w.dim(3), c[0], c[1], c[2], c[3], c[4], c[5]);
  if (!g.valid() || c[2] >= g.KH || c[4] >= g.KH || c[3] >= g.KW || c[5] >= g.KW) {
    mp::fail(fn, "kernel %lldx%lld with padding (%lld,%lld,%lld,%lld) does not fit a %lldx%lld input",
             static_cast<long long>(g.KH), static_cast<long long>(g.KW), static_cast<long long>(c[2]),
             static_cast<long long>(c[3]), static_cast<long long>(c[4]), static_cast<long long>(c[5]),
             static_cast<long long>(g.H), static_cast<long long>(g.W));
    return false;
  }
  relu = c[6] != 0;
  return true;
}

// The layer as the general convolution describes it, for the Winograd cost models and kernels.
mp::ConvSpec winograd_spec(const mp::Arg &x, const mp::Arg &w, const mp::Geo &g, bool relu) {
  mp::ConvSpec s;
  s.N = x.dim(0), s.C = s.Cg = x.dim(1), s.H = g.H, s.W = g.W, s.O = s.Og = w.dim(0);
  s.K = s.C * g.KH * g.KW;
  s.g = g;
  s.act = relu ? mp::kReLU : mp::kNone;
  return s;
}

bool is_pointwise(const mp::Geo &g) {
  return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
}

// One image's im2col matrix (K x OH*OW) of a large map does not fit in L2 (the stem's 7x7 at 112x112 is
// 7 MB): such a layer is run in bands of output rows whose im2col buffer does (GEMM per band, fp32 or
// bf16 panels packed from cache).
constexpr int64_t kBandFloats = int64_t{1} << 18, kBandMinCols = 384;

int64_t band_rows(const mp::Geo &g, int64_t K) {
  const int64_t cols = std::max(kBandMinCols, kBandFloats / std::max<int64_t>(K, 1));
  return std::min(g.OH, std::max<int64_t>(1, cols / g.OW));
}

// The geometry of output rows [oh0, oh0 + rows): the same taps, read from input row oh*sh - pt + kh*dh.
mp::Geo band_of(const mp::Geo &g, int64_t oh0, int64_t rows) {
  mp::Geo b = g;
  b.OH = rows;
  b.pt = g.pt - oh0 * g.sh;
  return b;
}

// fn(oh0, rows) for each band of output rows (one band: the whole map, when it fits).
template <class F>
void for_bands(const mp::Geo &g, int64_t K, F fn) {
  const int64_t rows = band_rows(g, K);
  for (int64_t oh0 = 0; oh0 < g.OH; oh0 += rows) fn(oh0, std::min(rows, g.OH - oh0));
}

}  // namespace

// inputs x[N,C,H,W], w[O,C,KH,KW], cfg[8] int64; output y[N,O,OH,OW].
MP_AOT_ENTRY(Conv2dForward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kFwd, nparam, params, ndims, shapes, dtypes, {"x:f4", "w:f4", "cfg:i1", "y:f4"}, a)) return 1;
  const mp::Arg &x = a[0], &w = a[1], &cfg = a[2], &y = a[3];
  mp::Geo g;
  bool relu;
  if (!read_cfg(kFwd, cfg, x, w, g, relu)) return 1;
  const int64_t N = x.dim(0), C = x.dim(1), O = w.dim(0), K = C * g.KH * g.KW, OHW = g.OH * g.OW, HW = g.H * g.W;
  if (!mp::expect_shape(kFwd, y, {N, O, g.OH, g.OW})) return 1;
  const mp::ConvSpec ws = winograd_spec(x, w, g, relu);
  if (const int m = mp::winograd_choice(ws, false)) {
    mp::conv_forward_winograd(ws, m, x.f, w.f, nullptr, y.f);
    return 0;
  }
  const bool pw = is_pointwise(g);
  mp::for_chunks(N, OHW, [&](int64_t, int64_t n0, int64_t nb) {
    const int64_t cols = nb * OHW;
    const float *col = x.f + n0 * C * HW;
    if (nb == 1 && !pw) {  // a large map: in bands of output rows
      float *out = y.f + n0 * O * OHW;
      float *buf = mp::scratch(0, K * band_rows(g, K) * g.OW);
      for_bands(g, K, [&](int64_t oh0, int64_t rows) {
        const int64_t bc = rows * g.OW;
        mp::im2col(x.f + n0 * C * HW, C, 1, HW, C * HW, band_of(g, oh0, rows), buf);
        mp::sgemm(false, false, O, bc, K, 1.f, w.f, K, buf, bc, 0.f, out + oh0 * g.OW, OHW);
      });
      if (relu) mp::relu_inplace(out, O * OHW);
      return;
    }
    if (!(pw && nb == 1)) {
      float *buf = mp::scratch(0, K * cols);
      mp::im2col(x.f + n0 * C * HW, C, nb, HW, C * HW, g, buf);
      col = buf;
    }
    if (nb == 1) {
      float *out = y.f + n0 * O * OHW;
      mp::sgemm(false, false, O, cols, K, 1.f, w.f, K, col, cols, 0.f, out, cols);
      if (relu) mp::relu_inplace(out, O * OHW);
    } else {
      float *out = mp::scratch(1, O * cols);
      mp::sgemm(false, false, O, cols, K, 1.f, w.f, K, col, cols, 0.f, out, cols);
      mp::scatter(out, O, nb, OHW, relu, y.f + n0 * O * OHW, OHW, O * OHW);
    }
  });
  return 0;
}

namespace {

// The shared part of both gradients: validate, then run fn(tid, n0, nb, G) per chunk with G the
// ReLU-masked output gradient of the chunk as [O][nb*OHW].
template <class F>
int conv_backward(const char *fn, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                  bool is_dx, F body) {
  const char *out_spec = is_dx ? "dx:f4" : "dw:f4";
  std::vector<mp::Arg> a;
  if (!mp::bind(fn, nparam, params, ndims, shapes, dtypes, {"dy:f4", "y:f4", "x:f4", "w:f4", "cfg:i1", out_spec}, a))
    return 1;
  const mp::Arg &dy = a[0], &y = a[1], &x = a[2], &w = a[3], &cfg = a[4], &out = a[5];
  mp::Geo g;
  bool relu;
  if (!read_cfg(fn, cfg, x, w, g, relu)) return 1;
  const int64_t N = x.dim(0), O = w.dim(0), OHW = g.OH * g.OW;
  if (!mp::expect_shape(fn, dy, {N, O, g.OH, g.OW}) || !mp::expect_shape(fn, y, {N, O, g.OH, g.OW}) ||
      !(is_dx ? mp::expect_shape(fn, out, {N, x.dim(1), g.H, g.W})
              : mp::expect_shape(fn, out, {O, x.dim(1), g.KH, g.KW})))
    return 1;
  const mp::ConvSpec ws = winograd_spec(x, w, g, relu);
  if (const int m = is_dx ? mp::winograd_choice(ws, true) : mp::winograd_filter_choice(ws)) {
    if (is_dx)
      mp::conv_backward_data_winograd(ws, m, dy.f, y.f, w.f, out.f);
    else
      mp::conv_backward_filter_winograd(ws, m, x.f, dy.f, y.f, out.f);
    return 0;
  }
  const mp::ChunkPlan plan(N, OHW);
  body(x, w, out, g, plan, [&](auto &&chunk) {
    plan.run([&](int64_t ci, int64_t n0, int64_t nb) {
      float *G = mp::scratch(1, O * nb * OHW);
      mp::gather(dy.f + n0 * O * OHW, relu ? y.f + n0 * O * OHW : nullptr, O, nb, OHW, O * OHW, OHW, G);
      chunk(ci, n0, nb, G);
    });
  });
  return 0;
}

}  // namespace

// inputs dy[N,O,OH,OW], y (the forward output, for the ReLU mask), x, w, cfg; output dx[N,C,H,W].
// A separate op from the weight gradient so that GRAPH mode drops it for the network's input layer.
MP_AOT_ENTRY(Conv2dBackwardData) {
  return conv_backward("Conv2dBackwardData", nparam, params, ndims, shapes, dtypes, true,
                       [](const mp::Arg &x, const mp::Arg &w, const mp::Arg &dx, const mp::Geo &g, const mp::ChunkPlan &,
                          auto run) {
    const int64_t C = x.dim(1), O = w.dim(0), K = C * g.KH * g.KW, OHW = g.OH * g.OW, HW = g.H * g.W;
    const bool pw = is_pointwise(g);
    run([&](int64_t, int64_t n0, int64_t nb, const float *G) {
      const int64_t cols = nb * OHW;
      float *dxn = dx.f + n0 * C * HW;
      if (pw && nb == 1) {
        mp::sgemm(true, false, K, cols, O, 1.f, w.f, K, G, cols, 0.f, dxn, cols);
        return;
      }
      std::fill(dxn, dxn + nb * C * HW, 0.f);
      if (nb == 1) {  // in bands of output rows, as the forward
        float *col = mp::scratch(0, K * band_rows(g, K) * g.OW);
        for_bands(g, K, [&](int64_t oh0, int64_t rows) {
          const int64_t bc = rows * g.OW;
          mp::sgemm(true, false, K, bc, O, 1.f, w.f, K, G + oh0 * g.OW, cols, 0.f, col, bc);
          mp::col2im_add(col, C, 1, dxn, HW, C * HW, band_of(g, oh0, rows));
        });
        return;
      }
      float *col = mp::scratch(0, K * cols);
      mp::sgemm(true, false, K, cols, O, 1.f, w.f, K, G, cols, 0.f, col, cols);
      mp::col2im_add(col, C, nb, dxn, HW, C * HW, g);
    });
  });
}

// inputs dy, y, x, w, cfg (as Conv2dBackwardData); output dw[O,C,KH,KW].
MP_AOT_ENTRY(Conv2dBackwardFilter) {
  return conv_backward("Conv2dBackwardFilter", nparam, params, ndims, shapes, dtypes, false,
                       [](const mp::Arg &x, const mp::Arg &w, const mp::Arg &dw, const mp::Geo &g, const mp::ChunkPlan &plan,
                          auto run) {
    const int64_t C = x.dim(1), O = w.dim(0), K = C * g.KH * g.KW, OHW = g.OH * g.OW, HW = g.H * g.W;
    const bool pw = is_pointwise(g);
    mp::GradAccum acc(O * K, plan.chunks);
    run([&](int64_t ci, int64_t n0, int64_t nb, const float *G) {
      const int64_t cols = nb * OHW;
      const float *col = x.f + n0 * C * HW;
      if (nb == 1 && !pw) {  // in bands of output rows: each band's products add to the chunk's partial
        float *buf = mp::scratch(0, K * band_rows(g, K) * g.OW);
        for_bands(g, K, [&](int64_t oh0, int64_t rows) {
          const int64_t bc = rows * g.OW;
          mp::im2col(x.f + n0 * C * HW, C, 1, HW, C * HW, band_of(g, oh0, rows), buf);
          mp::sgemm(false, true, O, K, bc, 1.f, G + oh0 * g.OW, cols, buf, bc, oh0 == 0 ? 0.f : 1.f, acc.of(ci), K);
        });
        return;
      }
      if (!(pw && nb == 1)) {
        float *buf = mp::scratch(0, K * cols);
        mp::im2col(x.f + n0 * C * HW, C, nb, HW, C * HW, g, buf);
        col = buf;
      }
      mp::sgemm(false, true, O, K, cols, 1.f, G, cols, col, cols, 0.f, acc.of(ci), K);
    });
    acc.reduce_into(dw.f);
  });
}
