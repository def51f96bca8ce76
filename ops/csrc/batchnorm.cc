// BatchNorm2d (NCHW) with a fused activation, as MindSpore computes it on the CPU:
//   training:  y = act((x - mean_B) / sqrt(var_B + eps) * gamma + beta) with the batch's mean and biased
//              variance; moving_mean' = m * moving_mean + (1 - m) * mean_B,
//              moving_var'  = m * moving_var + (1 - m) * var_B * M / (M - 1)   (M = N*H*W, m = momentum)
//   inference: the same with the moving statistics.
// AOT outputs are fresh tensors, so the updated moving statistics are outputs; the Cell assigns them.
//
// cfg (8 entries): [act, bits(act_alpha), bits(eps), bits(momentum), 0, 0, 0, 0]
// Each channel is one task: its batch statistics are summed in double in a fixed order (reproducible),
// around a shift (the channel's first value) so the variance does not cancel.
#include <algorithm>
#include <cmath>

#include "act.h"
#include "common.h"
#include "threads.h"

namespace {

constexpr int64_t kCfg = 8;

struct BnSpec {
  int64_t N, C, HW, act;
  float alpha;
  double eps, momentum;
  int64_t M() const { return N * HW; }
};

bool read_bn(const char *fn, const std::vector<mp::Arg> &a, BnSpec &s) {
  const mp::Arg &cfg = a[0], &x = a[1];
  if (!mp::expect_shape(fn, cfg, {kCfg})) return false;
  s.act = cfg.i64[0];
  if (!mp::act_valid(s.act)) return mp::fail(fn, "cfg act = %lld is not an activation", static_cast<long long>(s.act)), false;
  s.alpha = static_cast<float>(mp::cfg_double(cfg.i64[1]));
  s.eps = mp::cfg_double(cfg.i64[2]);
  s.momentum = mp::cfg_double(cfg.i64[3]);
  if (!(s.eps > 0 && std::isfinite(s.eps))) return mp::fail(fn, "epsilon must be positive, got %g", s.eps), false;
  if (!(s.momentum >= 0 && s.momentum <= 1)) return mp::fail(fn, "momentum must be in [0, 1], got %g", s.momentum), false;
  if (s.act == mp::kLeaky && !(s.alpha >= 0.f && s.alpha <= 1.f))
    return mp::fail(fn, "the LeakyReLU slope must be in [0, 1], got %g", static_cast<double>(s.alpha)), false;
  s.N = x.dim(0), s.C = x.dim(1), s.HW = x.dim(2) * x.dim(3);
  return true;
}

bool expect_channels(const char *fn, const std::vector<mp::Arg> &a, size_t from, size_t to, int64_t C) {
  for (size_t k = from; k < to; ++k)
    if (!mp::expect_shape(fn, a[k], {C})) return false;
  return true;
}

bool expect_like_x(const char *fn, const mp::Arg &t, const mp::Arg &x) {
  return mp::expect_shape(fn, t, {x.dim(0), x.dim(1), x.dim(2), x.dim(3)});
}

template <class F>
void for_channels(int64_t C, F fn) {
  mp::parallel_for(C, mp::num_threads(), fn);
}

// sum and sum of squares of (v - shift) over n values: float partials over short runs, added in double.
__attribute__((target_clones("avx512f", "avx2", "default")))
void shifted_sums(const float *v, int64_t n, float shift, double &s1, double &s2) {
  for (int64_t i0 = 0; i0 < n; i0 += 256) {
    const int64_t i1 = std::min(n, i0 + 256);
    float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = i0; i < i1; ++i) {
      const float d = v[i] - shift;
      a += d;
      b += d * d;
    }
    s1 += a;
    s2 += b;
  }
}

// y = act((x - mean) * k + c) over n values (the mean first: no cancellation when |mean * k| >> |y|).
__attribute__((target_clones("avx512f", "avx2", "default")))
void scale_shift_act(const float *x, float *y, int64_t n, float mean, float k, float c, int64_t act, float alpha) {
  if (act == mp::kNone || act == mp::kReLU || act == mp::kReLU6 || act == mp::kLeaky) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float v = (x[i] - mean) * k + c;
      if (act == mp::kReLU) v = v > 0.f ? v : 0.f;
      if (act == mp::kReLU6) v = v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
      if (act == mp::kLeaky) v = v > 0.f ? v : v * alpha;
      y[i] = v;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] = mp::act_apply(act, (x[i] - mean) * k + c, alpha);
}

// The activation's derivative times dy, then sums of g and g * xhat (xhat = (x - mean) * invstd).
// With an activation whose derivative needs the pre-activation, z = xhat * gamma + beta is recomputed.
struct GradSums {
  double g = 0, gx = 0;
};

