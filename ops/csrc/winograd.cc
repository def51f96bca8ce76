// Winograd F(m x m, 3 x 3) convolution (Lavin & Gray 2015) for stride-1, undilated, ungrouped 3x3 layers:
// an (m+2)x(m+2) input tile becomes (m+2)^2 independent channel GEMMs, so an m x m output tile costs
// (m+2)^2 multiplies per channel pair instead of 9 m^2: 2.25x fewer for m = 2, 4x fewer for m = 4.
//
// Layout: tiles are numbered over (image, tile row, tile column) and processed in blocks; per block a thread
//   1. transforms the input tiles into V[k][c][t] (k = the (m+2)^2 transform points),
//   2. runs one GEMM per point, M[k][o][t] = U[k][o][c] V[k][c][t] (U = the transformed filter, made once
//      per call and shared), with its own AVX-512 micro-kernel (else the sgemm behind gemm.h),
//   3. transforms M back into m x m output tiles with the bias and activation epilogue.
// The transforms run along tiles (one vector lane per tile), separably: rows first, then columns.
// The input gradient of the same layer is this convolution of the masked output gradient with the
// flipped, transposed filter (pads 2 - pad), so the backward pass reuses it.
#include <algorithm>
#include <cmath>

#include "conv_spec.h"
#include "gemm.h"
#include "threads.h"

