// bfloat16 compute for the kernels' GEMMs: operands rounded to bf16 (round to nearest even) as they are
// packed, products accumulated in fp32 by AVX512_BF16's vdpbf16ps in a micro-kernel of our own. Chosen per
// process by MindplugSetPrecision; only taken when the CPU has AVX512_BF16 (detected at run time), so a
// recipe asking for bf16 elsewhere runs fp32 (and the engine says so). The packing buffers are leased from
// a shared free list and nothing is allocated per call: the GEMM needs no more memory than fp32's.
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "common.h"
#include "gemm.h"

namespace mp {
namespace {

std::atomic<int> g_precision{0};  // 0 fp32, 1 bf16; written from Python while kernels may run
std::atomic<bool> g_amx_off{false};  // the tests run the AVX512_BF16 kernel on AMX CPUs too

bool cpu_has_avx512_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return (a >> 5) & 1u;  // CPUID.(EAX=7,ECX=1):EAX[5] = AVX512_BF16
}

// AMX-BF16 and AMX-TILE in CPUID, and Linux's permission for the tile data state (asked once per process;
// a kernel without AMX support refuses it, and the AVX512_BF16 kernel runs instead).
bool cpu_has_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 22) & 1u) || !((d >> 24) & 1u)) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

// A and B are packed once into the layout vdpbf16ps reads, and C is accumulated in registers.
// vdpbf16ps multiplies the two bf16 halves of each 32-bit lane of its sources and adds both products to
// that lane's fp32 accumulator: A's pairs (row i; k, k+1) are broadcast, B's pairs (k, k+1; column j) sit
// 16 columns to a register. A micro-tile is kMR rows x 16 * NV columns (kMR x NV accumulators), NV 3 or
// 2, whichever pads N less. Every value
// is rounded by vcvtne2ps2bf16 (to nearest even; denormal inputs read as zero).
constexpr int64_t kMR = 8, kKC = 768, kNC = 384;

// The first min(n, 32) floats of src (the rest of 32 read as zero) as bf16 in order: 32-bit lane p holds
// (src[2p], src[2p+1]).
__attribute__((target("avx512f,avx512bw,avx512bf16")))
inline __m512i pairs_of(const float *src, int64_t n) {
  const __mmask16 lo = n >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
  const int64_t rest = n - 16;
  const __mmask16 hi = rest >= 16 ? 0xffff : static_cast<__mmask16>((1u << (rest > 0 ? rest : 0)) - 1u);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + 16), _mm512_maskz_loadu_ps(lo, src)));
}

// r[0..15] transposed as a 16 x 16 matrix of 32-bit elements (unpacks, then 128-bit lane shuffles).
__attribute__((target("avx512f"))) inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // each 128-bit lane now holds one 4 x 4 sub-block, transposed; two rounds of lane shuffles put the
  // sixteen sub-blocks in their transposed places
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// The pairs of `count` runs contiguous along k (run c at src + c * ld, k in [0, kb)): pair p of run c goes
// to dst[p * stride + c] (stride a multiple of 16); runs count..stride-1 get zero pairs. Sixteen pairs of
// sixteen runs at a time, transposed in registers; sixteen runs read front to back (sixteen streams).
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void pairs_along(const float *src, int64_t ld, int64_t count, int64_t kb, uint32_t *dst, int64_t stride) {
  const int64_t pairs = (kb + 1) / 2;
  for (int64_t c0 = 0; c0 < stride; c0 += 16) {
    for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
      const int64_t left = pairs - p0 < 16 ? pairs - p0 : 16;
      __m512i r[16];
      for (int64_t c = 0; c < 16; ++c)
        r[c] = c0 + c < count ? pairs_of(src + (c0 + c) * ld + 2 * p0, kb - 2 * p0) : _mm512_setzero_si512();
      transpose16(r);
      for (int64_t p = 0; p < left; ++p) _mm512_storeu_si512(dst + (p0 + p) * stride + c0, r[p]);
    }
  }
}

