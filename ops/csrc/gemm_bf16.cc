// bfloat16 compute for the kernels' GEMMs: operands rounded to bf16 (round to nearest even), products
// accumulated in fp32 by oneDNN's dnnl_gemm_bf16bf16f32, which uses AVX512_BF16's vdpbf16ps. Chosen per
// process by MindplugSetPrecision; only taken when the CPU has AVX512_BF16 and the oneDNN in the process
// exports the bf16 GEMM, so a recipe asking for bf16 elsewhere runs fp32 (and the engine says so).
#include <cpuid.h>
#include <dlfcn.h>
#include <immintrin.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "common.h"
#include "gemm.h"

namespace mp {
namespace {

using DnnlGemmBf16 = int (*)(char, char, int64_t, int64_t, int64_t, float, const uint16_t *, int64_t,
                             const uint16_t *, int64_t, float, float *, int64_t);

std::atomic<int> g_precision{0};  // 0 fp32, 1 bf16; written from Python while kernels may run
std::atomic<DnnlGemmBf16> g_gemm{nullptr};
std::atomic<bool> g_probed{false};
std::mutex g_probe_mu;

bool cpu_has_avx512_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return (a >> 5) & 1u;  // CPUID.(EAX=7,ECX=1):EAX[5] = AVX512_BF16
}

DnnlGemmBf16 bf16_gemm() {
  if (!g_probed.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(g_probe_mu);
    if (!g_probed.load(std::memory_order_relaxed)) {
      // the oneDNN MindSpore (or MindplugLoadDnnl) already loaded: never a second copy
      void *h = dlopen("libdnnl.so.3", RTLD_NOW | RTLD_NOLOAD);
      if (h && cpu_has_avx512_bf16() && gemm_allows_avx512())
        g_gemm.store(reinterpret_cast<DnnlGemmBf16>(dlsym(h, "dnnl_gemm_bf16bf16f32")));
      g_probed.store(true, std::memory_order_release);
    }
  }
  return g_gemm.load(std::memory_order_acquire);
}

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// rows x cols of a row-major matrix with leading dimension ld, packed densely as bf16. Only called where
// the CPU has AVX512_BF16 (bf16_available): vcvtne2ps2bf16 rounds 32 values per instruction to nearest
// even, as to_bf16 does (it reads denormal inputs as zero); the ragged end of a row goes through to_bf16.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void pack(const float *src, int64_t rows, int64_t cols,
                                                                 int64_t ld, uint16_t *dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float *s = src + r * ld;
    uint16_t *o = dst + r * cols;
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + c + 16), _mm512_loadu_ps(s + c));
      _mm512_storeu_si512(o + c, reinterpret_cast<__m512i>(v));
    }
    for (; c < cols; ++c) o[c] = to_bf16(s[c]);
  }
}

// The bf16 panels of one running GEMM. MindSpore runs kernels on many threads of its own: panels kept per
// thread would multiply with them, so a GEMM leases a pair from a shared free list (as many pairs exist as
// GEMMs ever ran at once) and returns it when done.
struct Panels {
  std::vector<uint16_t> a, b;
};
std::mutex g_panels_mu;
std::vector<std::unique_ptr<Panels>> g_free_panels;

struct PanelLease {
  std::unique_ptr<Panels> panels;
  PanelLease() {
    std::lock_guard<std::mutex> lock(g_panels_mu);
    if (g_free_panels.empty()) {
      panels = std::make_unique<Panels>();
    } else {
      panels = std::move(g_free_panels.back());
      g_free_panels.pop_back();
    }
  }
  ~PanelLease() {
    std::lock_guard<std::mutex> lock(g_panels_mu);
    g_free_panels.push_back(std::move(panels));
  }
  PanelLease(const PanelLease &) = delete;
  PanelLease &operator=(const PanelLease &) = delete;
};

}  // namespace

int precision() { return g_precision.load(std::memory_order_relaxed); }

// Only beside oneDNN's sgemm: a forced portable GEMM (MINDPLUG_GEMM=own, the ISA tests) means fp32.
bool bf16_available() { return std::strcmp(gemm_backend(), "onednn") == 0 && bf16_gemm() != nullptr; }

// Operands are packed to bf16 panel by panel (K in steps of kPanelK, N in steps of kPanelN): the buffers
// stay small and in cache whatever the layer, and every value is still converted once (A per K panel, B
// per panel). Later K panels accumulate into C with beta 1.
bool sgemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (!bf16_available()) return false;
  constexpr int64_t kPanelK = 1536, kPanelN = 384;
  DnnlGemmBf16 f = bf16_gemm();
  const PanelLease lease;
  std::vector<uint16_t> &a16 = lease.panels->a, &b16 = lease.panels->b;
  const int64_t pk = K < kPanelK ? K : kPanelK, pn = N < kPanelN ? N : kPanelN;
  a16.resize(static_cast<size_t>(M * pk));
  b16.resize(static_cast<size_t>(pk * pn));
  for (int64_t k0 = 0; k0 < K; k0 += pk) {
    const int64_t kb = K - k0 < pk ? K - k0 : pk;
    // A(:, k0:k0+kb) as a dense M x kb ('N') or kb x M ('T') matrix
    if (ta) pack(A + k0 * lda, kb, M, lda, a16.data());
    else pack(A + k0, M, kb, lda, a16.data());
    const float b = k0 == 0 ? beta : 1.f;
    for (int64_t n0 = 0; n0 < N; n0 += pn) {
      const int64_t nb = N - n0 < pn ? N - n0 : pn;
      // B(k0:k0+kb, n0:n0+nb) as a dense kb x nb ('N') or nb x kb ('T') matrix
      if (tb) pack(B + n0 * ldb + k0, nb, kb, ldb, b16.data());
      else pack(B + k0 * ldb + n0, kb, nb, ldb, b16.data());
      // C may hold earlier panels already: a failure cannot fall back, it becomes the kernel's error
      if (f(ta ? 'T' : 'N', tb ? 'T' : 'N', M, nb, kb, alpha, a16.data(), ta ? M : kb, b16.data(), tb ? kb : nb, b,
            C + n0, ldc) != 0)
        throw std::runtime_error("oneDNN's bf16 GEMM refused its arguments");
    }
  }
  return true;
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
// 1 when the CPU has AVX512_BF16 and the process's oneDNN exports dnnl_gemm_bf16bf16f32.
MP_EXPORT int MindplugBf16Available() {
  try {
    return mp::bf16_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}