namespace mp {

namespace {

// ---------------------------------------------------------------- 1-D transforms (one lane per tile)
// Input transform B^T d over A = m + 2 values: out[i][q] = sum_l BT[i][l] * in(l, q).
template <int M>
struct Tr;

template <>
struct Tr<4> {
  static constexpr int A = 6;
  template <class In, class Out>
  static inline void input(int64_t n, In d, Out o) {
#pragma omp simd
    for (int64_t q = 0; q < n; ++q) {
      const float d0 = d(0, q), d1 = d(1, q), d2 = d(2, q), d3 = d(3, q), d4 = d(4, q), d5 = d(5, q);
      o(0, q) = 4.f * d0 - 5.f * d2 + d4;
      o(1, q) = -4.f * (d1 + d2) + d3 + d4;
      o(2, q) = 4.f * (d1 - d2) - d3 + d4;
      o(3, q) = 2.f * (d3 - d1) - d2 + d4;
      o(4, q) = 2.f * (d1 - d3) - d2 + d4;
      o(5, q) = 4.f * d1 - 5.f * d3 + d5;
    }
  }
  // A^T m over A values -> M outputs.
  template <class In, class Out>
  static inline void output(int64_t n, In m, Out o) {
#pragma omp simd
    for (int64_t q = 0; q < n; ++q) {
      const float m0 = m(0, q), m1 = m(1, q), m2 = m(2, q), m3 = m(3, q), m4 = m(4, q), m5 = m(5, q);
      const float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
      o(0, q) = m0 + a + c;
      o(1, q) = b + 2.f * d;
      o(2, q) = a + 4.f * c;
      o(3, q) = b + 8.f * d + m5;
    }
  }
  // The weight gradient's transforms, the transposes of output() and filter(): A d (M -> A values) for an
  // output-gradient tile, and G^T u (A -> 3 values) back to the filter taps.
  template <class In, class Out>
  static inline void grad_output(int64_t n, In d, Out o) {
#pragma omp simd
    for (int64_t q = 0; q < n; ++q) {
      const float d0 = d(0, q), d1 = d(1, q), d2 = d(2, q), d3 = d(3, q);
      o(0, q) = d0;
      o(1, q) = d0 + d1 + d2 + d3;
      o(2, q) = d0 - d1 + d2 - d3;
      o(3, q) = d0 + 2.f * d1 + 4.f * d2 + 8.f * d3;
      o(4, q) = d0 - 2.f * d1 + 4.f * d2 - 8.f * d3;
      o(5, q) = d3;
    }
  }
  static inline void grad_filter(const float *u, float *g) {
    g[0] = u[0] * (1.f / 4) - (u[1] + u[2]) * (1.f / 6) + (u[3] + u[4]) * (1.f / 24);
    g[1] = (u[2] - u[1]) * (1.f / 6) + (u[3] - u[4]) * (1.f / 12);
    g[2] = (u[3] + u[4] - u[1] - u[2]) * (1.f / 6) + u[5];
  }
  // G g over 3 filter taps, one lane per output channel.
  template <class In, class Out>
  static inline void filter_lanes(int64_t n, In g, Out u) {
#pragma omp simd
    for (int64_t r = 0; r < n; ++r) {
      const float g0 = g(0, r), g1 = g(1, r), g2 = g(2, r);
      u(0, r) = g0 * (1.f / 4);
      u(1, r) = -(g0 + g1 + g2) * (1.f / 6);
      u(2, r) = -(g0 - g1 + g2) * (1.f / 6);
      u(3, r) = g0 * (1.f / 24) + g1 * (1.f / 12) + g2 * (1.f / 6);
      u(4, r) = g0 * (1.f / 24) - g1 * (1.f / 12) + g2 * (1.f / 6);
      u(5, r) = g2;
    }
  }
};

template <>
struct Tr<2> {
  static constexpr int A = 4;
  template <class In, class Out>
  static inline void input(int64_t n, In d, Out o) {
#pragma omp simd
    for (int64_t q = 0; q < n; ++q) {
      const float d0 = d(0, q), d1 = d(1, q), d2 = d(2, q), d3 = d(3, q);
      o(0, q) = d0 - d2;
      o(1, q) = d1 + d2;
      o(2, q) = d2 - d1;
      o(3, q) = d1 - d3;
    }
  }
  template <class In, class Out>
  static inline void output(int64_t n, In m, Out o) {
#pragma omp simd
    for (int64_t q = 0; q < n; ++q) {
      const float m0 = m(0, q), m1 = m(1, q), m2 = m(2, q), m3 = m(3, q);
      o(0, q) = m0 + m1 + m2;
      o(1, q) = m1 - m2 - m3;
    }
  }
  template <class In, class Out>
  static inline void grad_output(int64_t n, In d, Out o) {
#pragma omp simd
    for (int64_t q = 0; q < n; ++q) {
      const float d0 = d(0, q), d1 = d(1, q);
      o(0, q) = d0;
      o(1, q) = d0 + d1;
      o(2, q) = d0 - d1;
      o(3, q) = -d1;
    }
  }
  static inline void grad_filter(const float *u, float *g) {
    g[0] = u[0] + (u[1] + u[2]) * 0.5f;
    g[1] = (u[1] - u[2]) * 0.5f;
    g[2] = (u[1] + u[2]) * 0.5f + u[3];
  }
  template <class In, class Out>
  static inline void filter_lanes(int64_t n, In g, Out u) {
#pragma omp simd
    for (int64_t r = 0; r < n; ++r) {
      const float g0 = g(0, r), g1 = g(1, r), g2 = g(2, r);
      u(0, r) = g0;
      u(1, r) = (g0 + g1 + g2) * 0.5f;
      u(2, r) = (g0 - g1 + g2) * 0.5f;
      u(3, r) = g2;
    }
  }
};

// ---------------------------------------------------------------- the point GEMMs
constexpr int64_t kMR = 8, kNR = 32;  // micro-kernel: 8 output channels x 32 tiles

typedef float v16 __attribute__((vector_size(64), aligned(4), __may_alias__));

// c[i][0..32) = sum_k a[k][i] * b[k][0..32) for i < mr (a packed [K][8], b rows of ldb floats).
__attribute__((target("avx512f,fma"))) void micro_8x32(int64_t K, const float *__restrict a,
                                                        const float *__restrict b, int64_t ldb,
                                                        float *__restrict c, int64_t ldc, int64_t mr) {
  v16 c0[kMR], c1[kMR];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) c0[i] = c1[i] = v16{};
  for (int64_t k = 0; k < K; ++k) {
    const v16 b0 = *reinterpret_cast<const v16 *>(b + k * ldb);
    const v16 b1 = *reinterpret_cast<const v16 *>(b + k * ldb + 16);
    const float *ak = a + k * kMR;
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      c0[i] += ak[i] * b0;
      c1[i] += ak[i] * b1;
    }
  }
  for (int64_t i = 0; i < mr; ++i) {
    *reinterpret_cast<v16 *>(c + i * ldc) = c0[i];
    *reinterpret_cast<v16 *>(c + i * ldc + 16) = c1[i];
  }
}

