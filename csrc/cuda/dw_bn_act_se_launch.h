// The launch code of dw_bn_act_se (the kernels' own size limits, allocations, launch sequence and
// geometry; the argument checks common to every backend are in ../dw_bn_act_se_host.h):
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

// The finishing kernels (stats_finish_kernel, sum_partials_kernel): one thread per value of `width`.
constexpr int kFinishThreads = 256;
unsigned finish_blocks(int64_t width) { return static_cast<unsigned>((width + kFinishThreads - 1) / kFinishThreads); }

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
  const SpanParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, DwWeightLayout::kChannelMajor);
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

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const acc_t* pw = prm.dw.const_data_ptr<acc_t>();
    const acc_t eps_a = static_cast<acc_t>(eps);
    if (training) {
      at::Tensor part_cnt = at::empty({parts, d.c}, acc_opts), part_mean = at::empty({parts, d.c}, acc_opts),
                 part_m2 = at::empty({parts, d.c}, acc_opts);
      launch_kernel("stats_partial_kernel", stats_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pw, s,
                    part_cnt.mutable_data_ptr<acc_t>(), part_mean.mutable_data_ptr<acc_t>(),
                    part_m2.mutable_data_ptr<acc_t>());
      launch_kernel("stats_finish_kernel", stats_finish_kernel<acc_t>, finish_blocks(d.c), kFinishThreads, 0, stream,
                    part_cnt.const_data_ptr<acc_t>(), part_mean.const_data_ptr<acc_t>(),
                    part_m2.const_data_ptr<acc_t>(), parts, d.c, mean.mutable_data_ptr<acc_t>(),
                    var.mutable_data_ptr<acc_t>());
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

// The backward's intermediate tensors (accumulation dtype). `parts` = N * tiles: one partial per
// (sample, tile) block and channel, summed by sum_partials_kernel in a fixed order.
struct BackwardWorkspace {
  int64_t parts;
  at::Tensor part, part2;        // (parts, C): sums of gy*d, then (reused) of gu; sums of gu*zhat
  at::Tensor part_gw;            // (parts, 9, C): the depthwise weight gradient
  at::Tensor se_scale, gh2, gp;  // (N, C)
  at::Tensor a1, gh1;            // (N, hid)
  at::Tensor gbeta, ggamma;      // (C)
  at::Tensor gz;                 // (N, Ho*Wo, C): the gradient at the depthwise output
  at::Tensor gw_t;               // (9, C): summed in this order, transposed on return
  BackwardWorkspace(const SpanDims& d, const Shape& s, const at::TensorOptions& acc_opts)
      : parts(d.n * s.tiles),
        part(at::empty({parts, d.c}, acc_opts)),
        part2(at::empty({parts, d.c}, acc_opts)),
        part_gw(at::empty({parts, 9, d.c}, acc_opts)),
        se_scale(at::empty({d.n, d.c}, acc_opts)),
        gh2(at::empty({d.n, d.c}, acc_opts)),
        gp(at::empty({d.n, d.c}, acc_opts)),
        a1(at::empty({d.n, d.hidden}, acc_opts)),
        gh1(at::empty({d.n, d.hidden}, acc_opts)),
        gbeta(at::empty({d.c}, acc_opts)),
        ggamma(at::empty({d.c}, acc_opts)),
        gz(at::empty({d.n, s.HWo, d.c}, acc_opts)),
        gw_t(at::empty({9, d.c}, acc_opts)) {}
};

// The backward's launch sequence: gs partials -> SE backward -> BN sums -> gz and gw partials -> gw
// -> gx (see the passes in dw_bn_act_se_kernels.cuh). x and gy are channels_last; fills ws and gx.
template <typename scalar_t>
void launch_backward(const at::Tensor& x, const at::Tensor& gy, const SpanParams& prm, const at::Tensor& mean,
                     const at::Tensor& var, const at::Tensor& pooled, double eps, bool training, const SpanDims& d,
                     const Shape& s, const BackwardWorkspace& ws, const at::Tensor& gx, const char* op) {
  using acc_t = at::opmath_type<scalar_t>;
  const kernel_stream_t stream = YY_CURRENT_STREAM();
  const dim3 block(kChanPerBlock, kRowLanes), grid = rows_grid(d, s);
  const scalar_t* px = x.const_data_ptr<scalar_t>();
  const scalar_t* pgy = gy.const_data_ptr<scalar_t>();
  const acc_t* pw = prm.dw.const_data_ptr<acc_t>();
  const acc_t eps_a = static_cast<acc_t>(eps);
  const acc_t *pmean = mean.const_data_ptr<acc_t>(), *pvar = var.const_data_ptr<acc_t>();
  const acc_t *pg = prm.gamma.const_data_ptr<acc_t>(), *pb = prm.beta.const_data_ptr<acc_t>();
  launch_kernel("gs_partial_kernel", gs_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pgy, pw, pmean,
                pvar, pg, pb, eps_a, d.act, s, ws.part.mutable_data_ptr<acc_t>());
  const size_t smem = se_smem_bytes(2 * d.c + 3 * d.hidden, sizeof(acc_t), op);
  launch_kernel("se_backward_kernel", se_backward_kernel<acc_t>, static_cast<unsigned>(d.n), kSeThreads, smem, stream,
                ws.part.const_data_ptr<acc_t>(), pooled.const_data_ptr<acc_t>(), prm.w1.const_data_ptr<acc_t>(),
                prm.b1.const_data_ptr<acc_t>(), prm.w2.const_data_ptr<acc_t>(), prm.b2.const_data_ptr<acc_t>(), d.c,
                d.hidden, s.tiles, d.act, d.gate, ws.se_scale.mutable_data_ptr<acc_t>(),
                ws.gh2.mutable_data_ptr<acc_t>(), ws.a1.mutable_data_ptr<acc_t>(), ws.gh1.mutable_data_ptr<acc_t>(),
                ws.gp.mutable_data_ptr<acc_t>());
  // `part` is free again after the SE backward (stream order): reuse it for the sums of gu.
  launch_kernel("bn_partial_kernel", bn_partial_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pgy, pw, pmean,
                pvar, pg, pb, eps_a, d.act, ws.se_scale.const_data_ptr<acc_t>(), ws.gp.const_data_ptr<acc_t>(), s,
                ws.part.mutable_data_ptr<acc_t>(), ws.part2.mutable_data_ptr<acc_t>());
  launch_kernel("sum_partials_kernel", sum_partials_kernel<acc_t>, finish_blocks(d.c), kFinishThreads, 0, stream,
                ws.part.const_data_ptr<acc_t>(), ws.parts, d.c, ws.gbeta.mutable_data_ptr<acc_t>());
  launch_kernel("sum_partials_kernel", sum_partials_kernel<acc_t>, finish_blocks(d.c), kFinishThreads, 0, stream,
                ws.part2.const_data_ptr<acc_t>(), ws.parts, d.c, ws.ggamma.mutable_data_ptr<acc_t>());
  launch_kernel("gz_gw_kernel", gz_gw_kernel<scalar_t, acc_t>, grid, block, 0, stream, px, pgy, pw, pmean, pvar, pg, pb,
                eps_a, d.act, training, ws.se_scale.const_data_ptr<acc_t>(), ws.gp.const_data_ptr<acc_t>(),
                ws.gbeta.const_data_ptr<acc_t>(), ws.ggamma.const_data_ptr<acc_t>(), s, ws.gz.mutable_data_ptr<acc_t>(),
                ws.part_gw.mutable_data_ptr<acc_t>());
  launch_kernel("sum_partials_kernel", sum_partials_kernel<acc_t>, finish_blocks(9 * d.c), kFinishThreads, 0, stream,
                ws.part_gw.const_data_ptr<acc_t>(), ws.parts, 9 * d.c, ws.gw_t.mutable_data_ptr<acc_t>());
  const int64_t total = gx.numel();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(65535) * 8);
  launch_kernel("gx_kernel", gx_kernel<scalar_t, acc_t>, static_cast<unsigned>(blocks), threads, 0, stream,
                ws.gz.const_data_ptr<acc_t>(), pw, s, total, gx.mutable_data_ptr<scalar_t>());
}

