// yyfast::yynet_features_eval: the BatchNorm-folded YYNet's features (everything before the head) in
// one call, float32 CPU, eval only: the Yang and Yin stems and stages, the fusion, the single path.
// yyfast::yynet_eval: the same, then the head (the logits).
//
// Each block is what the per-block path calls from Python (InferenceYYNet's bind_onednn): mbconv_eval,
// conv3x3_winograd_eval, stem_conv_eval, oneDNN's convolutions (by the same mkldnn op, boxed), called
// here directly, so the results are the per-block path's bit for bit. What goes is the Python between
// the ~12 blocks, the conversion of their arguments and the head's four calls. The weights are
// prepared by yyfast/inference/whole_forward.py.
//
// Tried and dropped: running the Yang chain and the first Yin blocks at once, one thread each, instead
// of splitting every block's rows over both threads (batch 1, 2 threads). Each chain ran 15-30% slower
// than alone on one thread (Yang 2.15 ms, two Yin blocks 2.25; a whole sample's buffers no longer fit a
// core's L2), so the forward took 4.12 ms against 4.06 (yynet_small_64, 2-core EPYC, 2026-11-28).
//
// Arguments: x (N, C, H, W); weights, per block in order (Yang, Yin, single path):
//   Residual (kind 0), six: conv1's weight (Cout, Cin, 3, 3), or its Winograd transform (flag 1), or
//     stem_conv_eval's (9, Cin, Cout) (flag 4); conv1's bias; conv2's Winograd transform, or its weight
//     (flag 8), and bias; the 1x1 shortcut's weight ((Cin, Cout) with flag 4) and bias, or None, None
//     for an identity.
//   MBConv (kind 1), eleven: mbconv_eval's weight arguments in schema order (shortcut_wt None: identity).
// plan: [yin_input (0: channel mean, 1: first channel), n_yang, n_yin, n_single], then four ints per
// block: Residual [0, stride, padding, flags (1: conv1 by Winograd, 2: shortcut conv, 4: conv1 and the
// shortcut by stem_conv_eval, 8: conv2 by oneDNN with the add, then the act)], MBConv [1, stride, 0, 0].
// fusion: (c1, c2, c3) of c1*a*i + c2*a + c3*i.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/silu.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../common/dw_bn_act_se_math.h"

#include "eval_ops.h"

