// yyfast::stem_conv_eval: a Residual stem's first convolution and its shortcut in one pass, float32 CPU,
// channels_last, eval only:
//   y  = act(conv3x3(x, stride, padding) + bias)        (Cin -> Cout)
//   sc = conv1x1(x, stride) + shortcut_bias             (the block's 1x1 shortcut)
// for few input channels (the stems see 1 or 3): each output position is 9*Cin broadcast multiply-adds
// per output-channel vector (the kernel: stem_conv_kernels.inc).
//
// Why: oneDNN ran these two convolutions in 0.26 ms on one thread and 0.20 on two for a 32x32 sample
// (3 -> 64 channels: 1.8 M multiply-adds; its kernels are built for wide inputs), a tenth of the batch-1
// forward between the two stems (issue 17's profile, 2-core EPYC, 2026-11-28). Here, 2 threads, with
// the 1-channel Yin stem in brackets: 0.041 (0.028) ms against oneDNN's 0.131 (0.168) at batch 1, and
// 0.59 against 0.68 ms at batch 16.
//
// Wider inputs (more than kMaxCin channels; applies() gives them to this op only at stride > 1, where
// Winograd does not apply): im2col then one GEMM for the 3x3 convolution, and the shortcut as a second
// GEMM over the im2col's centre tap (with padding 1, tap (1, 1) of output (oh, ow) is input (oh*s, ow*s),
// what the strided 1x1 convolution reads). Why: oneDNN took 79 + 46 us (2 threads; 94 + 45 on one) for
// yynet_small_64's single-path Residual at batch 1 (64 -> 64, 16x16 -> 8x8): it reorders the weights on
// every call, which costs more than the 4.7 M multiply-adds at this size.
//
// Work split as in conv3x3_winograd_eval: one sample's output rows per task; a batch with fewer samples
// than threads (and not a multiple of them) splits each sample's rows over the threads.
//
// Layouts: x (N, Cin, H, W) any dense layout (read channels_last); weight (9, Cin, Cout) = the conv's
// (Cout, Cin, 3, 3) with the taps first; shortcut_weight (Cin, Cout); outputs channels_last.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "../common/dw_bn_act_se_math.h"
#include "eval_ops.h"
#include "span_kernels.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "stem_conv_eval";
// More input channels than this: oneDNN's kernels, built for wide inputs, caught up (batch 16, 2 threads,
// 32x32 -> 64 channels: 1.21 vs 1.18 ms at 8 input channels, 2.24 vs 1.98 at 16; 0.59 vs 0.68 at 3).
constexpr int64_t kMaxCin = 8;
// Output positions per im2col block: the block's columns (positions x 9*Cin floats, 576 KiB at 64
// channels) stay in a per-thread buffer.
constexpr int64_t kIm2colPositions = 256;

std::vector<float>& col_buffer() {
  thread_local std::vector<float> buf;
  return buf;
}

// Output rows [o0, o1) of one sample by im2col + GEMM (padding 1): y = act(col @ W + b), sc = col[:, centre
// tap] @ Ws + bs, both written at their rows of the sample's (Ho*Wo, Cout) outputs.
void im2col_rows(const float* x, int64_t H, int64_t W, int64_t Cin, const float* w, const float* b, const float* ws,
                 const float* bs, int act, int64_t stride, int64_t Wo, int64_t Cout, int64_t o0, int64_t o1, float* y,
                 float* sc, const SpanCpuKernels& K) {
  const int64_t kc = 9 * Cin, block_rows = std::max<int64_t>(1, kIm2colPositions / Wo);
  for (int64_t r0 = o0; r0 < o1; r0 += block_rows) {
    const int64_t r1 = std::min(o1, r0 + block_rows), m = (r1 - r0) * Wo;
    std::vector<float>& buf = col_buffer();
    if (static_cast<int64_t>(buf.size()) < m * kc) buf.resize(m * kc);
    float* col = buf.data();
    for (int64_t oh = r0; oh < r1; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        float* c = col + ((oh - r0) * Wo + ow) * kc;
        for (int64_t kh = 0; kh < 3; ++kh)
          for (int64_t kw = 0; kw < 3; ++kw, c += Cin) {
            const int64_t ih = oh * stride - 1 + kh, iw = ow * stride - 1 + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
              std::fill(c, c + Cin, 0.0f);
            else
              std::copy(x + (ih * W + iw) * Cin, x + (ih * W + iw + 1) * Cin, c);
          }
      }
    // Two GEMMs with their bias (and act) as the epilogue (Cout a multiple of 16: every build's gemm).
    GemmArgs g{};
    g.a = col, g.lda = kc, g.b = w, g.ldb = Cout, g.k = kc, g.bias = b, g.act = act;
    g.c = y + r0 * Wo * Cout, g.ldc = Cout, g.m = m, g.n = Cout;
    K.gemm(g);
    g.a = col + 4 * Cin, g.b = ws, g.k = Cin, g.bias = bs, g.act = -1, g.c = sc + r0 * Wo * Cout;
    K.gemm(g);
  }
}