// The AVX-512 micro-kernel when the CPU has it and the tests have not pinned the GEMM below AVX-512.
bool use_micro() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  return has && gemm_allows_avx512();
}

// The transformed filter: packed [k][o-block][c][8] for the micro-kernel, else [k][o][c] for sgemm. It lives
// in a grow-only buffer of the calling thread (a layer's U reaches tens of MB: no fresh, zeroed allocation
// per call); the pool's workers only read it while the caller waits.
struct Filter {
  int64_t P, O, C, Op;  // points, rows (output channels), depth (input channels), rows padded to 8
  bool packed;
  float *u;
  const float *point(int64_t k) const { return u + k * Op * C; }
};

float *filter_buffer(size_t count) {
  static thread_local std::vector<float> buf;
  if (buf.size() < count) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(count);
  }
  return buf.data();
}

template <int M, class F>
Filter transform_filter(int64_t O, int64_t C, F tap /* tap(o, c, kh, kw) */) {
  constexpr int A = Tr<M>::A;
  constexpr int64_t kCB = 16;  // input channels per task: each point's run of kCB * kMR floats is one write
  Filter f{A * A, O, C, (O + kMR - 1) / kMR * kMR, use_micro(), nullptr};
  f.u = filter_buffer(static_cast<size_t>(f.P * f.Op * C));
  const int64_t cblocks = (C + kCB - 1) / kCB, tasks = f.Op / kMR * cblocks;
  // one task per (block of kMR output channels, kCB input channels); the kMR lanes are transformed together
  // (float: the coefficients' rounding is far below the GEMM's)
  parallel_for(tasks, num_threads(), [&](int64_t task) {
    const int64_t o0 = task / cblocks * kMR, c0 = task % cblocks * kCB, cn = std::min(kCB, C - c0);
    const int64_t rows = std::min(kMR, O - o0);
    float g[9][kMR], t[A * 3][kMR], u[A * A][kCB][kMR];
    for (int64_t ci = 0; ci < cn; ++ci) {
      const int64_t c = c0 + ci;
      for (int k = 0; k < 9; ++k)
        for (int64_t r = 0; r < kMR; ++r) g[k][r] = r < rows ? static_cast<float>(tap(o0 + r, c, k / 3, k % 3)) : 0.f;
      for (int kw = 0; kw < 3; ++kw)  // columns: G g
        Tr<M>::filter_lanes(kMR, [&](int l, int64_t r) { return g[l * 3 + kw][r]; },
                            [&](int i, int64_t r) -> float & { return t[i * 3 + kw][r]; });
      for (int i = 0; i < A; ++i)  // rows: (G g) G^T
        Tr<M>::filter_lanes(kMR, [&](int l, int64_t r) { return t[i * 3 + l][r]; },
                            [&](int j, int64_t r) -> float & { return u[i * A + j][ci][r]; });
    }
    for (int k = 0; k < A * A; ++k) {
      if (f.packed) {
        std::copy(&u[k][0][0], &u[k][0][0] + cn * kMR, f.u + (k * f.Op + o0) * C + c0 * kMR);
      } else {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t ci = 0; ci < cn; ++ci) f.u[(k * f.Op + o0 + r) * C + c0 + ci] = u[k][ci][r];
      }
    }
  });
  return f;
}

// Tiles per block: V and M of a block in about 1.5 MB (L2 plus a little), at least kNR tiles, and enough
// blocks that every thread gets work.
int64_t block_tiles(int64_t P, int64_t C, int64_t O, int64_t T, int threads) {
  int64_t tb = (int64_t{3} << 19) / (4 * P * (C + O));
  tb = std::max<int64_t>(kNR, std::min<int64_t>(256, tb / kNR * kNR));
  const int64_t per_thread = ((T + threads - 1) / threads + kNR - 1) / kNR * kNR;
  return std::max<int64_t>(kNR, std::min(tb, per_thread));
}

