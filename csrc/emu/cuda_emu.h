// A CUDA-on-CPU emulator for the project's own kernels (csrc/cuda/*_kernels.cuh), test code only.
//
// The kernels' exact device code is compiled by the host compiler with this header in front of it:
// it supplies threadIdx/blockIdx/blockDim/gridDim (thread-local), __syncthreads as a real barrier
// among one host thread per CUDA thread of the block, static and dynamic __shared__ memory per
// block, __shfl_*_sync over real 32-lane warps, and the launch (launch_kernel in
// csrc/cuda/kernel_api.cuh is `<<<grid, block, smem, stream>>>` under nvcc and cuda_emu::launch
// here, so the geometry that runs here is the GPU's). Blocks run one after another; the threads of
// a block run concurrently on a reusable pool of host threads.
//
// It checks what compute-sanitizer would, and throws cuda_emu::Error (a std::runtime_error naming
// the kernel, the block and the thread) at the end of the launch:
//   * launch limits: threads per block <= 1024 (x, y <= 1024, z <= 64), grid y/z <= 65535, grid x
//     < 2^31, no zero dimension, dynamic + static shared memory <= 48 KiB (no opt-in is emulated);
//   * shared memory: every access is bounds-checked against its array (static) or the launch's
//     dynamic allocation; every launch poisons it (NaN bytes) and a read of a byte no thread of the
//     block has written is an error; a race is two threads touching one byte between the same two
//     barriers where at least one writes (per-byte writer/reader epochs, the epoch being the count
//     of __syncthreads the block has passed);
//   * __syncthreads must be reached by every thread of the block (none may have exited), and a
//     block whose live threads all wait on sync points that cannot complete is a deadlock;
//   * a __shfl_*_sync must be called by every lane of its mask, with the same mask, and read only
//     lanes of the mask; lanes beyond a partial warp do not exist.
// Global memory is plain host memory: tests/test_cuda_emu.py runs the ctest driver
// (csrc/emu/tests/emu_driver.cpp) under AddressSanitizer for out-of-bounds global accesses.
//
// Shared memory goes through small proxies (SharedPtr/SharedRef) so that every access is checked;
// kernels declare it with YY_SHARED_2D / YY_DYNAMIC_SHARED (kernel_api.cuh), which are plain
// __shared__ declarations under nvcc.
#pragma once

#define YY_CUDA_EMU 1  // csrc/cuda/kernel_api.cuh: the kernels build for this emulator

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

