#include "planes.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace mp {

namespace {
// The output columns ow in [lo, hi) read input columns inside [0, W) for kernel column kw.
inline void valid_range(const Geo &g, int64_t kw, int64_t &lo, int64_t &hi) {
  const int64_t off = kw * g.dw - g.pl;  // iw = ow*sw + off
  lo = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
  hi = g.W - off <= 0 ? 0 : (g.W - off - 1) / g.sw + 1;
  hi = std::min(hi, g.OW);
  lo = std::min(lo, hi);
}
// Small output planes: im2col's row copies would be a few floats each, so instead every tap gets the
// source index of each output pixel (-1 = padding), built per call (at most KH*KW*64 entries).
constexpr int64_t kTableOut = 64;

struct TapTable {
  std::vector<int32_t> idx;  // [KH*KW][OHW]
  std::vector<char> identity;  // tap t reads pixel o for every output o (stride 1, no padding touched)
  explicit TapTable(const Geo &g) {
    const int64_t OHW = g.OH * g.OW, T = g.KH * g.KW;
    idx.resize(static_cast<size_t>(T * OHW));
    identity.assign(static_cast<size_t>(T), 1);
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t t = kh * g.KW + kw;
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t ih = oh * g.sh - g.pt + kh * g.dh, iw = ow * g.sw - g.pl + kw * g.dw, o = oh * g.OW + ow;
            const bool in = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
            idx[t * OHW + o] = in ? static_cast<int32_t>(ih * g.W + iw) : -1;
            if (!in || ih * g.W + iw != o) identity[t] = 0;
          }
        if (g.H * g.W != OHW) identity[t] = 0;
      }
  }
};

__attribute__((target_clones("avx512f", "avx2", "default")))
void im2col_small(const float *src, int64_t C, int64_t nb, int64_t cs, int64_t bs, const Geo &g, float *col) {
  const TapTable tab(g);
  const int64_t OHW = g.OH * g.OW, T = g.KH * g.KW, ld = nb * OHW;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < T; ++t) {
      float *row = col + (c * T + t) * ld;
      const int32_t *ti = tab.idx.data() + t * OHW;
      if (tab.identity[t] && bs == OHW) {  // the whole channel block, unchanged
        std::memcpy(row, src + c * cs, sizeof(float) * ld);
        continue;
      }
      for (int64_t b = 0; b < nb; ++b) {
        const float *sb = src + c * cs + b * bs;
        float *d = row + b * OHW;
        for (int64_t o = 0; o < OHW; ++o) d[o] = ti[o] >= 0 ? sb[ti[o]] : 0.f;
      }
    }
}

