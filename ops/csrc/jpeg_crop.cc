// The data pipeline's first step for JPEG files: a random resized crop decoded straight from the file.
//
// MindSpore's RandomCropDecodeResize decodes with the plain C paths of the libjpeg it bundles. This decodes
// with the system's libjpeg-turbo (its SIMD IDCT, upsampling and colour conversion), loaded at run time so
// that the kernels load without it, and decodes only what the crop needs: rows below it are never read,
// rows above it are skipped, columns outside it are not transformed (jpeg_crop_scanline), and a crop at
// least twice the output size is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain. The crop is then
// resized bilinearly with OpenCV's INTER_LINEAR sampling (pixel centres, clamped at the crop's edges), as
// MindSpore's op resizes it. The crop box is drawn as MindSpore's RandomResizedCrop draws it, from numbers
// the caller supplies (the pipeline's seeded generator), so a pass draws the same boxes every time.
//
// Built only where jpeglib.h is found; without the header or the library the entry points report that
// they are unavailable and the pipeline keeps MindSpore's decoder.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <immintrin.h>

#include "common.h"
#include "threads.h"

#if __has_include(<jpeglib.h>)
#include <csetjmp>

#include <dlfcn.h>
#include <jpeglib.h>
#define MP_HAVE_JPEG 1
#else
#define MP_HAVE_JPEG 0
#endif

namespace {

// The parameters of RandomResizedCrop: area fraction and aspect-ratio ranges, attempts, output size.
struct CropSpec {
  double scale_lo, scale_hi, ratio_lo, ratio_hi;
  int attempts;
  int out_h, out_w;
};

struct Box {
  int x, y, w, h;
};

// MindSpore's RandomResizedCrop box for a width x height image from `draws` (attempts x 4 numbers in
// [0, 1): area fraction, log aspect ratio, x, y): the first attempt that fits, else the whole image cut to
// the ratio range, centred.
Box sample_box(int width, int height, const double *draws, const CropSpec &s) {
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(s.ratio_lo), log_hi = std::log(s.ratio_hi);
  for (int a = 0; a < s.attempts; ++a) {
    const double *u = draws + 4 * a;
    const double scale = s.scale_lo + u[0] * (s.scale_hi - s.scale_lo);
    const double ratio = std::exp(log_lo + u[1] * (log_hi - log_lo));
    const double cw = std::round(std::sqrt(area * scale * ratio));
    const double ch = std::round(cw / ratio);
    if (cw >= 1 && ch >= 1 && cw <= width && ch <= height) {
      const int w = static_cast<int>(cw), h = static_cast<int>(ch);
      const int x = std::min(width - w, static_cast<int>(u[2] * (width - w + 1)));
      const int y = std::min(height - h, static_cast<int>(u[3] * (height - h + 1)));
      return {x, y, w, h};
    }
  }
  const double aspect = static_cast<double>(width) / height;
  int w = width, h = height;
  if (aspect < s.ratio_lo) {
    h = std::clamp(static_cast<int>(std::round(width / s.ratio_lo)), 1, height);
  } else if (aspect > s.ratio_hi) {
    w = std::clamp(static_cast<int>(std::round(height * s.ratio_hi)), 1, width);
  }
  return {(width - w) / 2, (height - h) / 2, w, h};
}

// Bilinear taps along one axis: output i samples source coordinate origin + (i + 0.5) * extent / out - 0.5,
// clamped to [lo, hi], as indices into the decoded rows or columns with the weight of the second tap.
struct Taps {
  std::vector<int> first, second;
  std::vector<float> weight;
  void build(int out, double origin, double extent, int lo, int hi) {
    first.resize(out), second.resize(out), weight.resize(out);
    const double step = extent / out;
    for (int i = 0; i < out; ++i) {
      const double pos = origin + (i + 0.5) * step - 0.5;
      int k = static_cast<int>(std::floor(pos));
      double frac = pos - k;
      if (k < lo) k = lo, frac = 0;
      if (k >= hi) k = hi, frac = 0;
      first[i] = k, second[i] = std::min(k + 1, hi), weight[i] = static_cast<float>(frac);
    }
  }
};

struct Scratch {
  Taps xs, ys;
  std::vector<float> line, weight;
  std::vector<int32_t> at, next;
  std::vector<uint8_t> pixels;
  std::vector<uint8_t *> rows;
};

// a + w * (b - a) over `count` bytes of two source rows, into floats.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
void blend_rows(const uint8_t *a, const uint8_t *b, float w, float *out, int count) {
  for (int i = 0; i < count; ++i) out[i] = a[i] + w * (static_cast<float>(b[i]) - a[i]);
}

// One blended row resampled horizontally, rounded to bytes: output byte k is src[at[k]] and src[next[k]]
// mixed with weight[k] for the second.
void resample_row_plain(const float *src, const int32_t *at, const int32_t *next, const float *weight, uint8_t *out,
                        int from, int count) {
  for (int k = from; k < count; ++k) {
    const float a = src[at[k]], b = src[next[k]];
    const float v = std::min(255.f, std::max(0.f, (a + 0.5f) + weight[k] * (b - a)));  // as the vector loops
    out[k] = static_cast<uint8_t>(static_cast<int32_t>(v));
  }
}

// The same with AVX-512 or AVX2 gathers (the compiler does not vectorize the indexed loads).
__attribute__((target("avx512f")))
void resample_row_avx512(const float *src, const int32_t *at, const int32_t *next, const float *weight, uint8_t *out,
                         int count) {
  const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.f), half = _mm512_set1_ps(0.5f);
  int k = 0;
  for (; k + 16 <= count; k += 16) {
    const __m512 a = _mm512_i32gather_ps(_mm512_loadu_si512(at + k), src, 4);
    const __m512 b = _mm512_i32gather_ps(_mm512_loadu_si512(next + k), src, 4);
    const __m512 w = _mm512_loadu_ps(weight + k);
    const __m512 v = _mm512_min_ps(top, _mm512_max_ps(zero, _mm512_add_ps(_mm512_add_ps(a, half),
                                                                          _mm512_mul_ps(w, _mm512_sub_ps(b, a)))));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + k), _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(v)));
  }
  resample_row_plain(src, at, next, weight, out, k, count);
}