// The built-in variables: set by the pool for each host thread before it runs a CUDA thread.
inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace cuda_emu {

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // without cudaFuncSetAttribute opt-in

// What a launch throws when a check fails (the first failure of the launch).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Thrown inside the emulated threads to unwind them once the block has failed.
struct Abort {};

struct stream_t {};  // the emulator runs launches synchronously, in order

inline std::string dims(const dim3& d) {
  std::ostringstream s;
  s << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return s.str();
}

// The state of the block that is running: barrier, warps, shared arena with its check metadata.
class Block {
 public:
  void reset(unsigned nthreads, size_t dynamic_bytes) {
    nthreads_ = live_ = nthreads;
    waiting_ = bar_arrived_ = 0;
    epoch_ = 0;
    failed_ = false;
    error_.clear();
    warps_.assign((nthreads + kWarpSize - 1) / kWarpSize, Warp{});
    statics_.clear();
    mem_.clear();
    meta_.clear();
    dynamic_bytes_ = dynamic_bytes;
    grow(dynamic_bytes);  // the dynamic allocation is at offset 0
  }

  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

  // ------------------------------------------------------------------ failure and thread exit
  [[noreturn]] void fail_locked(const std::string& what) {
    if (!failed_) {
      failed_ = true;
      error_ = what + " (thread " + dims(threadIdx) + " of block " + dims(blockIdx) + ")";
    }
    cv_.notify_all();
    throw Abort{};
  }
  [[noreturn]] void fail(const std::string& what) {
    std::unique_lock<std::mutex> lock(m_);
    fail_locked(what);
  }
  // Records an error raised outside the checks (an exception from the kernel body).
  void record(const std::string& what) {
    std::unique_lock<std::mutex> lock(m_);
    if (!failed_) {
      failed_ = true;
      error_ = what + " (thread " + dims(threadIdx) + " of block " + dims(blockIdx) + ")";
    }
    cv_.notify_all();
  }

  void thread_exit(unsigned tid) {
    std::unique_lock<std::mutex> lock(m_);
    --live_;
    exited_lanes(tid);
    if (failed_) return;
    if (bar_arrived_ > 0) {
      failed_ = true;
      error_ = "a thread exited while " + std::to_string(bar_arrived_) +
               " thread(s) wait at __syncthreads: the barrier is not reached by every thread of the block (thread " +
               dims(threadIdx) + " of block " + dims(blockIdx) + ")";
      cv_.notify_all();
      return;
    }
    Warp& w = warps_[tid / kWarpSize];
    if (w.arrived > 0 && (w.mask >> (tid % kWarpSize) & 1u)) {
      failed_ = true;
      error_ = "lane " + std::to_string(tid % kWarpSize) +
               " exited while other lanes of its mask wait in a "
               "__shfl_*_sync (thread " +
               dims(threadIdx) + " of block " + dims(blockIdx) + ")";
      cv_.notify_all();
      return;
    }
    deadlocked_locked();
  }

  // ------------------------------------------------------------------ __syncthreads
  void syncthreads() {
    std::unique_lock<std::mutex> lock(m_);
    if (failed_) throw Abort{};
    if (live_ != nthreads_)
      fail_locked("__syncthreads reached after " + std::to_string(nthreads_ - live_) +
                  " thread(s) of the block exited: the barrier is not reached by every thread");
    const int64_t gen = epoch_;
    if (++bar_arrived_ == nthreads_) {
      waiting_ -= bar_arrived_ - 1;
      bar_arrived_ = 0;
      ++epoch_;  // a new barrier interval: accesses before it no longer race with those after
      cv_.notify_all();
      return;
    }
    ++waiting_;
    if (deadlocked_locked()) throw Abort{};
    cv_.wait(lock, [&] { return epoch_ != gen || failed_; });
    if (failed_) throw Abort{};
  }

  // ------------------------------------------------------------------ warp shuffles
  // Exchanges v among the lanes of the mask; returns the v of lane src(lane) (its own if out of range).
  template <typename T, typename Src>
  T shuffle(unsigned tid, unsigned mask, T v, Src src, const char* name) {
    static_assert(sizeof(T) <= 8, "shuffles of up to 8 bytes");
    std::unique_lock<std::mutex> lock(m_);
    if (failed_) throw Abort{};
    const unsigned lane = tid % kWarpSize, warp = tid / kWarpSize;
    const unsigned lanes = std::min(kWarpSize, nthreads_ - warp * kWarpSize);
    const std::string fn = name;
    if (!(mask >> lane & 1u))
      fail_locked(fn + " called by lane " + std::to_string(lane) + ", which is not in its mask");
    if (lanes < kWarpSize && (mask >> lanes) != 0)
      fail_locked(fn + " mask 0x" + hex(mask) + " names lanes beyond this partial warp of " + std::to_string(lanes) +
                  " lanes");
    Warp& w = warps_[warp];
    if (w.arrived == 0) {
      w.mask = mask;
    } else if (w.mask != mask) {
      fail_locked(fn + " called with mask 0x" + hex(mask) + " while other lanes use 0x" + hex(w.mask));
    }
    for (unsigned l = 0; l < lanes; ++l)
      if ((mask >> l & 1u) && (w.exited >> l & 1u))
        fail_locked(fn + ": lane " + std::to_string(l) + " of the mask has exited and never calls it");
    const unsigned buf = w.gen & 1u;  // double-buffered: see the note in Warp
    std::memcpy(&w.slots[buf][lane], &v, sizeof(T));
    w.arrived_mask |= 1u << lane;
    const uint64_t gen = w.gen;
    if (++w.arrived == static_cast<unsigned>(__builtin_popcount(mask))) {
      waiting_ -= w.arrived - 1;
      w.arrived = 0;
      w.arrived_mask = 0;
      ++w.gen;
      cv_.notify_all();
    } else {
      ++waiting_;
      if (deadlocked_locked()) throw Abort{};
      cv_.wait(lock, [&] { return w.gen != gen || failed_; });
      if (failed_) throw Abort{};
    }
    const int s = src(static_cast<int>(lane));
    if (s < 0 || s >= static_cast<int>(kWarpSize) || static_cast<unsigned>(s) == lane) return v;
    if (!(mask >> s & 1u))
      fail_locked(fn + " by lane " + std::to_string(lane) + " reads lane " + std::to_string(s) +
                  ", which is not in the mask 0x" + hex(mask));
    T out;
    std::memcpy(&out, &w.slots[buf][s], sizeof(T));
    return out;
  }

  // ------------------------------------------------------------------ shared memory
  // Offset of the static __shared__ array identified by `key` (allocated on first use in this block).
  size_t static_array(const void* key, size_t bytes, const char* name) {
    std::unique_lock<std::mutex> lock(m_);
    for (const auto& s : statics_)
      if (s.key == key) return s.offset;
    const size_t offset = (mem_.size() + 15) / 16 * 16;
    if (offset + bytes > kMaxSharedBytes)
      fail_locked(std::string("shared memory exceeds 48 KiB with static array '") + name + "' (" +
                  std::to_string(offset + bytes) + " bytes)");
    grow(offset + bytes);
    statics_.push_back({key, offset});
    return offset;
  }
  size_t dynamic_bytes() const { return dynamic_bytes_; }

  template <typename T>
  T load(size_t off, unsigned tid, const char* name) {
    std::unique_lock<std::mutex> lock(m_);
    if (failed_) throw Abort{};
    for (size_t b = off; b < off + sizeof(T); ++b) {
      Meta& m = meta_[b];
      if (m.write_epoch < 0)
        fail_locked(std::string("read of uninitialised shared memory '") + name + "' at byte " + std::to_string(b) +
                    " (no thread of the block has written it)");
      if (m.write_epoch == epoch_ && m.writer != static_cast<int>(tid))
        fail_locked(std::string("shared-memory race on '") + name + "' at byte " + std::to_string(b) + ": thread " +
                    std::to_string(tid) + " reads what thread " + std::to_string(m.writer) +
                    " wrote with no __syncthreads in between");
      if (m.read_epoch != epoch_) {
        m.read_epoch = static_cast<int64_t>(epoch_);
        m.reader = static_cast<int>(tid);
      } else if (m.reader != static_cast<int>(tid)) {
        m.reader = kManyReaders;
      }
    }
    T v;
    std::memcpy(&v, &mem_[off], sizeof(T));
    return v;
  }

  template <typename T>
  void store(size_t off, T v, unsigned tid, const char* name) {
    std::unique_lock<std::mutex> lock(m_);
    if (failed_) throw Abort{};
    for (size_t b = off; b < off + sizeof(T); ++b) {
      Meta& m = meta_[b];
      if (m.write_epoch == epoch_ && m.writer != static_cast<int>(tid))
        fail_locked(std::string("shared-memory race on '") + name + "' at byte " + std::to_string(b) + ": threads " +
                    std::to_string(m.writer) + " and " + std::to_string(tid) +
                    " both write it with no __syncthreads in between");
      if (m.read_epoch == epoch_ && m.reader != static_cast<int>(tid))
        fail_locked(std::string("shared-memory race on '") + name + "' at byte " + std::to_string(b) + ": thread " +
                    std::to_string(tid) + " writes what " +
                    (m.reader == kManyReaders ? std::string("other threads") : "thread " + std::to_string(m.reader)) +
                    " read with no __syncthreads in between");
      m.write_epoch = static_cast<int64_t>(epoch_);
      m.writer = static_cast<int>(tid);
    }
    std::memcpy(&mem_[off], &v, sizeof(T));
  }

  [[noreturn]] void out_of_bounds(const char* name, int64_t index, int64_t extent) {
    fail(std::string("out-of-bounds shared access: '") + name + "'[" + std::to_string(index) + "] of " +
         std::to_string(extent) + " elements");
  }

 private:
  struct Meta {
    int64_t write_epoch = -1, read_epoch = -1;
    int writer = -1, reader = -1;
  };
  struct Warp {
    // Slots are double-buffered by generation parity: a lane can start exchange k+1 while slower
    // lanes still read exchange k, but exchange k+2 (same buffer) cannot complete before every lane
    // has arrived at k+1, i.e. has finished reading k.
    uint64_t slots[2][kWarpSize] = {};
    unsigned arrived = 0, arrived_mask = 0, mask = 0, exited = 0;
    uint64_t gen = 0;
  };
  struct Static {
    const void* key;
    size_t offset;
  };
  static constexpr int kManyReaders = -2;

  static std::string hex(unsigned v) {
    std::ostringstream s;
    s << std::hex << v;
    return s.str();
  }
  void grow(size_t bytes) {
    if (bytes <= mem_.size()) return;
    mem_.resize(bytes, 0xFF);  // poison: all-ones bytes are NaN as float and as double
    meta_.resize(bytes);
  }
  void exited_lanes(unsigned tid) { warps_[tid / kWarpSize].exited |= 1u << (tid % kWarpSize); }
  // Every live thread waits and none of the sync points they wait on can complete: records it.
  bool deadlocked_locked() {
    if (live_ > 0 && waiting_ == live_) {
      failed_ = true;
      error_ = "deadlock: every live thread of block " + dims(blockIdx) + " waits (" + std::to_string(bar_arrived_) +
               " at __syncthreads, the others in warp shuffles) and none of them can proceed";
      cv_.notify_all();
      return true;
    }
    return false;
  }

  std::mutex m_;
  std::condition_variable cv_;
  unsigned nthreads_ = 0, live_ = 0, waiting_ = 0, bar_arrived_ = 0;
  int64_t epoch_ = 0;
  bool failed_ = false;
  std::string error_;
  std::vector<Warp> warps_;
  std::vector<Static> statics_;
  std::vector<unsigned char> mem_;
  std::vector<Meta> meta_;
  size_t dynamic_bytes_ = 0;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_tid = 0;

inline Block& block() { return *tl_block; }

// ---------------------------------------------------------------------- shared-memory proxies
template <typename T>
struct SharedRef {
  size_t off;
  const char* name;
  operator T() const { return block().load<T>(off, tl_tid, name); }
  SharedRef& operator=(T v) {
    block().store<T>(off, v, tl_tid, name);
    return *this;
  }
  SharedRef& operator=(const SharedRef& o) { return *this = static_cast<T>(o); }
  SharedRef& operator+=(T v) { return *this = static_cast<T>(*this) + v; }
};

// A pointer into the block's shared memory: the region [base, base + extent elements) it may reach.
template <typename T>
struct SharedPtr {
  size_t base;     // byte offset of the region
  int64_t extent;  // elements in the region
  int64_t index;   // this pointer's element offset inside the region
  const char* name;
  SharedRef<T> operator[](int64_t i) const {
    const int64_t k = index + i;
    if (k < 0 || k >= extent) block().out_of_bounds(name, k, extent);
    return SharedRef<T>{base + static_cast<size_t>(k) * sizeof(T), name};
  }
  SharedPtr operator+(int64_t k) const { return SharedPtr{base, extent, index + k, name}; }
};

// A static __shared__ T name[R][C]: each index bounds-checked against its own dimension.
template <typename T, int R, int C>
struct Shared2D {
  size_t base;
  const char* name;
  SharedPtr<T> operator[](int64_t r) const {
    if (r < 0 || r >= R) block().out_of_bounds(name, r, R);
    return SharedPtr<T>{base + static_cast<size_t>(r) * C * sizeof(T), C, 0, name};
  }
};

template <typename T, int R, int C>
Shared2D<T, R, C> shared_2d(const void* key, const char* name) {
  return Shared2D<T, R, C>{block().static_array(key, sizeof(T) * R * C, name), name};
}

template <typename T>
SharedPtr<T> dynamic_shared(const char* name) {
  return SharedPtr<T>{0, static_cast<int64_t>(block().dynamic_bytes() / sizeof(T)), 0, name};
}

// ---------------------------------------------------------------------- the thread pool
// One host thread per CUDA thread of the running block; grows to the largest block launched.
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool();  // never destroyed: its threads live as long as the process
    return *pool;
  }

  // Runs body() once in each of `nthreads` threads (their index passed in tl_tid), then returns.
  void run(unsigned nthreads, const std::function<void(unsigned)>& body) {
    std::unique_lock<std::mutex> lock(m_);
    while (workers_.size() < nthreads) {
      const unsigned id = static_cast<unsigned>(workers_.size());
      workers_.emplace_back([this, id] { loop(id); });
      workers_.back().detach();
    }
    body_ = &body;
    active_ = nthreads;
    remaining_ = nthreads;
    ++gen_;
    cv_.notify_all();
    done_cv_.wait(lock, [&] { return remaining_ == 0; });
    body_ = nullptr;
  }

 private:
  void loop(unsigned id) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(unsigned)>* body;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return gen_ != seen && id < active_; });
        seen = gen_;
        body = body_;
      }
      (*body)(id);
      std::unique_lock<std::mutex> lock(m_);
      if (--remaining_ == 0) done_cv_.notify_one();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(unsigned)>* body_ = nullptr;
  unsigned active_ = 0, remaining_ = 0;
  uint64_t gen_ = 0;
};

