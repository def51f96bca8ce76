// The general 2-D convolution behind mindplug.ops.Conv2d: any kernel size, stride, dilation, explicit or
// "same" padding, groups (depthwise has its own direct kernel), bias, BatchNorm folded in for inference,
// and a fused activation; forward, input gradient and weight (+ bias / BatchNorm) gradients.
// 3x3 stride-1 layers go to Winograd when the cost model says so (winograd.cc).
#include <algorithm>
#include <cmath>

#include "chunks.h"
#include "conv_spec.h"
#include "gemm.h"
#include "planes.h"
#include "threads.h"

namespace mp {

namespace {

bool in_range(const char *fn, const char *what, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return true;
  fail(fn, "cfg %s = %lld is out of range [%lld, %lld]", what, static_cast<long long>(v), static_cast<long long>(lo),
       static_cast<long long>(hi));
  return false;
}

bool pointwise(const Geo &g) {
  return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
}

// G[o][b*OHW + p] = dy * act'(y) of the chunk's images, or dy itself (no copy) when that is already it.
const float *masked_chunk(const ConvSpec &s, const float *dy, const float *y, int64_t n0, int64_t nb) {
  const int64_t OHW = s.OHW(), cols = nb * OHW, O = s.O;
  if (s.act == kNone && nb == 1) return dy + n0 * O * OHW;
  float *G = scratch(1, O * cols);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t off = (n0 + b) * O * OHW + o * OHW;
      act_mask(dy + off, y + off, G + o * cols + b * OHW, OHW, s.act, s.alpha);
    }
  return G;
}

}  // namespace

void masked_channel_sums(const ConvSpec &s, const float *dy, const float *y, float *db) {
  const int64_t OHW = s.OHW(), O = s.O;
  parallel_for(O, num_threads(), [&](int64_t o) {
    float *g = scratch(1, static_cast<size_t>(OHW));
    double sum = 0.0;
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t off = (n * O + o) * OHW;
      act_mask(dy + off, y + off, g, OHW, s.act, s.alpha);
      float part = 0.f;
      for (int64_t i = 0; i < OHW; ++i) part += g[i];
      sum += part;
    }
    db[o] = static_cast<float>(sum);
  });
}

