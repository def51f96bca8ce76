// Activations fused into the conv / BatchNorm epilogues, and the per-channel epilogue y = act(z + b).
// Codes are shared with ops/_layers_core.py (ACT_CODES). The gradient of the first four is a function
// of the activation's output y, so a backward kernel needs only y; the others need the pre-activation.
#pragma once
#include <cmath>
#include <cstdint>

namespace mp {

enum Act : int64_t { kNone = 0, kReLU = 1, kReLU6 = 2, kLeaky = 3, kHSwish = 4, kSiLU = 5, kSigmoid = 6, kActCount };

inline bool act_valid(int64_t a) { return a >= 0 && a < kActCount; }
// True when act'(z) can be computed from y = act(z) alone (the backward kernels' contract).
inline bool act_grad_from_output(int64_t a, double alpha) {
  return a == kNone || a == kReLU || a == kReLU6 || (a == kLeaky && alpha > 0) || a == kSigmoid;
}

// MindSpore's definitions: LeakyReLU max(x, alpha x) for 0 <= alpha <= 1; HSwish x*relu6(x+3)/6;
// SiLU x*sigmoid(x).
inline float act_apply(int64_t a, float v, float alpha) {
  switch (a) {
    case kReLU: return v > 0.f ? v : 0.f;
    case kReLU6: return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
    case kLeaky: return v > 0.f ? v : v * alpha;
    case kHSwish: {
      const float t = v + 3.f;
      return v * (t > 0.f ? (t < 6.f ? t : 6.f) : 0.f) * (1.f / 6.f);
    }
    case kSiLU: return v / (1.f + std::exp(-v));
    case kSigmoid: return 1.f / (1.f + std::exp(-v));
    default: return v;
  }
}

// d act / d z, from the output y (only for act_grad_from_output codes).
inline float act_grad_y(int64_t a, float y, float alpha) {
  switch (a) {
    case kReLU: return y > 0.f ? 1.f : 0.f;
    case kReLU6: return (y > 0.f && y < 6.f) ? 1.f : 0.f;
    case kLeaky: return y > 0.f ? 1.f : alpha;
    case kSigmoid: return y * (1.f - y);
    default: return 1.f;
  }
}

// d act / d z, from the pre-activation z (every code).
inline float act_grad_z(int64_t a, float z, float alpha) {
  switch (a) {
    case kReLU: return z > 0.f ? 1.f : 0.f;
    case kReLU6: return (z > 0.f && z < 6.f) ? 1.f : 0.f;
    case kLeaky: return z > 0.f ? 1.f : alpha;
    case kHSwish: return z <= -3.f ? 0.f : (z >= 3.f ? 1.f : (2.f * z + 3.f) * (1.f / 6.f));
    case kSiLU: {
      const float s = 1.f / (1.f + std::exp(-z));
      return s * (1.f + z * (1.f - s));
    }
    case kSigmoid: {
      const float s = 1.f / (1.f + std::exp(-z));
      return s * (1.f - s);
    }
    default: return 1.f;
  }
}

// x[i] = act(x[i] + b) over n values of one channel (b = 0 when there is no bias); vectorised per ISA.
void bias_act_inplace(float *x, int64_t n, float b, int64_t act, float alpha);
// dst[i] = act(src[i] + b).
void bias_act_copy(const float *src, float *dst, int64_t n, float b, int64_t act, float alpha);
// g[i] = dy[i] * act'(from y[i]) for n values (act_grad_from_output codes).
void act_mask(const float *dy, const float *y, float *g, int64_t n, int64_t act, float alpha);

}  // namespace mp
