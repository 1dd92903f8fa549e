#include "memory.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace fastrnn {
namespace {

constexpr size_t kMinCachedBytes = size_t(1) << 20;
// At most this much is held unused; the oldest blocks go first.
constexpr size_t kCacheBudget = size_t(1) << 30;

size_t rounded_size(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded < bytes) throw std::bad_alloc();
  return rounded == 0 ? 64 : rounded;
}

class BlockCache {
 public:
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = blocks_.size(); i-- > 0;) {
      if (blocks_[i].first != bytes) continue;
      void* p = blocks_[i].second;
      blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(i));
      held_ -= bytes;
      return p;
    }
    return nullptr;
  }

  // Called from destructors, so it never throws: a block it cannot keep is freed.
  void keep(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > kCacheBudget) {
      std::free(p);
      return;
    }
    while (held_ + bytes > kCacheBudget) {
      std::free(blocks_.front().second);
      held_ -= blocks_.front().first;
      blocks_.erase(blocks_.begin());
    }
    try {
      blocks_.emplace_back(bytes, p);
    } catch (...) {
      std::free(p);
      return;
    }
    held_ += bytes;
  }

  size_t release() {
    std::vector<std::pair<size_t, void*>> blocks;
    size_t held;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(blocks_);
      held = held_;
      held_ = 0;
    }
    for (auto& block : blocks) std::free(block.second);
    return held;
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<size_t, void*>> blocks_;  // oldest first
  size_t held_ = 0;
};

BlockCache& cache() {
  static BlockCache* c = new BlockCache();  // never destroyed: blocks may be freed at exit
  return *c;
}

}  // namespace

void* aligned_malloc(size_t bytes) {
  const size_t rounded = rounded_size(bytes);
  if (rounded >= kMinCachedBytes)
    if (void* p = cache().take(rounded)) return p;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void aligned_free(void* p, size_t bytes) {
  if (p == nullptr) return;
  const size_t rounded = rounded_size(bytes);
  if (rounded >= kMinCachedBytes) cache().keep(p, rounded);
  else std::free(p);
}

size_t release_cached_memory() { return cache().release(); }

}  // namespace fastrnn