// M[k][o][t] = U[k] V[k] for one block of ldt tiles (ldt a multiple of kNR).
void point_gemms(const Filter &f, const float *V, int64_t ldt, float *Mb) {
  const int64_t C = f.C, O = f.O;
  for (int64_t k = 0; k < f.P; ++k) {
    const float *Uk = f.point(k), *Vk = V + k * C * ldt;
    float *Mk = Mb + k * O * ldt;
    if (!f.packed) {
      sgemm_f32(false, false, O, ldt, C, 1.f, Uk, C, Vk, ldt, 0.f, Mk, ldt);
      continue;
    }
    for (int64_t ob = 0; ob < f.Op; ob += kMR) {
      const float *a = Uk + ob * C;
      const int64_t mr = std::min(kMR, O - ob);
      for (int64_t t = 0; t < ldt; t += kNR) micro_8x32(C, a, Vk + t, ldt, Mk + ob * ldt + t, ldt, mr);
    }
  }
}

// ---------------------------------------------------------------- one convolution
struct Problem {
  const float *src, *mask;  // mask: multiply src by act'(mask) (the masked output gradient), or null
  int64_t mask_act;
  float mask_alpha;
  int64_t N, Cin, Hin, Win, Cout, Hout, Wout, pt, pl;
  const float *bias;
  int64_t act;
  float alpha;
  float *dst;
};

// The (m+2)^2 arrays base + k * stride, each transformed elementwise over n contiguous values, in place:
// the 2-D input transform B^T d B (rows, then columns), one lane per (channel, tile).
template <int M>
void input_transform_inplace(float *base, int64_t stride, int64_t n) {
  constexpr int A = Tr<M>::A;
  for (int i = 0; i < A; ++i) {
    float *row = base + i * A * stride;
    Tr<M>::input(n, [&](int l, int64_t e) { return row[l * stride + e]; },
                 [&](int j, int64_t e) -> float & { return row[j * stride + e]; });
  }
  for (int j = 0; j < A; ++j) {
    float *col = base + j * stride;
    Tr<M>::input(n, [&](int l, int64_t e) { return col[l * A * stride + e]; },
                 [&](int i, int64_t e) -> float & { return col[i * A * stride + e]; });
  }
}

// A^T m A in place: output (i, j) ends up in array i * A + j.
template <int M>
void output_transform_inplace(float *base, int64_t stride, int64_t n) {
  constexpr int A = Tr<M>::A;
  for (int j = 0; j < A; ++j) {
    float *col = base + j * stride;
    Tr<M>::output(n, [&](int l, int64_t e) { return col[l * A * stride + e]; },
                  [&](int i, int64_t e) -> float & { return col[i * A * stride + e]; });
  }
  for (int i = 0; i < M; ++i) {
    float *row = base + i * A * stride;
    Tr<M>::output(n, [&](int l, int64_t e) { return row[l * stride + e]; },
                  [&](int j, int64_t e) -> float & { return row[j * stride + e]; });
  }
}

// dst[q * M + j] = src[j * stride + q]: M arrays interleaved into one output row.
template <int M>
inline void interleave(const float *src, int64_t stride, int64_t n, float *dst) {
#pragma omp simd
  for (int64_t q = 0; q < n; ++q)
    for (int j = 0; j < M; ++j) dst[q * M + j] = src[j * stride + q];
}

