// Host-side helpers of dw_bn_act_se shared by the CPU and the CUDA implementations (and the CUDA
// emulator, which compiles the CUDA launch code): argument checks that name the bad argument, the
// parameters in the accumulation dtype (SpanParams), the SE parameter gradients (tiny matmuls, done
// with ATen ops on whatever device the tensors are on), and the output memory format.
// Compiled once in dw_bn_act_se_host.cpp, so the .cu files stay light to compile.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <tuple>

namespace yyfast {

struct SpanDims {
  int64_t n, c, h, w, ho, wo, hidden;
  int act, gate;
};

// Checks every argument of the forward op (shape, dtype, device) and returns the sizes.
// `device_type` is the device the implementation runs on (CPU or CUDA).
SpanDims check_span_args(const char* op, const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& bn_weight,
                         const at::Tensor& bn_bias, const at::Tensor& mean_or_running, const at::Tensor& var_or_running,
                         const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2,
                         const at::Tensor& se_b2, int64_t stride, const std::string& act, const std::string& gate,
                         c10::DeviceType device_type);

// Checks every argument of the backward op: those of the forward (check_span_args, with the saved
// batch or running statistics as mean/var), then grad_y (N, C, Ho, Wo) and pooled (N, C).
SpanDims check_span_backward_args(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                                  const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
                                  const at::Tensor& mean, const at::Tensor& var, const at::Tensor& pooled,
                                  const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2,
                                  const at::Tensor& se_b2, int64_t stride, const std::string& act,
                                  const std::string& gate, c10::DeviceType device_type);

// The accumulation dtype for x's dtype: double for double, float otherwise.
at::ScalarType acc_type_for(at::ScalarType t);

// A fresh contiguous copy of `t` in dtype `acc` (never an alias of t: op outputs must not alias inputs).
at::Tensor acc_copy(const at::Tensor& t, at::ScalarType acc);

// How a backend's kernels read the depthwise weight.
enum class DwWeightLayout {
  kChannelMajor,  // (C, 9): the CUDA kernels, where a thread owns a channel and loads its nine taps
  kTapMajor,      // (9, C): the CPU kernels, whose loops run over contiguous channels under each tap
};

// The op's parameters as fresh contiguous copies in the accumulation dtype, as the kernels read them:
// dw the depthwise weight in `layout`; gamma, beta, b1, b2 vectors; w1 (hid, C), w2 (C, hid). With
// kTapMajor also w1t (C, hid) and w2t (hid, C): the CPU SE matrix-vector products read those row by
// row (the CUDA kernels give a warp a row of w1 and a thread a row of w2, so they need no transposes).
struct SpanParams {
  at::Tensor dw, gamma, beta, w1, b1, w2, b2, w1t, w2t;
  SpanParams(const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
             const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2,
             at::ScalarType acc, DwWeightLayout layout);
};

// Returns a fresh tensor with y's values in memory format `fmt` (y itself if it already has
// exactly the strides a fresh tensor of that format would have).
at::Tensor in_format(const at::Tensor& y, at::MemoryFormat fmt);

// The memory format the op's output uses for input x: channels_last iff x suggests it.
at::MemoryFormat output_format(const at::Tensor& x);

// SE parameter gradients from the per-sample quantities (all float/double accumulation dtype):
// gW1 = gh1^T p, gb1 = sum_n gh1, gW2 = gh2^T a1, gb2 = sum_n gh2; returned in the dtypes of
// se_w1, se_b1, se_w2, se_b2.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> se_param_grads(
    const at::Tensor& gh2, const at::Tensor& a1, const at::Tensor& gh1, const at::Tensor& pooled,
    const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2);

// The eight gradients of dw_bn_act_se_backward, in schema order: x, dw_weight, bn_weight, bn_bias,
// se_w1, se_b1, se_w2, se_b2.
using SpanGrads =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Packs what a backward implementation computed into its outputs: grad_x in memory format `fmt`,
// the (C, 9) depthwise-weight gradient and the BN gradients in their parameters' shapes and dtypes,
// and the SE parameter gradients (se_param_grads).
SpanGrads span_grads(const at::Tensor& gx, at::MemoryFormat fmt, const at::Tensor& gw_c9, const at::Tensor& ggamma,
                     const at::Tensor& gbeta, const at::Tensor& gh2, const at::Tensor& a1, const at::Tensor& gh1,
                     const at::Tensor& pooled, const at::Tensor& dw_weight, const at::Tensor& bn_weight,
                     const at::Tensor& bn_bias, const at::Tensor& se_w1, const at::Tensor& se_b1,
                     const at::Tensor& se_w2, const at::Tensor& se_b2);

}  // namespace yyfast