bool read_conv_spec(const char *fn, const Arg &cfg, const Arg &x, const Arg &w, ConvSpec &s) {
  if (!expect_shape(fn, cfg, {kConvCfg})) return false;
  const int64_t *c = cfg.i64;
  static const char *names[] = {"stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right",
                                "dilation_h", "dilation_w", "groups", "act", "has_bias", "fold_bn", "same", "algo"};
  const int64_t lo[] = {1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0};
  const int64_t hi[] = {4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 1 << 20, kActCount - 1, 1, 1, 1, 4};
  for (int k = 0; k < 14; ++k)
    if (!in_range(fn, names[k], c[k], lo[k], hi[k])) return false;
  s.N = x.dim(0), s.C = x.dim(1), s.H = x.dim(2), s.W = x.dim(3);
  s.O = w.dim(0), s.G = c[8];
  s.act = c[9], s.has_bias = c[10] != 0, s.fold = c[11] != 0, s.same = c[12] != 0, s.algo = c[13];
  s.alpha = static_cast<float>(cfg_double(c[14]));
  s.eps = cfg_double(c[15]);
  if (s.C % s.G != 0 || s.O % s.G != 0) {
    fail(fn, "groups = %lld must divide the input channels (%lld) and the output channels (%lld)",
         static_cast<long long>(s.G), static_cast<long long>(s.C), static_cast<long long>(s.O));
    return false;
  }
  s.Cg = s.C / s.G, s.Og = s.O / s.G;
  if (w.dim(1) != s.Cg) {
    fail(fn, "input has %lld channels in %lld group(s), so the weight needs %lld input channels, got %lld",
         static_cast<long long>(s.C), static_cast<long long>(s.G), static_cast<long long>(s.Cg),
         static_cast<long long>(w.dim(1)));
    return false;
  }
  if (s.act == kLeaky && !(s.alpha >= 0.f && s.alpha <= 1.f)) {
    fail(fn, "the LeakyReLU slope must be in [0, 1], got %g", static_cast<double>(s.alpha));
    return false;
  }
  if (s.fold && !(s.eps > 0.0 && std::isfinite(s.eps))) {
    fail(fn, "the BatchNorm epsilon must be positive, got %g", s.eps);
    return false;
  }
  if (s.H * s.W >= (int64_t{1} << 31)) {
    fail(fn, "input planes of %lld x %lld pixels are too large", static_cast<long long>(s.H),
         static_cast<long long>(s.W));
    return false;
  }
  int64_t pt = c[2], pl = c[3], pb = c[4], pr = c[5];
  const int64_t KH = w.dim(2), KW = w.dim(3);
  if (KH > 4096 || KW > 4096) {
    fail(fn, "kernel %lldx%lld is too large", static_cast<long long>(KH), static_cast<long long>(KW));
    return false;
  }
  if (s.same) {
    same_pads(s.H, c[6] * (KH - 1) + 1, c[0], pt, pb);
    same_pads(s.W, c[7] * (KW - 1) + 1, c[1], pl, pr);
  }
  s.g = Geo::make(s.H, s.W, KH, KW, c[0], c[1], pt, pl, pb, pr, c[6], c[7]);
  if (!s.g.valid()) {
    fail(fn, "kernel %lldx%lld (dilation %lldx%lld) with padding (%lld,%lld,%lld,%lld) gives no output on a %lldx%lld input",
         static_cast<long long>(KH), static_cast<long long>(KW), static_cast<long long>(c[6]),
         static_cast<long long>(c[7]), static_cast<long long>(pt), static_cast<long long>(pl),
         static_cast<long long>(pb), static_cast<long long>(pr), static_cast<long long>(s.H),
         static_cast<long long>(s.W));
    return false;
  }
  s.K = s.Cg * KH * KW;
  return true;
}

bool peek_conv_flags(const char *fn, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                     bool &has_bias, bool &fold) {
  if (nparam < 1 || !params || !ndims || !shapes || !dtypes) return fail(fn, "no tensors"), false;
  if (!dtypes[0] || std::strcmp(dtypes[0], "int64") != 0 || ndims[0] != 1 || !shapes[0] ||
      shapes[0][0] != kConvCfg || !params[0]) {
    fail(fn, "the first input must be the int64 cfg[%lld]", static_cast<long long>(kConvCfg));
    return false;
  }
  const int64_t *c = static_cast<const int64_t *>(params[0]);
  if (!in_range(fn, "has_bias", c[10], 0, 1) || !in_range(fn, "fold_bn", c[11], 0, 1)) return false;
  has_bias = c[10] != 0;
  fold = c[11] != 0;
  return true;
}

ConvWeights::ConvWeights(const ConvSpec &s, const float *w_in, const Arg *extra) {
  const float *bias = s.has_bias ? extra[0].f : nullptr;
  if (!s.fold) {
    w = w_in;
    b = bias;
    return;
  }
  const Arg *bn = extra + (s.has_bias ? 1 : 0);
  const float *gamma = bn[0].f, *beta = bn[1].f, *mean = bn[2].f, *var = bn[3].f;
  scale.resize(static_cast<size_t>(s.O));
  wbuf.resize(static_cast<size_t>(s.O * s.K));
  bbuf.resize(static_cast<size_t>(s.O));
  for (int64_t o = 0; o < s.O; ++o) {
    const float sc = static_cast<float>(gamma[o] / std::sqrt(static_cast<double>(var[o]) + s.eps));
    scale[o] = sc;
    for (int64_t k = 0; k < s.K; ++k) wbuf[o * s.K + k] = w_in[o * s.K + k] * sc;
    bbuf[o] = beta[o] + ((bias ? bias[o] : 0.f) - mean[o]) * sc;
  }
  w = wbuf.data();
  b = bbuf.data();
}

