// yyfast::mbconv_eval: a whole BatchNorm-folded MBConv block in eval mode, float32 CPU, in one call:
//   out = project'(span'(act(expand'(x)))) + residual
// where span' = DWConv3x3(stride)+bias -> act -> SE (the SE scale s folded into the projection's
// weights per sample: (z * s) @ Wp == z @ (s * Wp), a 256x64 product instead of a pass over z).
//
// Why one op: optimize_for_inference otherwise writes the two expanded tensors (4x the block's
// channels; 256 MiB each at batch 256, 32x32) to fresh memory that glibc maps and page-faults on
// every call and returns on free, which was most of the batch-256 gap to onnxruntime (issue 17).
// Here each sample's expanded activations live in per-thread buffers (Hin*Win*Ce and Ho*Wo*Ce
// floats, 1 MiB each at 256 channels 32x32) that persist across calls (thread_local, grown when a
// larger shape comes), so the expanded tensors never touch the allocator or leave the cache
// hierarchy; only the block's narrow input, residual and output are full tensors.
//
// Parallelism: over samples (at::parallel_for), the two GEMMs per sample single-threaded inside the
// parallel region; with fewer samples than threads, samples run in turn with multithreaded GEMMs. Thread-safe: the
// buffers are per OS thread, nothing else is shared or mutated.
//
// Layouts (prepared once by yyfast/inference/block_plan.py): x, residual: (N, Cin|Cout, H, W)
// channels_last float32; expand_wt (Cin, Ce); expand_b (Ce); dw_wt (9, Ce); dw_b (Ce);
// se_w1t (Ce, hid); se_b1 (hid); se_w2t (hid, Ce); se_b2 (Ce); proj_wt (Ce, Cout); proj_b (Cout).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/silu.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "../common/dw_bn_act_se_math.h"
#include "span_kernels.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "mbconv_eval";

void check_weight(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, kOp, ": ", name,
              " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), kOp, ": ", name, " must have shape ", at::IntArrayRef(shape),
              ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
}

