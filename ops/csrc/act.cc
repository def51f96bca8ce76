#include "act.h"

#include <algorithm>

namespace mp {

namespace {
// One loop per activation so each vectorises (the switch stays outside the loop).
template <class F>
inline void each(const float *src, float *dst, int64_t n, F f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = f(src[i]);
}
}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default")))
void bias_act_copy(const float *src, float *dst, int64_t n, float b, int64_t act, float alpha) {
  switch (act) {
    case kNone: each(src, dst, n, [b](float v) { return v + b; }); break;
    case kReLU: each(src, dst, n, [b](float v) { v += b; return v > 0.f ? v : 0.f; }); break;
    case kReLU6:
      each(src, dst, n, [b](float v) {
        v += b;
        v = v > 0.f ? v : 0.f;
        return v < 6.f ? v : 6.f;
      });
      break;
    case kLeaky: each(src, dst, n, [b, alpha](float v) { v += b; return v > 0.f ? v : v * alpha; }); break;
    case kHSwish:
      each(src, dst, n, [b](float v) {
        v += b;
        float t = v + 3.f;
        t = t > 0.f ? t : 0.f;
        t = t < 6.f ? t : 6.f;
        return v * t * (1.f / 6.f);
      });
      break;
    default:  // SiLU, sigmoid: exp does not vectorise without a vector libm; plain loop
      for (int64_t i = 0; i < n; ++i) dst[i] = act_apply(act, src[i] + b, alpha);
  }
}

void bias_act_inplace(float *x, int64_t n, float b, int64_t act, float alpha) {
  if (act == kNone && b == 0.f) return;
  bias_act_copy(x, x, n, b, act, alpha);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void act_mask(const float *dy, const float *y, float *g, int64_t n, int64_t act, float alpha) {
  switch (act) {
    case kReLU:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float v = dy[i];
        g[i] = y[i] > 0.f ? v : 0.f;
      }
      break;
    case kReLU6:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float v = dy[i], t = y[i];
        g[i] = (t > 0.f && t < 6.f) ? v : 0.f;
      }
      break;
    case kLeaky:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float v = dy[i];
        g[i] = y[i] > 0.f ? v : v * alpha;
      }
      break;
    case kSigmoid:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) g[i] = dy[i] * y[i] * (1.f - y[i]);
      break;
    default:
      if (g != dy) std::copy(dy, dy + n, g);
  }
}

}  // namespace mp
