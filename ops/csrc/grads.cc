// Whole-model passes over a training step's gradients: their global L2 norm with a finiteness flag
// (GradNorm), and the clip-by-global-norm scaling of every gradient (GradClip). MindSpore composes each
// from several ops per gradient tensor (square, reduce, cast, multiply, divide, ...), whose launches cost
// more on a CPU than the arithmetic; here each is one kernel over all the tensors.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common.h"
#include "threads.h"

namespace {

// Elements per work item: the partial sums are kept per item and added in item order, so the norm does not
// depend on the thread count.
constexpr int64_t kChunk = 1 << 15;

struct Piece {
  int tensor;
  int64_t begin, end;
};

// The gradients params[first .. first+count) as float32 arrays; false (with an error) on a wrong dtype.
bool gradients(const char *fn, int first, int count, void **params, int *ndims, int64_t **shapes,
               const char **dtypes, std::vector<const float *> &data, std::vector<int64_t> &sizes) {
  data.resize(static_cast<size_t>(count));
  sizes.resize(static_cast<size_t>(count));
  for (int k = 0; k < count; ++k) {
    const int p = first + k;
    const char *dtype = dtypes[p] ? dtypes[p] : "(null)";
    if (std::strcmp(dtype, "float32") != 0) {
      mp::fail(fn, "gradient %d must be float32, got %s", k, dtype);
      return false;
    }
    int64_t n = 1;
    for (int d = 0; d < ndims[p]; ++d) {
      if (shapes[p][d] < 0) {
        mp::fail(fn, "gradient %d has a negative dimension", k);
        return false;
      }
      n *= shapes[p][d];
    }
    data[static_cast<size_t>(k)] = static_cast<const float *>(params[p]);
    sizes[static_cast<size_t>(k)] = n;
  }
  return true;
}

std::vector<Piece> pieces(const std::vector<int64_t> &sizes) {
  std::vector<Piece> out;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t b = 0; b < sizes[t]; b += kChunk)
      out.push_back({static_cast<int>(t), b, std::min(sizes[t], b + kChunk)});
  return out;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
double square_sum(const float *x, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void scale_into(const float *x, int64_t n, float f, float *y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * f;
}

}  // namespace

// inputs g_0 .. g_{n-1} (float32, any shapes, n >= 1); output stats[2] float32: stats[0] = 1 when every
// element is finite, else 0; stats[1] = sqrt(sum of all squares), the sum taken in float64 (a finite float32
// squared cannot overflow it, so the sum is finite exactly when every element is).
MP_AOT_ENTRY(GradNorm) {
  const char *fn = "GradNorm";
  if (!params || !ndims || !shapes || !dtypes) return mp::fail(fn, "null parameter arrays");
  const int n = nparam - 1;
  if (n < 1) return mp::fail(fn, "expected at least one gradient and the stats output, got %d tensors", nparam);
  if (std::strcmp(dtypes[n] ? dtypes[n] : "", "float32") != 0 || ndims[n] != 1 || shapes[n][0] != 2)
    return mp::fail(fn, "the output must be float32 of shape [2]");
  std::vector<const float *> g;
  std::vector<int64_t> sizes;
  if (!gradients(fn, 0, n, params, ndims, shapes, dtypes, g, sizes)) return 1;
  const std::vector<Piece> work = pieces(sizes);
  std::vector<double> partial(work.size(), 0.0);
  mp::parallel_for(static_cast<int64_t>(work.size()), mp::num_threads(), [&](int64_t i) {
    const Piece &p = work[static_cast<size_t>(i)];
    partial[static_cast<size_t>(i)] = square_sum(g[static_cast<size_t>(p.tensor)] + p.begin, p.end - p.begin);
  });
  double total = 0.0;
  for (double s : partial) total += s;
  float *stats = static_cast<float *>(params[n]);
  stats[0] = std::isfinite(total) ? 1.f : 0.f;
  stats[1] = static_cast<float>(std::sqrt(total));
  return 0;
}

// inputs cfg[1] (int64: the bits of the clip norm, a double > 0), stats[2] (GradNorm's output),
// g_0 .. g_{n-1}; outputs g'_0 .. g'_{n-1}, the same shapes: g' = g * clip / norm when the gradients are
// finite and their norm is at least clip (clip_by_global_norm), else g unchanged.
MP_AOT_ENTRY(GradClip) {
  const char *fn = "GradClip";
  if (!params || !ndims || !shapes || !dtypes) return mp::fail(fn, "null parameter arrays");
  if (nparam < 4 || nparam % 2 != 0)
    return mp::fail(fn, "expected cfg, stats, n gradients and n outputs, got %d tensors", nparam);
  const int n = (nparam - 2) / 2;
  if (std::strcmp(dtypes[0] ? dtypes[0] : "", "int64") != 0 || ndims[0] != 1 || shapes[0][0] != 1)
    return mp::fail(fn, "cfg must be int64 of shape [1]");
  if (std::strcmp(dtypes[1] ? dtypes[1] : "", "float32") != 0 || ndims[1] != 1 || shapes[1][0] != 2)
    return mp::fail(fn, "stats must be float32 of shape [2]");
  std::vector<const float *> g, out;
  std::vector<int64_t> sizes, out_sizes;
  if (!gradients(fn, 2, n, params, ndims, shapes, dtypes, g, sizes) ||
      !gradients(fn, 2 + n, n, params, ndims, shapes, dtypes, out, out_sizes))
    return 1;
  for (int k = 0; k < n; ++k)
    if (ndims[2 + k] != ndims[2 + n + k] ||
        !std::equal(shapes[2 + k], shapes[2 + k] + ndims[2 + k], shapes[2 + n + k]))
      return mp::fail(fn, "output %d must have the shape of gradient %d", k, k);
  const double clip = mp::cfg_double(static_cast<const int64_t *>(params[0])[0]);
  if (!(clip > 0.0) || !std::isfinite(clip)) return mp::fail(fn, "the clip norm must be finite and > 0, got %g", clip);
  const float *stats = static_cast<const float *>(params[1]);
  const double norm = stats[1];
  const bool scale = stats[0] == 1.f && norm >= clip;
  const float f = scale ? static_cast<float>(clip / norm) : 1.f;
  const std::vector<Piece> work = pieces(sizes);
  mp::parallel_for(static_cast<int64_t>(work.size()), mp::num_threads(), [&](int64_t i) {
    const Piece &p = work[static_cast<size_t>(i)];
    const float *x = g[static_cast<size_t>(p.tensor)] + p.begin;
    float *y = const_cast<float *>(out[static_cast<size_t>(p.tensor)]) + p.begin;
    if (scale)
      scale_into(x, p.end - p.begin, f, y);
    else
      std::memcpy(y, x, sizeof(float) * static_cast<size_t>(p.end - p.begin));
  });
  return 0;
}
