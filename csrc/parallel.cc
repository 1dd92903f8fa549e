#include "parallel.h"

#include "memory.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

namespace fastrnn {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spinning keeps the wake-up of back-to-back jobs (input GEMM, time loop,
// weight GEMMs) in the microseconds; after this long idle a worker sleeps.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(300);
constexpr unsigned kBarrierSpins = 4000;

struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
};

struct ThreadScratch {
  Scratch slot[kScratchSlots];
};

// Grows s to at least `bytes` (the old contents are not kept).
void grow(Scratch& s, size_t bytes) {
  if (s.bytes >= bytes) return;
  void* p = aligned_malloc(bytes);
  aligned_free(s.ptr, s.bytes);
  s.ptr = p;
  s.bytes = bytes;
}

// A job of one thread runs inline on the calling thread, outside the pool: it
// takes no lock and works in that thread's own scratch, so kernels called
// with one thread from different threads (the two directions of a
// bidirectional layer) run at the same time.
struct CallerScratch {
  ThreadScratch scratch;
  ~CallerScratch() {
    for (Scratch& s : scratch.slot) aligned_free(s.ptr, s.bytes);
  }
};
thread_local CallerScratch caller_scratch;
thread_local bool in_inline_job = false;

class Pool {
 public:
  ~Pool() { stop_workers(); }

  void set_threads(int n) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    if (n == threads_) return;
    stop_workers();
    threads_ = n;
  }

  int threads() const { return threads_; }

  void use_openmp(const OpenMPRuntime& openmp) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    stop_workers();   // idle for good while the OpenMP team runs the jobs
    openmp_ = openmp;
  }

  void run(int nthreads, TaskFn fn, void* context) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    if (nthreads > threads_) nthreads = threads_;
    if (nthreads < 1) nthreads = 1;
    job_threads_.store(nthreads, std::memory_order_relaxed);
    barrier_count_.store(0, std::memory_order_relaxed);
    if (nthreads == 1) {
      fn(context, 0, 1);
      return;
    }
    if (openmp_.parallel != nullptr) {
      OpenMPJob job{this, fn, context};
      openmp_.parallel(&run_openmp_thread, &job, static_cast<unsigned>(nthreads), 0);
      return;
    }
    start_workers();
    fn_ = fn;
    context_ = context;
    remaining_.store(nthreads - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    fn(context, 0, nthreads);
    while (remaining_.load(std::memory_order_acquire) != 0) cpu_relax();
  }

  void barrier() {
    const int job_threads = job_threads_.load(std::memory_order_relaxed);
    if (job_threads == 1) return;
    unsigned gen = barrier_generation_.load(std::memory_order_acquire);
    if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == job_threads - 1) {
      barrier_count_.store(0, std::memory_order_relaxed);
      barrier_generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    // A short spin, then yield: on a busy machine the thread being waited
    // for may need this core to finish its share.
    unsigned spins = 0;
    while (barrier_generation_.load(std::memory_order_acquire) == gen) {
      cpu_relax();
      if (++spins > kBarrierSpins) std::this_thread::yield();
    }
  }

  void reserve(int nthreads, int slot, size_t bytes) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    if (scratch_.size() < static_cast<size_t>(nthreads)) scratch_.resize(nthreads);
    for (int t = 0; t < nthreads; ++t) grow(scratch_[t].slot[slot], bytes);
  }

  void* scratch(int tid, int slot) { return scratch_[tid].slot[slot].ptr; }

 private:
  void start_workers() {
    if (!workers_.empty()) return;
    stop_ = false;
    // Workers start from the current generation, so a job posted before a
    // new thread first looks is still seen as new.
    const uint64_t start = generation_.load(std::memory_order_acquire);
    for (int tid = 1; tid < threads_; ++tid)
      workers_.emplace_back([this, tid, start] { work(tid, start); });
  }

  void stop_workers() {
    if (workers_.empty()) return;
    {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  struct OpenMPJob {
    Pool* pool;
    TaskFn fn;
    void* context;
  };

  // One thread of the OpenMP team. The team can be smaller than asked (an OpenMP
  // runtime may give a nested region one thread): the job then runs on the threads
  // it has, and every one of them sets the count before it can reach a barrier.
  static void run_openmp_thread(void* data) {
    const OpenMPJob& job = *static_cast<OpenMPJob*>(data);
    const int n = job.pool->openmp_.num_threads();
    job.pool->job_threads_.store(n, std::memory_order_relaxed);
    job.fn(job.context, job.pool->openmp_.thread_num(), n);
  }

  void work(int tid, uint64_t seen) {
    for (;;) {
      auto idle_since = std::chrono::steady_clock::now();
      unsigned spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        cpu_relax();
        if ((++spins & 255) == 0 &&
            std::chrono::steady_clock::now() - idle_since > kSpinBeforeSleep) {
          std::unique_lock<std::mutex> lock(wake_mutex_);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      const int job_threads = job_threads_.load(std::memory_order_relaxed);
      if (tid < job_threads) {
        fn_(context_, tid, job_threads);
        remaining_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex job_mutex_;  // one job at a time, also guards scratch_ and resizing
  int threads_ = 1;
  std::atomic<int> job_threads_{1};
  OpenMPRuntime openmp_;
  TaskFn fn_ = nullptr;
  void* context_ = nullptr;
  std::vector<std::thread> workers_;
  std::vector<ThreadScratch> scratch_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> remaining_{0};
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::atomic<int> barrier_count_{0};
  std::atomic<unsigned> barrier_generation_{0};
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers must not be joined at exit
  return *p;
}

}  // namespace

void parallel_run(int nthreads, TaskFn fn, void* context) {
  if (nthreads > 1) {
    pool().run(nthreads, fn, context);
    return;
  }
  in_inline_job = true;
  fn(context, 0, 1);
  in_inline_job = false;
}

void parallel_barrier() {
  if (!in_inline_job) pool().barrier();
}

void set_pool_threads(int n) { pool().set_threads(n < 1 ? 1 : n); }
void use_openmp_runtime(const OpenMPRuntime& openmp) { pool().use_openmp(openmp); }
int get_pool_threads() { return pool().threads(); }

void reserve_scratch(int nthreads, int slot, size_t bytes) {
  if (nthreads > 1) pool().reserve(nthreads, slot, bytes);
  else grow(caller_scratch.scratch.slot[slot], bytes);
}

void* scratch(int tid, int slot) {
  if (in_inline_job) return caller_scratch.scratch.slot[slot].ptr;
  return pool().scratch(tid, slot);
}

size_t l2_cache_bytes() {
  static const size_t bytes = [] {
#if defined(_SC_LEVEL2_CACHE_SIZE)
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (reported > 0) return static_cast<size_t>(reported);
#endif
    return size_t(512) << 10;
  }();
  return bytes;
}

}  // namespace fastrnn
