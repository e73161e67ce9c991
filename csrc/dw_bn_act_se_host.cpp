// Host-side helpers of dw_bn_act_se (see dw_bn_act_se_host.h).
#include "dw_bn_act_se_host.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/sum.h>

#include "common/dw_bn_act_se_math.h"

namespace yyfast {

namespace {
void check_vec(const char* op, const char* name, const at::Tensor& t, int64_t len, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == len, op, ": ", name, " must have shape (", len, "), got ", t.sizes());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be a floating tensor, got ", t.scalar_type());
}
void check_mat(const char* op, const char* name, const at::Tensor& t, int64_t rows, int64_t cols, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, op, ": ", name, " must have shape (", rows, ", ",
              cols, "), got ", t.sizes());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be a floating tensor, got ", t.scalar_type());
}
}  // namespace

SpanDims check_span_args(const char* op, const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& bn_weight,
                         const at::Tensor& bn_bias, const at::Tensor& mean_or_running, const at::Tensor& var_or_running,
                         const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2,
                         const at::Tensor& se_b2, int64_t stride, const std::string& act, const std::string& gate,
                         c10::DeviceType device_type) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(x.device().type() == device_type, op, ": x is on ", x.device(), ", this implementation runs on ",
              device_type);
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble, op,
              ": x must be float32, float16, bfloat16 or float64, got ", st);
  TORCH_CHECK(stride == 1 || stride == 2, op, ": stride must be 1 or 2, got ", stride);
  SpanDims d{};
  d.n = x.size(0);
  d.c = x.size(1);
  d.h = x.size(2);
  d.w = x.size(3);
  TORCH_CHECK(d.n > 0 && d.c > 0 && d.h > 0 && d.w > 0, op, ": x must have no empty dimension, got ", x.sizes());
  d.ho = conv3x3_out_size(d.h, static_cast<int>(stride));
  d.wo = conv3x3_out_size(d.w, static_cast<int>(stride));
  TORCH_CHECK(dw_weight.dim() == 4 && dw_weight.size(0) == d.c && dw_weight.size(1) == 1 && dw_weight.size(2) == 3 &&
                  dw_weight.size(3) == 3,
              op, ": dw_weight must have shape (", d.c, ", 1, 3, 3), got ", dw_weight.sizes());
  TORCH_CHECK(dw_weight.device() == x.device(), op, ": dw_weight is on ", dw_weight.device(), " but x is on ",
              x.device());
  check_vec(op, "bn_weight", bn_weight, d.c, x);
  check_vec(op, "bn_bias", bn_bias, d.c, x);
  check_vec(op, "mean/running_mean", mean_or_running, d.c, x);
  check_vec(op, "var/running_var", var_or_running, d.c, x);
  TORCH_CHECK(se_b1.dim() == 1, op, ": se_b1 must be 1-D, got shape ", se_b1.sizes());
  d.hidden = se_b1.size(0);
  TORCH_CHECK(d.hidden > 0, op, ": se_b1 must not be empty");
  check_vec(op, "se_b1", se_b1, d.hidden, x);
  check_mat(op, "se_w1", se_w1, d.hidden, d.c, x);
  check_mat(op, "se_w2", se_w2, d.c, d.hidden, x);
  check_vec(op, "se_b2", se_b2, d.c, x);
  TORCH_CHECK(act == "gelu" || act == "silu", op, ": act must be 'gelu' or 'silu', got '", act, "'");
  TORCH_CHECK(gate == "sigmoid" || gate == "hardsigmoid", op, ": gate must be 'sigmoid' or 'hardsigmoid', got '", gate,
              "'");
  d.act = act == "gelu" ? kGelu : kSilu;
  d.gate = gate == "sigmoid" ? kSigmoid : kHardSigmoid;
  return d;
}