// dst[0:total] = pairs (lo[j], hi[j]) for j < width (hi null: zero), zero for width <= j < total.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void pairs_across(const float *lo, const float *hi, int64_t width, int64_t total, uint32_t *dst) {
  alignas(64) static const uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i order = _mm512_load_si512(kInterleave);
  for (int64_t j0 = 0; j0 < total; j0 += 16) {
    const int64_t left = width - j0, room = total - j0 < 16 ? total - j0 : 16;
    const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << (left > 0 ? left : 0)) - 1u);
    const __m512 l = _mm512_maskz_loadu_ps(m, lo + j0);
    const __m512 u = hi ? _mm512_maskz_loadu_ps(m, hi + j0) : _mm512_setzero_ps();
    const __m512i words = _mm512_permutexvar_epi16(order, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(u, l)));
    _mm512_mask_storeu_epi32(dst + j0, static_cast<__mmask16>((1u << room) - 1u), words);
  }
}

// A(0:M, k0:k0+kb) as strips of kMR rows (rows past M and the k past kb are zero). A strip holds the pair
// (row r, pair p) pair-major, [p][r], for a transposed A (whose storage runs along the rows), and otherwise
// row-major, [r][p], each row's pairs in order (no transposition); micro_tile<ta> reads either.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void pack_a(bool ta, const float *A, int64_t lda, int64_t M, int64_t k0, int64_t kb, uint32_t *dst) {
  const int64_t pairs = (kb + 1) / 2;
  for (int64_t i0 = 0; i0 < M; i0 += kMR) {
    uint32_t *strip = dst + (i0 / kMR) * pairs * kMR;
    const int64_t rows = M - i0 < kMR ? M - i0 : kMR;
    if (ta) {  // A(i, k) = A[k * lda + i]: rows of A's storage run along i
      for (int64_t p = 0; p < pairs; ++p) {
        const float *lo = A + (k0 + 2 * p) * lda + i0;
        pairs_across(lo, 2 * p + 1 < kb ? lo + lda : nullptr, rows, kMR, strip + p * kMR);
      }
      continue;
    }
    for (int64_t r = 0; r < kMR; ++r) {  // A(i, k) = A[i * lda + k]: each row's pairs in order, [r][p]
      uint32_t *run = strip + r * pairs;
      for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
        const int64_t left = pairs - p0;
        const __mmask16 m = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1u);
        const __m512i v = r < rows ? pairs_of(A + (i0 + r) * lda + k0 + 2 * p0, kb - 2 * p0) : _mm512_setzero_si512();
        _mm512_mask_storeu_epi32(run + p0, m, v);
      }
    }
  }
}

// B(k0:k0+kb, n0:n0+nb) as strips of nr columns: strip s holds, for each k pair p, the nr pairs of its
// columns (columns past nb and the k past kb are zero).
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void pack_b(bool tb, const float *B, int64_t ldb, int64_t k0, int64_t kb, int64_t n0, int64_t nb, int64_t nr,
            uint32_t *dst) {
  const int64_t pairs = (kb + 1) / 2;
  if (!tb) {  // B(k, j) = B[k * ldb + j]: rows of B's storage run along j, read whole row pairs in turn
    for (int64_t p = 0; p < pairs; ++p) {
      const float *lo = B + (k0 + 2 * p) * ldb + n0;
      const float *hi = 2 * p + 1 < kb ? lo + ldb : nullptr;
      for (int64_t j0 = 0; j0 < nb; j0 += nr) {
        const int64_t width = nb - j0 < nr ? nb - j0 : nr;
        pairs_across(lo + j0, hi ? hi + j0 : nullptr, width, nr, dst + (j0 / nr) * pairs * nr + p * nr);
      }
    }
    return;
  }
  for (int64_t j0 = 0; j0 < nb; j0 += nr) {  // B(k, j) = B[j * ldb + k]: columns run along k
    const int64_t width = nb - j0 < nr ? nb - j0 : nr;
    pairs_along(B + (n0 + j0) * ldb + k0, ldb, width, kb, dst + (j0 / nr) * pairs * nr, nr);  // nr: 32 or 48
  }
}

// c[m] = alpha * acc + (first ? beta * c : c), alpha and beta broadcast in va and vb: the GEMMs' epilogue.
__attribute__((target("avx512f"))) inline void combine_store(float *c, __mmask16 m, __m512 acc, __m512 va,
                                                             __m512 vb, float beta, bool first) {
  __m512 v = _mm512_mul_ps(va, acc);
  if (!first) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c));
  else if (beta != 0.f) v = _mm512_add_ps(v, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, c)));
  _mm512_mask_storeu_ps(c, m, v);
}