__attribute__((target("avx2,fma")))
void resample_row_avx2(const float *src, const int32_t *at, const int32_t *next, const float *weight, uint8_t *out,
                       int count) {
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.f), half = _mm256_set1_ps(0.5f);
  int k = 0;
  for (; k + 8 <= count; k += 8) {
    const __m256 a = _mm256_i32gather_ps(src, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(at + k)), 4);
    const __m256 b = _mm256_i32gather_ps(src, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(next + k)), 4);
    const __m256 w = _mm256_loadu_ps(weight + k);
    const __m256 v = _mm256_min_ps(top, _mm256_max_ps(zero, _mm256_add_ps(_mm256_add_ps(a, half),
                                                                          _mm256_mul_ps(w, _mm256_sub_ps(b, a)))));
    const __m256i i = _mm256_cvttps_epi32(v);
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i *>(out + k), _mm_packus_epi16(words, words));
  }
  resample_row_plain(src, at, next, weight, out, k, count);
}

void resample_row(const float *src, const int32_t *at, const int32_t *next, const float *weight, uint8_t *out,
                  int count) {
  static const int level = __builtin_cpu_supports("avx512f") ? 2 : (__builtin_cpu_supports("avx2") ? 1 : 0);
  if (level == 2) {
    resample_row_avx512(src, at, next, weight, out, count);
  } else if (level == 1) {
    resample_row_avx2(src, at, next, weight, out, count);
  } else {
    resample_row_plain(src, at, next, weight, out, 0, count);
  }
}

// Resizes the region of `rows` (RGB, `row_bytes` apart) that the taps address to out (out_h x out_w x 3):
// each output row blends its two source rows over the columns the horizontal taps read, then resamples.
void resize(const uint8_t *rows, size_t row_bytes, Scratch &t, uint8_t *out, int out_h, int out_w) {
  const int lo = t.xs.first.front(), hi = t.xs.second.back();
  const int count = 3 * (hi - lo + 1);
  t.line.resize(count);
  const int bytes = 3 * out_w;
  t.at.resize(bytes), t.next.resize(bytes), t.weight.resize(bytes);
  for (int i = 0; i < out_w; ++i)
    for (int c = 0; c < 3; ++c) {
      t.at[3 * i + c] = 3 * (t.xs.first[i] - lo) + c;
      t.next[3 * i + c] = 3 * (t.xs.second[i] - lo) + c;
      t.weight[3 * i + c] = t.xs.weight[i];
    }
  for (int y = 0; y < out_h; ++y) {
    const uint8_t *a = rows + t.ys.first[y] * row_bytes + 3 * lo, *b = rows + t.ys.second[y] * row_bytes + 3 * lo;
    blend_rows(a, b, t.ys.weight[y], t.line.data(), count);
    resample_row(t.line.data(), t.at.data(), t.next.data(), t.weight.data(), out + static_cast<size_t>(y) * bytes,
                 bytes);
  }
}

