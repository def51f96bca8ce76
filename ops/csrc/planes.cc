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

namespace {

// Larger planes, one at a time, separable: row maxima, then column windows.
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

// Small planes: every output's window as a list of flat input indices (row-major, padding
// dropped), built once per call, so a plane costs only its compares.
struct PoolWindows {
  std::vector<int32_t> start, idx;  // output o reads idx[start[o] .. start[o+1])
  explicit PoolWindows(const Geo &g);
};

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

// The frame around a plane that holds every window: pt/pl on the top/left, and on the bottom/right
// whatever the last window reaches past the plane (ceil mode can reach past the padding).
struct Frame {
  int64_t top, left, PH, PW;
  explicit Frame(const Geo &g)
      : top(g.pt), left(g.pl),
        PH(g.pt + g.H + std::max<int64_t>((g.OH - 1) * g.sh + g.KH - g.pt - g.H, 0)),
        PW(g.pl + g.W + std::max<int64_t>((g.OW - 1) * g.sw + g.KW - g.pl - g.W, 0)) {}
};

// out[i] = the first maximum of in[i + t*step] over taps t < taps, for i < n; with kArg its index too,
// where an index -1 (a framing cell) always gives way, so even a real -inf beats the frame.
template <bool kArg>
inline void window_max(const float *in, const int32_t *in_ix, int64_t step, int64_t taps, int64_t n, float *out,
                       int32_t *out_ix) {
  std::memcpy(out, in, sizeof(float) * n);
  if (kArg) std::memcpy(out_ix, in_ix, sizeof(int32_t) * n);
  for (int64_t t = 1; t < taps; ++t) {
    const float *v = in + t * step;
    if (kArg) {
      const int32_t *vi = in_ix + t * step;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const bool take = v[i] > out[i] || out_ix[i] < 0;
        out[i] = take ? v[i] : out[i];
        out_ix[i] = take ? vi[i] : out_ix[i];
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) out[i] = v[i] > out[i] ? v[i] : out[i];
    }
  }
}

// kArg: also the flat index of each window's first maximum in row-major order (-1 when the window
// holds no pixel). Horizontal pass: at each framed position, the first maximum of the KW columns
// starting there; vertical pass: of the KH rows, the first row holding the maximum.
template <bool kArg>
__attribute__((target_clones("avx512f", "avx2", "default")))
void maxpool_framed(const float *src, int64_t planes, const Geo &g, float *dst, int32_t *arg) {
  const Frame f(g);
  const int64_t n = f.PH * f.PW, span = n - (g.KW - 1), HW = g.H * g.W, OHW = g.OH * g.OW;
  // stride 1: all output rows in one vertical pass (with the framing columns between them)
  const int64_t rows = g.sh == 1 ? g.OH : 1, len = (rows - 1) * f.PW + (g.OW - 1) * g.sw + 1;
  float *pad = scratch(8, static_cast<size_t>(2 * n + len)), *hm = pad + n, *vm = hm + n;
  static thread_local std::vector<int32_t> index_buf;
  if (kArg && static_cast<int64_t>(index_buf.size()) < 2 * n + len)
    index_buf.resize(static_cast<size_t>(2 * n + len));
  int32_t *pix = kArg ? index_buf.data() : nullptr, *hix = pix + n, *vix = hix + n;
  std::fill(pad, pad + n, -__builtin_inff());
  if (kArg) {
    std::fill(pix, pix + n, -1);
    for (int64_t h = 0; h < g.H; ++h)
      for (int64_t w = 0; w < g.W; ++w) pix[(f.top + h) * f.PW + f.left + w] = static_cast<int32_t>(h * g.W + w);
  }
  for (int64_t p = 0; p < planes; ++p, src += HW, dst += OHW) {
    for (int64_t h = 0; h < g.H; ++h)
      std::memcpy(pad + (f.top + h) * f.PW + f.left, src + h * g.W, sizeof(float) * g.W);
    window_max<kArg>(pad, pix, 1, g.KW, span, hm, hix);
    int32_t *ap = kArg ? arg + p * OHW : nullptr;
    for (int64_t oh = 0; oh < g.OH; oh += rows) {
      const int64_t r0 = oh * g.sh * f.PW;
      window_max<kArg>(hm + r0, kArg ? hix + r0 : nullptr, f.PW, g.KH, len, vm, vix);
      for (int64_t q = 0; q < rows; ++q) {
        const float *v = vm + q * f.PW;
        float *d = dst + (oh + q) * g.OW;
        for (int64_t ow = 0; ow < g.OW; ++ow) d[ow] = v[ow * g.sw];
        if (kArg) {
          const int32_t *vi = vix + q * f.PW;
          int32_t *o = ap + (oh + q) * g.OW;
          for (int64_t ow = 0; ow < g.OW; ++ow) o[ow] = vi[ow * g.sw];
        }
      }
    }
  }
}