// Every tile's (m+2)x(m+2) input patch of tiles [t0, t1) into V[k][c][t - t0] (row stride ldt), run by run
// (a run = consecutive tiles of one tile row); zero outside the image, masked by act'(mask) when given.
// rows: (m+2) * (TW*m + 2) floats of scratch.
template <int M>
void gather_patches(const Problem &p, int64_t t0, int64_t t1, float *V, int64_t ldt, float *rows) {
  constexpr int A = Tr<M>::A;
  const int64_t TH = (p.Hout + M - 1) / M, TW = (p.Wout + M - 1) / M, C = p.Cin;
  const int64_t Lr = TW * M + 2;
  for (int64_t t = t0; t < t1;) {
    const int64_t row = t / TW, tc0 = t % TW, n = row / TH, tr = row % TH;
    const int64_t tc1 = std::min(TW, tc0 + (t1 - t)), len = tc1 - tc0, q0 = t - t0;
    const int64_t iw0 = tc0 * M - p.pl, width = len * M + 2;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t plane = (n * C + c) * p.Hin * p.Win;
      for (int i = 0; i < A; ++i) {
        float *r = rows + i * Lr;
        const int64_t ih = tr * M - p.pt + i;
        if (ih < 0 || ih >= p.Hin) {
          std::fill(r, r + width, 0.f);
        } else {
          // [lo, hi): the part of the row inside the image (either may be empty at a border)
          const int64_t lo = std::min(width, std::max<int64_t>(0, -iw0));
          const int64_t hi = std::max(lo, std::min<int64_t>(width, p.Win - iw0));
          std::fill(r, r + lo, 0.f);
          if (hi > lo) {
            const float *src = p.src + plane + ih * p.Win + iw0;
            if (p.mask)
              act_mask(src + lo, p.mask + plane + ih * p.Win + iw0 + lo, r + lo, hi - lo, p.mask_act, p.mask_alpha);
            else
              std::copy(src + lo, src + hi, r + lo);
          }
          std::fill(r + hi, r + width, 0.f);
        }
        for (int j = 0; j < A; ++j) {
          float *d = V + ((i * A + j) * C + c) * ldt + q0;
#pragma omp simd
          for (int64_t q = 0; q < len; ++q) d[q] = r[q * M + j];
        }
      }
    }
    t += len;
  }
}

template <int M>
void run(const Problem &p, const Filter &f) {
  constexpr int A = Tr<M>::A, P = A * A;
  const int64_t TH = (p.Hout + M - 1) / M, TW = (p.Wout + M - 1) / M, T = p.N * TH * TW;
  const int64_t C = p.Cin, O = p.Cout;
  const int threads = num_threads();
  const int64_t tb = block_tiles(P, C, O, T, threads);
  const int64_t blocks = (T + tb - 1) / tb;
  parallel_for(blocks, threads, [&](int64_t bi) {
    const int64_t t0 = bi * tb, t1 = std::min(T, t0 + tb), nt = t1 - t0;
    const int64_t ldt = (nt + kNR - 1) / kNR * kNR;
    float *V = scratch(9, static_cast<size_t>(P * C * ldt));
    float *Mb = scratch(10, static_cast<size_t>(P * O * ldt));
    const int64_t Lr = TW * M + 2;  // one padded input row of a whole tile row
    float *rows = scratch(11, static_cast<size_t>(A * Lr));
    float *ob = scratch(12, static_cast<size_t>(Lr));
    if (ldt > nt)
      for (int64_t k = 0; k < P; ++k)
        for (int64_t c = 0; c < C; ++c) std::fill(V + (k * C + c) * ldt + nt, V + (k * C + c) * ldt + ldt, 0.f);
    // 1. gather every tile's (m+2)x(m+2) patch into V[k][c][t], then transform all of them at once
    gather_patches<M>(p, t0, t1, V, ldt, rows);
    input_transform_inplace<M>(V, C * ldt, C * ldt);
    // 2. the point GEMMs
    point_gemms(f, V, ldt, Mb);
    // 3. output transform of all tiles, then the epilogue row by row
    output_transform_inplace<M>(Mb, O * ldt, O * ldt);
    for (int64_t t = t0; t < t1;) {
      const int64_t row = t / TW, tc0 = t % TW, n = row / TH, tr = row % TH;
      const int64_t tc1 = std::min(TW, tc0 + (t1 - t)), len = tc1 - tc0, q0 = t - t0;
      const int64_t ow0 = tc0 * M, wlen = std::min(p.Wout - ow0, len * M);
      for (int64_t o = 0; o < O; ++o) {
        const float b = p.bias ? p.bias[o] : 0.f;
        float *out = p.dst + (n * O + o) * p.Hout * p.Wout;
        for (int i = 0; i < M; ++i) {
          const int64_t oh = tr * M + i;
          if (oh >= p.Hout) break;
          interleave<M>(Mb + (i * A * O + o) * ldt + q0, O * ldt, len, ob);
          bias_act_copy(ob, out + oh * p.Wout + ow0, wlen, b, p.act, p.alpha);
        }
      }
      t += len;
    }
  });
}