namespace yyfast {

at::Tensor head_eval_cpu(const at::Tensor& f, const at::Tensor& fc_weight, const at::Tensor& fc_bias,
                         const at::Tensor& cls_weight, const at::Tensor& cls_bias, const std::string& act,
                         bool pre_logits);

namespace {

constexpr const char* kOp = "yynet_features_eval";
constexpr int64_t kHeader = 4, kPerBlock = 4;
constexpr int64_t kResidualWeights = 6, kMBConvWeights = 11;
constexpr int64_t kWinogradConv1 = 1, kShortcutConv = 2, kStemConv = 4, kOneDnnConv2 = 8;

struct Step {
  int64_t kind, stride, padding, flags, w0;  // w0: the block's first entry in weights
};

struct Net {
  const c10::List<c10::optional<at::Tensor>>* weights;
  std::vector<Step> yang, yin, single;
  std::string act, gate;
};

// By value: a c10::List element is a temporary (a reference to it would dangle).
c10::optional<at::Tensor> maybe_weight(const Net& net, int64_t k) {
  c10::optional<at::Tensor> t = (*net.weights)[k];
  return t.has_value() && t->defined() ? t : c10::nullopt;
}

at::Tensor weight(const Net& net, int64_t k) {
  c10::optional<at::Tensor> t = maybe_weight(net, k);
  TORCH_CHECK(t.has_value(), kOp, ": weights[", k, "] must be a tensor, got None");
  return *t;
}

// oneDNN's convolution with its bias and an optional activation ("none", "gelu" or "silu"), by the
// same op (mkldnn::_convolution_pointwise) and arguments as yyfast/cpu_fusion.py; called boxed so that
// its C++ signature, which is torch's internal, does not matter.
at::Tensor onednn_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t stride, int64_t padding,
                       const std::string& act) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_convolution_pointwise", "");
  const std::string attr = act == "silu" ? "swish" : act;
  torch::jit::Stack stack{x,
                          w,
                          b,
                          std::vector<int64_t>{padding, padding},
                          std::vector<int64_t>{stride, stride},
                          std::vector<int64_t>{1, 1},
                          int64_t{1},
                          attr,
                          c10::List<c10::optional<at::Scalar>>(),
                          act == "gelu" ? c10::IValue(std::string("none")) : c10::IValue()};
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

// oneDNN's convolution (3x3, stride 1, padding 1) + other, by the binary form of the same op
// (cpu_fusion.conv_add_onednn).
at::Tensor onednn_conv_add(const at::Tensor& x, const at::Tensor& other, const at::Tensor& w, const at::Tensor& b) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_convolution_pointwise", "binary");
  torch::jit::Stack stack{x,
                          other,
                          w,
                          b,
                          std::vector<int64_t>{1, 1},
                          std::vector<int64_t>{1, 1},
                          std::vector<int64_t>{1, 1},
                          int64_t{1},
                          std::string("add"),
                          c10::IValue(),
                          c10::IValue(),
                          c10::List<c10::optional<at::Scalar>>(),
                          c10::IValue()};
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

// act(shortcut(x) + conv2(act(conv1(x)))), conv2 by Winograd with the add and act in its epilogue (or,
// flag 8, oneDNN's conv + add, then the act in place).
at::Tensor residual_block(const Net& net, const Step& s, const at::Tensor& x) {
  const int64_t w = s.w0;
  if (s.flags & kStemConv) {  // conv1 and the shortcut in one pass
    auto [t, shortcut] = stem_conv_eval_cpu(x, weight(net, w), weight(net, w + 1), weight(net, w + 4),
                                            weight(net, w + 5), s.stride, s.padding, net.act);
    return conv3x3_winograd_eval_cpu(t, weight(net, w + 2), weight(net, w + 3), shortcut, net.act);
  }
  const at::Tensor t = (s.flags & kWinogradConv1)
                           ? conv3x3_winograd_eval_cpu(x, weight(net, w), weight(net, w + 1), c10::nullopt, net.act)
                           : onednn_conv(x, weight(net, w), weight(net, w + 1), s.stride, s.padding, net.act);
  const at::Tensor shortcut =
      (s.flags & kShortcutConv) ? onednn_conv(x, weight(net, w + 4), weight(net, w + 5), s.stride, 0, "none") : x;
  if (s.flags & kOneDnnConv2) {
    at::Tensor y = onednn_conv_add(t, shortcut, weight(net, w + 2), weight(net, w + 3));
    return net.act == "gelu" ? at::gelu_(y) : at::silu_(y);
  }
  return conv3x3_winograd_eval_cpu(t, weight(net, w + 2), weight(net, w + 3), shortcut, net.act);
}

at::Tensor mbconv_block(const Net& net, const Step& s, const at::Tensor& x) {
  const int64_t w = s.w0;
  c10::optional<at::Tensor> own = maybe_weight(net, w + 10);
  return mbconv_eval_cpu(x, own.has_value() ? c10::nullopt : c10::optional<at::Tensor>(x), weight(net, w),
                         weight(net, w + 1), weight(net, w + 2), weight(net, w + 3), weight(net, w + 4),
                         weight(net, w + 5), weight(net, w + 6), weight(net, w + 7), weight(net, w + 8),
                         weight(net, w + 9), s.stride, net.act, net.gate, own);
}

// x (N, C, H, W) copied to channels_last by a loop: at batch 1 the ATen copy was one of the calls that cost
// ~50-90 us each inside this op (their code no longer in the caches after the blocks), against their
// few us back to back.
at::Tensor channels_last_copy(const at::Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = at::empty({N, C, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* px = x.const_data_ptr<float>();
  float* py = y.mutable_data_ptr<float>();
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w, py += C)
        for (int64_t c = 0; c < C; ++c) py[c] = px[n * sn + c * sc + h * sh + w * sw];
  return y;
}

// The Yin input of channels_last x: (N, 1, H, W) with channels_last strides (cpu_fusion.one_channel_last),
// the channel mean or the first channel. The mean as torch's CPU mean computes it for these shapes (the
// channels summed in order from 0, then divided by C), so the block-by-block path's bits (tests).
at::Tensor yin_input(const at::Tensor& xc, bool mean) {
  const int64_t N = xc.size(0), C = xc.size(1), H = xc.size(2), W = xc.size(3);
  at::Tensor y = at::empty_strided({N, 1, H, W}, {H * W, 1, W, 1}, xc.options());
  const float* px = xc.const_data_ptr<float>();
  float* py = y.mutable_data_ptr<float>();
  const float count = static_cast<float>(C);
  for (int64_t i = 0; i < N * H * W; ++i, px += C) {
    if (!mean) {
      py[i] = px[0];
      continue;
    }
    float sum = 0.0f;
    for (int64_t c = 0; c < C; ++c) sum += px[c];
    py[i] = sum / count;
  }
  return y;
}

at::Tensor run_chain(const Net& net, const std::vector<Step>& steps, at::Tensor x) {
  for (const Step& s : steps) x = s.kind == 0 ? residual_block(net, s, x) : mbconv_block(net, s, x);
  return x;
}

// The plan's blocks, with their weight offsets; checks the counts against the weights given.
void parse(const std::vector<int64_t>& plan, int64_t n_weights, Net& net) {
  TORCH_CHECK(plan.size() >= kHeader, kOp, ": plan must start with 4 entries, got ", plan.size());
  const int64_t counts[3] = {plan[1], plan[2], plan[3]};
  TORCH_CHECK(counts[0] >= 0 && counts[1] >= 0 && counts[2] >= 0 &&
                  static_cast<int64_t>(plan.size()) == kHeader + kPerBlock * (counts[0] + counts[1] + counts[2]),
              kOp, ": plan has ", plan.size(), " entries, which does not match its block counts");
  std::vector<Step>* chains[3] = {&net.yang, &net.yin, &net.single};
  int64_t p = kHeader, w = 0;
  for (int c = 0; c < 3; ++c)
    for (int64_t b = 0; b < counts[c]; ++b, p += kPerBlock) {
      const Step s{plan[p], plan[p + 1], plan[p + 2], plan[p + 3], w};
      TORCH_CHECK((s.kind == 0 || s.kind == 1) && s.stride >= 1, kOp, ": plan block ", b, " of chain ", c,
                  " is not a Residual (0) or MBConv (1) with a positive stride");
      w += s.kind == 0 ? kResidualWeights : kMBConvWeights;
      chains[c]->push_back(s);
    }
  TORCH_CHECK(w == n_weights, kOp, ": the plan's blocks take ", w, " weights, got ", n_weights);
}

at::Tensor yynet_features_eval_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& weights,
                                   std::vector<int64_t> plan, std::vector<double> fusion, std::string act,
                                   std::string gate) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat, kOp,
              ": x must be a 4-d float32 CPU tensor, got ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(fusion.size() == 3, kOp, ": fusion must hold (c1, c2, c3), got ", fusion.size(), " values");
  TORCH_CHECK(act == "gelu" || act == "silu", kOp, ": act must be 'gelu' or 'silu', got '", act, "'");
  Net net{&weights, {}, {}, {}, act, gate};
  parse(plan, static_cast<int64_t>(weights.size()), net);
  TORCH_CHECK(plan[0] == 0 || plan[0] == 1, kOp, ": plan[0] (the Yin input) must be 0 (mean) or 1 (first channel)");
  TORCH_CHECK(!net.yang.empty() && !net.yin.empty(), kOp, ": both stems need at least one block");
  const at::Tensor xc = x.is_contiguous(at::MemoryFormat::ChannelsLast) ? x : channels_last_copy(x);
  const at::Tensor yin_in = yin_input(xc, plan[0] == 0);
  const at::Tensor a = run_chain(net, net.yang, xc);
  const at::Tensor i = run_chain(net, net.yin, yin_in);
  return run_chain(net, net.single, fuse_cpu(a, i, fusion[0], fusion[1], fusion[2]));
}