void conv_forward_gemm(const ConvSpec &s, const float *x, const float *wp, const float *bp, float *y) {
  const Geo &g = s.g;
  const int64_t OHW = s.OHW(), HW = s.HW(), K = s.K, C = s.C, O = s.O, Og = s.Og, Cg = s.Cg;
  const bool pw = pointwise(g);
  for_chunks(s.N, OHW, [&](int64_t, int64_t n0, int64_t nb) {
    const int64_t cols = nb * OHW;
    float *col = (pw && nb == 1) ? nullptr : scratch(0, K * cols);
    float *out = nb == 1 ? nullptr : scratch(1, Og * cols);
    for (int64_t gi = 0; gi < s.G; ++gi) {
      const float *xg = x + n0 * C * HW + gi * Cg * HW;
      const float *B = xg;
      if (col) {
        im2col(xg, Cg, nb, HW, C * HW, g, col);
        B = col;
      }
      float *dst = nb == 1 ? y + n0 * O * OHW + gi * Og * OHW : out;
      sgemm(false, false, Og, cols, K, 1.f, wp + gi * Og * K, K, B, cols, 0.f, dst, cols);
      for (int64_t o = 0; o < Og; ++o) {
        const float bias = bp ? bp[gi * Og + o] : 0.f;
        if (nb == 1) {
          bias_act_inplace(dst + o * OHW, OHW, bias, s.act, s.alpha);
        } else {
          for (int64_t b = 0; b < nb; ++b)
            bias_act_copy(out + o * cols + b * OHW, y + (n0 + b) * O * OHW + (gi * Og + o) * OHW, OHW, bias, s.act,
                          s.alpha);
        }
      }
    }
  });
}

void conv_backward_data_gemm(const ConvSpec &s, const float *dy, const float *y, const float *wp, float *dx) {
  const Geo &g = s.g;
  const int64_t OHW = s.OHW(), HW = s.HW(), K = s.K, C = s.C, Og = s.Og, Cg = s.Cg;
  const bool pw = pointwise(g);
  const ChunkPlan plan(s.N, OHW);
  plan.run([&](int64_t, int64_t n0, int64_t nb) {
    const int64_t cols = nb * OHW;
    const float *Gm = masked_chunk(s, dy, y, n0, nb);
    float *dxn = dx + n0 * C * HW;
    const bool direct = pw && nb == 1;  // dx of each group is the GEMM's output itself
    float *col = direct ? nullptr : scratch(0, K * cols);
    if (!direct) std::fill(dxn, dxn + nb * C * HW, 0.f);
    for (int64_t gi = 0; gi < s.G; ++gi) {
      float *dst = direct ? dxn + gi * Cg * HW : col;
      sgemm(true, false, K, cols, Og, 1.f, wp + gi * Og * K, K, Gm + gi * Og * cols, cols, 0.f, dst, cols);
      if (!direct) col2im_add(col, Cg, nb, dxn + gi * Cg * HW, HW, C * HW, g);
    }
  });
}

void conv_backward_filter_gemm(const ConvSpec &s, const float *dy, const float *y, const float *x, float *dw,
                               float *db) {
  const Geo &g = s.g;
  const int64_t OHW = s.OHW(), HW = s.HW(), K = s.K, C = s.C, O = s.O, Og = s.Og, Cg = s.Cg;
  const bool pw = pointwise(g);
  const ChunkPlan plan(s.N, OHW);
  GradAccum acc(O * K + O, plan.chunks);
  plan.run([&](int64_t ci, int64_t n0, int64_t nb) {
    const int64_t cols = nb * OHW;
    const float *Gm = masked_chunk(s, dy, y, n0, nb);
    float *part = acc.of(ci);
    float *col = (pw && nb == 1) ? nullptr : scratch(0, K * cols);
    for (int64_t gi = 0; gi < s.G; ++gi) {
      const float *xg = x + n0 * C * HW + gi * Cg * HW;
      const float *B = xg;
      if (col) {
        im2col(xg, Cg, nb, HW, C * HW, g, col);
        B = col;
      }
      sgemm(false, true, Og, K, cols, 1.f, Gm + gi * Og * cols, cols, B, cols, 0.f, part + gi * Og * K, K);
    }
    for (int64_t o = 0; o < O; ++o) {
      double sum = 0.0;
      const float *r = Gm + o * cols;
      for (int64_t i = 0; i < cols; ++i) sum += r[i];
      part[O * K + o] = static_cast<float>(sum);
    }
  });
  acc.reduce_into(dw, 0, O * K);
  if (db) acc.reduce_into(db, O * K, O);
}

}  // namespace mp

