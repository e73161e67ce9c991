// CUDA implementation of yinyang_fuse (forward and backward): one elementwise pass, 64-bit
// indexing, grid-stride loop, on the current stream, every launch checked.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/yinyang_fuse_math.h"

namespace yyfast {
namespace {

template <typename scalar_t>
__global__ void fuse_forward_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ i,
                                    scalar_t* __restrict__ out, int64_t n, float c1, float c2, float c3) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    out[k] = static_cast<scalar_t>(fuse_forward<acc_t>(a[k], i[k], c1, c2, c3));
}

template <typename scalar_t>
__global__ void fuse_backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ a,
                                     const scalar_t* __restrict__ i, scalar_t* __restrict__ ga,
                                     scalar_t* __restrict__ gi, int64_t n, float c1, float c2, float c3) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    const acc_t gk = g[k];
    ga[k] = static_cast<scalar_t>(fuse_grad_a<acc_t>(gk, i[k], c1, c2));
    gi[k] = static_cast<scalar_t>(fuse_grad_i<acc_t>(gk, a[k], c1, c3));
  }
}

void check_pair(const at::Tensor& a, const at::Tensor& i, const char* name) {
  TORCH_CHECK(a.sizes() == i.sizes(), "yinyang_fuse: ", name, " must have the shape of a ", a.sizes(), ", got ",
              i.sizes());
  TORCH_CHECK(a.scalar_type() == i.scalar_type(), "yinyang_fuse: ", name, " must have the dtype of a");
  TORCH_CHECK(i.is_cuda() && i.device() == a.device(), "yinyang_fuse: ", name, " is on ", i.device(),
              " but a is on ", a.device());
}

int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

at::Tensor fuse_cuda(const at::Tensor& a_in, const at::Tensor& i_in, double c1, double c2, double c3) {
  check_pair(a_in, i_in, "i");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto fmt = a_in.suggest_memory_format();
  at::Tensor a = a_in.contiguous(fmt), i = i_in.contiguous(fmt);
  at::Tensor out = at::empty_like(a, a.options(), fmt);
  const int64_t n = a.numel();
  if (n == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "yinyang_fuse_cuda", [&] {
    fuse_forward_kernel<scalar_t><<<grid_for(n, 256), 256, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), i.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, c1, c2, c3);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> fuse_backward_cuda(const at::Tensor& g_in, const at::Tensor& a_in,
                                                      const at::Tensor& i_in, double c1, double c2, double c3) {
  check_pair(a_in, i_in, "i");
  check_pair(a_in, g_in, "grad");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto fmt = a_in.suggest_memory_format();
  at::Tensor a = a_in.contiguous(fmt), i = i_in.contiguous(fmt), g = g_in.contiguous(fmt);
  at::Tensor ga = at::empty_like(a, a.options(), fmt), gi = at::empty_like(a, a.options(), fmt);
  const int64_t n = a.numel();
  if (n == 0) return {ga, gi};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "yinyang_fuse_backward_cuda", [&] {
    fuse_backward_kernel<scalar_t><<<grid_for(n, 256), 256, 0, stream>>>(
        g.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), i.const_data_ptr<scalar_t>(),
        ga.mutable_data_ptr<scalar_t>(), gi.mutable_data_ptr<scalar_t>(), n, c1, c2, c3);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {ga, gi};
}

}  // namespace

TORCH_LIBRARY_IMPL(yyfast, CUDA, m) {
  m.impl("yinyang_fuse", &fuse_cuda);
  m.impl("yinyang_fuse_backward", &fuse_backward_cuda);
}

}  // namespace yyfast