#if MP_HAVE_JPEG

// The libjpeg functions used, from the library found at run time.
struct Api {
  decltype(&jpeg_std_error) std_error;
  decltype(&jpeg_CreateDecompress) create;
  decltype(&jpeg_destroy_decompress) destroy;
  decltype(&jpeg_mem_src) mem_src;
  decltype(&jpeg_read_header) read_header;
  decltype(&jpeg_start_decompress) start;
  decltype(&jpeg_crop_scanline) crop_scanline;
  decltype(&jpeg_skip_scanlines) skip_scanlines;
  decltype(&jpeg_read_scanlines) read_scanlines;
};

template <class F>
bool bind_symbol(void *lib, const char *name, F &out) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  return out != nullptr;
}

// libjpeg-turbo's libjpeg.so.62 (the crop and skip functions are turbo's), bound to its own symbols
// (RTLD_DEEPBIND) so that another libjpeg already in the process cannot stand in for parts of it. The
// sanitizer runtime refuses RTLD_DEEPBIND, so the sanitizer build goes without it.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kOpenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kOpenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

const Api *jpeg_api() {
  static const Api *api = []() -> const Api * {
    static Api a;
    const char *names[] = {"libjpeg.so.62", "libjpeg.so"};
    for (const char *name : names) {
      void *lib = dlopen(name, kOpenFlags);
      if (lib == nullptr) continue;
      if (bind_symbol(lib, "jpeg_std_error", a.std_error) && bind_symbol(lib, "jpeg_CreateDecompress", a.create) &&
          bind_symbol(lib, "jpeg_destroy_decompress", a.destroy) && bind_symbol(lib, "jpeg_mem_src", a.mem_src) &&
          bind_symbol(lib, "jpeg_read_header", a.read_header) && bind_symbol(lib, "jpeg_start_decompress", a.start) &&
          bind_symbol(lib, "jpeg_crop_scanline", a.crop_scanline) &&
          bind_symbol(lib, "jpeg_skip_scanlines", a.skip_scanlines) &&
          bind_symbol(lib, "jpeg_read_scanlines", a.read_scanlines))
        return &a;
      dlclose(lib);
    }
    return nullptr;
  }();
  return api;
}

struct ErrorManager {
  jpeg_error_mgr base;
  jmp_buf jump;
  int warnings;
};

void on_error(j_common_ptr info) { longjmp(reinterpret_cast<ErrorManager *>(info->err)->jump, 1); }

void on_message(j_common_ptr info, int level) {
  if (level < 0) ++reinterpret_cast<ErrorManager *>(info->err)->warnings;  // corrupt data, which Pillow refuses
}

// Decoded columns on each side of a crop: chroma upsampling reads one subsampled neighbour (two columns).
constexpr int kMargin = 4;

// The smallest DCT scale (8, 4, 2 or 1 eighths) at which the w x h crop still covers the output.
int dct_eighths(const Box &b, const CropSpec &s) {
  int m = 1;
  while (m < 8 && (int64_t{b.w} * m < 8 * int64_t{s.out_w} || int64_t{b.h} * m < 8 * int64_t{s.out_h})) m *= 2;
  return m;
}

// Larger images are refused (status 2): their rows would not fit the scratch buffer's int offsets.
constexpr int64_t kMaxPixels = int64_t{1} << 28;

