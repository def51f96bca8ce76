// Splits a batch into image chunks run in parallel: each chunk becomes one GEMM whose column count
// (chunk images x output pixels) is large enough for an efficient GEMM even at 7x7, and the number of
// chunks is a multiple of the thread count so both cores stay busy.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common.h"
#include "threads.h"

namespace mp {

inline int64_t chunk_count(int64_t N, int64_t pixels, int threads) {
  const int64_t target_cols = 1024;
  const int64_t per = std::max<int64_t>(1, (target_cols + pixels - 1) / pixels);
  int64_t chunks = std::max<int64_t>(1, (N + per - 1) / per);
  if (N >= threads) chunks = std::min(N, (chunks + threads - 1) / threads * threads);
  return chunks;
}

// A batch split into chunks; run(fn) calls fn(chunk, first_image, image_count) for every chunk, in
// parallel on the kernels' pool (one chunk at a time: a core slowed by other work takes fewer chunks).
struct ChunkPlan {
  int64_t N, chunks;
  int threads;
  ChunkPlan(int64_t n, int64_t pixels) : N(n), chunks(chunk_count(n, pixels, num_threads())), threads(num_threads()) {}
  int64_t first(int64_t i) const { return i * N / chunks; }
  template <class F>
  void run(F fn) const {
    const int used = static_cast<int>(std::min<int64_t>(threads, chunks));
    if (used == 1) {  // one chunk (or one thread): run here; a lone chunk's GEMMs split across the threads
      for (int64_t i = 0; i < chunks; ++i) fn(i, first(i), first(i + 1) - first(i));
      return;
    }
    parallel_for(chunks, used, [&](int64_t i) { fn(i, first(i), first(i + 1) - first(i)); });
  }
};

template <class F>
void for_chunks(int64_t N, int64_t pixels, F fn) {
  ChunkPlan(N, pixels).run(fn);
}

// Weight-gradient partials, one per chunk (each chunk writes its own once, beta = 0), summed in chunk
// order: the result does not depend on which thread ran which chunk, so training is reproducible.
struct GradAccum {
  int64_t parts, size;
  float *buf;
  GradAccum(int64_t n, int64_t chunks) : parts(chunks), size(n) {
    buf = new float[static_cast<size_t>(parts * n)];
  }
  ~GradAccum() { delete[] buf; }
  GradAccum(const GradAccum &) = delete;
  GradAccum &operator=(const GradAccum &) = delete;
  float *of(int64_t chunk) { return buf + chunk * size; }
  // out[i] = sum over chunks of element offset + i, for i < n.
  void reduce_into(float *out, int64_t offset = 0, int64_t n = -1) {
    if (n < 0) n = size - offset;
    const int64_t pieces = n * parts < (1 << 16) ? 1 : num_threads();  // small sums: not worth a wake-up
    parallel_for(pieces, static_cast<int>(pieces), [&](int64_t t) {
      int64_t lo, hi;
      split_range(n, pieces, t, lo, hi);
      for (int64_t i = lo; i < hi; ++i) {
        float s = 0.f;
        for (int64_t c = 0; c < parts; ++c) s += buf[c * size + offset + i];
        out[i] = s;
      }
    });
  }
};

}  // namespace mp
