// yyfast::arena_*: a CPU memory arena for optimize_for_inference's forward (issue 17).
//
// Why: the folded model's intermediates are large (64 MiB each at batch 256, 64 channels, 32x32) and
// glibc hands such blocks back to the kernel on free (mmap above its threshold, heap trimming below
// it), so every call page-faults all of them again. Measured on the 2-core EPYC, yynet_small_64 fp32,
// whole forward, medians: batch 256 1019 -> 808 ms and batch 16 61.7 -> 54.0 ms once glibc was told to
// keep freed memory (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_), which onnxruntime gets from its
// own arena. Users should not have to set allocator variables, so the forward allocates from this arena.
//
// What: a c10::Allocator that keeps freed blocks by exact size and hands them out again (the same
// shapes recur on every call, so after the first call a forward allocates nothing from the system).
// arena_enter() installs it as the CPU allocator for the span of a forward and arena_exit() puts the
// previous one back (nested and concurrent scopes are counted: the last exit restores). A block
// allocated inside a scope returns to the arena whenever it is freed, inside or outside a scope.
// Cached bytes are capped (kCapBytes): a free beyond the cap goes back to the system; arena_release()
// returns every cached block. While a scope is open, every CPU allocation of the process goes through
// the arena (it is thread-safe): the same memory, only kept instead of returned.
// If another allocator was registered with a higher priority than the default, enter() leaves it in
// place and returns false (the forward then runs on that allocator).
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "eval_ops.h"

namespace yyfast {
namespace {

// A bound on what the arena keeps (not on what it hands out): more than one batch-256 forward of
// yynet_small_64 needs at its peak, far less than the machine.
constexpr size_t kCapBytes = size_t(4) << 30;

class Arena final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return {nullptr, nullptr, &Arena::release_block, c10::Device(c10::DeviceType::CPU)};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(n);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= n;
        ++hits_;
        size_of_[p] = n;
        return {p, p, &Arena::release_block, c10::Device(c10::DeviceType::CPU)};
      }
    }
    void* p = c10::alloc_cpu(n);  // outside the lock; throws on failure, like the default allocator
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++misses_;
      size_of_[p] = n;
    }
    return {p, p, &Arena::release_block, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Arena::release_block; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  // Frees every cached block; returns how many bytes that was.
  int64_t release_all() {
    std::vector<void*> blocks;
    int64_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& kv : free_)
        for (void* p : kv.second) blocks.push_back(p);
      free_.clear();
      bytes = static_cast<int64_t>(cached_);
      cached_ = 0;
    }
    for (void* p : blocks) c10::free_cpu(p);
    return bytes;
  }

  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {static_cast<int64_t>(cached_), static_cast<int64_t>(size_of_.size()), hits_, misses_};
  }

  static Arena& get() {
    static Arena* arena = new Arena();  // never destroyed: blocks may be freed during static destruction
    return *arena;
  }

 private:
  static void release_block(void* p) {
    if (p == nullptr) return;
    Arena& a = get();
    {
      std::lock_guard<std::mutex> lock(a.mu_);
      auto it = a.size_of_.find(p);
      TORCH_INTERNAL_ASSERT(it != a.size_of_.end(), "yyfast arena: freeing a block it did not allocate");
      const size_t n = it->second;
      a.size_of_.erase(it);
      if (a.cached_ + n <= kCapBytes) {
        a.free_[n].push_back(p);
        a.cached_ += n;
        return;
      }
    }
    c10::free_cpu(p);
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // cached blocks by exact size
  std::unordered_map<void*, size_t> size_of_;            // blocks handed out
  size_t cached_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace

namespace {
std::mutex g_scope_mu;
int64_t g_depth = 0;
c10::Allocator* g_saved = nullptr;
}  // namespace

bool arena_enter() {
  std::lock_guard<std::mutex> lock(g_scope_mu);
  if (g_depth == 0) {
    c10::Allocator* current = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&Arena::get(), /*priority=*/0);
    if (c10::GetCPUAllocator() != &Arena::get()) return false;  // a higher-priority allocator stays
    g_saved = current;
  }
  ++g_depth;
  return true;
}

void arena_exit() {
  std::lock_guard<std::mutex> lock(g_scope_mu);
  TORCH_CHECK(g_depth > 0, "yyfast::arena_exit called without a matching arena_enter that returned True");
  if (--g_depth == 0) {
    c10::SetCPUAllocator(g_saved, /*priority=*/0);
    g_saved = nullptr;
  }
}

namespace {

int64_t arena_release() { return Arena::get().release_all(); }

// [cached bytes, blocks handed out and not yet freed, allocations served from the cache, from the system]
std::vector<int64_t> arena_stats() { return Arena::get().stats(); }

int64_t arena_depth() {
  std::lock_guard<std::mutex> lock(g_scope_mu);
  return g_depth;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(yyfast, m) {
  m.def("arena_enter() -> bool", &arena_enter);
  m.def("arena_exit() -> ()", &arena_exit);
  m.def("arena_release() -> int", &arena_release);
  m.def("arena_stats() -> int[]", &arena_stats);
  m.def("arena_depth() -> int", &arena_depth);
}

}  // namespace yyfast