// Status of one image: 0 decoded, 1 not a JPEG this decoder takes (colour space), 2 refused by libjpeg
// (an error, or corrupt data it warned about).
int decode_one(const Api &api, const uint8_t *data, size_t size, const double *draws, const CropSpec &s,
               Scratch &t, uint8_t *out) {
  jpeg_decompress_struct info;
  ErrorManager err;
  info.err = api.std_error(&err.base);
  err.base.error_exit = on_error;
  err.base.emit_message = on_message;
  err.warnings = 0;
  if (setjmp(err.jump)) {
    api.destroy(&info);
    return 2;
  }
  api.create(&info, JPEG_LIB_VERSION, sizeof(info));
  api.mem_src(&info, data, static_cast<unsigned long>(size));
  api.read_header(&info, TRUE);
  if (info.jpeg_color_space != JCS_GRAYSCALE && info.jpeg_color_space != JCS_YCbCr &&
      info.jpeg_color_space != JCS_RGB) {
    api.destroy(&info);
    return 1;
  }
  if (int64_t{info.image_width} * info.image_height > kMaxPixels) {
    api.destroy(&info);
    return 2;
  }
  const Box b = sample_box(static_cast<int>(info.image_width), static_cast<int>(info.image_height), draws, s);
  const int m = dct_eighths(b, s);
  const double scale = m / 8.0;
  info.out_color_space = JCS_RGB;
  info.dct_method = JDCT_ISLOW;
  info.scale_num = static_cast<unsigned>(m);
  info.scale_denom = 8;
  api.start(&info);
  const int full_w = static_cast<int>(info.output_width), full_h = static_cast<int>(info.output_height);
  // the crop in the scaled image: [x0, x1) x [y0, y1) holds every pixel the bilinear taps read; the
  // columns are decoded with a margin, since chroma upsampling repeats the edge of what it decodes
  const int x0 = std::min(full_w - 1, static_cast<int>(std::floor(b.x * scale)));
  const int x1 = std::max(x0 + 1, std::min(full_w, static_cast<int>(std::ceil((b.x + b.w) * scale))));
  const int m0 = std::max(0, x0 - kMargin), m1 = std::min(full_w, x1 + kMargin);
  const int y0 = std::min(full_h - 1, static_cast<int>(std::floor(b.y * scale)));
  const int y1 = std::max(y0 + 1, std::min(full_h, static_cast<int>(std::ceil((b.y + b.h) * scale))));
  JDIMENSION xoff = static_cast<JDIMENSION>(m0), width = static_cast<JDIMENSION>(m1 - m0);
  if (width < static_cast<JDIMENSION>(full_w)) api.crop_scanline(&info, &xoff, &width);
  const size_t row_bytes = 3 * static_cast<size_t>(info.output_width);
  const int lines = y1 - y0;
  t.pixels.resize(row_bytes * lines);
  t.rows.resize(lines);
  for (int r = 0; r < lines; ++r) t.rows[r] = t.pixels.data() + r * row_bytes;
  if (y0 > 0 && api.skip_scanlines(&info, static_cast<JDIMENSION>(y0)) != static_cast<JDIMENSION>(y0)) {
    api.destroy(&info);
    return 2;
  }
  for (int r = 0; r < lines;) {
    const JDIMENSION got = api.read_scanlines(&info, t.rows.data() + r, static_cast<JDIMENSION>(lines - r));
    if (got == 0) {
      api.destroy(&info);
      return 2;
    }
    r += static_cast<int>(got);
  }
  const int warnings = err.warnings;
  api.destroy(&info);  // the rows below the crop are never decoded
  if (warnings > 0) return 2;
  const int left = static_cast<int>(xoff);
  t.xs.build(s.out_w, b.x * scale - left, b.w * scale, x0 - left, x1 - 1 - left);
  t.ys.build(s.out_h, b.y * scale - y0, b.h * scale, 0, lines - 1);
  resize(t.pixels.data(), row_bytes, t, out, s.out_h, s.out_w);
  return 0;
}

#endif  // MP_HAVE_JPEG

bool spec_ok(const char *fn, const CropSpec &s) {
  if (s.out_h <= 0 || s.out_w <= 0 || s.out_h > 65536 || s.out_w > 65536)
    return mp::fail(fn, "output size %d x %d is out of range", s.out_h, s.out_w), false;
  if (s.attempts < 1 || s.attempts > 1000) return mp::fail(fn, "attempts must be 1..1000, got %d", s.attempts), false;
  if (!(s.scale_lo > 0 && s.scale_lo <= s.scale_hi && s.scale_hi <= 1e6 && s.ratio_lo > 0 && s.ratio_lo <= s.ratio_hi &&
        s.ratio_hi < 1e6))
    return mp::fail(fn, "scale [%g, %g] and ratio [%g, %g] must be positive, low <= high", s.scale_lo, s.scale_hi,
                    s.ratio_lo, s.ratio_hi),
           false;
  return true;
}

}  // namespace