// C(kMR x 16 NV tile; rows < rows, columns < cols) = alpha * a_strip . b_strip + (first ? beta * C : C).
template <bool kPairMajor, int NV>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void micro_tile(const uint32_t *a, const uint32_t *b,
                                                                       int64_t pairs, float alpha, float beta,
                                                                       bool first, float *C, int64_t ldc,
                                                                       int64_t rows, int64_t cols) {
  constexpr int64_t kNR = 16 * NV;
  const int64_t a_row = kPairMajor ? 1 : pairs, a_pair = kPairMajor ? kMR : 1;
  __m512 acc[kMR][NV];
  for (int64_t r = 0; r < kMR; ++r)
    for (int h = 0; h < NV; ++h) acc[r][h] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh bv[NV];
    for (int h = 0; h < NV; ++h) bv[h] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + p * kNR + 16 * h));
    const uint32_t *ap = a + p * a_pair;
#pragma GCC unroll 8
    for (int64_t r = 0; r < kMR; ++r) {
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(ap[r * a_row])));
      for (int h = 0; h < NV; ++h) acc[r][h] = _mm512_dpbf16_ps(acc[r][h], av, bv[h]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const bool plain = first && beta == 0.f && alpha == 1.f;  // the common case: C = A.B, C not read
  for (int64_t r = 0; r < rows; ++r) {
    for (int h = 0; h < NV; ++h) {
      const int64_t left = cols - 16 * h;
      if (left <= 0) break;
      const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
      float *c = C + r * ldc + 16 * h;
      if (plain) {
        _mm512_mask_storeu_ps(c, m, acc[r][h]);
        continue;
      }
      combine_store(c, m, acc[r][h], va, vb, beta, first);
    }
  }
}

template <int NV>
void run_tiles(bool ta, const uint32_t *ap, const uint32_t *bp, int64_t pairs, int64_t M, int64_t nb, float alpha,
               float beta, bool first, float *C, int64_t ldc) {
  constexpr int64_t kNR = 16 * NV;
  const int64_t strips_m = (M + kMR - 1) / kMR, strips_n = (nb + kNR - 1) / kNR;
  for (int64_t sm = 0; sm < strips_m; ++sm) {
    const int64_t rows = M - sm * kMR < kMR ? M - sm * kMR : kMR;
    for (int64_t sn = 0; sn < strips_n; ++sn) {
      const int64_t cols = nb - sn * kNR < kNR ? nb - sn * kNR : kNR;
      const uint32_t *a = ap + sm * kMR * pairs, *b = bp + sn * kNR * pairs;
      float *c = C + sm * kMR * ldc + sn * kNR;
      if (ta) micro_tile<true, NV>(a, b, pairs, alpha, beta, first, c, ldc, rows, cols);
      else micro_tile<false, NV>(a, b, pairs, alpha, beta, first, c, ldc, rows, cols);
    }
  }
}

struct Packed {
  std::vector<uint32_t> a, b, t;  // t: the AMX packing's transposition scratch
};
std::mutex g_packed_mu;
std::vector<std::unique_ptr<Packed>> g_free_packed;

// A pair of packing buffers leased from a shared free list for one GEMM (MindSpore runs kernels on many
// threads of its own: buffers kept per thread would multiply with them).
struct PackedLease {
  std::unique_ptr<Packed> packed;
  PackedLease() {
    std::lock_guard<std::mutex> lock(g_packed_mu);
    if (g_free_packed.empty()) {
      packed = std::make_unique<Packed>();
    } else {
      packed = std::move(g_free_packed.back());
      g_free_packed.pop_back();
    }
  }
  ~PackedLease() {
    std::lock_guard<std::mutex> lock(g_packed_mu);
    g_free_packed.push_back(std::move(packed));
  }
  PackedLease(const PackedLease &) = delete;
  PackedLease &operator=(const PackedLease &) = delete;
};

// Block sizes near `target` that split `extent` evenly (no thin last block: a K block of a few pairs would
// re-read and re-write all of C for little work), a multiple of `unit`.
int64_t even_block(int64_t extent, int64_t target, int64_t unit) {
  const int64_t blocks = (extent + target - 1) / target;
  const int64_t size = (extent + blocks - 1) / blocks;
  return (size + unit - 1) / unit * unit;
}