namespace {

constexpr const char *kFwd = "ConvForward";
constexpr const char *kBwdData = "ConvBackwardData";
constexpr const char *kBwdFilter = "ConvBackwardFilter";

// cfg, then `lead` (x, w or dy, y, x, w), then bias / BatchNorm, then the outputs.
std::vector<const char *> conv_spec_list(std::initializer_list<const char *> lead, bool has_bias, bool fold,
                                         std::initializer_list<const char *> outs) {
  std::vector<const char *> spec{"cfg:i1"};
  spec.insert(spec.end(), lead);
  if (has_bias) spec.push_back("bias:f1");
  if (fold) spec.insert(spec.end(), {"gamma:f1", "beta:f1", "mean:f1", "var:f1"});
  spec.insert(spec.end(), outs);
  return spec;
}

bool check_extras(const char *fn, const mp::ConvSpec &s, const mp::Arg *extra) {
  for (int64_t k = 0; k < s.extra_inputs(); ++k)
    if (!mp::expect_shape(fn, extra[k], {s.O})) return false;
  return true;
}

bool pick_forward(const char *fn, const mp::ConvSpec &s, int64_t &algo, int &m) {
  algo = s.algo;
  m = 0;
  if (algo == mp::kAlgoAuto) {
    if (s.depthwise()) {
      algo = mp::kAlgoDepthwise;
    } else if ((m = mp::winograd_choice(s, false)) != 0) {
      algo = m == 4 ? mp::kAlgoWino4 : mp::kAlgoWino2;
    } else {
      algo = mp::kAlgoGemm;
    }
  }
  if ((algo == mp::kAlgoWino4 || algo == mp::kAlgoWino2) && !mp::winograd_applicable(s))
    return mp::fail(fn, "Winograd needs a 3x3, stride-1, undilated, ungrouped convolution"), false;
  if (algo == mp::kAlgoDepthwise && !s.depthwise())
    return mp::fail(fn, "the depthwise kernel needs groups == in_channels == out_channels"), false;
  if (algo == mp::kAlgoWino4) m = 4;
  if (algo == mp::kAlgoWino2) m = 2;
  return true;
}

}  // namespace

// inputs cfg[16], x[N,C,H,W], w[O,C/G,KH,KW] (, bias[O]) (, gamma, beta, mean, var [O]); output y[N,O,OH,OW].
MP_AOT_ENTRY(ConvForward) {
  bool has_bias = false, fold = false;
  if (!mp::peek_conv_flags(kFwd, nparam, params, ndims, shapes, dtypes, has_bias, fold)) return 1;
  std::vector<mp::Arg> a;
  if (!mp::bind(kFwd, nparam, params, ndims, shapes, dtypes, conv_spec_list({"x:f4", "w:f4"}, has_bias, fold, {"y:f4"}),
                a))
    return 1;
  mp::ConvSpec s;
  if (!mp::read_conv_spec(kFwd, a[0], a[1], a[2], s) || !check_extras(kFwd, s, &a[3])) return 1;
  const mp::Arg &x = a[1], &y = a.back();
  if (!mp::expect_shape(kFwd, y, {s.N, s.O, s.g.OH, s.g.OW})) return 1;
  int64_t algo;
  int m;
  if (!pick_forward(kFwd, s, algo, m)) return 1;
  const mp::ConvWeights cw(s, a[2].f, &a[3]);
  if (algo == mp::kAlgoDepthwise)
    mp::conv_forward_depthwise(s, x.f, cw.w, cw.b, y.f);
  else if (m)
    mp::conv_forward_winograd(s, m, x.f, cw.w, cw.b, y.f);
  else
    mp::conv_forward_gemm(s, x.f, cw.w, cw.b, y.f);
  return 0;
}