SpanDims check_span_backward_args(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                                  const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
                                  const at::Tensor& mean, const at::Tensor& var, const at::Tensor& pooled,
                                  const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2,
                                  const at::Tensor& se_b2, int64_t stride, const std::string& act,
                                  const std::string& gate, c10::DeviceType device_type) {
  const SpanDims d = check_span_args(op, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2,
                                     stride, act, gate, device_type);
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == d.n && grad_y.size(1) == d.c && grad_y.size(2) == d.ho &&
                  grad_y.size(3) == d.wo,
              op, ": grad_y must have shape (", d.n, ", ", d.c, ", ", d.ho, ", ", d.wo, "), got ", grad_y.sizes());
  TORCH_CHECK(grad_y.device() == x.device(), op, ": grad_y is on ", grad_y.device(), " but x is on ", x.device());
  TORCH_CHECK(pooled.dim() == 2 && pooled.size(0) == d.n && pooled.size(1) == d.c, op, ": pooled must have shape (",
              d.n, ", ", d.c, "), got ", pooled.sizes());
  TORCH_CHECK(pooled.device() == x.device(), op, ": pooled is on ", pooled.device(), " but x is on ", x.device());
  return d;
}

at::ScalarType acc_type_for(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor acc_copy(const at::Tensor& t, at::ScalarType acc) {
  return t.to(t.options().dtype(acc), /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::Contiguous);
}

SpanParams::SpanParams(const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
                       const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2,
                       const at::Tensor& se_b2, at::ScalarType acc, DwWeightLayout layout) {
  const at::Tensor w_c9 = dw_weight.reshape({dw_weight.size(0), 9});
  dw = acc_copy(layout == DwWeightLayout::kTapMajor ? w_c9.t() : w_c9, acc);
  gamma = acc_copy(bn_weight, acc);
  beta = acc_copy(bn_bias, acc);
  w1 = acc_copy(se_w1, acc);
  b1 = acc_copy(se_b1, acc);
  w2 = acc_copy(se_w2, acc);
  b2 = acc_copy(se_b2, acc);
  if (layout == DwWeightLayout::kTapMajor) {
    w1t = w1.t().contiguous();
    w2t = w2.t().contiguous();
  }
}

at::MemoryFormat output_format(const at::Tensor& x) {
  return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous;
}

at::Tensor in_format(const at::Tensor& y, at::MemoryFormat fmt) {
  at::Tensor out = at::empty(y.sizes(), y.options().memory_format(fmt));
  if (out.strides() == y.strides()) return y;
  out.copy_(y);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> se_param_grads(
    const at::Tensor& gh2, const at::Tensor& a1, const at::Tensor& gh1, const at::Tensor& pooled,
    const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2) {
  at::Tensor gw1 = at::matmul(gh1.t(), pooled).to(se_w1.scalar_type());  // (hidden, C)
  at::Tensor gb1 = at::sum(gh1, {0}).to(se_b1.scalar_type());
  at::Tensor gw2 = at::matmul(gh2.t(), a1).to(se_w2.scalar_type());  // (C, hidden)
  at::Tensor gb2 = at::sum(gh2, {0}).to(se_b2.scalar_type());
  return {gw1.contiguous(), gb1, gw2.contiguous(), gb2};
}

SpanGrads span_grads(const at::Tensor& gx, at::MemoryFormat fmt, const at::Tensor& gw_c9, const at::Tensor& ggamma,
                     const at::Tensor& gbeta, const at::Tensor& gh2, const at::Tensor& a1, const at::Tensor& gh1,
                     const at::Tensor& pooled, const at::Tensor& dw_weight, const at::Tensor& bn_weight,
                     const at::Tensor& bn_bias, const at::Tensor& se_w1, const at::Tensor& se_b1,
                     const at::Tensor& se_w2, const at::Tensor& se_b2) {
  auto se = se_param_grads(gh2, a1, gh1, pooled, se_w1, se_b1, se_w2, se_b2);
  return {in_format(gx, fmt),
          gw_c9.reshape(dw_weight.sizes()).to(dw_weight.scalar_type()),
          ggamma.to(bn_weight.scalar_type()),
          gbeta.to(bn_bias.scalar_type()),
          std::get<0>(se),
          std::get<1>(se),
          std::get<2>(se),
          std::get<3>(se)};
}

}  // namespace yyfast
