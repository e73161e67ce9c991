// The launch code of yinyang_fuse (on the current stream, every launch checked): compiled by nvcc
// (yinyang_fuse.cu) and by the host compiler for the CUDA-on-CPU emulator (csrc/emu/emu_ops.cpp).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <tuple>

#include "../yinyang_fuse_host.h"
#include "yinyang_fuse_kernels.cuh"

namespace yyfast {
namespace {

int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

at::Tensor fuse_cuda(const at::Tensor& a_in, const at::Tensor& i_in, double c1, double c2, double c3) {
  check_fuse_pair(a_in, i_in, "i", YY_KERNEL_DEVICE);
  YY_DEVICE_GUARD(a_in);
  const auto fmt = a_in.suggest_memory_format();
  at::Tensor a = a_in.contiguous(fmt), i = i_in.contiguous(fmt);
  at::Tensor out = at::empty_like(a, a.options(), fmt);
  const int64_t n = a.numel();
  if (n == 0) return out;
  const kernel_stream_t stream = YY_CURRENT_STREAM();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "yinyang_fuse_cuda", [&] {
    launch_kernel("fuse_forward_kernel", fuse_forward_kernel<scalar_t, at::opmath_type<scalar_t>>, grid_for(n, 256),
                  256, 0, stream, a.const_data_ptr<scalar_t>(), i.const_data_ptr<scalar_t>(),
                  out.mutable_data_ptr<scalar_t>(), n, c1, c2, c3);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> fuse_backward_cuda(const at::Tensor& g_in, const at::Tensor& a_in,
                                                      const at::Tensor& i_in, double c1, double c2, double c3) {
  check_fuse_pair(a_in, i_in, "i", YY_KERNEL_DEVICE);
  check_fuse_pair(a_in, g_in, "grad", YY_KERNEL_DEVICE);
  YY_DEVICE_GUARD(a_in);
  const auto fmt = a_in.suggest_memory_format();
  at::Tensor a = a_in.contiguous(fmt), i = i_in.contiguous(fmt), g = g_in.contiguous(fmt);
  at::Tensor ga = at::empty_like(a, a.options(), fmt), gi = at::empty_like(a, a.options(), fmt);
  const int64_t n = a.numel();
  if (n == 0) return {ga, gi};
  const kernel_stream_t stream = YY_CURRENT_STREAM();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "yinyang_fuse_backward_cuda", [&] {
    launch_kernel("fuse_backward_kernel", fuse_backward_kernel<scalar_t, at::opmath_type<scalar_t>>, grid_for(n, 256),
                  256, 0, stream, g.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
                  i.const_data_ptr<scalar_t>(), ga.mutable_data_ptr<scalar_t>(), gi.mutable_data_ptr<scalar_t>(), n, c1,
                  c2, c3);
  });
  return {ga, gi};
}

}  // namespace
}  // namespace yyfast