SpanGrads backward_cuda(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& dw_weight,
                        const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& mean_in,
                        const at::Tensor& var_in, const at::Tensor& pooled_in, const at::Tensor& se_w1,
                        const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride,
                        double eps, bool training, std::string act, std::string gate) {
  const char* op = "dw_bn_act_se_backward";
  const SpanDims d =
      check_span_backward_args(op, grad_y, x_in, dw_weight, bn_weight, bn_bias, mean_in, var_in, pooled_in, se_w1,
                               se_b1, se_w2, se_b2, stride, act, gate, YY_KERNEL_DEVICE);
  YY_DEVICE_GUARD(x_in);
  const Shape s = make_shape(d, stride, op);
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  const auto acc = acc_type_for(x.scalar_type());
  const SpanParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, DwWeightLayout::kChannelMajor);
  const at::Tensor mean = acc_copy(mean_in, acc), var = acc_copy(var_in, acc), pooled = acc_copy(pooled_in, acc);
  const BackwardWorkspace ws(d, s, x.options().dtype(acc));
  at::Tensor gx = at::empty({d.n, d.c, d.h, d.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_backward_cuda", [&] {
    launch_backward<scalar_t>(x, gy, prm, mean, var, pooled, eps, training, d, s, ws, gx, op);
  });
  const at::Tensor gw = ws.gw_t.t().contiguous();  // (C, 9)
  return span_grads(gx, fmt, gw, ws.ggamma, ws.gbeta, ws.gh2, ws.a1, ws.gh1, pooled, dw_weight, bn_weight, bn_bias,
                    se_w1, se_b1, se_w2, se_b2);
}

}  // namespace
}  // namespace yyfast
