#include "threads.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
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
// then the gradient reductions), short enough to leave the core to MindSpore between kernels. Every
// kYieldEvery pauses a spinning thread yields: MindSpore runs independent kernels concurrently, and a
// thread that only spins must not keep the core from the one whose work it is waiting for.
constexpr int kSpin = 20000;
// A caller whose items are done waits this long (~100 us) for the helpers' items still running, then
// blocks until the last one signals: MindSpore runs independent kernels concurrently, and a caller that
// only spins would keep the core from the very helper it is waiting for.
constexpr int kWaitSpin = 40000;
constexpr int kMaxWorkers = 255;

// One parallel job. Shared (reference-counted) between the caller and the helpers that join it, so the
// caller waits only for the items in progress: a helper that wakes late holds the job alive, finds no item
// left and never calls the body (whose context lives on the caller's stack).
struct Job {
  void (*body)(void *, int64_t) = nullptr;
  void *ctx = nullptr;
  int64_t n = 0;
  uint64_t generation = 0;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex error_mu, done_mu;
  std::condition_variable done_cv;
  std::exception_ptr error;

  void finished(int64_t count) {
    if (done.fetch_add(count, std::memory_order_acq_rel) + count >= n) {  // the last item: wake the caller
      std::lock_guard<std::mutex> lock(done_mu);
      done_cv.notify_all();
    }
  }

  void wait() {
    for (int i = 0; i < kWaitSpin; ++i) {
      if (done.load(std::memory_order_acquire) >= n) return;
      cpu_relax();
    }
    std::unique_lock<std::mutex> lock(done_mu);
    done_cv.wait(lock, [&] { return done.load(std::memory_order_acquire) >= n; });
  }

  // Runs items until none are left; a throwing body is recorded (the first one wins), the remaining
  // items are skipped but still counted done, so no exception ever leaves a worker thread.
  void work() {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) break;
      try {
        body(ctx, i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        const int64_t skipped = std::max<int64_t>(0, n - next.exchange(n, std::memory_order_relaxed));
        if (skipped) finished(skipped);
      }
      finished(1);
    }
  }
};

class Pool {
 public:
  // Runs a job on the caller + up to threads - 1 workers; false when the pool is busy (caller runs serially).
  // The caller starts on the items at once and returns when all are done, however many helpers joined.
  bool run(int64_t n, int threads, void (*body)(void *, int64_t), void *ctx) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    ensure_workers(std::min(threads - 1, kMaxWorkers));
    const int helpers = std::min<int>(threads - 1, static_cast<int>(workers_.size()));
    auto job = std::make_shared<Job>();
    job->body = body;
    job->ctx = ctx;
    job->n = n;
    job->generation = generation_.load(std::memory_order_relaxed) + 1;
    for (int w = 0; w < helpers; ++w) assigned_[w].store(job->generation, std::memory_order_relaxed);
    std::atomic_store(&job_, job);
    {
      std::lock_guard<std::mutex> lock(sleep_mu_);
      generation_.store(job->generation, std::memory_order_release);
    }
    sleep_cv_.notify_all();
    job->work();
    job->wait();  // items still running on helpers
    if (job->error) std::rethrow_exception(job->error);  // a body threw (on any thread): the entry's barrier
    return true;
  }

 private:
  void ensure_workers(int want) {
    while (static_cast<int>(workers_.size()) < want) {
      const int id = static_cast<int>(workers_.size());
      // The worker starts from the generation before its first job: a thread scheduled late must still
      // see the job it was created for (reading the generation itself could skip it).
      const uint64_t start = generation_.load(std::memory_order_acquire);
      try {
        workers_.emplace_back([this, id, start] { loop(id, start); });
      } catch (const std::system_error &) {
        return;  // no more threads to be had: run with the workers there are (or serially)
      }
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
      std::shared_ptr<Job> job = std::atomic_load(&job_);
      // workers not asked for this job stay out; a newer job than g is fine if this worker is in it too
      if (job && assigned_[id].load(std::memory_order_relaxed) == job->generation) job->work();
    }
  }

  std::mutex busy_, sleep_mu_;
  std::condition_variable sleep_cv_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::shared_ptr<Job> job_;  // read and written with std::atomic_load / atomic_store
  std::atomic<uint64_t> assigned_[kMaxWorkers] = {};  // the generation each worker is to help with
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

namespace {
// Restores the nesting flag however the job ends (a body may throw).
struct InParallel {
  bool outer;
  InParallel() : outer(t_in_parallel) { t_in_parallel = true; }
  ~InParallel() { t_in_parallel = outer; }
};
}  // namespace

void parallel_for_raw(int64_t n, int threads, void (*body)(void *, int64_t), void *ctx) {
  const int used = static_cast<int>(std::min<int64_t>(threads, n));
  if (used > 1 && !t_in_parallel) {
    InParallel flag;
    if (pool().run(n, used, body, ctx)) return;
  }
  InParallel flag;
  for (int64_t i = 0; i < n; ++i) body(ctx, i);
}

}  // namespace mp
