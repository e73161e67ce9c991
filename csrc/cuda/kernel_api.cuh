// What the kernels (csrc/cuda/*_kernels.cuh) and their launch code (*_launch.h) need from CUDA,
// in two builds of the same source:
//   * nvcc (the .cu files, yyfast._C): plain CUDA: __shared__ declarations and <<<...>>> launches
//     followed by the launch-error check;
//   * the host compiler with csrc/emu/cuda_emu.h included first (the CUDA-on-CPU emulator the
//     tests build): shared memory through the emulator's checked proxies, launches run by
//     cuda_emu::launch.
// Every launch site calls launch_kernel, so the geometry the emulator runs is the GPU's.
#pragma once

#include <cstddef>
#include <utility>

#if defined(__CUDACC__)
#include <c10/cuda/CUDAException.h>

// A static __shared__ T name[R][C].
#define YY_SHARED_2D(T, name, R, C) __shared__ T name[R][C]
// The launch's dynamic shared memory as T* name.
#define YY_DYNAMIC_SHARED(T, name)               \
  extern __shared__ unsigned char yy_dyn_smem[]; \
  T* name = reinterpret_cast<T*>(yy_dyn_smem)

namespace yyfast {
using kernel_stream_t = cudaStream_t;

// kernel<<<grid, block, smem, stream>>>(args...), then the launch-error check. `name` is for the
// emulator's messages.
template <typename... P, typename... A>
inline void launch_kernel(const char* /*name*/, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                          kernel_stream_t stream, A&&... args) {
  kernel<<<grid, block, smem, stream>>>(static_cast<P>(std::forward<A>(args))...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
}  // namespace yyfast

#elif defined(YY_CUDA_EMU)

#define YY_SHARED_2D(T, name, R, C) \
  static char name##_emu_key;       \
  const auto name = ::cuda_emu::shared_2d<T, R, C>(&name##_emu_key, #name)
#define YY_DYNAMIC_SHARED(T, name) const auto name = ::cuda_emu::dynamic_shared<T>(#name)

namespace yyfast {
using kernel_stream_t = ::cuda_emu::stream_t;

template <typename... P, typename... A>
inline void launch_kernel(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                          kernel_stream_t stream, A&&... args) {
  ::cuda_emu::launch(name, kernel, grid, block, smem, stream, std::forward<A>(args)...);
}
}  // namespace yyfast

#else
#error "csrc/cuda kernels compile with nvcc, or with csrc/emu/cuda_emu.h included first (YY_CUDA_EMU)"
#endif

// The host side of the launch code (with ATen): the device the ops run on, its guard, the stream.
// The emulated build runs on CPU tensors.
#if defined(__CUDACC__)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define YY_KERNEL_DEVICE c10::DeviceType::CUDA
#define YY_DEVICE_GUARD(t) const c10::cuda::CUDAGuard yy_device_guard((t).device())
#define YY_CURRENT_STREAM() (c10::cuda::getCurrentCUDAStream().stream())
#else
#define YY_KERNEL_DEVICE c10::DeviceType::CPU
#define YY_DEVICE_GUARD(t) (void)0
#define YY_CURRENT_STREAM() (::cuda_emu::stream_t{})
#endif
