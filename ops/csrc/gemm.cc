#include "gemm.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "common.h"
#include "threads.h"

namespace mp {
namespace {

// dnnl_sgemm's stable C signature (oneDNN 3.x): row-major, returns dnnl_status_t (0 = success).
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                          int64_t, float, float *, int64_t);

// Written from Python through ctypes (MindplugLoadDnnl / MindplugForceOwnGemm) while kernels may run: atomics.
std::atomic<DnnlSgemm> g_dnnl{nullptr};
std::atomic<bool> g_forced_own{false};
std::atomic<int> g_own_isa{-1};  // -1: the best the CPU has; 0 baseline, 1 AVX2, 2 AVX-512 (tests pin each one)
std::once_flag g_probe;

void probe() {
  // Only the copy MindSpore (or the Python loader) already has in the process: never a second oneDNN.
  void *h = dlopen("libdnnl.so.3", RTLD_NOW | RTLD_NOLOAD);
  if (h) g_dnnl.store(reinterpret_cast<DnnlSgemm>(dlsym(h, "dnnl_sgemm")));
}

DnnlSgemm dnnl() {
  if (g_forced_own.load(std::memory_order_relaxed)) return nullptr;
  std::call_once(g_probe, probe);
  return g_dnnl.load(std::memory_order_acquire);
}

// Portable fallback GEMM (Goto-style): operands packed into panels, an MR x NR register-blocked
// micro-kernel, one copy compiled per ISA and chosen at run time (no -march=native needed).
template <int MR, int NR>
__attribute__((always_inline)) inline void micro_kernel(int64_t kc, const float *ap, const float *bp, float *c,
                                                        int64_t ldc, int64_t mr, int64_t nr, float alpha) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float *b = bp + k * NR;
    for (int i = 0; i < MR; ++i) {
      const float a = ap[k * MR + i];
#pragma omp simd
      for (int j = 0; j < NR; ++j) acc[i][j] += a * b[j];
    }
  }
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; ++i)
#pragma omp simd
      for (int j = 0; j < NR; ++j) c[i * ldc + j] += alpha * acc[i][j];
  } else {
    for (int64_t i = 0; i < mr; ++i)
      for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] += alpha * acc[i][j];
  }
}

template <int MR, int NR>
__attribute__((always_inline)) inline void blocked_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                                        float alpha, const float *A, int64_t lda, const float *B,
                                                        int64_t ldb, float *C, int64_t ldc) {
  constexpr int64_t KC = 256, MC = MR * 16, NC = NR * 64;
  static thread_local std::vector<float> apack, bpack;
  apack.resize(static_cast<size_t>(MC * KC));
  bpack.resize(static_cast<size_t>(NC * KC));
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      // B block -> panels of NR columns, zero-padded: bp[panel][k][j]
      for (int64_t jp = 0; jp < nc; jp += NR) {
        float *dst = bpack.data() + jp * kc;
        const int64_t nr = std::min<int64_t>(NR, nc - jp);
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t j = 0; j < NR; ++j)
            dst[k * NR + j] = j < nr ? (tb ? B[(jc + jp + j) * ldb + pc + k] : B[(pc + k) * ldb + jc + jp + j]) : 0.f;
      }
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        for (int64_t ip = 0; ip < mc; ip += MR) {
          float *dst = apack.data() + ip * kc;
          const int64_t mr = std::min<int64_t>(MR, mc - ip);
          for (int64_t k = 0; k < kc; ++k)
            for (int64_t i = 0; i < MR; ++i)
              dst[k * MR + i] = i < mr ? (ta ? A[(pc + k) * lda + ic + ip + i] : A[(ic + ip + i) * lda + pc + k]) : 0.f;
        }
        for (int64_t jp = 0; jp < nc; jp += NR)
          for (int64_t ip = 0; ip < mc; ip += MR)
            micro_kernel<MR, NR>(kc, apack.data() + ip * kc, bpack.data() + jp * kc,
                                 C + (ic + ip) * ldc + jc + jp, ldc, std::min<int64_t>(MR, mc - ip),
                                 std::min<int64_t>(NR, nc - jp), alpha);
      }
    }
  }
}

