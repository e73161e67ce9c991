// Compiles every shared math function as device code (nvcc), so an edit to common/*_math.h that
// breaks the CUDA build fails in seconds in the CMake build, without libtorch. Not run: the GPU
// tests (tests/test_cuda_*.py with device "cuda") prove the kernels that use these functions.
#include "common/dw_bn_act_se_math.h"
#include "common/yinyang_fuse_math.h"

template <typename T>
__global__ void yyfast_math_device_kernel(const T* in, T* out, int n) {
  using namespace yyfast;
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= n) return;
  const T v = in[k];
  T nn = 0, mean = 0, m2 = 0;
  welford_add(nn, mean, m2, v);
  welford_merge(nn, mean, m2, T(1), v, T(0));
  out[k] = act_forward(kGelu, v) + act_grad(kSilu, v) + gate_forward(kHardSigmoid, v) + gate_grad(kSigmoid, v) +
           bn_affine(v, bn_scale(bn_rstd(v * v, T(1e-5)), T(2)), bn_shift(T(0.1), T(2), T(0.3))) +
           bn_grad_input(v, v, T(0.5), T(0.1), T(0.2), true) + span_grad_d(v, v, v, T(0.25)) +
           fuse_forward(v, v, T(1), T(2), T(3)) + fuse_grad_a(v, v, T(1), T(2)) + fuse_grad_i(v, v, T(1), T(3)) + m2 +
           T(conv3x3_out_size(7, 2));
}

template __global__ void yyfast_math_device_kernel<float>(const float*, float*, int);
template __global__ void yyfast_math_device_kernel<double>(const double*, double*, int);