void col2im_add_small(const float *col, int64_t C, int64_t nb, float *dst, int64_t cs, int64_t bs, const Geo &g) {
  const TapTable tab(g);
  const int64_t OHW = g.OH * g.OW, T = g.KH * g.KW, ld = nb * OHW;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < T; ++t) {
      const float *row = col + (c * T + t) * ld;
      const int32_t *ti = tab.idx.data() + t * OHW;
      if (tab.identity[t] && bs == OHW) {
        float *d = dst + c * cs;
#pragma omp simd
        for (int64_t i = 0; i < ld; ++i) d[i] += row[i];
        continue;
      }
      for (int64_t b = 0; b < nb; ++b) {
        float *db = dst + c * cs + b * bs;
        const float *r = row + b * OHW;
        for (int64_t o = 0; o < OHW; ++o)
          if (ti[o] >= 0) db[ti[o]] += r[o];
      }
    }
}
}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default")))
void im2col(const float *src, int64_t C, int64_t nb, int64_t cs, int64_t bs, const Geo &g, float *col) {
  if (g.OH * g.OW <= kTableOut) return im2col_small(src, C, nb, cs, bs, g, col);
  const int64_t OHW = g.OH * g.OW, ld = nb * OHW;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        float *row = col + ((c * g.KH + kh) * g.KW + kw) * ld;
        int64_t lo, hi;
        valid_range(g, kw, lo, hi);
        const int64_t off = kw * g.dw - g.pl;
        for (int64_t b = 0; b < nb; ++b) {
          const float *s = src + c * cs + b * bs;
          float *d = row + b * OHW;
          for (int64_t oh = 0; oh < g.OH; ++oh, d += g.OW) {
            const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
            if (ih < 0 || ih >= g.H) {
              std::memset(d, 0, sizeof(float) * g.OW);
              continue;
            }
            const float *sr = s + ih * g.W;
            std::fill(d, d + lo, 0.f);
            if (g.sw == 1) {
              std::memcpy(d + lo, sr + lo + off, sizeof(float) * (hi - lo));
            } else if (g.sw == 2) {  // the stem: a constant stride the compiler turns into shuffles
              const float *s2 = sr + off;
#pragma omp simd
              for (int64_t ow = lo; ow < hi; ++ow) d[ow] = s2[2 * ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow] = sr[ow * g.sw + off];
            }
            std::fill(d + hi, d + g.OW, 0.f);
          }
        }
      }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void col2im_add(const float *col, int64_t C, int64_t nb, float *dst, int64_t cs, int64_t bs, const Geo &g) {
  if (g.OH * g.OW <= kTableOut) return col2im_add_small(col, C, nb, dst, cs, bs, g);
  const int64_t OHW = g.OH * g.OW, ld = nb * OHW;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const float *row = col + ((c * g.KH + kh) * g.KW + kw) * ld;
        int64_t lo, hi;
        valid_range(g, kw, lo, hi);
        const int64_t off = kw * g.dw - g.pl;
        for (int64_t b = 0; b < nb; ++b) {
          float *s = dst + c * cs + b * bs;
          const float *d = row + b * OHW;
          for (int64_t oh = 0; oh < g.OH; ++oh, d += g.OW) {
            const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
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
  if (HW < 16) {  // tiny planes (GoogLeNet at 32 px): plain loops, no call per plane
    for (int64_t c = 0; c < C; ++c)
      for (int64_t b = 0; b < nb; ++b) {
        const float *s = src + c * cs + b * bs, *m = mask ? mask + c * cs + b * bs : nullptr;
        float *d = dst + (c * nb + b) * HW;
        for (int64_t p = 0; p < HW; ++p) d[p] = (!m || m[p] > 0.f) ? s[p] : 0.f;
      }
    return;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t b = 0; b < nb; ++b) {
      const float *s = src + c * cs + b * bs;
      float *d = dst + (c * nb + b) * HW;
      if (!mask) {
        std::memcpy(d, s, sizeof(float) * HW);
      } else {
        const float *m = mask + c * cs + b * bs;
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) {
          const float v = s[p];  // unconditional load: a select, not a branch, so it vectorises
          d[p] = m[p] > 0.f ? v : 0.f;
        }
      }
    }
}

void scatter(const float *src, int64_t C, int64_t nb, int64_t HW, bool relu, float *dst, int64_t cs, int64_t bs) {
  if (HW < 16) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t b = 0; b < nb; ++b) {
        const float *s = src + (c * nb + b) * HW;
        float *d = dst + c * cs + b * bs;
        for (int64_t p = 0; p < HW; ++p) d[p] = (relu && !(s[p] > 0.f)) ? 0.f : s[p];
      }
    return;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t b = 0; b < nb; ++b) {
      const float *s = src + (c * nb + b) * HW;
      float *d = dst + c * cs + b * bs;
      if (!relu) {
        std::memcpy(d, s, sizeof(float) * HW);
      } else {
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) {
          const float v = s[p];
          d[p] = v > 0.f ? v : 0.f;
        }
      }
    }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void maxpool_plane(const float *src, const Geo &g, float *dst) {
  float *rowmax = scratch(8, static_cast<size_t>(g.W));
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.pt, 0), h1 = std::min(oh * g.sh - g.pt + g.KH, g.H);
    std::memcpy(rowmax, src + h0 * g.W, sizeof(float) * g.W);
    for (int64_t h = h0 + 1; h < h1; ++h) {
      const float *r = src + h * g.W;
#pragma omp simd
      for (int64_t w = 0; w < g.W; ++w) {
        const float v = r[w];
        rowmax[w] = rowmax[w] > v ? rowmax[w] : v;
      }
    }
    float *d = dst + oh * g.OW;
    std::fill(d, d + g.OW, -__builtin_inff());
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      int64_t lo, hi;
      valid_range(g, kw, lo, hi);
      const float *r = rowmax + kw - g.pl;
      if (g.sw == 1) {
#pragma omp simd
        for (int64_t ow = lo; ow < hi; ++ow) {
          const float v = r[ow];
          d[ow] = d[ow] > v ? d[ow] : v;
        }
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) d[ow] = std::max(d[ow], r[ow * g.sw]);
      }
    }
  }
}

