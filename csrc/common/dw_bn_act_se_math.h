// Per-element math of dw_bn_act_se, shared by the C++ CPU kernels (cpu/dw_bn_act_se.cpp) and the
// CUDA kernels (cuda/dw_bn_act_se.cu): BN affine, the activations and gates with their
// derivatives, and the BatchNorm backward coefficient. One definition, so the CPU tests (and the
// libtorch-free ctest in csrc/tests) prove the GPU's math. T is the accumulation type: float for
// float/half/bfloat16 storage, double for double. Plain C++14: also compiled by nvcc and torch 2.11.
#pragma once
#include <math.h>

#include "macros.h"

namespace yyfast {

// Runtime codes for the activation and the SE gate (kernels branch on them uniformly; templating
// on them would multiply compile time by four for no measurable gain in a memory-bound op).
enum ActKind : int { kGelu = 0, kSilu = 1 };
enum GateKind : int { kSigmoid = 0, kHardSigmoid = 1 };

// Explicit float/double overloads (erff, expf, sqrtf exist on host and device alike), so float
// math never silently widens to double on the host.
YY_HD float yy_erf(float v) { return erff(v); }
YY_HD double yy_erf(double v) { return erf(v); }
YY_HD float yy_exp(float v) { return expf(v); }
YY_HD double yy_exp(double v) { return exp(v); }
YY_HD float yy_sqrt(float v) { return sqrtf(v); }
YY_HD double yy_sqrt(double v) { return sqrt(v); }

// 1/sqrt(var + eps): the BatchNorm scale before gamma.
template <typename T>
YY_HD T bn_rstd(T var, T eps) {
  return T(1) / yy_sqrt(var + eps);
}

// u = (z - mean) * rstd * gamma + beta, written as z*scale + shift with per-channel constants.
template <typename T>
YY_HD T bn_scale(T rstd, T gamma) { return rstd * gamma; }
template <typename T>
YY_HD T bn_shift(T mean, T scale, T beta) { return beta - mean * scale; }
template <typename T>
YY_HD T bn_affine(T z, T scale, T shift) { return z * scale + shift; }

// GELU, erf form: u * Phi(u).
template <typename T>
YY_HD T gelu(T u) {
  return T(0.5) * u * (T(1) + yy_erf(u * T(0.70710678118654752440)));
}
// d/du GELU = Phi(u) + u * phi(u).
template <typename T>
YY_HD T gelu_grad(T u) {
  const T cdf = T(0.5) * (T(1) + yy_erf(u * T(0.70710678118654752440)));
  const T pdf = T(0.39894228040143267794) * yy_exp(T(-0.5) * u * u);
  return cdf + u * pdf;
}

template <typename T>
YY_HD T sigmoid(T v) {
  return T(1) / (T(1) + yy_exp(-v));
}
// d/dv sigmoid = s (1 - s).
template <typename T>
YY_HD T sigmoid_grad(T v) {
  const T s = sigmoid(v);
  return s * (T(1) - s);
}

// SiLU: u * sigmoid(u).
template <typename T>
YY_HD T silu(T u) {
  return u * sigmoid(u);
}
// d/du SiLU = s (1 + u (1 - s)).
template <typename T>
YY_HD T silu_grad(T u) {
  const T s = sigmoid(u);
  return s * (T(1) + u * (T(1) - s));
}

// hardsigmoid = clamp(v/6 + 1/2, 0, 1); its derivative is 1/6 strictly inside (-3, 3) and 0
// outside, exactly as torch's hardsigmoid_backward -- including its constant, the float 1.0f/6.0f
// even for double (ATen's CPU and CUDA kernels both write it so; the float64 reference uses it).
template <typename T>
YY_HD T hardsigmoid(T v) {
  const T r = v / T(6) + T(0.5);
  return r < T(0) ? T(0) : (r > T(1) ? T(1) : r);
}
template <typename T>
YY_HD T hardsigmoid_grad(T v) {
  return (v > T(-3) && v < T(3)) ? T(1.0f / 6.0f) : T(0);
}

template <typename T>
YY_HD T act_forward(int act, T u) {
  return act == kGelu ? gelu(u) : silu(u);
}
template <typename T>
YY_HD T act_grad(int act, T u) {
  return act == kGelu ? gelu_grad(u) : silu_grad(u);
}
template <typename T>
YY_HD T gate_forward(int gate, T v) {
  return gate == kSigmoid ? sigmoid(v) : hardsigmoid(v);
}
template <typename T>
YY_HD T gate_grad(int gate, T v) {
  return gate == kSigmoid ? sigmoid_grad(v) : hardsigmoid_grad(v);
}

// d loss / d d (the activated output) at one element: the direct path through y = d * s, plus
// the SE pooling path (gp = d loss / d mean_hw(d), spread evenly over the hw positions).
template <typename T>
YY_HD T span_grad_d(T gy, T s, T gp, T inv_hw) {
  return gy * s + gp * inv_hw;
}

// BatchNorm input gradient. Training: gz = gamma*rstd*(gu - mean(gu) - zhat*mean(gu*zhat)),
// the means over (N, Ho, Wo) being gbeta/M and ggamma/M; eval (fixed statistics): gz = gu*gamma*rstd.
template <typename T>
YY_HD T bn_grad_input(T gu, T zhat, T scale, T mean_gu, T mean_gu_zhat, bool training) {
  return training ? scale * (gu - mean_gu - zhat * mean_gu_zhat) : gu * scale;
}

// Chan et al.'s merge of two (count, mean, M2) partial statistics: numerically safe where
// sum/sum-of-squares would cancel. Result in (n_a, mean_a, m2_a).
template <typename T>
YY_HD void welford_merge(T& n_a, T& mean_a, T& m2_a, T n_b, T mean_b, T m2_b) {
  const T n = n_a + n_b;
  if (n_b == T(0)) return;
  const T delta = mean_b - mean_a;
  const T frac = n_b / n;
  mean_a += delta * frac;
  m2_a += m2_b + delta * delta * n_a * frac;
  n_a = n;
}

// Welford's running update of (count, mean, M2) with one more value v.
template <typename T>
YY_HD void welford_add(T& n, T& mean, T& m2, T v) {
  n += T(1);
  const T delta = v - mean;
  mean += delta / n;
  m2 += delta * (v - mean);
}

// Output size of a 3x3 convolution with padding 1.
YY_HD long long conv3x3_out_size(long long in, int stride) { return (in - 1) / stride + 1; }

}  // namespace yyfast