// ---------------------------------------------------------------------- the launch
inline void check_launch(const char* kernel, const dim3& grid, const dim3& block_dim, size_t smem) {
  std::string why;
  const uint64_t threads = uint64_t(block_dim.x) * block_dim.y * block_dim.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
    why = "a grid or block dimension is 0";
  else if (threads > kMaxThreadsPerBlock || block_dim.x > 1024 || block_dim.y > 1024 || block_dim.z > 64)
    why = std::to_string(threads) + " threads per block (at most 1024; x, y <= 1024, z <= 64)";
  else if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    why = "grid " + dims(grid) + " exceeds the limits (x < 2^31, y and z <= 65535)";
  else if (smem > kMaxSharedBytes)
    why = std::to_string(smem) + " bytes of dynamic shared memory (at most 49152 without an opt-in)";
  if (!why.empty())
    throw Error(std::string("cuda_emu: launch of ") + kernel + " with grid " + dims(grid) + ", block " +
                dims(block_dim) + ": invalid configuration: " + why);
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}
inline Block& running_block() {
  static Block* b = new Block();  // lives as long as the pool threads that point at it
  return *b;
}

// Runs kernel(args...) over the grid, block by block; throws Error on the first failed check.
template <typename... P, typename... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block_dim, size_t smem, stream_t, A&&... args) {
  check_launch(name, grid, block_dim, smem);
  std::tuple<std::decay_t<P>...> params(static_cast<P>(std::forward<A>(args))...);
  const unsigned nthreads = block_dim.x * block_dim.y * block_dim.z;
  std::lock_guard<std::mutex> serial(launch_mutex());  // one launch at a time: one pool, one block state
  Block& state = running_block();
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        state.reset(nthreads, smem);
        const dim3 bidx(bx, by, bz);
        Pool::get().run(nthreads, [&](unsigned tid) {
          threadIdx = dim3(tid % block_dim.x, tid / block_dim.x % block_dim.y, tid / (block_dim.x * block_dim.y));
          blockIdx = bidx;
          blockDim = block_dim;
          gridDim = grid;
          tl_block = &state;
          tl_tid = tid;
          try {
            std::apply(kernel, params);  // each thread gets its own copies of the parameters
          } catch (const Abort&) {
          } catch (const std::exception& e) {
            state.record(std::string("exception in the kernel: ") + e.what());
          }
          state.thread_exit(tid);
          tl_block = nullptr;
        });
        if (state.failed())
          throw Error(std::string("cuda_emu: ") + name + " with grid " + dims(grid) + ", block " + dims(block_dim) +
                      ": " + state.error());
      }
}

}  // namespace cuda_emu

// ---------------------------------------------------------------------- device intrinsics
inline void __syncthreads() { cuda_emu::block().syncthreads(); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return cuda_emu::block().shuffle(
      cuda_emu::tl_tid, mask, v, [=](int lane) { return (lane / width) * width + (src % width); }, "__shfl_sync");
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu::block().shuffle(
      cuda_emu::tl_tid, mask, v,
      [=](int lane) {
        const int d = static_cast<int>(delta);
        return (lane % width) + d < width ? lane + d : lane;
      },
      "__shfl_down_sync");
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu::block().shuffle(
      cuda_emu::tl_tid, mask, v,
      [=](int lane) { return (lane % width) >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane; },
      "__shfl_up_sync");
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return cuda_emu::block().shuffle(
      cuda_emu::tl_tid, mask, v,
      [=](int lane) {
        const int s = lane ^ lane_mask;
        return (s / width == lane / width) ? s : lane;
      },
      "__shfl_xor_sync");
}
