#include "planes.h"

#include <algorithm>
#include <cstring>

namespace mp {

namespace {
// The output columns ow in [lo, hi) read input columns inside [0, W) for kernel column kw.
inline void valid_range(const Geo &g, int64_t kw, int64_t &lo, int64_t &hi) {
  const int64_t off = kw - g.pl;  // iw = ow*sw + off
  lo = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
  hi = g.W - off <= 0 ? 0 : (g.W - off - 1) / g.sw + 1;
  hi = std::min(hi, g.OW);
  lo = std::min(lo, hi);
}
}  // namespace

void im2col(const float *src, int64_t C, int64_t nb, int64_t cs, int64_t bs, const Geo &g, float *col) {
  const int64_t OHW = g.OH * g.OW, ld = nb * OHW;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        float *row = col + ((c * g.KH + kh) * g.KW + kw) * ld;
        int64_t lo, hi;
        valid_range(g, kw, lo, hi);
        const int64_t off = kw - g.pl;
        for (int64_t b = 0; b < nb; ++b) {
          const float *s = src + c * cs + b * bs;
          float *d = row + b * OHW;
          for (int64_t oh = 0; oh < g.OH; ++oh, d += g.OW) {
            const int64_t ih = oh * g.sh - g.pt + kh;
            if (ih < 0 || ih >= g.H) {
              std::memset(d, 0, sizeof(float) * g.OW);
              continue;
            }
            const float *sr = s + ih * g.W;
            std::fill(d, d + lo, 0.f);
            if (g.sw == 1)
              std::memcpy(d + lo, sr + lo + off, sizeof(float) * (hi - lo));
            else
              for (int64_t ow = lo; ow < hi; ++ow) d[ow] = sr[ow * g.sw + off];
            std::fill(d + hi, d + g.OW, 0.f);
          }
        }
      }
}

void col2im_add(const float *col, int64_t C, int64_t nb, float *dst, int64_t cs, int64_t bs, const Geo &g) {
  const int64_t OHW = g.OH * g.OW, ld = nb * OHW;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const float *row = col + ((c * g.KH + kh) * g.KW + kw) * ld;
        int64_t lo, hi;
        valid_range(g, kw, lo, hi);
        const int64_t off = kw - g.pl;
        for (int64_t b = 0; b < nb; ++b) {
          float *s = dst + c * cs + b * bs;
          const float *d = row + b * OHW;
          for (int64_t oh = 0; oh < g.OH; ++oh, d += g.OW) {
            const int64_t ih = oh * g.sh - g.pt + kh;
            if (ih < 0 || ih >= g.H) continue;
            float *sr = s + ih * g.W + off;
            if (g.sw == 1) {
#pragma omp simd
              for (int64_t ow = lo; ow < hi; ++ow) sr[ow] += d[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) sr[ow * g.sw] += d[ow];
            }
          }
        }
      }
}

void gather(const float *src, const float *mask, int64_t C, int64_t nb, int64_t cs, int64_t bs, int64_t HW,
            float *dst) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t b = 0; b < nb; ++b) {
      const float *s = src + c * cs + b * bs;
      float *d = dst + (c * nb + b) * HW;
      if (!mask) {
        std::memcpy(d, s, sizeof(float) * HW);
      } else {
        const float *m = mask + c * cs + b * bs;
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) d[p] = m[p] > 0.f ? s[p] : 0.f;
      }
    }
}

void scatter(const float *src, int64_t C, int64_t nb, int64_t HW, bool relu, float *dst, int64_t cs, int64_t bs) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t b = 0; b < nb; ++b) {
      const float *s = src + (c * nb + b) * HW;
      float *d = dst + c * cs + b * bs;
      if (!relu) {
        std::memcpy(d, s, sizeof(float) * HW);
      } else {
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) d[p] = s[p] > 0.f ? s[p] : 0.f;
      }
    }
}

void maxpool_plane(const float *src, const Geo &g, float *dst) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.pt, 0), h1 = std::min(oh * g.sh - g.pt + g.KH, g.H);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const int64_t w0 = std::max<int64_t>(ow * g.sw - g.pl, 0), w1 = std::min(ow * g.sw - g.pl + g.KW, g.W);
      float m = -__builtin_inff();
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) m = std::max(m, src[h * g.W + w]);
      dst[oh * g.OW + ow] = m;
    }
  }
}

void maxpool_plane_bwd_add(const float *dy, const float *src, const Geo &g, float *dx) {
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.pt, 0), h1 = std::min(oh * g.sh - g.pt + g.KH, g.H);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const int64_t w0 = std::max<int64_t>(ow * g.sw - g.pl, 0), w1 = std::min(ow * g.sw - g.pl + g.KW, g.W);
      int64_t best = -1;
      float m = -__builtin_inff();
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w)
          if (best < 0 || src[h * g.W + w] > m) {
            m = src[h * g.W + w];
            best = h * g.W + w;
          }
      if (best >= 0) dx[best] += dy[oh * g.OW + ow];
    }
  }
}

void relu_inplace(float *x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
}

void mask_inplace(float *g, const float *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] = y[i] > 0.f ? g[i] : 0.f;
}

}  // namespace mp