// ---- AMX: the same bf16 rounding (vcvtne2ps2bf16 as the operands are packed), products accumulated in
// fp32 by tdpbf16ps on 16 x 16 tiles of C. A is packed in strips of 16 rows, each row's pairs in order
// (the A tile's rows), B in strips of 16 columns, pair-major (the B tile's rows); the pairs of a K block
// are padded with zeros to a multiple of 16, rows and columns past M and N too.
constexpr int64_t kTile = 16;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("avx512f,avx512bw,avx512bf16")))
void amx_pack_a(bool ta, const float *A, int64_t lda, int64_t M, int64_t k0, int64_t kb, int64_t padded,
                uint32_t *dst, std::vector<uint32_t> &scratch) {
  const int64_t pairs = (kb + 1) / 2;
  if (ta && scratch.size() < static_cast<size_t>(padded * kTile)) scratch.resize(static_cast<size_t>(padded * kTile));
  for (int64_t i0 = 0; i0 < M; i0 += kTile) {
    uint32_t *strip = dst + (i0 / kTile) * kTile * padded;
    const int64_t rows = M - i0 < kTile ? M - i0 : kTile;
    if (!ta) {  // A(i, k) = A[i * lda + k]: each row's pairs straight from its storage
      for (int64_t r = 0; r < kTile; ++r)
        for (int64_t p0 = 0; p0 < padded; p0 += 16)
          _mm512_storeu_si512(strip + r * padded + p0,
                              r < rows && p0 < pairs ? pairs_of(A + (i0 + r) * lda + k0 + 2 * p0, kb - 2 * p0)
                                                     : _mm512_setzero_si512());
      continue;
    }
    // A(i, k) = A[k * lda + i]: pair-major first ([p][r]), then sixteen pairs of sixteen rows transposed
    uint32_t *t = scratch.data();
    for (int64_t p = 0; p < padded; ++p) {
      const float *lo = A + (k0 + 2 * p) * lda + i0;
      if (p < pairs) pairs_across(lo, 2 * p + 1 < kb ? lo + lda : nullptr, rows, kTile, t + p * kTile);
      else std::memset(t + p * kTile, 0, kTile * sizeof(uint32_t));
    }
    for (int64_t p0 = 0; p0 < padded; p0 += 16) {
      __m512i r[16];
      for (int q = 0; q < 16; ++q) r[q] = _mm512_loadu_si512(t + (p0 + q) * kTile);
      transpose16(r);
      for (int q = 0; q < 16; ++q) _mm512_storeu_si512(strip + q * padded + p0, r[q]);
    }
  }
}

void amx_pack_b(bool tb, const float *B, int64_t ldb, int64_t k0, int64_t kb, int64_t n0, int64_t nb,
                int64_t padded, uint32_t *dst) {
  const int64_t pairs = (kb + 1) / 2;
  for (int64_t j0 = 0; j0 < nb; j0 += kTile) {
    uint32_t *strip = dst + (j0 / kTile) * kTile * padded;
    pack_b(tb, B, ldb, k0, kb, n0 + j0, nb - j0 < kTile ? nb - j0 : kTile, kTile, strip);
    std::memset(strip + pairs * kTile, 0, static_cast<size_t>((padded - pairs) * kTile) * sizeof(uint32_t));
  }
}

