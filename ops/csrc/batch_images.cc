// Whole-batch steps of the data pipeline: normalisation (with the HWC -> CHW layout change) and flips.
//
// The pipeline stacks uint8 images first and normalises the batch in one call, instead of a per-image
// Normalize and HWC2CHW in MindSpore's map threads: a quarter of the bytes go through the batch op, and
// the arithmetic runs in vectorized loops. Both run with the GIL released.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "common.h"
#include "threads.h"

namespace {

constexpr int64_t kMaxChannels = 16;

// (v - mean) / std of one image, in loops the compiler vectorizes (a float32 subtraction, then a division,
// as MindSpore's Normalize forms it).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
void normalize_image(const uint8_t *in, float *out, int64_t pixels, int64_t channels, const float *mean,
                     const float *std, bool chw) {
  if (channels == 1) {
    const float m = mean[0], s = std[0];
    for (int64_t p = 0; p < pixels; ++p) out[p] = (static_cast<float>(in[p]) - m) / s;
  } else if (channels == 3 && chw) {
    float *r = out, *g = out + pixels, *b = out + 2 * pixels;
    const float m0 = mean[0], m1 = mean[1], m2 = mean[2], s0 = std[0], s1 = std[1], s2 = std[2];
    for (int64_t p = 0; p < pixels; ++p) {
      r[p] = (static_cast<float>(in[3 * p]) - m0) / s0;
      g[p] = (static_cast<float>(in[3 * p + 1]) - m1) / s1;
      b[p] = (static_cast<float>(in[3 * p + 2]) - m2) / s2;
    }
  } else if (chw) {
    for (int64_t c = 0; c < channels; ++c) {
      float *plane = out + c * pixels;
      const float m = mean[c], s = std[c];
      for (int64_t p = 0; p < pixels; ++p) plane[p] = (static_cast<float>(in[p * channels + c]) - m) / s;
    }
  } else {
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = 0; c < channels; ++c)
        out[p * channels + c] = (static_cast<float>(in[p * channels + c]) - mean[c]) / std[c];
  }
}

}  // namespace

// dst = (src - mean[c]) / std[c] in float32 for a batch of n uint8 images height x width x channels, as
// MindSpore's Normalize computes it (a float32 subtraction, then a float32 division), laid out NCHW when
// chw is 1 (Normalize then HWC2CHW) and NHWC when 0; on up to `threads` threads.
MP_EXPORT int MindplugNormalizeImages(const uint8_t *src, float *dst, int64_t n, int64_t height, int64_t width,
                                      int64_t channels, const float *mean, const float *std, int32_t chw,
                                      int32_t threads) {
  static const char *fn = "MindplugNormalizeImages";
  return mp::guarded(fn, [&] {
    if (src == nullptr || dst == nullptr || mean == nullptr || std == nullptr)
      return mp::fail(fn, "null pointer argument");
    if (n < 0 || height <= 0 || width <= 0 || height > (int64_t{1} << 20) || width > (int64_t{1} << 20) ||
        n > (int64_t{1} << 24))
      return mp::fail(fn, "batch shape %lld x %lld x %lld is out of range", static_cast<long long>(n),
                      static_cast<long long>(height), static_cast<long long>(width));
    if (channels < 1 || channels > kMaxChannels)
      return mp::fail(fn, "images must have 1..%lld channels, got %lld", static_cast<long long>(kMaxChannels),
                      static_cast<long long>(channels));
    if (chw != 0 && chw != 1) return mp::fail(fn, "chw must be 0 or 1, got %d", chw);
    for (int64_t c = 0; c < channels; ++c)
      if (!(std[c] != 0.f)) return mp::fail(fn, "channel %lld: std must be non-zero", static_cast<long long>(c));
    const int64_t pixels = height * width, image = pixels * channels;
    mp::parallel_for(n, threads, [&](int64_t i) {
      normalize_image(src + i * image, dst + i * image, pixels, channels, mean, std, chw == 1);
    });
    return 0;
  });
}

