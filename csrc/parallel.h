// Threading: a small persistent pool with static partitioning (so the wheel
// does not depend on an OpenMP runtime), its barriers and per-thread scratch,
// and the kernels' helpers on top of it.
//
// The pool is compiled once (parallel.cc), with baseline flags: kernels of
// every ISA call into it through plain functions. The caller is thread 0 of
// every job; jobs are serialized (one at a time), which also guards the
// per-thread scratch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include "memory.h"

namespace fastrnn {

using TaskFn = void (*)(void* context, int tid, int nthreads);

// Runs fn(context, tid, nthreads) for tid = 0..nthreads-1 (nthreads clipped
// to the pool size) and returns when all are done. fn must not throw. A job
// of one thread runs inline on the caller, outside the pool and its lock, in
// the caller's own scratch: such jobs from different threads run at once.
void parallel_run(int nthreads, TaskFn fn, void* context);

// Inside a job: waits until every thread of the job has arrived.
void parallel_barrier();

// Bytes of one core's L2 cache as the OS reports it (512 KiB where it does
// not): how much of the packed weights a thread can keep near it.
size_t l2_cache_bytes();

// Threads the kernels use (the pool has that many minus the caller), 1 to
// kMaxThreads: the one limit, which fastrnn.set_num_threads checks
// (bindings.cc; the module exports it as max_threads).
constexpr int kMaxThreads = 1024;
void set_pool_threads(int n);
int get_pool_threads();

// An OpenMP runtime's entry points (libgomp's ABI, which LLVM's and Intel's runtimes
// also export). Given them, jobs run on the calling thread's OpenMP team instead of
// the pool's own workers: fastrnn.torch hands over torch's runtime, so that one team
// of threads serves torch's operators and fastrnn's kernels, and neither leaves
// threads spinning on the cores the other needs. All null: the pool's own workers.
struct OpenMPRuntime {
  void (*parallel)(void (*fn)(void*), void* data, unsigned num_threads,
                   unsigned flags) = nullptr;   // GOMP_parallel
  int (*thread_num)() = nullptr;                // omp_get_thread_num
  int (*num_threads)() = nullptr;               // omp_get_num_threads
};
void use_openmp_runtime(const OpenMPRuntime& openmp);

// Per-thread scratch memory, 64-byte aligned, kept between calls. Reserve
// from the calling thread before a job of as many threads (it may throw
// std::bad_alloc); inside the job, thread tid reads its pointer without
// allocating.
void reserve_scratch(int nthreads, int slot, size_t bytes);
void* scratch(int tid, int slot);
constexpr int kScratchSlots = 4;

// The slots: BPTT's time loop packs its step inputs into kSlotPackA, which
// gemm() also uses: gemm() never runs inside that loop.
constexpr int kSlotPackA = 0;
constexpr int kSlotPackB = 1;
constexpr int kSlotRecurrent = 2;
constexpr int kSlotTiles = 3;

}  // namespace fastrnn

#ifdef FASTRNN_ISA_NS
// Inline helpers for the kernel copies, inside the ISA's namespace (see common.h).
namespace fastrnn {
namespace FASTRNN_ISA_NS {

// Aligned heap array owned by a kernel call, allocated outside the time loop.
// An empty one allocates nothing (data() is null): the driver sizes some
// buffers 0 for the cells that do not use them, at every call.
template <class Real>
class Buffer {
 public:
  explicit Buffer(size_t n) : bytes_(n * sizeof(Real)) {
    if (n > SIZE_MAX / sizeof(Real)) throw std::bad_alloc();
    if (n != 0) data_ = static_cast<Real*>(aligned_malloc(bytes_));
  }
  ~Buffer() { aligned_free(data_, bytes_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Real* data() { return data_; }

 private:
  size_t bytes_;
  Real* data_ = nullptr;
};

// Runs f(tid, nthreads) on the pool; a captureless trampoline keeps the pool's
// interface a plain function pointer (no std::function across ISA copies).
template <class F>
inline void run_parallel(int nthreads, F& f) {
  parallel_run(nthreads, [](void* ctx, int tid, int n) { (*static_cast<F*>(ctx))(tid, n); }, &f);
}

// [lo, hi) of n items for thread tid of nthreads: static, deterministic.
inline void split_range(size_t n, int tid, int nthreads, size_t& lo, size_t& hi) {
  lo = n * static_cast<size_t>(tid) / static_cast<size_t>(nthreads);
  hi = n * static_cast<size_t>(tid + 1) / static_cast<size_t>(nthreads);
}

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
#endif  // FASTRNN_ISA_NS
