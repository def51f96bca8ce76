// Colour jitter of uint8 HWC images with Pillow's ImageEnhance semantics, for the data pipeline.
//
// The augmentation plugin's color_jitter calls it per image from MindSpore's map threads (ctypes drops the
// GIL) or once per batch from the pipeline's batch stage, with factors and order drawn by the caller:
// MindSpore's C++ RandomColorAdjust would draw the same numbers as the pipeline's crop, and the Pillow
// path holds the GIL or needs worker processes.
// Each step is Image.blend(degenerate, image, factor): brightness blends with black, contrast with the
// grey level of the image's mean luma, saturation with the image's luma (RGB only). One vectorized pass
// per step (two for contrast), single-threaded per image: the pipeline's workers, or the batch call's
// threads, are the parallelism.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "threads.h"

namespace {

enum Step : int32_t { kBrightness = 0, kContrast = 1, kSaturation = 2 };
constexpr int32_t kMaxSteps = 16;

// Pillow's RGB -> L conversion (Convert.c, L24): ITU-R 601-2 luma in 16-bit fixed point, rounded.
inline int luma(int r, int g, int b) { return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; }

// Pillow's ImagingBlend for one value, degenerate + alpha * (value - degenerate) in float, clipped to 0..255
// and truncated: truncating first and clipping the integer gives the same byte, in a loop that vectorizes.
inline uint8_t clip_trunc(float t) { return static_cast<uint8_t>(std::min(255, std::max(0, static_cast<int>(t)))); }

inline uint8_t blend(int degenerate, int value, float alpha) {
  return clip_trunc(static_cast<float>(degenerate) + alpha * static_cast<float>(value - degenerate));
}

// img[i] = table[img[i]]: four 64-byte table registers and two byte permutes per 64 values with
// AVX512_VBMI, one load per value otherwise.
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
void lookup_vbmi(uint8_t *img, int64_t n, const uint8_t *table) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64),
                t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(img + i);
    const __m512i low = _mm512_permutex2var_epi8(t0, v, t1), high = _mm512_permutex2var_epi8(t2, v, t3);
    _mm512_storeu_si512(img + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), low, high));
  }
  for (; i < n; ++i) img[i] = table[img[i]];
}

void lookup(uint8_t *img, int64_t n, const uint8_t *table) {
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw");
  if (vbmi) return lookup_vbmi(img, n, table);
  for (int64_t i = 0; i < n; ++i) img[i] = table[img[i]];
}

// Brightness and contrast map every value through one blend: a 256-entry table does it exactly.
void through_table(uint8_t *img, int64_t n, int degenerate, float f) {
  uint8_t table[256];
  for (int v = 0; v < 256; ++v) table[v] = blend(degenerate, v, f);
  lookup(img, n, table);
}

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
int64_t sum_luma(const uint8_t *img, int64_t pixels) {
  int64_t sum = 0;
  for (int64_t p = 0; p < pixels; ++p) sum += luma(img[3 * p], img[3 * p + 1], img[3 * p + 2]);
  return sum;
}

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
int64_t sum_bytes(const uint8_t *img, int64_t n) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += img[i];
  return sum;
}

void contrast(uint8_t *img, int64_t pixels, int64_t channels, float f) {
  const int64_t sum = channels == 3 ? sum_luma(img, pixels) : sum_bytes(img, pixels);
  // ImageEnhance.Contrast: int(mean + 0.5) of the L image
  const int mean = static_cast<int>(static_cast<double>(sum) / static_cast<double>(pixels) + 0.5);
  through_table(img, pixels * channels, mean, f);
}

// Saturation blends each value with its pixel's luma, the float arithmetic of blend() in a loop the
// compiler vectorizes (a multiply, then an add: no fused multiply-add, which would round differently).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
void saturation(uint8_t *img, int64_t pixels, float f) {
  for (int64_t p = 0; p < pixels; ++p) {
    const int r = img[3 * p], g = img[3 * p + 1], b = img[3 * p + 2];
    const int grey = luma(r, g, b);
    const float base = static_cast<float>(grey);
    img[3 * p] = clip_trunc(base + f * static_cast<float>(r - grey));
    img[3 * p + 1] = clip_trunc(base + f * static_cast<float>(g - grey));
    img[3 * p + 2] = clip_trunc(base + f * static_cast<float>(b - grey));
  }
}