// Vectorised per ISA and chosen at load time, like the GEMM fallback (no -march=native).
__attribute__((target_clones("avx512f", "avx2", "default")))
void maxpool_plane_bwd_add(const float *dy, const float *src, const float *y, const Geo &g, float *dx) {
  // Per output row, the flat index of each window's first element equal to y, found branch-free by
  // visiting the window backwards so the first match is written last (int32: a plane is < 2^31).
  static thread_local std::vector<int32_t> best;
  if (static_cast<int64_t>(best.size()) < g.OW) best.resize(static_cast<size_t>(g.OW));
  int32_t *idx = best.data();
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.pt, 0), h1 = std::min(oh * g.sh - g.pt + g.KH, g.H);
    const float *yr = y + oh * g.OW;
    std::fill(idx, idx + g.OW, -1);
    for (int64_t h = h1 - 1; h >= h0; --h) {
      const float *r = src + h * g.W;
      for (int64_t kw = g.KW - 1; kw >= 0; --kw) {
        int64_t lo, hi;
        valid_range(g, kw, lo, hi);
        const int64_t off = kw - g.pl;
        const int32_t base = static_cast<int32_t>(h * g.W + off);
        if (g.sw == 1) {  // contiguous: plain vector loads
          const float *rs = r + off;
#pragma omp simd
          for (int64_t ow = lo; ow < hi; ++ow) {
            const int32_t hit = -static_cast<int32_t>(rs[ow] == yr[ow]);
            const int32_t cand = base + static_cast<int32_t>(ow);
            idx[ow] = (cand & hit) | (idx[ow] & ~hit);
          }
        } else {
          const int32_t sw = static_cast<int32_t>(g.sw);
#pragma omp simd
          for (int64_t ow = lo; ow < hi; ++ow) {
            const int32_t hit = -static_cast<int32_t>(r[ow * sw + off] == yr[ow]);
            const int32_t cand = base + static_cast<int32_t>(ow) * sw;
            idx[ow] = (cand & hit) | (idx[ow] & ~hit);
          }
        }
      }
    }
    const float *dyr = dy + oh * g.OW;
    for (int64_t ow = 0; ow < g.OW; ++ow)
      if (idx[ow] >= 0) dx[idx[ow]] += dyr[ow];
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void maxpool_plane_argmax(const float *src, const Geo &g, float *dst, int32_t *arg) {
  static thread_local std::vector<int32_t> row_arg;
  const int64_t n = g.H * g.OW;
  if (static_cast<int64_t>(row_arg.size()) < n) row_arg.resize(static_cast<size_t>(n));
  float *hv = scratch(8, static_cast<size_t>(n));
  int32_t *hi_arg = row_arg.data();
  // horizontal: per input row, the max over each window's columns (strict > keeps the first)
  for (int64_t h = 0; h < g.H; ++h) {
    const float *r = src + h * g.W;
    float *v = hv + h * g.OW;
    int32_t *ix = hi_arg + h * g.OW;
    std::fill(v, v + g.OW, -__builtin_inff());
    std::fill(ix, ix + g.OW, -1);
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      int64_t lo, hi;
      valid_range(g, kw, lo, hi);
      const int64_t off = kw - g.pl;
      const int32_t base = static_cast<int32_t>(h * g.W + off);
      const int32_t sw = static_cast<int32_t>(g.sw);
#pragma omp simd
      for (int64_t ow = lo; ow < hi; ++ow) {
        const float val = r[ow * sw + off];
        const bool take = val > v[ow];
        v[ow] = take ? val : v[ow];
        ix[ow] = take ? base + static_cast<int32_t>(ow) * sw : ix[ow];
      }
    }
  }
  // vertical: combine the window's rows, strict > keeps the first row
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.pt, 0), h1 = std::min(oh * g.sh - g.pt + g.KH, g.H);
    float *d = dst + oh * g.OW;
    int32_t *a = arg + oh * g.OW;
    std::memcpy(d, hv + h0 * g.OW, sizeof(float) * g.OW);
    std::memcpy(a, hi_arg + h0 * g.OW, sizeof(int32_t) * g.OW);
    for (int64_t h = h0 + 1; h < h1; ++h) {
      const float *v = hv + h * g.OW;
      const int32_t *ix = hi_arg + h * g.OW;
#pragma omp simd
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const bool take = v[ow] > d[ow];
        d[ow] = take ? v[ow] : d[ow];
        a[ow] = take ? ix[ow] : a[ow];
      }
    }
  }
}