__attribute__((target_clones("avx512f", "avx2", "default")))
void grad_sums(const float *dy, const float *x, const float *y, int64_t n, float mean, float invstd, float gamma,
               float beta, int64_t act, float alpha, bool from_y, float *gbuf, GradSums &s) {
  for (int64_t i0 = 0; i0 < n; i0 += 256) {
    const int64_t i1 = std::min(n, i0 + 256);
    float a = 0.f, b = 0.f;
    if (from_y) {
      mp::act_mask(dy + i0, y + i0, gbuf, i1 - i0, act, alpha);
    } else {
      for (int64_t i = i0; i < i1; ++i)
        gbuf[i - i0] = dy[i] * mp::act_grad_z(act, (x[i] - mean) * invstd * gamma + beta, alpha);
    }
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gbuf[i - i0];
      a += g;
      b += g * ((x[i] - mean) * invstd);
    }
    s.g += a;
    s.gx += b;
  }
}

// dx = k * (g - c1 - xhat * c2) with g recomputed as in grad_sums.
__attribute__((target_clones("avx512f", "avx2", "default")))
void grad_apply(const float *dy, const float *x, const float *y, int64_t n, float mean, float invstd, float gamma,
                float beta, int64_t act, float alpha, bool from_y, float k, float c1, float c2, float *gbuf,
                float *dx) {
  for (int64_t i0 = 0; i0 < n; i0 += 256) {
    const int64_t i1 = std::min(n, i0 + 256);
    if (from_y) {
      mp::act_mask(dy + i0, y + i0, gbuf, i1 - i0, act, alpha);
    } else {
      for (int64_t i = i0; i < i1; ++i)
        gbuf[i - i0] = dy[i] * mp::act_grad_z(act, (x[i] - mean) * invstd * gamma + beta, alpha);
    }
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) dx[i] = k * (gbuf[i - i0] - c1 - ((x[i] - mean) * invstd) * c2);
  }
}

}  // namespace

// inputs cfg[8], x[N,C,H,W], gamma, beta, moving_mean, moving_var [C];
// outputs y, batch_mean, batch_invstd, new_moving_mean, new_moving_var.
MP_AOT_ENTRY(BatchNormTrain) {
  constexpr const char *fn = "BatchNormTrain";
  std::vector<mp::Arg> a;
  if (!mp::bind(fn, nparam, params, ndims, shapes, dtypes,
                {"cfg:i1", "x:f4", "gamma:f1", "beta:f1", "mmean:f1", "mvar:f1", "y:f4", "mean:f1", "invstd:f1",
                 "new_mmean:f1", "new_mvar:f1"},
                a))
    return 1;
  BnSpec s;
  if (!read_bn(fn, a, s) || !expect_channels(fn, a, 2, 6, s.C) || !expect_like_x(fn, a[6], a[1]) ||
      !expect_channels(fn, a, 7, 11, s.C))
    return 1;
  const float *x = a[1].f, *gamma = a[2].f, *beta = a[3].f, *mm = a[4].f, *mv = a[5].f;
  float *y = a[6].f, *mean_o = a[7].f, *invstd_o = a[8].f, *nmm = a[9].f, *nmv = a[10].f;
  const int64_t HW = s.HW, C = s.C, M = s.M();
  for_channels(C, [&](int64_t c) {
    const float shift = x[c * HW];
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < s.N; ++n) shifted_sums(x + (n * C + c) * HW, HW, shift, s1, s2);
    const double m1 = s1 / M, var = std::max(0.0, s2 / M - m1 * m1), mean = shift + m1;
    const double invstd = 1.0 / std::sqrt(var + s.eps);
    const float k = static_cast<float>(gamma[c] * invstd);
    for (int64_t n = 0; n < s.N; ++n)
      scale_shift_act(x + (n * C + c) * HW, y + (n * C + c) * HW, HW, static_cast<float>(mean), k, beta[c], s.act,
                      s.alpha);
    mean_o[c] = static_cast<float>(mean);
    invstd_o[c] = static_cast<float>(invstd);
    const double unbiased = M > 1 ? var * M / (M - 1) : var;
    nmm[c] = static_cast<float>(s.momentum * mm[c] + (1 - s.momentum) * mean);
    nmv[c] = static_cast<float>(s.momentum * mv[c] + (1 - s.momentum) * unbiased);
  });
  return 0;
}