void apply_steps(uint8_t *img, int64_t pixels, int64_t channels, const int32_t *steps, const float *factors,
                 int32_t count) {
  for (int32_t k = 0; k < count; ++k) {
    switch (steps[k]) {
      case kBrightness: through_table(img, pixels * channels, 0, factors[k]); break;
      case kContrast: contrast(img, pixels, channels, factors[k]); break;
      default: saturation(img, pixels, factors[k]); break;
    }
  }
}

// Checks one image's step list; 0 or the failure's return value.
int check_steps(const char *fn, int64_t channels, const int32_t *steps, const float *factors, int32_t count) {
  if (count > 0 && (steps == nullptr || factors == nullptr)) return mp::fail(fn, "null pointer argument");
  if (count < 0 || count > kMaxSteps) return mp::fail(fn, "step count %d is not in 0..%d", count, kMaxSteps);
  for (int32_t k = 0; k < count; ++k) {
    if (steps[k] < kBrightness || steps[k] > kSaturation)
      return mp::fail(fn, "step %d: unknown step %d (0 brightness, 1 contrast, 2 saturation)", k, steps[k]);
    if (steps[k] == kSaturation && channels != 3) return mp::fail(fn, "step %d: saturation needs a 3-channel image", k);
    if (!std::isfinite(factors[k]) || factors[k] < 0.f)
      return mp::fail(fn, "step %d: factor %g must be finite and >= 0", k, static_cast<double>(factors[k]));
  }
  return 0;
}

int check_geometry(const char *fn, int64_t height, int64_t width, int64_t channels) {
  if (height <= 0 || width <= 0 || height > (int64_t{1} << 20) || width > (int64_t{1} << 20))
    return mp::fail(fn, "image size %lld x %lld is out of range", static_cast<long long>(height),
                    static_cast<long long>(width));
  if (channels != 1 && channels != 3)
    return mp::fail(fn, "images must have 1 or 3 channels, got %lld", static_cast<long long>(channels));
  return 0;
}

}  // namespace

// dst = the jitter of src (height x width x channels uint8, channels 1 or 3; dst may be src): `count` steps
// steps[k] (0 brightness, 1 contrast, 2 saturation, RGB only) with factors[k] >= 0, in the given order.
MP_EXPORT int MindplugColorJitter(const uint8_t *src, uint8_t *dst, int64_t height, int64_t width,
                                  int64_t channels, const int32_t *steps, const float *factors, int32_t count) {
  static const char *fn = "MindplugColorJitter";
  return mp::guarded(fn, [&] {
    if (src == nullptr || dst == nullptr) return mp::fail(fn, "null pointer argument");
    if (int bad = check_geometry(fn, height, width, channels)) return bad;
    if (int bad = check_steps(fn, channels, steps, factors, count)) return bad;
    const int64_t pixels = height * width;
    if (dst != src) std::memmove(dst, src, static_cast<size_t>(pixels * channels));
    apply_steps(dst, pixels, channels, steps, factors, count);
    return 0;
  });
}

// The jitter of every image of a batch of n uint8 HWC images, in place: image i takes counts[i] steps from
// row i of steps and factors (n x stride each), as MindplugColorJitter takes them. The pipeline's batch
// stage calls it once per batch, on up to `threads` threads.
MP_EXPORT int MindplugColorJitterImages(uint8_t *data, int64_t n, int64_t height, int64_t width, int64_t channels,
                                        const int32_t *steps, const float *factors, const int32_t *counts,
                                        int32_t stride, int32_t threads) {
  static const char *fn = "MindplugColorJitterImages";
  return mp::guarded(fn, [&] {
    if (data == nullptr || (n > 0 && counts == nullptr)) return mp::fail(fn, "null pointer argument");
    if (n < 0 || n > (int64_t{1} << 24)) return mp::fail(fn, "batch of %lld images is out of range",
                                                       static_cast<long long>(n));
    if (stride < 0 || stride > kMaxSteps) return mp::fail(fn, "step stride %d is not in 0..%d", stride, kMaxSteps);
    if (int bad = check_geometry(fn, height, width, channels)) return bad;
    for (int64_t i = 0; i < n; ++i) {
      if (counts[i] > stride)
        return mp::fail(fn, "image %lld: %d steps, more than the stride %d", static_cast<long long>(i), counts[i],
                        stride);
      if (int bad = check_steps(fn, channels, steps + i * stride, factors + i * stride, counts[i])) return bad;
    }
    const int64_t pixels = height * width;
    mp::parallel_for(n, threads, [&](int64_t i) {
      apply_steps(data + i * pixels * channels, pixels, channels, steps + i * stride, factors + i * stride,
                  counts[i]);
    });
    return 0;
  });
}