namespace {

// Reverses the order of `count` items of T along a run with `step` T between items.
template <class T>
void reverse_items(T *first, int64_t count, int64_t step) {
  for (int64_t a = 0, b = count - 1; a < b; ++a, --b) std::swap_ranges(first + a * step, first + (a + 1) * step,
                                                                       first + b * step);
}

// The same for each row of a plane of one-byte or three-byte items (grey and RGB pixels): unrolled swaps
// the compiler vectorizes.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
void mirror_rows_u8(uint8_t *plane, int64_t rows, int64_t cols, int64_t item) {
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t *run = plane + r * cols * item;
    if (item == 1) {
      for (int64_t a = 0, b = cols - 1; a < b; ++a, --b) std::swap(run[a], run[b]);
    } else {
      for (int64_t a = 0, b = cols - 1; a < b; ++a, --b)
        for (int k = 0; k < 3; ++k) std::swap(run[3 * a + k], run[3 * b + k]);
    }
  }
}

template <class T>
void flip_image(T *img, int64_t planes, int64_t rows, int64_t cols, int64_t item, int32_t axis) {
  const int64_t row = cols * item, plane = rows * row;
  for (int64_t p = 0; p < planes; ++p) {
    T *pl = img + p * plane;
    if (axis == 0) {
      reverse_items(pl, rows, row);
      continue;
    }
    if constexpr (std::is_same_v<T, uint8_t>) {
      if (item == 1 || item == 3) {
        mirror_rows_u8(pl, rows, cols, item);
        continue;
      }
    }
    for (int64_t r = 0; r < rows; ++r) reverse_items(pl + r * row, cols, item);
  }
}

}  // namespace

// Mirrors, in place, the images `chosen` (indices into the batch) of a batch of n images, each `planes`
// planes of rows x cols items of `item_bytes` bytes: axis 1 reverses each row (left-right), axis 0 the row
// order (top-bottom). An NCHW float32 batch has C planes of 4-byte items, an NHWC uint8 one a single plane
// whose items are the C bytes of a pixel. The pipeline's batch flips, with the GIL released.
MP_EXPORT int MindplugFlipItems(void *data, int64_t n, int64_t planes, int64_t rows, int64_t cols, int64_t item_bytes,
                                const int64_t *chosen, int64_t count, int32_t axis) {
  static const char *fn = "MindplugFlipItems";
  return mp::guarded(fn, [&] {
    if (data == nullptr || (count > 0 && chosen == nullptr)) return mp::fail(fn, "null pointer argument");
    if (n < 0 || planes <= 0 || rows <= 0 || cols <= 0 || count < 0 || count > n || item_bytes <= 0 ||
        item_bytes > 64)
      return mp::fail(fn, "bad batch shape %lld x %lld x %lld x %lld of %lld-byte items with %lld chosen",
                      static_cast<long long>(n), static_cast<long long>(planes), static_cast<long long>(rows),
                      static_cast<long long>(cols), static_cast<long long>(item_bytes),
                      static_cast<long long>(count));
    if (axis != 0 && axis != 1) return mp::fail(fn, "axis must be 0 (rows) or 1 (columns), got %d", axis);
    for (int64_t k = 0; k < count; ++k)
      if (chosen[k] < 0 || chosen[k] >= n)
        return mp::fail(fn, "chosen image %lld is outside the batch of %lld", static_cast<long long>(chosen[k]),
                        static_cast<long long>(n));
    const int64_t image = planes * rows * cols * item_bytes;
    for (int64_t k = 0; k < count; ++k) {
      uint8_t *img = static_cast<uint8_t *>(data) + chosen[k] * image;
      if (item_bytes % 4 == 0)  // float32 (or wider) items: whole words
        flip_image(reinterpret_cast<uint32_t *>(img), planes, rows, cols, item_bytes / 4, axis);
      else
        flip_image(img, planes, rows, cols, item_bytes, axis);
    }
    return 0;
  });
}