float* grow(std::vector<float>& buf, int64_t n) {
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

at::Tensor mbconv_eval_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& residual, const at::Tensor& expand_wt,
                           const at::Tensor& expand_b, const at::Tensor& dw_wt, const at::Tensor& dw_b,
                           const at::Tensor& se_w1t, const at::Tensor& se_b1, const at::Tensor& se_w2t,
                           const at::Tensor& se_b2, const at::Tensor& proj_wt, const at::Tensor& proj_b, int64_t stride,
                           std::string act, std::string gate) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat, kOp,
              ": x must be a 4-d float32 CPU tensor, got ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(stride == 1 || stride == 2, kOp, ": stride must be 1 or 2, got ", stride);
  TORCH_CHECK(act == "gelu" || act == "silu", kOp, ": act must be 'gelu' or 'silu', got '", act, "'");
  TORCH_CHECK(gate == "sigmoid" || gate == "hardsigmoid", kOp, ": gate must be 'sigmoid' or 'hardsigmoid', got '", gate,
              "'");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(N > 0 && Cin > 0 && H > 0 && W > 0, kOp, ": x must have no empty dimension, got ", x.sizes());
  const int64_t Ce = expand_b.numel(), hid = se_b1.numel(), Cout = proj_b.numel();
  check_weight(expand_wt, "expand_wt", {Cin, Ce});
  check_weight(expand_b, "expand_b", {Ce});
  check_weight(dw_wt, "dw_wt", {9, Ce});
  check_weight(dw_b, "dw_b", {Ce});
  check_weight(se_w1t, "se_w1t", {Ce, hid});
  check_weight(se_b1, "se_b1", {hid});
  check_weight(se_w2t, "se_w2t", {hid, Ce});
  check_weight(se_b2, "se_b2", {Ce});
  check_weight(proj_wt, "proj_wt", {Ce, Cout});
  check_weight(proj_b, "proj_b", {Cout});
  const int64_t Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor res;
  if (residual.has_value() && residual->defined()) {
    const auto& r = *residual;
    TORCH_CHECK(r.device().is_cpu() && r.scalar_type() == at::kFloat && r.sizes() == at::IntArrayRef({N, Cout, Ho, Wo}),
                kOp, ": residual must be a float32 CPU tensor of shape ", at::IntArrayRef({N, Cout, Ho, Wo}), ", got ",
                r.sizes(), " ", r.scalar_type());
    res = r.contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor out = at::empty({N, Cout, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int a = act == "gelu" ? kGelu : kSilu;
  const int gt = gate == "sigmoid" ? kSigmoid : kHardSigmoid;
  const Geom g{Ce, H, W, Ho, Wo, static_cast<int>(stride)};
  const auto& K = span_cpu_kernels();
  const float* px = xc.const_data_ptr<float>();
  const float* pres = res.defined() ? res.const_data_ptr<float>() : nullptr;
  float* pout = out.mutable_data_ptr<float>();
  const float *pw1t = se_w1t.const_data_ptr<float>(), *pb1 = se_b1.const_data_ptr<float>();
  const float *pw2t = se_w2t.const_data_ptr<float>(), *pb2 = se_b2.const_data_ptr<float>();
  const float* pproj = proj_wt.const_data_ptr<float>();
  const float* pdwb = dw_b.const_data_ptr<float>();
  const float inv_hw = 1.0f / static_cast<float>(Ho * Wo);
  const auto fopts = at::TensorOptions().dtype(at::kFloat);

  auto samples = [&](int64_t n0, int64_t n1) {
    // Persistent per-thread scratch: grown on the first (or a larger) shape, then reused.
    thread_local std::vector<float> hbuf, zbuf, wsbuf, small;
    float* h = grow(hbuf, H * W * Ce);
    float* z = grow(zbuf, Ho * Wo * Ce);
    float* ws = grow(wsbuf, Ce * Cout);
    float* sm = grow(small, 3 * Ce + 3 * hid + Ce);
    float *ones = sm, *psum = sm + Ce, *s = sm + 2 * Ce, *h1 = sm + 3 * Ce, *a1 = h1 + hid, *h2 = a1 + hid;
    for (int64_t k = 0; k < Ce; ++k) ones[k] = 1.0f;
    at::Tensor ht = at::from_blob(h, {H * W, Ce}, fopts);
    at::Tensor zt = at::from_blob(z, {Ho * Wo, Ce}, fopts);
    at::Tensor wst = at::from_blob(ws, {Ce, Cout}, fopts);
    for (int64_t n = n0; n < n1; ++n) {
      // expand: h = act(x_n @ We + be), (H*W, Ce)
      at::Tensor xn = at::from_blob(const_cast<float*>(px) + n * H * W * Cin, {H * W, Cin}, fopts);
      at::addmm_out(ht, expand_b, xn, expand_wt);
      if (a == kGelu)
        at::gelu_(ht);
      else
        at::silu_(ht);
      // span: z = act(dwconv(h) + bd), psum = per-channel sum of z; SE scale s
      K.conv(h, dw_wt.const_data_ptr<float>(), ones, pdwb, a, z, psum, g);
      for (int64_t k = 0; k < Ce; ++k) psum[k] *= inv_hw;
      K.se_mlp(psum, pw1t, pb1, pw2t, pb2, Ce, hid, a, h1, a1, h2);
      for (int64_t k = 0; k < Ce; ++k) s[k] = gate_forward(gt, h2[k]);
      // project: out_n = z @ (s * Wp) + bp (+ residual_n)
      for (int64_t k = 0; k < Ce; ++k)
        for (int64_t o = 0; o < Cout; ++o) ws[k * Cout + o] = s[k] * pproj[k * Cout + o];
      float* on = pout + n * Ho * Wo * Cout;
      at::Tensor ot = at::from_blob(on, {Ho * Wo, Cout}, fopts);
      at::addmm_out(ot, proj_b, zt, wst);
      if (pres != nullptr) {
        const float* rn = pres + n * Ho * Wo * Cout;
        for (int64_t i = 0; i < Ho * Wo * Cout; ++i) on[i] += rn[i];
      }
    }
  };
  // Fewer samples than threads (batch 1): one sample after another on this thread, so the two GEMMs
  // (about 14 of the block's 15 multiply-adds per expanded element) and the GELU use every intra-op
  // thread; otherwise one sample per task, everything single-threaded inside.
  if (N < at::get_num_threads() && !at::in_parallel_region())
    samples(0, N);
  else
    at::parallel_for(0, N, 1, samples);
  return out;
}

}  // namespace

// A separate fragment (not in ops.cpp's TORCH_LIBRARY block), so this eval-only op stays in one file.
TORCH_LIBRARY_FRAGMENT(yyfast, m) {
  m.def(
      "mbconv_eval(Tensor x, Tensor? residual, Tensor expand_wt, Tensor expand_b, Tensor dw_wt, Tensor dw_b, "
      "Tensor se_w1t, Tensor se_b1, Tensor se_w2t, Tensor se_b2, Tensor proj_wt, Tensor proj_b, int stride, "
      "str act, str gate) -> Tensor");
}

TORCH_LIBRARY_IMPL(yyfast, CPU, m) { m.impl("mbconv_eval", &mbconv_eval_cpu); }

}  // namespace yyfast
