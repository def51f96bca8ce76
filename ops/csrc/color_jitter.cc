// Colour jitter of one uint8 HWC image with Pillow's ImageEnhance semantics, and the batch flips, for the
// data pipeline.
//
// The augmentation plugin's color_jitter calls this from MindSpore's map threads (ctypes drops the GIL),
// with factors and order drawn from its own generator: MindSpore's C++ RandomColorAdjust would draw the
// same numbers as the pipeline's crop, and the Pillow path holds the GIL or needs worker processes.
// Each step is Image.blend(degenerate, image, factor): brightness blends with black, contrast with the
// grey level of the image's mean luma, saturation with the image's luma (RGB only). One pass per step,
// single-threaded: the pipeline's workers are the parallelism.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <algorithm>

#include "common.h"

namespace {

enum Step : int32_t { kBrightness = 0, kContrast = 1, kSaturation = 2 };
constexpr int32_t kMaxSteps = 16;

// Pillow's RGB -> L conversion (Convert.c, L24): ITU-R 601-2 luma in 16-bit fixed point, rounded.
inline int luma(const uint8_t *p) { return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16; }

// Pillow's ImagingBlend for one value, degenerate + alpha * (value - degenerate) in float, clipped to 0..255
// and truncated: truncating first and clipping the integer gives the same byte, in a loop that vectorizes.
inline uint8_t clip_trunc(float t) { return static_cast<uint8_t>(std::min(255, std::max(0, static_cast<int>(t)))); }

inline uint8_t blend(int degenerate, int value, float alpha) {
  return clip_trunc(static_cast<float>(degenerate) + alpha * static_cast<float>(value - degenerate));
}

// Brightness and contrast map every value through one blend: a 256-entry table does it exactly.
void through_table(uint8_t *img, int64_t n, int degenerate, float f) {
  uint8_t table[256];
  for (int v = 0; v < 256; ++v) table[v] = blend(degenerate, v, f);
  for (int64_t i = 0; i < n; ++i) img[i] = table[img[i]];
}

void contrast(uint8_t *img, int64_t pixels, int64_t channels, float f) {
  int64_t sum = 0;
  for (int64_t p = 0; p < pixels; ++p) sum += channels == 3 ? luma(img + 3 * p) : img[p];
  // ImageEnhance.Contrast: int(mean + 0.5) of the L image
  const int mean = static_cast<int>(static_cast<double>(sum) / static_cast<double>(pixels) + 0.5);
  through_table(img, pixels * channels, mean, f);
}

// Saturation blends each value with its pixel's luma: a 256 x 256 table (luma, value), built per image in
// a loop that vectorizes, replaces three float blends per pixel by three lookups.
void saturation(uint8_t *img, int64_t pixels, float f) {
  static thread_local uint8_t table[256][256];
  float scaled[511];  // alpha * (value - degenerate) for every difference: the same product blend() forms
  for (int d = -255; d <= 255; ++d) scaled[d + 255] = f * static_cast<float>(d);
  for (int g = 0; g < 256; ++g) {
    const float grey = static_cast<float>(g), *from_grey = scaled + 255 - g;
    uint8_t *row = table[g];
#pragma omp simd
    for (int v = 0; v < 256; ++v) row[v] = clip_trunc(grey + from_grey[v]);
  }
  for (int64_t p = 0; p < pixels; ++p) {
    uint8_t *px = img + 3 * p;
    const uint8_t *row = table[luma(px)];
    px[0] = row[px[0]];
    px[1] = row[px[1]];
    px[2] = row[px[2]];
  }
}

}  // namespace

