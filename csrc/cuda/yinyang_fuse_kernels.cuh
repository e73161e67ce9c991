// The device code of yinyang_fuse: one elementwise pass, 64-bit indexing, grid-stride loop.
// Compiled by nvcc (yinyang_fuse.cu) and by the host compiler for the CUDA-on-CPU emulator
// (csrc/emu); see dw_bn_act_se_kernels.cuh for why everything is in an anonymous namespace.
#pragma once

#include <cstdint>

#include "../common/yinyang_fuse_math.h"
#include "kernel_api.cuh"

namespace yyfast {
namespace {

// acc_t: the math type (at::opmath_type<scalar_t>, chosen by the launch code so this file needs no ATen).
template <typename scalar_t, typename acc_t>
__global__ void fuse_forward_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ i,
                                    scalar_t* __restrict__ out, int64_t n, float c1, float c2, float c3) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x)
    out[k] = static_cast<scalar_t>(fuse_forward<acc_t>(a[k], i[k], c1, c2, c3));
}

template <typename scalar_t, typename acc_t>
__global__ void fuse_backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ a,
                                     const scalar_t* __restrict__ i, scalar_t* __restrict__ ga,
                                     scalar_t* __restrict__ gi, int64_t n, float c1, float c2, float c3) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    const acc_t gk = g[k];
    ga[k] = static_cast<scalar_t>(fuse_grad_a<acc_t>(gk, i[k], c1, c2));
    gi[k] = static_cast<scalar_t>(fuse_grad_i<acc_t>(gk, a[k], c1, c3));
  }
}

}  // namespace
}  // namespace yyfast