namespace {

// The common front of both gradients: bind, validate, check the activation can be differentiated from y.
bool bind_backward(const char *fn, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                   bool is_data, std::vector<mp::Arg> &a, mp::ConvSpec &s) {
  bool has_bias = false, fold = false;
  if (!mp::peek_conv_flags(fn, nparam, params, ndims, shapes, dtypes, has_bias, fold)) return false;
  std::vector<const char *> outs;
  if (is_data) {
    outs = {"dx:f4"};
  } else {
    outs = {"dw:f4"};
    if (has_bias) outs.push_back("dbias:f1");
    if (fold) outs.insert(outs.end(), {"dgamma:f1", "dbeta:f1", "dmean:f1", "dvar:f1"});
  }
  std::vector<const char *> spec{"cfg:i1", "dy:f4", "y:f4", "x:f4", "w:f4"};
  if (has_bias) spec.push_back("bias:f1");
  if (fold) spec.insert(spec.end(), {"gamma:f1", "beta:f1", "mean:f1", "var:f1"});
  spec.insert(spec.end(), outs.begin(), outs.end());
  if (!mp::bind(fn, nparam, params, ndims, shapes, dtypes, spec, a)) return false;
  if (!mp::read_conv_spec(fn, a[0], a[3], a[4], s) || !check_extras(fn, s, &a[5])) return false;
  if (!mp::act_grad_from_output(s.act, s.alpha))
    return mp::fail(fn, "activation %lld cannot be differentiated from its output; pass the pre-activation "
                        "gradient with act = 0", static_cast<long long>(s.act)), false;
  const int64_t N = s.N, O = s.O;
  if (!mp::expect_shape(fn, a[1], {N, O, s.g.OH, s.g.OW}) || !mp::expect_shape(fn, a[2], {N, O, s.g.OH, s.g.OW}))
    return false;
  const size_t first_out = 5 + static_cast<size_t>(s.extra_inputs());
  if (is_data) return mp::expect_shape(fn, a[first_out], {N, s.C, s.H, s.W});
  if (!mp::expect_shape(fn, a[first_out], {O, s.Cg, s.g.KH, s.g.KW})) return false;
  for (size_t k = first_out + 1; k < a.size(); ++k)
    if (!mp::expect_shape(fn, a[k], {O})) return false;
  return true;
}

}  // namespace

// inputs cfg, dy[N,O,OH,OW], y (the forward output, for the activation's derivative), x, w (, bias)
// (, gamma, beta, mean, var); output dx[N,C,H,W]. A separate op from the weight gradient so that GRAPH
// mode drops it for the network's input layer.
MP_AOT_ENTRY(ConvBackwardData) {
  std::vector<mp::Arg> a;
  mp::ConvSpec s;
  if (!bind_backward(kBwdData, nparam, params, ndims, shapes, dtypes, true, a, s)) return 1;
  const mp::ConvWeights cw(s, a[4].f, &a[5]);
  const float *dy = a[1].f, *y = a[2].f;
  float *dx = a.back().f;
  const bool direct = s.depthwise() && (s.algo == mp::kAlgoAuto || s.algo == mp::kAlgoDepthwise);
  int m = 0;  // Winograd tile size, 0 = not Winograd (a forced Winograd the gradient cannot use runs im2col)
  if (!direct && s.algo == mp::kAlgoAuto)
    m = mp::winograd_choice(s, true);
  else if (!direct && (s.algo == mp::kAlgoWino4 || s.algo == mp::kAlgoWino2) && mp::winograd_backward_applicable(s))
    m = s.algo == mp::kAlgoWino4 ? 4 : 2;
  if (direct)
    mp::conv_backward_data_depthwise(s, dy, y, cw.w, dx);
  else if (m)
    mp::conv_backward_data_winograd(s, m, dy, y, cw.w, dx);
  else
    mp::conv_backward_data_gemm(s, dy, y, cw.w, dx);
  return 0;
}

