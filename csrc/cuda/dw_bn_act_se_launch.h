// The launch code of dw_bn_act_se (argument checks, allocations, launch sequence and geometry):
// compiled by nvcc (dw_bn_act_se.cu, yyfast._C, CUDA tensors) and by the host compiler for the
// CUDA-on-CPU emulator (csrc/emu/emu_ops.cpp, CPU tensors). Include it after
// dw_bn_act_se_kernels.cuh; see there for why everything is in an anonymous namespace.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "../dw_bn_act_se_host.h"
#include "dw_bn_act_se_kernels.cuh"

namespace yyfast {
namespace {

// ---------------------------------------------------------------------------------- host side

struct CudaParams {
  at::Tensor w, gamma, beta, w1, b1, w2, b2;
  CudaParams(const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
             const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2,
             at::ScalarType acc, int64_t C) {
    w = acc_copy(dw_weight.reshape({C, 9}), acc);  // (C, 9)
    gamma = acc_copy(bn_weight, acc);
    beta = acc_copy(bn_bias, acc);
    w1 = acc_copy(se_w1, acc);
    b1 = acc_copy(se_b1, acc);
    w2 = acc_copy(se_w2, acc);
    b2 = acc_copy(se_b2, acc);
  }
};

Shape make_shape(const SpanDims& d, int64_t stride, const char* op) {
  Shape s{};
  s.C = d.c;
  s.H = d.h;
  s.W = d.w;
  s.Ho = d.ho;
  s.Wo = d.wo;
  s.HWo = d.ho * d.wo;
  s.stride = static_cast<int>(stride);
  const int64_t tiles = (s.HWo + kTileRows - 1) / kTileRows;
  TORCH_CHECK(d.n <= 65535, op, ": x has batch size ", d.n, "; the CUDA kernels take at most 65535 (split the batch)");
  TORCH_CHECK(tiles <= 65535, op, ": x's output plane ", d.ho, "x", d.wo, " is too large for the CUDA kernels");
  s.tiles = static_cast<int>(tiles);
  return s;
}

dim3 rows_grid(const SpanDims& d, const Shape& s) {
  return dim3(static_cast<unsigned>((d.c + kChanPerBlock - 1) / kChanPerBlock), static_cast<unsigned>(s.tiles),
              static_cast<unsigned>(d.n));
}

size_t se_smem_bytes(int64_t floats, size_t elem, const char* op) {
  const size_t bytes = static_cast<size_t>(floats) * elem;
  TORCH_CHECK(bytes <= 48 * 1024, op, ": the SE layer is too wide for the CUDA kernels' shared memory (", bytes,
              " bytes > 48 KiB)");
  return bytes;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cuda(
    const at::Tensor& x_in, const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
    const at::Tensor& running_mean, const at::Tensor& running_var, const at::Tensor& se_w1, const at::Tensor& se_b1,
    const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride, double eps, bool training, std::string act,
    std::string gate) {
  const char* op = "dw_bn_act_se";
  const SpanDims d = check_span_args(op, x_in, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1,
                                     se_w2, se_b2, stride, act, gate, YY_KERNEL_DEVICE);
  YY_DEVICE_GUARD(x_in);
  const Shape s = make_shape(d, stride, op);
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const auto acc = acc_type_for(x.scalar_type());
  const CudaParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor y = at::empty({d.n, d.c, d.ho, d.wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor mean = training ? at::empty({d.c}, acc_opts) : acc_copy(running_mean, acc);
  at::Tensor var = training ? at::empty({d.c}, acc_opts) : acc_copy(running_var, acc);
  at::Tensor pooled = at::empty({d.n, d.c}, acc_opts);
  const int64_t parts = d.n * s.tiles;
  at::Tensor part_pool = at::empty({parts, d.c}, acc_opts);
  at::Tensor se_scale = at::empty({d.n, d.c}, acc_opts);
  const kernel_stream_t stream = YY_CURRENT_STREAM();
  const dim3 block(kChanPerBlock, kRowLanes), grid = rows_grid(d, s);
  const int fin_threads = 256;
  const unsigned fin_blocks = static_cast<unsigned>((d.c + fin_threads - 1) / fin_threads);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const acc_t* pw = prm.w.const_data_ptr<acc_t>();
    const acc_t eps_a = static_cast<acc_t>(eps);
    if (training) {
      at::Tensor part_cnt = at::empty({parts, d.c}, acc_opts), part_mean = at::empty({parts, d.c}, acc_opts),
                 part_m2 = at::empty({parts, d.c}, acc_opts);
      launch_kernel("stats_partial_kernel", stats_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pw, s,
          part_cnt.mutable_data_ptr<acc_t>(), part_mean.mutable_data_ptr<acc_t>(), part_m2.mutable_data_ptr<acc_t>());
      launch_kernel("stats_finish_kernel", stats_finish_kernel<acc_t>, fin_blocks, fin_threads, 0, stream,
          part_cnt.const_data_ptr<acc_t>(), part_mean.const_data_ptr<acc_t>(), part_m2.const_data_ptr<acc_t>(), parts,
          d.c, mean.mutable_data_ptr<acc_t>(), var.mutable_data_ptr<acc_t>());
    }
    const acc_t *pmean = mean.const_data_ptr<acc_t>(), *pvar = var.const_data_ptr<acc_t>();
    const acc_t *pg = prm.gamma.const_data_ptr<acc_t>(), *pb = prm.beta.const_data_ptr<acc_t>();
    launch_kernel("pool_partial_kernel", pool_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pw, pmean,
        pvar, pg, pb, eps_a, d.act, s, part_pool.mutable_data_ptr<acc_t>());
    const size_t smem = se_smem_bytes(d.c + d.hidden, sizeof(acc_t), op);
    launch_kernel("se_forward_kernel", se_forward_kernel<acc_t>, static_cast<unsigned>(d.n), kSeThreads, smem, stream,
        part_pool.const_data_ptr<acc_t>(), prm.w1.const_data_ptr<acc_t>(), prm.b1.const_data_ptr<acc_t>(),
        prm.w2.const_data_ptr<acc_t>(), prm.b2.const_data_ptr<acc_t>(), d.c, d.hidden, s.tiles,
        acc_t(1) / static_cast<acc_t>(s.HWo), d.act, d.gate, pooled.mutable_data_ptr<acc_t>(),
        se_scale.mutable_data_ptr<acc_t>());
    launch_kernel("apply_kernel", apply_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pw, pmean, pvar, pg, pb,
        eps_a, d.act, se_scale.const_data_ptr<acc_t>(), s, y.mutable_data_ptr<scalar_t>());
  });
  return {in_format(y, fmt), mean, var, pooled};
}

SpanGrads
backward_cuda(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& dw_weight,
              const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& mean_in,
              const at::Tensor& var_in, const at::Tensor& pooled_in, const at::Tensor& se_w1, const at::Tensor& se_b1,
              const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride, double eps, bool training,
              std::string act, std::string gate) {
  const char* op = "dw_bn_act_se_backward";
  const SpanDims d = check_span_args(op, x_in, dw_weight, bn_weight, bn_bias, mean_in, var_in, se_w1, se_b1, se_w2,
                                     se_b2, stride, act, gate, YY_KERNEL_DEVICE);
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == d.n && grad_y.size(1) == d.c && grad_y.size(2) == d.ho &&
                  grad_y.size(3) == d.wo,
              op, ": grad_y must have shape (", d.n, ", ", d.c, ", ", d.ho, ", ", d.wo, "), got ", grad_y.sizes());
  TORCH_CHECK(grad_y.device() == x_in.device(), op, ": grad_y is on ", grad_y.device(), " but x is on ", x_in.device());
  TORCH_CHECK(pooled_in.dim() == 2 && pooled_in.size(0) == d.n && pooled_in.size(1) == d.c, op,
              ": pooled must have shape (", d.n, ", ", d.c, "), got ", pooled_in.sizes());
  TORCH_CHECK(pooled_in.device() == x_in.device(), op, ": pooled is on ", pooled_in.device(), " but x is on ",
              x_in.device());
  YY_DEVICE_GUARD(x_in);
  const Shape s = make_shape(d, stride, op);
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  const auto acc = acc_type_for(x.scalar_type());
  const CudaParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const at::Tensor mean = acc_copy(mean_in, acc), var = acc_copy(var_in, acc), pooled = acc_copy(pooled_in, acc);
  const auto acc_opts = x.options().dtype(acc);
  const int64_t parts = d.n * s.tiles;
  at::Tensor part = at::empty({parts, d.c}, acc_opts), part2 = at::empty({parts, d.c}, acc_opts);
  at::Tensor part_gw = at::empty({parts, 9, d.c}, acc_opts);
  at::Tensor se_scale = at::empty({d.n, d.c}, acc_opts), gh2 = at::empty({d.n, d.c}, acc_opts);
  at::Tensor a1 = at::empty({d.n, d.hidden}, acc_opts), gh1 = at::empty({d.n, d.hidden}, acc_opts);
  at::Tensor gp = at::empty({d.n, d.c}, acc_opts);
  at::Tensor gbeta = at::empty({d.c}, acc_opts), ggamma = at::empty({d.c}, acc_opts);
  at::Tensor gz = at::empty({d.n, s.HWo, d.c}, acc_opts);
  at::Tensor gx = at::empty({d.n, d.c, d.h, d.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const kernel_stream_t stream = YY_CURRENT_STREAM();
  const dim3 block(kChanPerBlock, kRowLanes), grid = rows_grid(d, s);
  const int fin_threads = 256;
  const unsigned fin_blocks = static_cast<unsigned>((d.c + fin_threads - 1) / fin_threads);
  at::Tensor gw_t = at::empty({9, d.c}, acc_opts);  // summed as (9, C), transposed on return

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pgy = gy.const_data_ptr<scalar_t>();
    const acc_t* pw = prm.w.const_data_ptr<acc_t>();
    const acc_t eps_a = static_cast<acc_t>(eps);
    const acc_t *pmean = mean.const_data_ptr<acc_t>(), *pvar = var.const_data_ptr<acc_t>();
    const acc_t *pg = prm.gamma.const_data_ptr<acc_t>(), *pb = prm.beta.const_data_ptr<acc_t>();
    launch_kernel("gs_partial_kernel", gs_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pgy, pw, pmean,
        pvar, pg, pb, eps_a, d.act, s, part.mutable_data_ptr<acc_t>());
    const size_t smem = se_smem_bytes(2 * d.c + 3 * d.hidden, sizeof(acc_t), op);
    launch_kernel("se_backward_kernel", se_backward_kernel<acc_t>, static_cast<unsigned>(d.n), kSeThreads, smem, stream,
        part.const_data_ptr<acc_t>(), pooled.const_data_ptr<acc_t>(), prm.w1.const_data_ptr<acc_t>(),
        prm.b1.const_data_ptr<acc_t>(), prm.w2.const_data_ptr<acc_t>(), prm.b2.const_data_ptr<acc_t>(), d.c, d.hidden,
        s.tiles, d.act, d.gate, se_scale.mutable_data_ptr<acc_t>(), gh2.mutable_data_ptr<acc_t>(),
        a1.mutable_data_ptr<acc_t>(), gh1.mutable_data_ptr<acc_t>(), gp.mutable_data_ptr<acc_t>());
    // `part` is free again after the SE backward (stream order): reuse it for the sums of gu.
    launch_kernel("bn_partial_kernel", bn_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pgy, pw, pmean,
        pvar, pg, pb, eps_a, d.act, se_scale.const_data_ptr<acc_t>(), gp.const_data_ptr<acc_t>(), s,
        part.mutable_data_ptr<acc_t>(), part2.mutable_data_ptr<acc_t>());
    launch_kernel("sum_partials_kernel", sum_partials_kernel<acc_t>, fin_blocks, fin_threads, 0, stream,
        part.const_data_ptr<acc_t>(), parts, d.c, gbeta.mutable_data_ptr<acc_t>());
    launch_kernel("sum_partials_kernel", sum_partials_kernel<acc_t>, fin_blocks, fin_threads, 0, stream,
        part2.const_data_ptr<acc_t>(), parts, d.c, ggamma.mutable_data_ptr<acc_t>());
    launch_kernel("gz_gw_kernel", gz_gw_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pgy, pw, pmean, pvar, pg,
        pb, eps_a, d.act, training, se_scale.const_data_ptr<acc_t>(), gp.const_data_ptr<acc_t>(),
        gbeta.const_data_ptr<acc_t>(), ggamma.const_data_ptr<acc_t>(), s, gz.mutable_data_ptr<acc_t>(),
        part_gw.mutable_data_ptr<acc_t>());
    const unsigned gw_blocks = static_cast<unsigned>((9 * d.c + fin_threads - 1) / fin_threads);
    launch_kernel("sum_partials_kernel", sum_partials_kernel<acc_t>, gw_blocks, fin_threads, 0, stream,
        part_gw.const_data_ptr<acc_t>(), parts, 9 * d.c, gw_t.mutable_data_ptr<acc_t>());
    const int64_t total = gx.numel();
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(65535) * 8);
    launch_kernel("gx_kernel", gx_kernel<scalar_t, acc_t>, static_cast<unsigned>(blocks), threads, 0, stream,
        gz.const_data_ptr<acc_t>(), pw, s, total, gx.mutable_data_ptr<scalar_t>());
  });
  const at::Tensor gw = gw_t.t().contiguous();  // (C, 9)
  return span_grads(gx, fmt, gw, ggamma, gbeta, gh2, a1, gh1, pooled, dw_weight, bn_weight, bn_bias, se_w1, se_b1,
                    se_w2, se_b2);
}

}  // namespace
}  // namespace yyfast