// The logits: the features, then the head (head_eval, what InferenceYYNet.forward_head calls too).
at::Tensor yynet_eval_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& weights,
                          std::vector<int64_t> plan, std::vector<double> fusion, std::string act, std::string gate,
                          const at::Tensor& fc_weight, const at::Tensor& fc_bias, const at::Tensor& cls_weight,
                          const at::Tensor& cls_bias) {
  // head_eval checks the head's weights (its errors name it)
  return head_eval_cpu(yynet_features_eval_cpu(x, weights, plan, fusion, act, gate), fc_weight, fc_bias, cls_weight,
                       cls_bias, act, false);
}

}  // namespace

// The head on features f (N, C, H, W), float32 CPU: logits = cls(act(fc(mean over H, W))), or the
// activations before the classifier (pre_logits), each sum in double (a plain loop: four ATen calls, mean,
// addmm, act, addmm, took ~90-200 us at batch 1 after the blocks, their code no longer cached). Weights in
// any strides.
at::Tensor head_eval_cpu(const at::Tensor& f, const at::Tensor& fc_weight, const at::Tensor& fc_bias,
                         const at::Tensor& cls_weight, const at::Tensor& cls_bias, const std::string& act,
                         bool pre_logits) {
  constexpr const char* op = "head_eval";
  TORCH_CHECK(f.dim() == 4 && f.device().is_cpu() && f.scalar_type() == at::kFloat, op,
              ": features must be a 4-d float32 CPU tensor, got ", f.sizes(), " ", f.scalar_type(), " on ", f.device());
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
  TORCH_CHECK(HW > 0, op, ": features must have a non-empty image, got ", f.sizes());
  for (const at::Tensor* t : {&fc_weight, &fc_bias, &cls_weight, &cls_bias})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, op,
                ": the head's weights must be float32 CPU tensors, got ", t->scalar_type(), " on ", t->device());
  TORCH_CHECK(
      fc_weight.dim() == 2 && fc_weight.size(1) == C && fc_bias.dim() == 1 && fc_bias.size(0) == fc_weight.size(0), op,
      ": fc_weight must be (F, ", C, ") and fc_bias (F), got ", fc_weight.sizes(), " and ", fc_bias.sizes());
  TORCH_CHECK(cls_weight.dim() == 2 && cls_weight.size(1) == fc_weight.size(0) && cls_bias.dim() == 1 &&
                  cls_bias.size(0) == cls_weight.size(0),
              op, ": cls_weight must be (classes, ", fc_weight.size(0), ") and cls_bias (classes), got ",
              cls_weight.sizes(), " and ", cls_bias.sizes());
  TORCH_CHECK(act == "gelu" || act == "silu", op, ": act must be 'gelu' or 'silu', got '", act, "'");
  const int a = act == "gelu" ? kGelu : kSilu;
  const int64_t F = fc_weight.size(0), K = cls_weight.size(0);
  at::Tensor out = at::empty({N, pre_logits ? F : K}, f.options().memory_format(at::MemoryFormat::Contiguous));
  const float *w1 = fc_weight.const_data_ptr<float>(), *b1 = fc_bias.const_data_ptr<float>();
  const float *w2 = cls_weight.const_data_ptr<float>(), *b2 = cls_bias.const_data_ptr<float>();
  const int64_t w1r = fc_weight.stride(0), w1c = fc_weight.stride(1), w2r = cls_weight.stride(0),
                w2c = cls_weight.stride(1), b1s = fc_bias.stride(0), b2s = cls_bias.stride(0);
  const float* pf = f.const_data_ptr<float>();
  const int64_t fn = f.stride(0), fc = f.stride(1), fh = f.stride(2), fw = f.stride(3), W = f.size(3);
  float* po = out.mutable_data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    std::vector<double> m(C), h(F);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(m.begin(), m.end(), 0.0);
      for (int64_t p = 0; p < HW; ++p) {
        const float* row = pf + n * fn + (p / W) * fh + (p % W) * fw;
        for (int64_t c = 0; c < C; ++c) m[c] += row[c * fc];
      }
      for (int64_t c = 0; c < C; ++c) m[c] = static_cast<float>(m[c] / static_cast<double>(HW));
      for (int64_t j = 0; j < F; ++j) {
        double acc = b1[j * b1s];
        for (int64_t c = 0; c < C; ++c) acc += static_cast<double>(w1[j * w1r + c * w1c]) * m[c];
        h[j] = static_cast<float>(act_forward(a, acc));
      }
      float* o = po + n * (pre_logits ? F : K);
      if (pre_logits) {
        for (int64_t j = 0; j < F; ++j) o[j] = static_cast<float>(h[j]);
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        double acc = b2[k * b2s];
        for (int64_t j = 0; j < F; ++j) acc += static_cast<double>(w2[k * w2r + j * w2c]) * h[j];
        o[k] = static_cast<float>(acc);
      }
    }
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(yyfast, m) {
  m.def(
      "head_eval(Tensor features, Tensor fc_weight, Tensor fc_bias, Tensor cls_weight, Tensor cls_bias, str act, "
      "bool pre_logits=False) -> Tensor");
  m.def("yynet_features_eval(Tensor x, Tensor?[] weights, int[] plan, float[] fusion, str act, str gate) -> Tensor");
  m.def(
      "yynet_eval(Tensor x, Tensor?[] weights, int[] plan, float[] fusion, str act, str gate, Tensor fc_weight, "
      "Tensor fc_bias, Tensor cls_weight, Tensor cls_bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(yyfast, CPU, m) {
  m.impl("yynet_features_eval", &yynet_features_eval_cpu);
  m.impl("yynet_eval", &yynet_eval_cpu);
  m.impl("head_eval", &head_eval_cpu);
}

}  // namespace yyfast
