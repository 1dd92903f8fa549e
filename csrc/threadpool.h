// A small persistent thread pool with static partitioning, so the wheel does
// not depend on an OpenMP runtime. The caller is thread 0 of every job; jobs
// are serialized (one at a time), which also guards the per-thread scratch.
// Compiled once, with baseline flags: kernels of every ISA call into it
// through plain functions, never through inline code.
#pragma once

#include <cstddef>

namespace fastrnn {

using TaskFn = void (*)(void* context, int tid, int nthreads);

// Runs fn(context, tid, nthreads) for tid = 0..nthreads-1 (nthreads clipped
// to the pool size) and returns when all are done. fn must not throw.
void parallel_run(int nthreads, TaskFn fn, void* context);

// Inside a job: waits until every thread of the job has arrived.
void parallel_barrier();

// Threads the kernels use (the pool has that many minus the caller).
void set_pool_threads(int n);
int get_pool_threads();

// Per-thread scratch memory, 64-byte aligned, kept between calls. Reserve
// from the calling thread before a job (it may throw std::bad_alloc); inside
// the job, thread tid reads its pointer without allocating.
void reserve_scratch(int nthreads, int slot, size_t bytes);
void* scratch(int tid, int slot);
constexpr int kScratchSlots = 4;

}  // namespace fastrnn
