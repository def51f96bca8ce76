// Direct depthwise convolution (groups == in_channels == out_channels: one KHxKW filter per channel), any
// kernel, stride, dilation and padding. A GEMM would have K = KH*KW rows, so each plane is convolved in place:
// it is copied once into a zero-padded buffer (no bounds checks in the loops), and 3x3 filters at stride
// 1 or 2 (MobileNet's) get loops that sum all nine taps in registers, one output row at a time.
//   forward:        y = act(conv(x, w) + b)
//   input gradient: stride 1 is the same convolution of the masked gradient with the flipped filter; other
//                   strides scatter each output's taps into a padded buffer split into stride_w phases
//                   (column j*sw + p -> phase p), so every tap's writes are contiguous.
//   weight grad:    per channel over the batch, in image order (reproducible); 3x3 in one pass per plane.
#include <algorithm>

#include "conv_spec.h"
#include "threads.h"

namespace mp {

namespace {

// A zero-padded plane whose rows are split into P = stride_w phases: padded column j*P + p is phase p,
// index j. Output column i of tap column offset c = kw*dw reads phase c % P at index i + c / P, so every
// tap's reads (and the scattered gradient's writes) are contiguous runs at any stride.
struct Padded {
  int64_t Hp, P, L, pt, pl;  // rows, phases, phase length (one float of slack)
  explicit Padded(const Geo &g) {
    Hp = std::max(g.H + g.pt, (g.OH - 1) * g.sh + g.ekh());
    const int64_t Wp = std::max(g.W + g.pl, (g.OW - 1) * g.sw + g.ekw());
    P = g.sw;
    L = (Wp + P - 1) / P + 1;
    pt = g.pt, pl = g.pl;
  }
  int64_t size() const { return Hp * P * L; }
  float *row(float *base, int64_t r) const { return base + r * P * L; }
  const float *tap(const float *base, int64_t r, int64_t c) const { return base + (r * P + c % P) * L + c / P; }
};

// dst phases <- one padded row (P * L floats, `tmp`).
inline void split_row(const float *tmp, int64_t P, int64_t L, float *dst) {
  if (P == 1) {
    std::copy(tmp, tmp + L, dst);
  } else if (P == 2) {
    float *e = dst, *o = dst + L;
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) {
      e[j] = tmp[2 * j];
      o[j] = tmp[2 * j + 1];
    }
  } else {
    for (int64_t p = 0; p < P; ++p)
      for (int64_t j = 0; j < L; ++j) dst[p * L + j] = tmp[j * P + p];
  }
}

inline void merge_row(const float *src, int64_t P, int64_t L, float *tmp) {
  if (P == 1) {
    std::copy(src, src + L, tmp);
  } else if (P == 2) {
    const float *e = src, *o = src + L;
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) {
      tmp[2 * j] = e[j];
      tmp[2 * j + 1] = o[j];
    }
  } else {
    for (int64_t p = 0; p < P; ++p)
      for (int64_t j = 0; j < L; ++j) tmp[j * P + p] = src[p * L + j];
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void pad_plane(const float *src, int64_t H, int64_t W, const Padded &p, float *dst, float *tmp) {
  const int64_t rowlen = p.P * p.L;
  std::fill(dst, dst + p.pt * rowlen, 0.f);
  std::fill(tmp, tmp + rowlen, 0.f);
  for (int64_t h = 0; h < H; ++h) {
    std::copy(src + h * W, src + h * W + W, tmp + p.pl);
    split_row(tmp, p.P, p.L, p.row(dst, h + p.pt));
  }
  std::fill(dst + (H + p.pt) * rowlen, dst + p.Hp * rowlen, 0.f);
}

typedef float v16 __attribute__((vector_size(64), aligned(4), __may_alias__));

inline float hsum(v16 v) {
  float s = 0.f;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}

bool is3x3(const Geo &g) { return g.KH == 3 && g.KW == 3 && g.dh == 1 && g.dw == 1; }

// y (OH x OW) = conv of the padded plane with w (no bias / activation); acc: OW floats of scratch.
__attribute__((target_clones("avx512f", "avx2", "default")))
void plane_conv(const float *xp, const Padded &p, const Geo &g, const float *w, float *y, float *acc) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    float *out = y + oh * g.OW;
    const int64_t r = oh * g.sh;
    if (is3x3(g)) {  // all nine taps in registers
      const float *t0 = p.tap(xp, r, 0), *t1 = p.tap(xp, r, 1), *t2 = p.tap(xp, r, 2);
      const float *t3 = p.tap(xp, r + 1, 0), *t4 = p.tap(xp, r + 1, 1), *t5 = p.tap(xp, r + 1, 2);
      const float *t6 = p.tap(xp, r + 2, 0), *t7 = p.tap(xp, r + 2, 1), *t8 = p.tap(xp, r + 2, 2);
      const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
#pragma omp simd
      for (int64_t i = 0; i < g.OW; ++i)
        out[i] = w0 * t0[i] + w1 * t1[i] + w2 * t2[i] + w3 * t3[i] + w4 * t4[i] + w5 * t5[i] + w6 * t6[i] +
                 w7 * t7[i] + w8 * t8[i];
      continue;
    }
    std::fill(acc, acc + g.OW, 0.f);
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const float a = w[kh * g.KW + kw];
        const float *t = p.tap(xp, r + kh * g.dh, kw * g.dw);
#pragma omp simd
        for (int64_t i = 0; i < g.OW; ++i) acc[i] += a * t[i];
      }
    std::copy(acc, acc + g.OW, out);
  }
}

