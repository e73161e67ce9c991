// The CPU eval ops that yynet_eval.cpp's whole-forward runner calls directly (each is also registered as
// its own op, in its own file): the signatures of their registered implementations.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <tuple>
#include <vector>

namespace yyfast {

// yyfast::mbconv_eval (mbconv_eval.cpp): a whole BatchNorm-folded MBConv block, float32 channels_last.
at::Tensor mbconv_eval_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& residual, const at::Tensor& expand_wt,
                           const at::Tensor& expand_b, const at::Tensor& dw_wt, const at::Tensor& dw_b,
                           const at::Tensor& se_w1t, const at::Tensor& se_b1, const at::Tensor& se_w2t,
                           const at::Tensor& se_b2, const at::Tensor& proj_wt, const at::Tensor& proj_b, int64_t stride,
                           std::string act, std::string gate, const c10::optional<at::Tensor>& shortcut_wt);

// yyfast::conv3x3_winograd_eval (winograd_conv.cpp): act(conv3x3(x) + bias (+ residual)) by Winograd.
at::Tensor conv3x3_winograd_eval_cpu(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias,
                                     const c10::optional<at::Tensor>& residual, std::string act);

// yyfast::yinyang_fuse on the CPU (yinyang_fuse.cpp): c1*a*i + c2*a + c3*i.
at::Tensor fuse_cpu(const at::Tensor& a_in, const at::Tensor& i_in, double c1, double c2, double c3);

// yyfast::stem_conv_eval (stem_conv.cpp): a stem's act(conv3x3(x) + bias) and its 1x1 shortcut.
std::tuple<at::Tensor, at::Tensor> stem_conv_eval_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                      const at::Tensor& bias, const at::Tensor& shortcut_weight,
                                                      const at::Tensor& shortcut_bias, int64_t stride, int64_t padding,
                                                      std::string act);

// yyfast::same_values (same_values.cpp): whether every tensor holds its snapshot's bytes.
bool same_values(const std::vector<at::Tensor>& current, const std::vector<at::Tensor>& snapshot);

// yyfast::arena_enter / arena_exit (inference_arena.cpp): the CPU allocator is the arena between them
// (enter returns false, and exit must not follow, where a higher-priority allocator stays).
bool arena_enter();
void arena_exit();

}  // namespace yyfast
