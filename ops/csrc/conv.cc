// General 2-D convolution (NCHW, OIHW weights, any kernel size / stride / explicit padding) with an
// optional fused ReLU, as im2col + GEMM per image chunk, and its input and weight gradients.
#include <algorithm>

#include "chunks.h"
#include "common.h"
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

bool is_pointwise(const mp::Geo &g) {
  return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
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
  const bool pw = is_pointwise(g);
  mp::for_chunks(N, OHW, [&](int64_t, int64_t n0, int64_t nb) {
    const int64_t cols = nb * OHW;
    const float *col = x.f + n0 * C * HW;
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
      float *col = mp::scratch(0, K * cols);
      mp::sgemm(true, false, K, cols, O, 1.f, w.f, K, G, cols, 0.f, col, cols);
      std::fill(dxn, dxn + nb * C * HW, 0.f);
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