// C(TM x TN tiles; rows < rows, columns < cols) = alpha * A.B + (first ? beta * C : C). Full tiles with
// alpha 1 go straight between C and the tile registers; the rest through `buf` (TM * TN * 256 floats).
template <int TM, int TN>
__attribute__((target("amx-tile,amx-bf16,avx512f"))) void amx_block(const uint32_t *a, const uint32_t *b,
                                                                    int64_t padded, float alpha, float beta,
                                                                    bool first, float *C, int64_t ldc,
                                                                    int64_t rows, int64_t cols, float *buf) {
  const bool direct = alpha == 1.f && (!first || beta == 0.f) && rows == TM * kTile && cols == TN * kTile;
  const bool load_c = direct && !first;
  const int64_t cstride = ldc * static_cast<int64_t>(sizeof(float));
  if (load_c) {
    _tile_loadd(0, C, cstride);
    if (TN > 1) _tile_loadd(1, C + kTile, cstride);
    if (TM > 1) _tile_loadd(2, C + kTile * ldc, cstride);
    if (TM > 1 && TN > 1) _tile_loadd(3, C + kTile * ldc + kTile, cstride);
  } else {
    _tile_zero(0);
    if (TN > 1) _tile_zero(1);
    if (TM > 1) _tile_zero(2);
    if (TM > 1 && TN > 1) _tile_zero(3);
  }
  const int64_t astride = padded * static_cast<int64_t>(sizeof(uint32_t)), bstride = kTile * sizeof(uint32_t);
  for (int64_t p0 = 0; p0 < padded; p0 += 16) {
    _tile_loadd(4, a + p0, astride);
    if (TM > 1) _tile_loadd(5, a + kTile * padded + p0, astride);
    _tile_loadd(6, b + p0 * kTile, bstride);
    if (TN > 1) _tile_loadd(7, b + kTile * padded + p0 * kTile, bstride);
    _tile_dpbf16ps(0, 4, 6);
    if (TN > 1) _tile_dpbf16ps(1, 4, 7);
    if (TM > 1) _tile_dpbf16ps(2, 5, 6);
    if (TM > 1 && TN > 1) _tile_dpbf16ps(3, 5, 7);
  }
  if (direct) {
    _tile_stored(0, C, cstride);
    if (TN > 1) _tile_stored(1, C + kTile, cstride);
    if (TM > 1) _tile_stored(2, C + kTile * ldc, cstride);
    if (TM > 1 && TN > 1) _tile_stored(3, C + kTile * ldc + kTile, cstride);
    return;
  }
  constexpr int64_t kBytes = kTile * sizeof(float);
  _tile_stored(0, buf, kBytes);
  if (TN > 1) _tile_stored(1, buf + 256, kBytes);
  if (TM > 1) _tile_stored(2, buf + 512, kBytes);
  if (TM > 1 && TN > 1) _tile_stored(3, buf + 768, kBytes);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = buf + (r / kTile) * 512 + (r % kTile) * kTile;
    for (int64_t h = 0; h * kTile < cols; ++h) {
      const int64_t left = cols - h * kTile;
      const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
      float *c = C + r * ldc + h * kTile;
      combine_store(c, m, _mm512_loadu_ps(row + h * 256), va, vb, beta, first);
    }
  }
}

__attribute__((target("amx-tile"))) void amx_configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kTile;
    cfg.colsb[t] = 64;
  }
  // not _tile_loadconfig: GCC's operand for it covers only the first 8 bytes, so the stores of the rows and
  // column widths were dropped as dead
  asm volatile("ldtilecfg %0" : : "m"(cfg));
}

__attribute__((target("amx-tile"))) void amx_release() { _tile_release(); }

bool own_bf16_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  const PackedLease lease;
  std::vector<uint32_t> &ap = lease.packed->a, &bp = lease.packed->b;
  const int64_t strips_m = (M + kMR - 1) / kMR;
  // three registers of columns per tile (fewer broadcasts per product) unless two pad N less (N = 256:
  // 256 columns, not 288)
  const int64_t nv = (N + 47) / 48 * 48 - N > (N + 31) / 32 * 32 - N ? 2 : 3, nr = 16 * nv;
  const int64_t kc = even_block(K, kKC, 2), nc = even_block(N, kNC, nr);
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t kb = K - k0 < kc ? K - k0 : kc, pairs = (kb + 1) / 2;
    if (ap.size() < static_cast<size_t>(strips_m * kMR * pairs)) ap.resize(static_cast<size_t>(strips_m * kMR * pairs));
    pack_a(ta, A, lda, M, k0, kb, ap.data());
    const bool first = k0 == 0;
    for (int64_t n0 = 0; n0 < N; n0 += nc) {
      const int64_t nb = N - n0 < nc ? N - n0 : nc, strips_n = (nb + nr - 1) / nr;
      if (bp.size() < static_cast<size_t>(strips_n * nr * pairs)) bp.resize(static_cast<size_t>(strips_n * nr * pairs));
      pack_b(tb, B, ldb, k0, kb, n0, nb, nr, bp.data());
      if (nv == 3) run_tiles<3>(ta, ap.data(), bp.data(), pairs, M, nb, alpha, beta, first, C + n0, ldc);
      else run_tiles<2>(ta, ap.data(), bp.data(), pairs, M, nb, alpha, beta, first, C + n0, ldc);
    }
  }
  return true;
}