// ---------------------------------------------------------------- the weight gradient
// Z[(i*A + j)][o][t - t0] = the output-gradient tile (m x m, masked, zero outside the map) of tiles [t0, t1),
// then A z A^T in place (columns, then rows).
template <int M>
void gather_grad_tiles(const float *dy, const float *y, int64_t act, float alpha, int64_t N, int64_t O,
                       int64_t OH, int64_t OW, int64_t t0, int64_t t1, float *Z, int64_t ldt, float *row) {
  constexpr int A = Tr<M>::A;
  const int64_t TH = (OH + M - 1) / M, TW = (OW + M - 1) / M;
  (void)N;
  for (int64_t t = t0; t < t1;) {
    const int64_t r = t / TW, tc0 = t % TW, n = r / TH, tr = r % TH;
    const int64_t tc1 = std::min(TW, tc0 + (t1 - t)), len = tc1 - tc0, q0 = t - t0;
    const int64_t ow0 = tc0 * M, wlen = std::min(OW - ow0, len * M);
    for (int64_t o = 0; o < O; ++o) {
      const int64_t plane = (n * O + o) * OH * OW;
      for (int i = 0; i < M; ++i) {
        const int64_t oh = tr * M + i;
        if (oh < OH) {
          if (y)
            act_mask(dy + plane + oh * OW + ow0, y + plane + oh * OW + ow0, row, wlen, act, alpha);
          else
            std::copy(dy + plane + oh * OW + ow0, dy + plane + oh * OW + ow0 + wlen, row);
          std::fill(row + wlen, row + len * M, 0.f);
        } else {
          std::fill(row, row + len * M, 0.f);
        }
        for (int j = 0; j < M; ++j) {
          float *d = Z + ((i * A + j) * O + o) * ldt + q0;
#pragma omp simd
          for (int64_t q = 0; q < len; ++q) d[q] = row[q * M + j];
        }
      }
    }
    t += len;
  }
}

template <int M>
void grad_tile_transform_inplace(float *base, int64_t stride, int64_t n) {
  constexpr int A = Tr<M>::A;
  for (int j = 0; j < M; ++j) {  // columns: M -> A values
    float *col = base + j * stride;
    Tr<M>::grad_output(n, [&](int l, int64_t e) { return col[l * A * stride + e]; },
                       [&](int i, int64_t e) -> float & { return col[i * A * stride + e]; });
  }
  for (int i = 0; i < A; ++i) {  // rows
    float *row = base + i * A * stride;
    Tr<M>::grad_output(n, [&](int l, int64_t e) { return row[l * stride + e]; },
                       [&](int j, int64_t e) -> float & { return row[j * stride + e]; });
  }
}

float *grad_buffer(int slot, size_t count) {
  static thread_local std::vector<float> bufs[3];
  std::vector<float> &b = bufs[slot];
  if (b.size() < count) {
    b.clear();
    b.shrink_to_fit();
    b.resize(count);
  }
  return b.data();
}

