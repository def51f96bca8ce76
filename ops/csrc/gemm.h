// Row-major single-precision GEMM: C = alpha * op(A) @ op(B) + beta * C, sequential (the caller
// parallelises over images). Backed by oneDNN's dnnl_sgemm when available, else our own kernel.
#pragma once
#include <cstdint>

namespace mp {
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
           const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
const char *gemm_backend();
// The GEMM precision the process asked for (0 fp32, 1 bf16; gemm_bf16.cc). sgemm honours it; sgemm_f32
// always computes in fp32 (Winograd, whose transforms would amplify bf16 rounding).
int precision();
bool bf16_available();
// True when the bf16 GEMMs run on AMX tiles (the CPU has them, Linux grants them, the tests did not turn them off).
bool amx_in_use();
bool sgemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void sgemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
// False when the tests pinned the portable GEMM to a lower ISA (the other AVX-512 kernels follow it).
bool gemm_allows_avx512();
}  // namespace mp