// K in blocks of about kKC (a multiple of 32), N in blocks of about kNC; 32 x 32 blocks of C (2 x 2 tiles)
// where M and N allow, 16 wide at their ragged ends.
bool amx_bf16_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  const PackedLease lease;
  std::vector<uint32_t> &ap = lease.packed->a, &bp = lease.packed->b;
  alignas(64) float buf[4 * 256];
  const int64_t strips_m = (M + kTile - 1) / kTile;
  const int64_t kc = even_block(K, kKC, 32), nc = even_block(N, kNC, 2 * kTile);
  amx_configure();
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t kb = K - k0 < kc ? K - k0 : kc, padded = ((kb + 1) / 2 + 15) / 16 * 16;
    if (ap.size() < static_cast<size_t>(strips_m * kTile * padded)) ap.resize(static_cast<size_t>(strips_m * kTile * padded));
    amx_pack_a(ta, A, lda, M, k0, kb, padded, ap.data(), lease.packed->t);
    const bool first = k0 == 0;
    for (int64_t n0 = 0; n0 < N; n0 += nc) {
      const int64_t nb = N - n0 < nc ? N - n0 : nc, strips_n = (nb + kTile - 1) / kTile;
      if (bp.size() < static_cast<size_t>(strips_n * kTile * padded)) bp.resize(static_cast<size_t>(strips_n * kTile * padded));
      amx_pack_b(tb, B, ldb, k0, kb, n0, nb, padded, bp.data());
      for (int64_t sm = 0; sm < strips_m; sm += 2) {
        const int64_t rows = M - sm * kTile < 2 * kTile ? M - sm * kTile : 2 * kTile;
        const uint32_t *a = ap.data() + sm * kTile * padded;
        for (int64_t sn = 0; sn < strips_n; sn += 2) {
          const int64_t cols = nb - sn * kTile < 2 * kTile ? nb - sn * kTile : 2 * kTile;
          const uint32_t *b = bp.data() + sn * kTile * padded;
          float *c = C + sm * kTile * ldc + n0 + sn * kTile;
          if (rows > kTile && cols > kTile) amx_block<2, 2>(a, b, padded, alpha, beta, first, c, ldc, rows, cols, buf);
          else if (rows > kTile) amx_block<2, 1>(a, b, padded, alpha, beta, first, c, ldc, rows, cols, buf);
          else if (cols > kTile) amx_block<1, 2>(a, b, padded, alpha, beta, first, c, ldc, rows, cols, buf);
          else amx_block<1, 1>(a, b, padded, alpha, beta, first, c, ldc, rows, cols, buf);
        }
      }
    }
  }
  amx_release();
  return true;
}

}  // namespace

int precision() { return g_precision.load(std::memory_order_relaxed); }

// Only beside oneDNN's sgemm: a forced portable GEMM (MINDPLUG_GEMM=own, the ISA tests) means fp32.
bool bf16_available() {
  static const bool cpu = cpu_has_avx512_bf16() && gemm_allows_avx512();
  return cpu && std::strcmp(gemm_backend(), "onednn") == 0;
}

// K in blocks of about kKC (evenly split), N in blocks of about kNC: the packed B block stays in L2, a strip
// of packed A in L1. Later K blocks accumulate into C.
bool amx_available() {
  static const bool cpu = cpu_has_amx_bf16();
  return cpu && bf16_available();
}

bool amx_in_use() { return amx_available() && !g_amx_off.load(std::memory_order_relaxed); }

bool sgemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (!bf16_available()) return false;
  if (amx_in_use())
    return amx_bf16_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return own_bf16_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace mp

// 1 asks for bfloat16 compute in the GEMMs, 0 for fp32; returns what the kernels will use (1 only where
// the CPU and the loaded oneDNN support it).
MP_EXPORT int MindplugSetPrecision(int bf16) {
  return mp::guarded("MindplugSetPrecision", [&] {
    const int want = bf16 && mp::bf16_available() ? 1 : 0;
    mp::g_precision.store(want, std::memory_order_relaxed);
    return want;
  });
}
MP_EXPORT int MindplugGetPrecision() { return mp::precision(); }
// 1 when the CPU has AVX512_BF16 (and the kernels use their oneDNN sgemm, not the forced portable one).
MP_EXPORT int MindplugBf16Available() {
  try {
    return mp::bf16_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}
// The bf16 GEMM kernel in effect when bf16 is asked for: "amx", "avx512_bf16", or "none" (fp32 only).
MP_EXPORT const char *MindplugBf16Kernel() {
  try {
    if (!mp::bf16_available()) return "none";
    return mp::amx_in_use() ? "amx" : "avx512_bf16";
  } catch (...) {
    return "none";
  }
}
// 1 keeps the bf16 GEMMs on the AVX512_BF16 kernel even where AMX is usable (the tests cover both).
MP_EXPORT void MindplugForceBf16NoAmx(int off) { mp::g_amx_off.store(off != 0, std::memory_order_relaxed); }