void scatter_argmax_add(const float *dy, const int32_t *arg, int64_t n, float *dx) {
  for (int64_t i = 0; i < n; ++i)
    if (arg[i] >= 0) dx[arg[i]] += dy[i];
}

PoolWindows::PoolWindows(const Geo &g) {
  start.reserve(static_cast<size_t>(g.OH * g.OW + 1));
  start.push_back(0);
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t ih = oh * g.sh - g.pt + kh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const int64_t iw = ow * g.sw - g.pl + kw;
          if (iw >= 0 && iw < g.W) idx.push_back(static_cast<int32_t>(ih * g.W + iw));
        }
      }
      start.push_back(static_cast<int32_t>(idx.size()));
    }
}

void maxpool_planes_small(const float *src, int64_t planes, const Geo &g, const PoolWindows &t, float *dst) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  const int32_t *st = t.start.data(), *ix = t.idx.data();
  if (HW == 1 && OHW == 1) {  // 1x1 map: every window holds just the pixel itself
    std::memcpy(dst, src, sizeof(float) * planes);
    return;
  }
  for (int64_t p = 0; p < planes; ++p, src += HW, dst += OHW)
    for (int64_t o = 0; o < OHW; ++o) {
      float m = src[ix[st[o]]];
      for (int32_t j = st[o] + 1; j < st[o + 1]; ++j) {
        const float v = src[ix[j]];
        m = v > m ? v : m;
      }
      dst[o] = m;
    }
}

void maxpool_planes_small_argmax(const float *src, int64_t planes, const Geo &g, const PoolWindows &t, float *dst,
                                 int32_t *arg) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  const int32_t *st = t.start.data(), *ix = t.idx.data();
  for (int64_t p = 0; p < planes; ++p, src += HW, dst += OHW, arg += OHW)
    for (int64_t o = 0; o < OHW; ++o) {
      int32_t a = ix[st[o]];
      float m = src[a];
      for (int32_t j = st[o] + 1; j < st[o + 1]; ++j) {
        const float v = src[ix[j]];
        const bool take = v > m;  // strict: the first maximum stays
        m = take ? v : m;
        a = take ? ix[j] : a;
      }
      dst[o] = m;
      arg[o] = a;
    }
}

void maxpool_planes_small_bwd(const float *dy, const float *src, const float *y, int64_t planes, const Geo &g,
                              const PoolWindows &t, float *dx) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  const int32_t *st = t.start.data(), *ix = t.idx.data();
  std::fill(dx, dx + planes * HW, 0.f);
  for (int64_t p = 0; p < planes; ++p, src += HW, dx += HW, dy += OHW, y += OHW)
    for (int64_t o = 0; o < OHW; ++o) {
      int32_t a = -1;
      for (int32_t j = st[o + 1] - 1; j >= st[o]; --j) a = src[ix[j]] == y[o] ? ix[j] : a;  // last write = first match
      if (a >= 0) dx[a] += dy[o];
    }
}

void relu_inplace(float *x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = v > 0.f ? v : 0.f;
  }
}

void mask_inplace(float *g, const float *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = g[i];
    g[i] = y[i] > 0.f ? v : 0.f;
  }
}

}  // namespace mp