// dx (zeroed here) gets each dy at its window's first maximum, found by the framed argmax in blocks of
// planes whose indices stay in cache.
void framed_bwd(const float *dy, const float *src, int64_t planes, const Geo &g, float *dx) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  static thread_local std::vector<int32_t> arg_buf;
  static thread_local std::vector<float> y_buf;
  const int64_t block = std::max<int64_t>(1, 4096 / std::max<int64_t>(OHW, 1));  // planes per argmax pass
  if (static_cast<int64_t>(arg_buf.size()) < block * OHW) {
    arg_buf.resize(static_cast<size_t>(block * OHW));
    y_buf.resize(static_cast<size_t>(block * OHW));
  }
  std::fill(dx, dx + planes * HW, 0.f);
  for (int64_t p0 = 0; p0 < planes; p0 += block) {
    const int64_t nb = std::min(block, planes - p0);
    maxpool_framed<true>(src + p0 * HW, nb, g, y_buf.data(), arg_buf.data());
    for (int64_t q = 0; q < nb; ++q) {
      const int32_t *a = arg_buf.data() + q * OHW;
      const float *d = dy + (p0 + q) * OHW;
      float *o = dx + (p0 + q) * HW;
      for (int64_t i = 0; i < OHW; ++i)
        if (a[i] >= 0) o[a[i]] += d[i];
    }
  }
}

// Measured crossovers here: the framed passes win stride 1 from 7x7 (its backward from 4x4) and the strided
// backward from 9x9, up to 32x32; below that the framing costs more than the window lists' compares, which
// also win the strided forward up to 16x16; the per-plane passes take everything larger.
bool framed_plane(const Geo &g, bool backward) {
  const int64_t HW = g.H * g.W;
  const bool s1 = g.sh == 1 && g.sw == 1;
  if (g.dh != 1 || g.dw != 1 || HW > 1024) return false;
  return backward ? HW >= (s1 ? 16 : 81) : s1 && HW >= 49;
}
bool small_plane(const Geo &g, bool backward) { return g.H * g.W <= (backward ? 1024 : 256); }

}  // namespace

void maxpool_planes(const float *src, int64_t planes, const Geo &g, float *dst) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  if (framed_plane(g, false)) return maxpool_framed<false>(src, planes, g, dst, nullptr);
  if (small_plane(g, false)) return maxpool_planes_small(src, planes, g, PoolWindows(g), dst);
  for (int64_t p = 0; p < planes; ++p) maxpool_plane(src + p * HW, g, dst + p * OHW);
}

void maxpool_planes_argmax(const float *src, int64_t planes, const Geo &g, float *dst, int32_t *arg) {
  if (framed_plane(g, false)) return maxpool_framed<true>(src, planes, g, dst, arg);
  if (small_plane(g, false)) return maxpool_planes_small_argmax(src, planes, g, PoolWindows(g), dst, arg);
  maxpool_framed<true>(src, planes, g, dst, arg);  // larger maps: still ahead of the per-plane passes
}

void maxpool_planes_bwd(const float *dy, const float *src, const float *y, int64_t planes, const Geo &g, float *dx) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  if (framed_plane(g, true)) return framed_bwd(dy, src, planes, g, dx);
  if (small_plane(g, true)) return maxpool_planes_small_bwd(dy, src, y, planes, g, PoolWindows(g), dx);
  std::fill(dx, dx + planes * HW, 0.f);
  for (int64_t p = 0; p < planes; ++p) maxpool_plane_bwd_add(dy + p * OHW, src + p * HW, y + p * OHW, g, dx + p * HW);
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
