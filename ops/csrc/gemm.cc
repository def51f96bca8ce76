#include "gemm.h"

#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "common.h"

namespace mp {
namespace {

// dnnl_sgemm's stable C signature (oneDNN 3.x): row-major, returns dnnl_status_t (0 = success).
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                          int64_t, float, float *, int64_t);

DnnlSgemm g_dnnl = nullptr;
bool g_forced_own = false;
std::once_flag g_probe;

void probe() {
  // Only the copy MindSpore (or the Python loader) already has in the process: never a second oneDNN.
  void *h = dlopen("libdnnl.so.3", RTLD_NOW | RTLD_NOLOAD);
  if (h) g_dnnl = reinterpret_cast<DnnlSgemm>(dlsym(h, "dnnl_sgemm"));
}

DnnlSgemm dnnl() {
  if (g_forced_own) return nullptr;
  std::call_once(g_probe, probe);
  return g_dnnl;
}

// Portable fallback micro-kernel: C[i, :] += a * B[k, :] rows, vectorised by the compiler for each
// ISA in the clone list and chosen at load time (no -march=native needed).
__attribute__((target_clones("avx512f", "avx2,fma", "default")))
void axpy_rows(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
               int64_t ldb, float *C, int64_t ldc) {
  constexpr int64_t KB = 256, NB = 512;
  for (int64_t k0 = 0; k0 < K; k0 += KB)
    for (int64_t j0 = 0; j0 < N; j0 += NB) {
      const int64_t k1 = std::min(K, k0 + KB), j1 = std::min(N, j0 + NB);
      for (int64_t i = 0; i < M; ++i) {
        float *c = C + i * ldc;
        for (int64_t k = k0; k < k1; ++k) {
          const float a = alpha * A[i * lda + k];
          const float *b = B + k * ldb;
#pragma omp simd
          for (int64_t j = j0; j < j1; ++j) c[j] += a * b[j];
        }
      }
    }
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
  // Transposed operands are packed to row-major first; the fallback favours simplicity over speed.
  std::vector<float> pa, pb;
  if (ta) {
    pa.resize(static_cast<size_t>(M * K));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < M; ++i) pa[i * K + k] = A[k * lda + i];
    A = pa.data();
    lda = K;
  }
  if (tb) {
    pb.resize(static_cast<size_t>(K * N));
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) pb[k * N + j] = B[j * ldb + k];
    B = pb.data();
    ldb = N;
  }
  axpy_rows(M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

}  // namespace

void sgemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
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

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // Called outside a parallel region (a batch too small to give every thread a chunk): split the
  // GEMM's columns, or else its rows, across the threads so no core idles.
  const int threads = omp_in_parallel() ? 1 : num_threads();
  constexpr int64_t kMinSplit = 64;
  if (threads > 1 && (N >= kMinSplit * threads || M >= kMinSplit * threads)) {
    const bool by_cols = N >= kMinSplit * threads;
    const int64_t extent = by_cols ? N : M;
    const int64_t step = ((extent + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int64_t lo = t * step, hi = std::min(extent, lo + step);
      if (lo >= hi) continue;
      if (by_cols)
        sgemm_serial(ta, tb, M, hi - lo, K, alpha, A, lda, tb ? B + lo * ldb : B + lo, ldb, beta, C + lo, ldc);
      else
        sgemm_serial(ta, tb, hi - lo, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B, ldb, beta, C + lo * ldc,
                     ldc);
    }
    return;
  }
  sgemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char *gemm_backend() { return dnnl() ? "onednn" : "own"; }

}  // namespace mp

// Loads oneDNN from an explicit path (the Python loader passes the copy beside the mindspore package
// when MindSpore itself has not loaded it, e.g. in kernel tests). Returns 0 on success.
MP_EXPORT int MindplugLoadDnnl(const char *path) {
  void *h = path ? dlopen(path, RTLD_NOW | RTLD_GLOBAL) : nullptr;
  if (!h) return mp::fail("MindplugLoadDnnl", "cannot load %s: %s", path ? path : "(null)", dlerror());
  std::call_once(mp::g_probe, mp::probe);  // a later probe must not overwrite this choice
  mp::g_dnnl = reinterpret_cast<mp::DnnlSgemm>(dlsym(h, "dnnl_sgemm"));
  return mp::g_dnnl ? 0 : mp::fail("MindplugLoadDnnl", "%s has no dnnl_sgemm", path);
}

// 1 forces the portable kernel (tests compare both backends), 0 restores oneDNN when present.
MP_EXPORT void MindplugForceOwnGemm(int on) { mp::g_forced_own = on != 0; }
MP_EXPORT const char *MindplugGemmBackend() { return mp::gemm_backend(); }