void check_param(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.sizes() == shape && t.is_contiguous(), kOp,
              ": ", name, " must be a contiguous float32 CPU tensor of shape ", shape, ", got ", t.sizes(), " ",
              t.scalar_type(), " on ", t.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> stem_conv_eval_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                      const at::Tensor& bias, const at::Tensor& shortcut_weight,
                                                      const at::Tensor& shortcut_bias, int64_t stride, int64_t padding,
                                                      std::string act) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat, kOp,
              ": x must be a 4-d float32 CPU tensor, got ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(N > 0 && Cin > 0 && H > 0 && W > 0, kOp, ": x must have no empty dimension, got ", x.sizes());
  TORCH_CHECK(Cin <= kMaxCin || padding == 1, kOp, ": with more than ", kMaxCin,
              " input channels the padding must be 1, got ", padding);
  TORCH_CHECK(stride >= 1 && padding >= 0, kOp, ": stride must be >= 1 and padding >= 0, got ", stride, " and ",
              padding);
  TORCH_CHECK(act == "none" || act == "gelu" || act == "silu", kOp, ": act must be 'none', 'gelu' or 'silu', got '",
              act, "'");
  TORCH_CHECK(weight.dim() == 3, kOp, ": weight must have shape (9, ", Cin, ", Cout), got ", weight.sizes());
  const int64_t Cout = weight.size(2);
  TORCH_CHECK(Cout > 0 && Cout % 16 == 0, kOp, ": Cout must be a positive multiple of 16, got ", Cout);
  check_param(weight, "weight", {9, Cin, Cout});
  check_param(bias, "bias", {Cout});
  check_param(shortcut_weight, "shortcut_weight", {Cin, Cout});
  check_param(shortcut_bias, "shortcut_bias", {Cout});
  const int64_t Ho = (H + 2 * padding - 3) / stride + 1, Wo = (W + 2 * padding - 3) / stride + 1;
  const int64_t Hs = (H - 1) / stride + 1, Ws = (W - 1) / stride + 1;
  TORCH_CHECK(H + 2 * padding >= 3 && W + 2 * padding >= 3 && Ho == Hs && Wo == Ws, kOp,
              ": the 3x3 convolution (padding ", padding, ") and the 1x1 shortcut (stride ", stride,
              ") must give the same output size for an input of ", H, "x", W);
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const auto opts = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor y = at::empty({N, Cout, Ho, Wo}, opts), sc = at::empty({N, Cout, Ho, Wo}, opts);
  const float* px = xc.const_data_ptr<float>();
  const float *pw = weight.const_data_ptr<float>(), *pb = bias.const_data_ptr<float>();
  const float *pws = shortcut_weight.const_data_ptr<float>(), *pbs = shortcut_bias.const_data_ptr<float>();
  float *py = y.mutable_data_ptr<float>(), *ps = sc.mutable_data_ptr<float>();
  const int a = act == "none" ? -1 : (act == "gelu" ? kGelu : kSilu);
  const SpanCpuKernels& K = span_cpu_kernels();
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t chunks = (threads > 1 && N % threads != 0 && N < 4 * threads) ? std::min(Ho, threads) : 1;
  const int64_t in_n = H * W * Cin, out_n = Ho * Wo * Cout;
  at::parallel_for(0, N * chunks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / chunks, c = i % chunks;
      if (Cin <= kMaxCin)
        K.stem_conv(px + n * in_n, H, W, Cin, pw, pb, pws, pbs, a, stride, padding, Wo, Cout, Ho * c / chunks,
                    Ho * (c + 1) / chunks, py + n * out_n, ps + n * out_n);
      else
        im2col_rows(px + n * in_n, H, W, Cin, pw, pb, pws, pbs, a, stride, Wo, Cout, Ho * c / chunks,
                    Ho * (c + 1) / chunks, py + n * out_n, ps + n * out_n, K);
    }
  });
  return {y, sc};
}

TORCH_LIBRARY_FRAGMENT(yyfast, m) {
  m.def(
      "stem_conv_eval(Tensor x, Tensor weight, Tensor bias, Tensor shortcut_weight, Tensor shortcut_bias, int stride, "
      "int padding, str act) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(yyfast, CPU, m) { m.impl("stem_conv_eval", &stem_conv_eval_cpu); }

}  // namespace yyfast
