// Heap memory for kernels and their outputs, 64-byte aligned. Compiled once,
// with baseline flags, like the thread pool.
#pragma once

#include <cstddef>

namespace fastrnn {

// Throws std::bad_alloc. Blocks of 1 MiB and more may come from a cache of
// freed blocks: a training loop asks for the same large buffers at every
// step, and fresh pages from the OS cost a fault and a zeroing per 4 KiB on
// first touch (a tenth of a forward pass at T=64, B=128, H=256).
void* aligned_malloc(size_t bytes);

// Frees (or keeps for reuse) a block from aligned_malloc of that size; nullptr-safe.
void aligned_free(void* p, size_t bytes);

// Returns every cached block to the system; the bytes that were held.
size_t release_cached_memory();

}  // namespace fastrnn
