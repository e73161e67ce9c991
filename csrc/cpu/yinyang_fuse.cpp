// C++ CPU implementation of yinyang_fuse (forward and backward), parallel with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../common/yinyang_fuse_math.h"
#include "../yinyang_fuse_host.h"
#include "eval_ops.h"

namespace yyfast {
namespace {

// Elementwise ops are layout-agnostic: run on the common dense layout of both inputs.
at::Tensor dense_like(const at::Tensor& t, const at::Tensor& like) {
  return t.is_contiguous(like.suggest_memory_format()) ? t : t.contiguous(like.suggest_memory_format());
}

}  // namespace

at::Tensor fuse_cpu(const at::Tensor& a_in, const at::Tensor& i_in, double c1, double c2, double c3) {
  check_fuse_pair(a_in, i_in, "i", c10::DeviceType::CPU);
  const auto fmt = a_in.suggest_memory_format();
  at::Tensor a = a_in.contiguous(fmt), i = dense_like(i_in, a);
  at::Tensor out = at::empty_like(a, a.options(), fmt);
  const int64_t n = a.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "yinyang_fuse_cpu", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pi = i.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t f1 = c1, f2 = c2, f3 = c3;
    at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k)
        po[k] = static_cast<scalar_t>(fuse_forward(static_cast<acc_t>(pa[k]), static_cast<acc_t>(pi[k]), f1, f2, f3));
    });
  });
  return out;
}

namespace {

std::tuple<at::Tensor, at::Tensor> fuse_backward_cpu(const at::Tensor& g_in, const at::Tensor& a_in,
                                                     const at::Tensor& i_in, double c1, double c2, double c3) {
  check_fuse_pair(a_in, i_in, "i", c10::DeviceType::CPU);
  check_fuse_pair(a_in, g_in, "grad", c10::DeviceType::CPU);
  const auto fmt = a_in.suggest_memory_format();
  at::Tensor a = a_in.contiguous(fmt), i = dense_like(i_in, a), g = dense_like(g_in, a);
  at::Tensor ga = at::empty_like(a, a.options(), fmt), gi = at::empty_like(a, a.options(), fmt);
  const int64_t n = a.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "yinyang_fuse_backward_cpu", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pi = i.const_data_ptr<scalar_t>();
    const scalar_t* pg = g.const_data_ptr<scalar_t>();
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    scalar_t* pgi = gi.mutable_data_ptr<scalar_t>();
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t f1 = c1, f2 = c2, f3 = c3;
    at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const acc_t gk = pg[k];
        pga[k] = static_cast<scalar_t>(fuse_grad_a(gk, static_cast<acc_t>(pi[k]), f1, f2));
        pgi[k] = static_cast<scalar_t>(fuse_grad_i(gk, static_cast<acc_t>(pa[k]), f1, f3));
      }
    });
  });
  return {ga, gi};
}

}  // namespace

TORCH_LIBRARY_IMPL(yyfast, CPU, m) {
  m.impl("yinyang_fuse_cuda", &fuse_cpu);
  m.impl("yinyang_fuse_cuda_backward", &fuse_backward_cpu);
}

}  // namespace yyfast
