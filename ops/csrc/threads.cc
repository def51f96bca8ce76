#include "threads.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace mp {
namespace {

thread_local bool t_in_parallel = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// ~30-60 us of pause instructions: long enough to catch the back-to-back jobs of one kernel (chunk loop,
// then the gradient reductions), short enough to leave the core to MindSpore between kernels.
constexpr int kSpin = 20000;
constexpr int kMaxWorkers = 255;

class Pool {
 public:
  // Runs a job on the caller + up to threads - 1 workers; false when the pool is busy (caller runs serially).
  bool run(int64_t n, int threads, void (*body)(void *, int64_t), void *ctx) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    ensure_workers(std::min(threads - 1, kMaxWorkers));
    const int helpers = std::min<int>(threads - 1, static_cast<int>(workers_.size()));
    body_ = body;
    ctx_ = ctx;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    pending_.store(helpers, std::memory_order_relaxed);
    const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
    for (int w = 0; w < helpers; ++w) assigned_[w].store(gen, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(sleep_mu_);
      generation_.store(gen, std::memory_order_release);
    }
    sleep_cv_.notify_all();
    work();
    while (pending_.load(std::memory_order_acquire) > 0) cpu_relax();
    return true;
  }

 private:
  void work() {
    for (;;) {
      const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_) break;
      body_(ctx_, i);
    }
  }

  void ensure_workers(int want) {
    while (static_cast<int>(workers_.size()) < want) {
      const int id = static_cast<int>(workers_.size());
      // The worker starts from the generation before its first job: a thread scheduled late must still
      // see the job it was created for (reading the generation itself could skip it and hang the caller).
      const uint64_t start = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, id, start] { loop(id, start); });
      workers_.back().detach();  // the pool lives for the process; never joined at exit
    }
  }

  void loop(int id, uint64_t seen) {
    t_in_parallel = true;
    for (;;) {
      uint64_t g = generation_.load(std::memory_order_acquire);
      for (int s = 0; g == seen && s < kSpin; ++s) {
        cpu_relax();
        g = generation_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lock(sleep_mu_);
        sleep_cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (assigned_[id].load(std::memory_order_relaxed) == g) {  // workers not asked for this job stay out
        work();
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex busy_, sleep_mu_;
  std::condition_variable sleep_cv_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> assigned_[kMaxWorkers] = {};  // the generation each worker is to help with
  void (*body_)(void *, int64_t) = nullptr;
  void *ctx_ = nullptr;
  int64_t n_ = 0;
};

// Leaked on purpose: detached workers may still reference a pool at exit. A forked child has none of
// the parent's workers (and maybe a held lock), so it starts a fresh pool instead of waiting forever.
std::atomic<Pool *> g_pool{nullptr};

void forget_pool_in_child() { g_pool.store(nullptr, std::memory_order_relaxed); }

Pool &pool() {
  static const int registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
  (void)registered;
  Pool *p = g_pool.load(std::memory_order_acquire);
  if (p == nullptr) {
    Pool *fresh = new Pool;
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread won the race; p now holds its pool
  }
  return *p;
}

}  // namespace

bool in_parallel() { return t_in_parallel; }

void parallel_for_raw(int64_t n, int threads, void (*body)(void *, int64_t), void *ctx) {
  const int used = static_cast<int>(std::min<int64_t>(threads, n));
  if (used > 1 && !t_in_parallel) {
    t_in_parallel = true;
    const bool ran = pool().run(n, used, body, ctx);
    t_in_parallel = false;
    if (ran) return;
  }
  const bool outer = t_in_parallel;
  t_in_parallel = true;
  for (int64_t i = 0; i < n; ++i) body(ctx, i);
  t_in_parallel = outer;
}

}  // namespace mp