// inputs as ConvBackwardData; outputs dw[O,C/G,KH,KW] (, dbias[O]) (, dgamma, dbeta, dmean, dvar [O]).
MP_AOT_ENTRY(ConvBackwardFilter) {
  std::vector<mp::Arg> a;
  mp::ConvSpec s;
  if (!bind_backward(kBwdFilter, nparam, params, ndims, shapes, dtypes, false, a, s)) return 1;
  const float *dy = a[1].f, *y = a[2].f, *x = a[3].f, *w = a[4].f;
  const size_t first_out = 5 + static_cast<size_t>(s.extra_inputs());
  float *dw = a[first_out].f;
  const bool want_db = s.has_bias || s.fold;
  std::vector<float> db(static_cast<size_t>(want_db ? s.O : 0));
  float *dbp = want_db ? db.data() : nullptr;
  const bool direct = s.depthwise() && (s.algo == mp::kAlgoAuto || s.algo == mp::kAlgoDepthwise);
  int m = 0;  // Winograd's dual for the weight gradient (a forced Winograd the layer cannot use runs im2col)
  if (!direct && s.algo == mp::kAlgoAuto)
    m = mp::winograd_filter_choice(s);
  else if (!direct && (s.algo == mp::kAlgoWino4 || s.algo == mp::kAlgoWino2) && mp::winograd_applicable(s))
    m = s.algo == mp::kAlgoWino4 ? 4 : 2;
  if (direct) {
    mp::conv_backward_filter_depthwise(s, dy, y, x, dw, dbp);
  } else if (m) {
    mp::conv_backward_filter_winograd(s, m, x, dy, y, dw);
    if (dbp) mp::masked_channel_sums(s, dy, y, dbp);
  } else {
    mp::conv_backward_filter_gemm(s, dy, y, x, dw, dbp);
  }
  if (!s.fold) {
    if (s.has_bias) std::copy(db.begin(), db.end(), a[first_out + 1].f);
    return 0;
  }
  // dw above is the gradient of w' = w * s; chain it back to w, bias, gamma, beta, mean, var.
  const mp::ConvWeights cw(s, w, &a[5]);
  const float *bias = s.has_bias ? a[5].f : nullptr;
  const mp::Arg *bn = &a[5 + (s.has_bias ? 1 : 0)];
  const float *gamma = bn[0].f, *mean = bn[2].f, *var = bn[3].f;
  size_t k = first_out + 1;
  float *dbias = s.has_bias ? a[k++].f : nullptr;
  float *dgamma = a[k].f, *dbeta = a[k + 1].f, *dmean = a[k + 2].f, *dvar = a[k + 3].f;
  for (int64_t o = 0; o < s.O; ++o) {
    double ds = static_cast<double>(db[o]) * ((bias ? bias[o] : 0.f) - mean[o]);
    float *dwo = dw + o * s.K;
    const float *wo = w + o * s.K;
    for (int64_t i = 0; i < s.K; ++i) ds += static_cast<double>(dwo[i]) * wo[i];
    const float sc = cw.scale[o];
    for (int64_t i = 0; i < s.K; ++i) dwo[i] *= sc;
    const double inv = 1.0 / std::sqrt(static_cast<double>(var[o]) + s.eps);
    if (dbias) dbias[o] = db[o] * sc;
    dbeta[o] = db[o];
    dgamma[o] = static_cast<float>(ds * inv);
    dmean[o] = -db[o] * sc;
    dvar[o] = static_cast<float>(ds * gamma[o] * -0.5 * inv * inv * inv);
  }
  return 0;
}
