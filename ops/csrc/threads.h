// The kernels' own worker pool (instead of OpenMP teams): workers spin only briefly after a job and
// then sleep, so between two kernels they leave the cores to MindSpore's own ops. libgomp's workers
// (loaded and configured by MindSpore before we are) spin for ~0.3 ms after every parallel region,
// which on 2 cores took the CPU from the graph's other ops: 32 px training ran ~25% slower.
#pragma once
#include <cstdint>
#include <type_traits>

namespace mp {

// True on a pool worker or inside a parallel_for body: nested calls run serially.
bool in_parallel();

// Calls body(ctx, i) for every i in [0, n) on up to `threads` threads, the caller being one of them;
// indices are handed out one at a time (a core slowed by other work takes fewer). Serial when nested,
// when threads <= 1 or n <= 1, or when another thread is using the pool.
void parallel_for_raw(int64_t n, int threads, void (*body)(void *, int64_t), void *ctx);

template <class F>
void parallel_for(int64_t n, int threads, F &&fn) {
  using Fn = std::remove_reference_t<F>;
  parallel_for_raw(n, threads, [](void *c, int64_t i) { (*static_cast<Fn *>(c))(i); },
                   const_cast<void *>(static_cast<const void *>(&fn)));
}

// [lo, hi) of part t when `n` items are split into `parts` contiguous parts.
inline void split_range(int64_t n, int64_t parts, int64_t t, int64_t &lo, int64_t &hi) {
  lo = n * t / parts;
  hi = n * (t + 1) / parts;
}

}  // namespace mp