// dW[o][c][3][3] of a stride-1 3x3 convolution from x and the output gradient dy masked by act'(y):
// dU_k[o][c] = sum over tiles of (A dy A^T)_k (B^T x B)_k, then dW = G^T dU G. Tiles go in super-blocks
// whose V and Z fit in about 8 MB: the transforms run in parallel over tile runs and channels, then one
// GEMM per transform point (points shared out to the threads) accumulates into dU.
template <int M>
void run_filter_grad(const ConvSpec &s, const float *x, const float *dy, const float *y, float *dw) {
  constexpr int A = Tr<M>::A, P = A * A;
  const int64_t C = s.C, O = s.O, OH = s.g.OH, OW = s.g.OW, N = s.N;
  const int64_t TH = (OH + M - 1) / M, TW = (OW + M - 1) / M, T = N * TH * TW;
  const int threads = num_threads();
  int64_t sb = (int64_t{8} << 20) / (4 * P * (C + O));
  sb = std::min(T, std::max<int64_t>(64, sb));
  float *dU = grad_buffer(0, static_cast<size_t>(P * O * C));
  float *V = grad_buffer(1, static_cast<size_t>(P * C * sb));
  float *Z = grad_buffer(2, static_cast<size_t>(P * O * sb));
  std::fill(dU, dU + P * O * C, 0.f);
  const Problem src{x, nullptr, kNone, 0.f, N, C, s.H, s.W, O, OH, OW, s.g.pt, s.g.pl, nullptr, kNone, 0.f, nullptr};
  const float *mask = s.act == kNone ? nullptr : y;
  for (int64_t t0 = 0; t0 < T; t0 += sb) {
    const int64_t t1 = std::min(T, t0 + sb), nt = t1 - t0;
    constexpr int64_t kRun = 64;  // tiles per transform task
    const int64_t tasks = (nt + kRun - 1) / kRun;
    parallel_for(2 * tasks, threads, [&](int64_t task) {
      const int64_t a = t0 + (task % tasks) * kRun, b = std::min(t1, a + kRun);
      if (task < tasks) {
        float *rows = scratch(11, static_cast<size_t>(A * (TW * M + 2)));
        gather_patches<M>(src, a, b, V + (a - t0), nt, rows);
      } else {
        float *row = scratch(12, static_cast<size_t>(TW * M + 2));
        gather_grad_tiles<M>(dy, mask, s.act, s.alpha, N, O, OH, OW, a, b, Z + (a - t0), nt, row);
      }
    });
    constexpr int64_t kChan = 16;  // channels per in-place transform task
    const int64_t cv = (C + kChan - 1) / kChan, cz = (O + kChan - 1) / kChan;
    parallel_for(cv + cz, threads, [&](int64_t task) {
      if (task < cv) {
        const int64_t c0 = task * kChan, cn = std::min(kChan, C - c0);
        input_transform_inplace<M>(V + c0 * nt, C * nt, cn * nt);
      } else {
        const int64_t o0 = (task - cv) * kChan, on = std::min(kChan, O - o0);
        grad_tile_transform_inplace<M>(Z + o0 * nt, O * nt, on * nt);
      }
    });
    parallel_for(P, threads, [&](int64_t k) {
      sgemm_f32(false, true, O, C, nt, 1.f, Z + k * O * nt, nt, V + k * C * nt, nt, 1.f, dU + k * O * C, C);
    });
  }
  parallel_for(O, threads, [&](int64_t o) {
    float u[A * A], t[A][3], col[A], g3[3];
    for (int64_t c = 0; c < C; ++c) {
      for (int k = 0; k < P; ++k) u[k] = dU[(k * O + o) * C + c];
      for (int i = 0; i < A; ++i) Tr<M>::grad_filter(u + i * A, t[i]);  // rows: 3 taps per row i
      float *out = dw + (o * C + c) * 9;
      for (int kw = 0; kw < 3; ++kw) {  // columns
        for (int i = 0; i < A; ++i) col[i] = t[i][kw];
        Tr<M>::grad_filter(col, g3);
        for (int kh = 0; kh < 3; ++kh) out[kh * 3 + kw] = g3[kh];
      }
    }
  });
}

void dispatch(int m, const Problem &p, const Filter &f) {
  if (m == 4)
    run<4>(p, f);
  else
    run<2>(p, f);
}

template <class F>
Filter make_filter(int m, int64_t O, int64_t C, F tap) {
  return m == 4 ? transform_filter<4>(O, C, tap) : transform_filter<2>(O, C, tap);
}

}  // namespace

bool winograd_applicable(const ConvSpec &s) {
  const Geo &g = s.g;
  return g.KH == 3 && g.KW == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && s.G == 1;
}

bool winograd_backward_applicable(const ConvSpec &s) { return winograd_applicable(s); }

// Estimated wall time of each way to run the layer, from timings on this kind of machine (bench/RESULTS.md):
// im2col + GEMM at ~100 GMAC/s on two threads; Winograd's point GEMMs at ~50 GMAC/s per thread, its
// transforms a fixed cost per (tile, channel) and the filter transform one per channel pair, the tile blocks
// shared out to the threads. 0 when im2col + GEMM is estimated faster.
namespace {
// How much faster the im2col GEMM runs than the fp32 rate the cost models assume: bf16 operands (the
// process's precision, where the CPU has it) about double the GEMM's throughput, AMX tiles about quadruple
// it (GoogLeNet's conv3 ran faster on im2col + AMX than on Winograd from 8 to 56 px); Winograd stays fp32.
double gemm_speedup() {
  if (precision() != 1 || !bf16_available()) return 1.0;
  return amx_in_use() ? 4.0 : 1.8;
}
}  // namespace