// 1 when MindplugDecodeCropJpegs can run (built with jpeglib.h, libjpeg-turbo found), else 0.
MP_EXPORT int MindplugJpegCropAvailable() {
#if MP_HAVE_JPEG
  return jpeg_api() != nullptr ? 1 : 0;
#else
  return 0;
#endif
}

// Decodes a random resized crop (RGB, out_h x out_w) of each of n JPEG files data[i] (size[i] bytes) into
// out (n x out_h x out_w x 3), the box drawn from draws[i] (attempts x 4 numbers in [0, 1)); status[i] is
// 0 when decoded, 1 when the file is not a JPEG this decoder takes, 2 when libjpeg refused it (the image
// is then left unwritten). On up to `threads` threads; returns non-zero only for bad arguments.
MP_EXPORT int MindplugDecodeCropJpegs(int64_t n, const uint8_t *const *data, const int64_t *size, const double *draws,
                                      int32_t attempts, double scale_lo, double scale_hi, double ratio_lo,
                                      double ratio_hi, int32_t out_h, int32_t out_w, uint8_t *out, int32_t *status,
                                      int32_t threads) {
  static const char *fn = "MindplugDecodeCropJpegs";
  return mp::guarded(fn, [&] {
    const CropSpec s{scale_lo, scale_hi, ratio_lo, ratio_hi, attempts, out_h, out_w};
    if (n < 0 || n > (int64_t{1} << 24))
      return mp::fail(fn, "batch of %lld images is out of range", static_cast<long long>(n));
    if (n > 0 && (data == nullptr || size == nullptr || draws == nullptr || out == nullptr || status == nullptr))
      return mp::fail(fn, "null pointer argument");
    if (!spec_ok(fn, s)) return 1;
#if MP_HAVE_JPEG
    const Api *api = jpeg_api();
    if (api == nullptr) return mp::fail(fn, "libjpeg-turbo (libjpeg.so.62) is not available");
    for (int64_t i = 0; i < n; ++i)
      if (data[i] == nullptr || size[i] < 4 || size[i] > (int64_t{1} << 31))
        return mp::fail(fn, "image %lld: %lld bytes is not a JPEG file", static_cast<long long>(i),
                        static_cast<long long>(size[i]));
    const size_t image = static_cast<size_t>(out_h) * out_w * 3;
    mp::parallel_for(n, threads, [&](int64_t i) {
      thread_local Scratch scratch;
      try {
        status[i] = decode_one(*api, data[i], static_cast<size_t>(size[i]), draws + i * 4 * attempts, s, scratch,
                               out + i * image);
      } catch (const std::exception &) {  // out of memory for this image's rows: refused, the batch goes on
        status[i] = 2;
      }
    });
    return 0;
#else
    return mp::fail(fn, "built without jpeglib.h: install libjpeg-turbo's headers and rebuild");
#endif
  });
}

// The same random resized crop of an RGB image already decoded (height x width x 3 uint8, rows packed):
// the path for files that are not JPEG, with the same box sampling and resize.
MP_EXPORT int MindplugCropResizeRgb(const uint8_t *src, int32_t height, int32_t width, const double *draws,
                                    int32_t attempts, double scale_lo, double scale_hi, double ratio_lo,
                                    double ratio_hi, int32_t out_h, int32_t out_w, uint8_t *out) {
  static const char *fn = "MindplugCropResizeRgb";
  return mp::guarded(fn, [&] {
    const CropSpec s{scale_lo, scale_hi, ratio_lo, ratio_hi, attempts, out_h, out_w};
    if (src == nullptr || draws == nullptr || out == nullptr) return mp::fail(fn, "null pointer argument");
    if (height <= 0 || width <= 0 || height > (1 << 20) || width > (1 << 20))
      return mp::fail(fn, "image size %d x %d is out of range", height, width);
    if (!spec_ok(fn, s)) return 1;
    const Box b = sample_box(width, height, draws, s);
    Scratch t;
    t.xs.build(out_w, b.x, b.w, b.x, b.x + b.w - 1);
    t.ys.build(out_h, b.y, b.h, b.y, b.y + b.h - 1);
    resize(src, 3 * static_cast<size_t>(width), t, out, out_h, out_w);
    return 0;
  });
}