// inputs cfg, dy, x, y (the forward output), gamma, beta, batch_mean, batch_invstd; outputs dx, dgamma, dbeta.
MP_AOT_ENTRY(BatchNormTrainBackward) {
  constexpr const char *fn = "BatchNormTrainBackward";
  std::vector<mp::Arg> a;
  if (!mp::bind(fn, nparam, params, ndims, shapes, dtypes,
                {"cfg:i1", "dy:f4", "x:f4", "y:f4", "gamma:f1", "beta:f1", "mean:f1", "invstd:f1", "dx:f4",
                 "dgamma:f1", "dbeta:f1"},
                a))
    return 1;
  std::vector<mp::Arg> view{a[0], a[2]};
  BnSpec s;
  if (!read_bn(fn, view, s) || !expect_like_x(fn, a[1], a[2]) || !expect_like_x(fn, a[3], a[2]) ||
      !expect_channels(fn, a, 4, 8, s.C) || !expect_like_x(fn, a[8], a[2]) || !expect_channels(fn, a, 9, 11, s.C))
    return 1;
  const float *dy = a[1].f, *x = a[2].f, *y = a[3].f, *gamma = a[4].f, *beta = a[5].f, *mean = a[6].f,
              *invstd = a[7].f;
  float *dx = a[8].f, *dgamma = a[9].f, *dbeta = a[10].f;
  const int64_t HW = s.HW, C = s.C, M = s.M();
  const bool from_y = mp::act_grad_from_output(s.act, s.alpha);
  for_channels(C, [&](int64_t c) {
    float *gbuf = mp::scratch(15, 256);
    GradSums sums;
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t off = (n * C + c) * HW;
      grad_sums(dy + off, x + off, y + off, HW, mean[c], invstd[c], gamma[c], beta[c], s.act, s.alpha, from_y, gbuf,
                sums);
    }
    dbeta[c] = static_cast<float>(sums.g);
    dgamma[c] = static_cast<float>(sums.gx);
    const float k = gamma[c] * invstd[c], c1 = static_cast<float>(sums.g / M), c2 = static_cast<float>(sums.gx / M);
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t off = (n * C + c) * HW;
      grad_apply(dy + off, x + off, y + off, HW, mean[c], invstd[c], gamma[c], beta[c], s.act, s.alpha, from_y, k,
                 c1, c2, gbuf, dx + off);
    }
  });
  return 0;
}

// inputs cfg, x, gamma, beta, mean, var (the moving statistics); output y.
MP_AOT_ENTRY(BatchNormInfer) {
  constexpr const char *fn = "BatchNormInfer";
  std::vector<mp::Arg> a;
  if (!mp::bind(fn, nparam, params, ndims, shapes, dtypes,
                {"cfg:i1", "x:f4", "gamma:f1", "beta:f1", "mean:f1", "var:f1", "y:f4"}, a))
    return 1;
  BnSpec s;
  if (!read_bn(fn, a, s) || !expect_channels(fn, a, 2, 6, s.C) || !expect_like_x(fn, a[6], a[1])) return 1;
  const float *x = a[1].f, *gamma = a[2].f, *beta = a[3].f, *mean = a[4].f, *var = a[5].f;
  float *y = a[6].f;
  const int64_t HW = s.HW, C = s.C, planes = s.N * C;
  mp::parallel_for(planes, mp::num_threads(), [&](int64_t p) {
    const int64_t c = p % C;
    const double invstd = 1.0 / std::sqrt(static_cast<double>(var[c]) + s.eps);
    scale_shift_act(x + p * HW, y + p * HW, HW, mean[c], static_cast<float>(gamma[c] * invstd), beta[c], s.act,
                    s.alpha);
  });
  return 0;
}

// inputs cfg, dy, x, y, gamma, beta, mean, var; outputs dx, dgamma, dbeta (the moving statistics get none).
MP_AOT_ENTRY(BatchNormInferBackward) {
  constexpr const char *fn = "BatchNormInferBackward";
  std::vector<mp::Arg> a;
  if (!mp::bind(fn, nparam, params, ndims, shapes, dtypes,
                {"cfg:i1", "dy:f4", "x:f4", "y:f4", "gamma:f1", "beta:f1", "mean:f1", "var:f1", "dx:f4", "dgamma:f1",
                 "dbeta:f1"},
                a))
    return 1;
  std::vector<mp::Arg> view{a[0], a[2]};
  BnSpec s;
  if (!read_bn(fn, view, s) || !expect_like_x(fn, a[1], a[2]) || !expect_like_x(fn, a[3], a[2]) ||
      !expect_channels(fn, a, 4, 8, s.C) || !expect_like_x(fn, a[8], a[2]) || !expect_channels(fn, a, 9, 11, s.C))
    return 1;
  const float *dy = a[1].f, *x = a[2].f, *y = a[3].f, *gamma = a[4].f, *beta = a[5].f, *mean = a[6].f, *var = a[7].f;
  float *dx = a[8].f, *dgamma = a[9].f, *dbeta = a[10].f;
  const int64_t HW = s.HW, C = s.C;
  const bool from_y = mp::act_grad_from_output(s.act, s.alpha);
  for_channels(C, [&](int64_t c) {
    float *gbuf = mp::scratch(15, 256);
    const float invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + s.eps));
    GradSums sums;
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t off = (n * C + c) * HW;
      grad_sums(dy + off, x + off, y + off, HW, mean[c], invstd, gamma[c], beta[c], s.act, s.alpha, from_y, gbuf,
                sums);
      // dx = g * gamma * invstd (no batch-statistics terms: the statistics are constants here)
      grad_apply(dy + off, x + off, y + off, HW, mean[c], invstd, gamma[c], beta[c], s.act, s.alpha, from_y,
                 gamma[c] * invstd, 0.f, 0.f, gbuf, dx + off);
    }
    dbeta[c] = static_cast<float>(sums.g);
    dgamma[c] = static_cast<float>(sums.gx);
  });
  return 0;
}