__attribute__((target("avx512f,fma"))) void gemm_avx512(bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                                         float alpha, const float *A, int64_t lda, const float *B,
                                                         int64_t ldb, float *C, int64_t ldc) {
  blocked_gemm<8, 32>(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

__attribute__((target("avx2,fma"))) void gemm_avx2(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                                                    const float *A, int64_t lda, const float *B, int64_t ldb,
                                                    float *C, int64_t ldc) {
  blocked_gemm<6, 16>(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

void gemm_baseline(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float *C, int64_t ldc) {
  blocked_gemm<4, 8>(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

void own_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
               const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    float *c = C + i * ldc;
    if (beta == 0.f)
      std::fill(c, c + N, 0.f);
    else if (beta != 1.f)
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  }
  static const int best = __builtin_cpu_supports("avx512f")                                   ? 2
                          : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                                             : 0;
  const int pinned = g_own_isa.load(std::memory_order_relaxed);
  const int isa = pinned >= 0 ? std::min(pinned, best) : best;
  if (isa == 2)
    gemm_avx512(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
  else if (isa == 1)
    gemm_avx2(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
  else
    gemm_baseline(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

}  // namespace

void sgemm_serial(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (bf16 && K > 0 && sgemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  if (DnnlSgemm f = dnnl()) {
    if (f(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == 0) return;
  }
  own_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {
void gemm_split(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // Called outside a parallel region (a batch too small to give every thread a chunk): split the
  // GEMM's columns, or else its rows, across the threads so no core idles.
  const int threads = in_parallel() ? 1 : num_threads();
  constexpr int64_t kMinSplit = 64;
  if (threads > 1 && (N >= kMinSplit * threads || M >= kMinSplit * threads)) {
    const bool by_cols = N >= kMinSplit * threads;
    const int64_t extent = by_cols ? N : M;
    const int64_t step = ((extent + threads - 1) / threads + 15) / 16 * 16;
    parallel_for(threads, threads, [&](int64_t t) {
      const int64_t lo = t * step, hi = std::min(extent, lo + step);
      if (lo >= hi) return;
      if (by_cols)
        sgemm_serial(bf16, ta, tb, M, hi - lo, K, alpha, A, lda, tb ? B + lo * ldb : B + lo, ldb, beta, C + lo,
                     ldc);
      else
        sgemm_serial(bf16, ta, tb, hi - lo, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B, ldb, beta,
                     C + lo * ldc, ldc);
    });
    return;
  }
  sgemm_serial(bf16, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
}  // namespace

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_split(precision() == 1, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sgemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
               const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_split(false, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char *gemm_backend() { return dnnl() ? "onednn" : "own"; }

bool gemm_allows_avx512() {
  const int pinned = g_own_isa.load(std::memory_order_relaxed);
  return !(g_forced_own.load(std::memory_order_relaxed) && pinned >= 0 && pinned < 2);
}

}  // namespace mp

// Loads oneDNN from an explicit path (the Python loader passes the copy beside the mindspore package
// when MindSpore itself has not loaded it, e.g. in kernel tests). Returns 0 on success.
MP_EXPORT int MindplugLoadDnnl(const char *path) {
  return mp::guarded("MindplugLoadDnnl", [&] {
    void *h = path ? dlopen(path, RTLD_NOW | RTLD_GLOBAL) : nullptr;
    if (!h) return mp::fail("MindplugLoadDnnl", "cannot load %s: %s", path ? path : "(null)", dlerror());
    std::call_once(mp::g_probe, mp::probe);  // a later probe must not overwrite this choice
    auto *fn = reinterpret_cast<mp::DnnlSgemm>(dlsym(h, "dnnl_sgemm"));
    if (!fn) return mp::fail("MindplugLoadDnnl", "%s has no dnnl_sgemm", path);
    mp::g_dnnl.store(fn, std::memory_order_release);
    return 0;
  });
}

// 0 uses oneDNN when present; 1 forces the portable kernel at the CPU's best ISA; 2, 3, 4 force it at
// baseline, AVX2, AVX-512 (capped by the CPU) so the tests cover every clone.
MP_EXPORT void MindplugForceOwnGemm(int mode) {
  mp::g_own_isa.store(mode >= 2 ? mode - 2 : -1, std::memory_order_relaxed);
  mp::g_forced_own.store(mode != 0, std::memory_order_relaxed);
}
MP_EXPORT int MindplugCpuHas(const char *feature) {
  if (!feature) return 0;
  if (!std::strcmp(feature, "avx512f")) return __builtin_cpu_supports("avx512f");
  if (!std::strcmp(feature, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return 0;
}
MP_EXPORT const char *MindplugGemmBackend() {
  try {
    return mp::gemm_backend();
  } catch (...) {  // the first probe's call_once can throw; never across the C ABI
    return "unknown";
  }
}