// dst = the jitter of src (height x width x channels uint8, channels 1 or 3; dst may be src): `count` steps
// steps[k] (0 brightness, 1 contrast, 2 saturation, RGB only) with factors[k] >= 0, in the given order.
MP_EXPORT int MindplugColorJitter(const uint8_t *src, uint8_t *dst, int64_t height, int64_t width,
                                  int64_t channels, const int32_t *steps, const float *factors, int32_t count) {
  static const char *fn = "MindplugColorJitter";
  return mp::guarded(fn, [&] {
    if (src == nullptr || dst == nullptr || (count > 0 && (steps == nullptr || factors == nullptr)))
      return mp::fail(fn, "null pointer argument");
    if (height <= 0 || width <= 0 || height > (int64_t{1} << 20) || width > (int64_t{1} << 20))
      return mp::fail(fn, "image size %lld x %lld is out of range", static_cast<long long>(height),
                      static_cast<long long>(width));
    if (channels != 1 && channels != 3)
      return mp::fail(fn, "images must have 1 or 3 channels, got %lld", static_cast<long long>(channels));
    if (count < 0 || count > kMaxSteps) return mp::fail(fn, "step count %d is not in 0..%d", count, kMaxSteps);
    for (int32_t k = 0; k < count; ++k) {
      if (steps[k] < kBrightness || steps[k] > kSaturation)
        return mp::fail(fn, "step %d: unknown step %d (0 brightness, 1 contrast, 2 saturation)", k, steps[k]);
      if (steps[k] == kSaturation && channels != 3)
        return mp::fail(fn, "step %d: saturation needs a 3-channel image", k);
      if (!std::isfinite(factors[k]) || factors[k] < 0.f)
        return mp::fail(fn, "step %d: factor %g must be finite and >= 0", k, static_cast<double>(factors[k]));
    }
    const int64_t pixels = height * width;
    if (dst != src) std::memmove(dst, src, static_cast<size_t>(pixels * channels));
    for (int32_t k = 0; k < count; ++k) {
      switch (steps[k]) {
        case kBrightness: through_table(dst, pixels * channels, 0, factors[k]); break;
        case kContrast: contrast(dst, pixels, channels, factors[k]); break;
        default: saturation(dst, pixels, factors[k]); break;
      }
    }
    return 0;
  });
}

// Mirrors, in place, the images `chosen` (indices into the batch) of a float32 batch of n images, each
// `planes` planes of rows x cols: axis 1 reverses each row (left-right), axis 0 the row order (top-bottom).
// The pipeline's batch flips on a normalised NCHW batch, with the GIL released.
MP_EXPORT int MindplugFlipImages(float *data, int64_t n, int64_t planes, int64_t rows, int64_t cols,
                                 const int64_t *chosen, int64_t count, int32_t axis) {
  static const char *fn = "MindplugFlipImages";
  return mp::guarded(fn, [&] {
    if (data == nullptr || (count > 0 && chosen == nullptr)) return mp::fail(fn, "null pointer argument");
    if (n < 0 || planes <= 0 || rows <= 0 || cols <= 0 || count < 0 || count > n)
      return mp::fail(fn, "bad batch shape %lld x %lld x %lld x %lld with %lld chosen", static_cast<long long>(n),
                      static_cast<long long>(planes), static_cast<long long>(rows), static_cast<long long>(cols),
                      static_cast<long long>(count));
    if (axis != 0 && axis != 1) return mp::fail(fn, "axis must be 0 (rows) or 1 (columns), got %d", axis);
    const int64_t plane = rows * cols, image = planes * plane;
    for (int64_t k = 0; k < count; ++k)
      if (chosen[k] < 0 || chosen[k] >= n)
        return mp::fail(fn, "chosen image %lld is outside the batch of %lld", static_cast<long long>(chosen[k]),
                        static_cast<long long>(n));
    for (int64_t k = 0; k < count; ++k) {
      float *img = data + chosen[k] * image;
      for (int64_t p = 0; p < planes; ++p) {
        float *pl = img + p * plane;
        if (axis == 1) {
          for (int64_t r = 0; r < rows; ++r) {
            float *row = pl + r * cols;
            for (int64_t a = 0, b = cols - 1; a < b; ++a, --b) std::swap(row[a], row[b]);
          }
        } else {
          for (int64_t a = 0, b = rows - 1; a < b; ++a, --b)
            std::swap_ranges(pl + a * cols, pl + (a + 1) * cols, pl + b * cols);
        }
      }
    }
    return 0;
  });
}
