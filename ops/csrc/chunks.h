// Splits a batch into image chunks run in parallel: each chunk becomes one GEMM whose column count
// (chunk images x output pixels) is large enough for an efficient GEMM even at 7x7, and the number of
// chunks is a multiple of the thread count so both cores stay busy.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "common.h"

namespace mp {

inline int64_t chunk_count(int64_t N, int64_t pixels, int threads) {
  const int64_t target_cols = 1024;
  const int64_t per = std::max<int64_t>(1, (target_cols + pixels - 1) / pixels);
  int64_t chunks = std::max<int64_t>(1, (N + per - 1) / per);
  if (N >= threads) chunks = std::min(N, (chunks + threads - 1) / threads * threads);
  return chunks;
}

// fn(thread_id, first_image, image_count), chunks split the batch as evenly as possible.
template <class F>
void for_chunks(int64_t N, int64_t pixels, F fn) {
  const int threads = num_threads();
  const int64_t chunks = chunk_count(N, pixels, threads);
  const int used = static_cast<int>(std::min<int64_t>(threads, chunks));
  if (used == 1) {  // one chunk: run it here, and its GEMMs split across the threads instead
    for (int64_t i = 0; i < chunks; ++i) fn(0, i * N / chunks, (i + 1) * N / chunks - i * N / chunks);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(used)
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t a = i * N / chunks, b = (i + 1) * N / chunks;
    fn(omp_get_thread_num(), a, b - a);
  }
}

// Per-thread weight-gradient accumulators, summed into the output at the end.
struct GradAccum {
  int threads;
  int64_t size;
  float *buf;
  explicit GradAccum(int64_t n) : threads(num_threads()), size(n) {
    buf = new float[static_cast<size_t>(threads) * n]();
  }
  ~GradAccum() { delete[] buf; }
  GradAccum(const GradAccum &) = delete;
  GradAccum &operator=(const GradAccum &) = delete;
  float *of(int tid) { return buf + static_cast<int64_t>(tid) * size; }
  // out[i] = sum over threads of element offset + i, for i < n.
  void reduce_into(float *out, int64_t offset = 0, int64_t n = -1) {
    if (n < 0) n = size - offset;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float s = 0.f;
      for (int t = 0; t < threads; ++t) s += buf[t * size + offset + i];
      out[i] = s;
    }
  }
};

}  // namespace mp