int winograd_choice(const ConvSpec &s, bool backward_data) {
  if (!winograd_applicable(s) || !use_micro()) return 0;
  const int64_t Cin = backward_data ? s.O : s.C, Cout = backward_data ? s.C : s.O;
  const int64_t Hout = backward_data ? s.H : s.g.OH, Wout = backward_data ? s.W : s.g.OW;
  if (Cin < 8 || Cout < 8) return 0;
  const int threads = std::max(1, num_threads());
  const double direct = 9.0 * Cin * Cout * s.N * Hout * Wout / (50e9 * gemm_speedup() * threads);
  double best = direct;
  int choice = 0;
  for (int m : {4, 2}) {
    const int64_t A = m + 2, T = s.N * ((Hout + m - 1) / m) * ((Wout + m - 1) / m);
    const double tile_cost = m == 4 ? 35e-9 : 11e-9, pair_cost = m == 4 ? 12e-9 : 11e-9;
    const int64_t tb = block_tiles(A * A, Cin, Cout, T, threads);
    const int64_t rounds = ((T + tb - 1) / tb + threads - 1) / threads;  // blocks per thread, the busiest
    const double block = double(A * A) * Cin * Cout * tb / 50e9 + double(tb) * (Cin + Cout) * tile_cost;
    const double cost = rounds * block + double(Cin) * Cout * pair_cost / threads;
    if (cost < best) best = cost, choice = m;
  }
  return choice;
}

int winograd_filter_choice(const ConvSpec &s) {
  if (!winograd_applicable(s) || s.C < 8 || s.O < 8) return 0;
  const int threads = std::max(1, num_threads());
  // im2col + GEMM with the chunk partials, against the dual's point GEMMs, transforms and dU traffic
  const double direct = 9.0 * s.C * s.O * s.N * s.g.OH * s.g.OW / (30e9 * gemm_speedup() * threads);
  double best = direct;
  int choice = 0;
  for (int m : {4, 2}) {
    const int64_t A = m + 2, T = s.N * ((s.g.OH + m - 1) / m) * ((s.g.OW + m - 1) / m);
    const double tile_cost = m == 4 ? 35e-9 : 11e-9;
    const double cost = (double(A * A) * s.C * s.O * T / 40e9 + double(T) * (s.C + s.O) * tile_cost +
                         double(A * A) * s.C * s.O * 4 * 3 / 4e9) / threads;
    if (cost < best) best = cost, choice = m;
  }
  return choice;
}

void conv_forward_winograd(const ConvSpec &s, int m, const float *x, const float *wp, const float *bp, float *y) {
  const int64_t C = s.C;
  const Filter f = make_filter(m, s.O, C, [&](int64_t o, int64_t c, int kh, int kw) {
    return static_cast<double>(wp[((o * C + c) * 3 + kh) * 3 + kw]);
  });
  const Problem p{x, nullptr, kNone, 0.f, s.N, C, s.H, s.W, s.O, s.g.OH, s.g.OW, s.g.pt, s.g.pl,
                  bp, s.act, s.alpha, y};
  dispatch(m, p, f);
}

void conv_backward_filter_winograd(const ConvSpec &s, int m, const float *x, const float *dy, const float *y,
                                   float *dw) {
  if (m == 4)
    run_filter_grad<4>(s, x, dy, y, dw);
  else
    run_filter_grad<2>(s, x, dy, y, dw);
}

void conv_backward_data_winograd(const ConvSpec &s, int m, const float *dy, const float *y, const float *wp,
                                 float *dx) {
  const int64_t C = s.C;
  // dx[c] = sum_o dy[o] (x) rot180(w[o][c]): rows are input channels, depth the output channels
  const Filter f = make_filter(m, C, s.O, [&](int64_t c, int64_t o, int kh, int kw) {
    return static_cast<double>(wp[((o * C + c) * 3 + (2 - kh)) * 3 + (2 - kw)]);
  });
  const Problem p{dy, s.act == kNone ? nullptr : y, s.act, s.alpha, s.N, s.O, s.g.OH, s.g.OW, C, s.H, s.W,
                  2 - s.g.pt, 2 - s.g.pl, nullptr, kNone, 0.f, dx};
  dispatch(m, p, f);
}

}  // namespace mp