// dw (KH*KW taps) and db of one plane pair (padded x, gradient G), added to acc[0..T] in double.
__attribute__((target_clones("avx512f", "avx2", "default")))
void plane_filter_grad(const float *xp, const Padded &p, const Geo &g, const float *G, double *acc) {
  const int64_t T = g.KH * g.KW;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const float *gr = G + oh * g.OW;
    const int64_t r = oh * g.sh;
    if (is3x3(g)) {  // one pass, nine vector accumulators
      const float *t[9];
      for (int k = 0; k < 9; ++k) t[k] = p.tap(xp, r + k / 3, k % 3);
      v16 a[10] = {};
      int64_t i = 0;
      for (; i + 16 <= g.OW; i += 16) {
        const v16 v = *reinterpret_cast<const v16 *>(gr + i);
        a[9] += v;
#pragma GCC unroll 9
        for (int k = 0; k < 9; ++k) a[k] += v * *reinterpret_cast<const v16 *>(t[k] + i);
      }
      double s[10];
      for (int k = 0; k < 10; ++k) s[k] = hsum(a[k]);
      for (; i < g.OW; ++i) {
        s[9] += gr[i];
        for (int k = 0; k < 9; ++k) s[k] += gr[i] * t[k][i];
      }
      for (int k = 0; k < 9; ++k) acc[k] += s[k];
      acc[T] += s[9];
      continue;
    }
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < g.OW; ++i) sum += gr[i];
    acc[T] += sum;
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const float *tp = p.tap(xp, r + kh * g.dh, kw * g.dw);
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < g.OW; ++i) s += gr[i] * tp[i];
        acc[kh * g.KW + kw] += s;
      }
  }
}

// The input gradient of one plane by scattering each output's taps into the phase-split buffer (strides
// other than 1), then merging the phases back into dx.
__attribute__((target_clones("avx512f", "avx2", "default")))
void plane_data_grad_scatter(const float *G, const Padded &p, const Geo &g, const float *w, float *buf, float *tmp,
                             float *dx) {
  std::fill(buf, buf + p.size(), 0.f);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const float *gr = G + oh * g.OW;
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        float *d = const_cast<float *>(p.tap(buf, oh * g.sh + kh * g.dh, kw * g.dw));
        const float a = w[kh * g.KW + kw];
#pragma omp simd
        for (int64_t i = 0; i < g.OW; ++i) d[i] += a * gr[i];
      }
  }
  for (int64_t h = 0; h < g.H; ++h) {
    merge_row(p.row(buf, h + p.pt), p.P, p.L, tmp);
    std::copy(tmp + p.pl, tmp + p.pl + g.W, dx + h * g.W);
  }
}

// fn(first plane, end plane) over blocks of planes, a few blocks per thread.
template <class F>
void for_planes(int64_t planes, F fn) {
  const int threads = num_threads();
  const int64_t blocks = std::min<int64_t>(planes, 8 * threads);
  parallel_for(blocks, threads, [&](int64_t b) {
    int64_t p0, p1;
    split_range(planes, blocks, b, p0, p1);
    fn(p0, p1);
  });
}

// out = conv(src) planes with per-channel weights (T taps each) and the bias/activation epilogue; the
// gradient mask (act'(mask_y)) is applied to src first when mask_y is given.
void depthwise_planes(const float *src, const float *mask_y, int64_t mask_act, float mask_alpha, int64_t planes,
                      int64_t C, const Geo &g, const float *w, const float *b, int64_t act, float alpha, float *out) {
  const Padded pd(g);
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW, T = g.KH * g.KW;
  for_planes(planes, [&](int64_t p0, int64_t p1) {
    float *xp = scratch(13, static_cast<size_t>(pd.size()));
    float *acc = scratch(14, static_cast<size_t>(g.OW + pd.P * pd.L));
    float *tmp = acc + g.OW;
    float *masked = mask_y ? scratch(15, static_cast<size_t>(HW)) : nullptr;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % C;
      const float *plane = src + p * HW;
      if (masked) {
        act_mask(plane, mask_y + p * HW, masked, HW, mask_act, mask_alpha);
        plane = masked;
      }
      pad_plane(plane, g.H, g.W, pd, xp, tmp);
      float *y = out + p * OHW;
      plane_conv(xp, pd, g, w + c * T, y, acc);
      bias_act_inplace(y, OHW, b ? b[c] : 0.f, act, alpha);
    }
  });
}

}  // namespace

void conv_forward_depthwise(const ConvSpec &s, const float *x, const float *wp, const float *bp, float *y) {
  depthwise_planes(x, nullptr, kNone, 0.f, s.N * s.C, s.C, s.g, wp, bp, s.act, s.alpha, y);
}

void conv_backward_data_depthwise(const ConvSpec &s, const float *dy, const float *y, const float *wp, float *dx) {
  const Geo &g = s.g;
  const int64_t C = s.C, T = g.KH * g.KW;
  const int64_t ft = g.ekh() - 1 - g.pt, fb = g.ekh() - 1 - g.pb, fl = g.ekw() - 1 - g.pl, fr = g.ekw() - 1 - g.pr;
  if (g.sh == 1 && g.sw == 1 && ft >= 0 && fb >= 0 && fl >= 0 && fr >= 0) {
    // dx = conv(G, rot180(w)) with pads (extent - 1 - pad): the forward kernel, flipped filter
    std::vector<float> flipped(static_cast<size_t>(C * T));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) flipped[c * T + t] = wp[c * T + (T - 1 - t)];
    Geo back = Geo::make(g.OH, g.OW, g.KH, g.KW, 1, 1, ft, fl, fb, fr, g.dh, g.dw);
    depthwise_planes(dy, s.act == kNone ? nullptr : y, s.act, s.alpha, s.N * C, C, back, flipped.data(), nullptr,
                     kNone, 0.f, dx);
    return;
  }
  const int64_t HW = s.HW(), OHW = s.OHW();
  const Padded pd(g);
  for_planes(s.N * C, [&](int64_t p0, int64_t p1) {
    float *buf = scratch(13, static_cast<size_t>(pd.size()));
    float *G = scratch(14, static_cast<size_t>(OHW + pd.P * pd.L));
    float *tmp = G + OHW;
    for (int64_t p = p0; p < p1; ++p) {
      act_mask(dy + p * OHW, y + p * OHW, G, OHW, s.act, s.alpha);
      plane_data_grad_scatter(G, pd, g, wp + (p % C) * T, buf, tmp, dx + p * HW);
    }
  });
}

void conv_backward_filter_depthwise(const ConvSpec &s, const float *dy, const float *y, const float *x, float *dw,
                                    float *db) {
  const Geo &g = s.g;
  const Padded pd(g);
  const int64_t C = s.C, HW = s.HW(), OHW = s.OHW(), T = g.KH * g.KW, N = s.N;
  for_planes(C, [&](int64_t c0, int64_t c1) {
    float *xp = scratch(13, static_cast<size_t>(pd.size()));
    float *G = scratch(14, static_cast<size_t>(OHW + pd.P * pd.L));
    float *tmp = G + OHW;
    std::vector<double> acc(static_cast<size_t>(T + 1));
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n * C + c;
        act_mask(dy + p * OHW, y + p * OHW, G, OHW, s.act, s.alpha);
        pad_plane(x + p * HW, g.H, g.W, pd, xp, tmp);
        plane_filter_grad(xp, pd, g, G, acc.data());
      }
      for (int64_t t = 0; t < T; ++t) dw[c * T + t] = static_cast<float>(acc[t]);
      if (db) db[c] = static_cast<float>(acc[T]);
    }
  });
}

}  // namespace mp
