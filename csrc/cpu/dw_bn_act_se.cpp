// C++ CPU implementation of dw_bn_act_se (forward and backward, training and eval): the twin of
// cuda/dw_bn_act_se.cu, built on the same per-element math (common/dw_bn_act_se_math.h).
//
// Layout: the kernels work in channels_last (N, H, W, C): every inner loop runs over contiguous
// channels. NCHW input is converted on the way in and the result converted back.
// Kernels: float32 accumulation (float, half and bfloat16 storage) uses the vectorised per-sample
// kernels of span_kernels.h (AVX2+FMA when the CPU has it); double uses the scalar templates below,
// which also serve as their readable statement.
// Parallelism: over samples (at::parallel_for over N). One sample's depthwise output lives in a
// per-thread buffer (Ho*Wo*C floats: 1 MB at 256 channels 32x32), so everything done to it after
// the convolution (BN, activation, SE pooling, SE scaling) runs from cache.
//
// Passes over x: eval forward 1 (conv+BN+act+pool -> buffer -> SE -> scale); training forward 2
// (statistics, then the eval pass with the batch statistics); backward 1 (eval) or 2 (training: the
// per-channel sums of the BN backward are needed before any input gradient).
// Statistics accumulate per sample in the accumulation type (float, or double for double) as a
// (mean, M2) pair, merged across samples in double with Chan's formula: no sum-of-squares cancellation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common/dw_bn_act_se_math.h"
#include "../dw_bn_act_se_host.h"
#include "span_kernels.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "dw_bn_act_se";
constexpr const char* kBackwardOp = "dw_bn_act_se_backward";

// The scalar kernels for double accumulation: the same per-sample contracts as SpanCpuKernels
// (span_kernels.h), written plainly.
template <typename T>
struct ScalarSpan {
  static void conv(const T* x, const T* wt, const T* scale, const T* shift, int act, T* z, T* psum, const Geom& g) {
    const int64_t C = g.c;
    if (scale != nullptr) std::fill(psum, psum + C, T(0));
    int64_t xoff[9], woff[9];
    for (int64_t oh = 0; oh < g.ho; ++oh)
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        T* zr = z + (oh * g.wo + ow) * C;
        std::fill(zr, zr + C, T(0));
        const int nt = valid_taps(g, oh, ow, xoff, woff);
        for (int t = 0; t < nt; ++t)
          for (int64_t k = 0; k < C; ++k) zr[k] += x[xoff[t] + k] * wt[woff[t] + k];
        if (scale != nullptr)
          for (int64_t k = 0; k < C; ++k) {
            zr[k] = act_forward(act, bn_affine(zr[k], scale[k], shift[k]));
            psum[k] += zr[k];
          }
      }
  }
  static void stats(const T* z, int64_t rows, int64_t C, T* mean, T* m2) {
    std::fill(mean, mean + C, T(0));
    std::fill(m2, m2 + C, T(0));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < C; ++k) mean[k] += z[r * C + k];
    for (int64_t k = 0; k < C; ++k) mean[k] /= static_cast<T>(rows);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < C; ++k) m2[k] += (z[r * C + k] - mean[k]) * (z[r * C + k] - mean[k]);
  }
  static void scale_rows(const T* d, const T* s, T* y, int64_t rows, int64_t C) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < C; ++k) y[r * C + k] = d[r * C + k] * s[k];
  }
  static void se_mlp(const T* p, const T* w1t, const T* b1, const T* w2t, const T* b2, int64_t C, int64_t hid, int act,
                     T* h1, T* a1, T* h2) {
    for (int64_t j = 0; j < hid; ++j) {
      T t = b1[j];
      for (int64_t k = 0; k < C; ++k) t += w1t[k * hid + j] * p[k];
      h1[j] = t;
      a1[j] = act_forward(act, t);
    }
    for (int64_t k = 0; k < C; ++k) {
      T t = b2[k];
      for (int64_t j = 0; j < hid; ++j) t += w2t[j * C + k] * a1[j];
      h2[k] = t;
    }
  }
  static void bwd_gate_sum(const T* z, const T* gy, const T* scale, const T* shift, int act, T* u, T* gs, int64_t rows,
                           int64_t C) {
    std::fill(gs, gs + C, T(0));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < C; ++k) {
        u[r * C + k] = bn_affine(z[r * C + k], scale[k], shift[k]);
        gs[k] += gy[r * C + k] * act_forward(act, u[r * C + k]);
      }
  }
  static void bwd_gu(const T* z, const T* u, const T* gy, const T* s, const T* gp, T inv_hw, const T* mean,
                     const T* rstd, const T* scale, int act, bool training, T* out, T* gb, T* gg, int64_t rows,
                     int64_t C) {
    std::fill(gb, gb + C, T(0));
    std::fill(gg, gg + C, T(0));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < C; ++k) {
        const int64_t i = r * C + k;
        const T zhat = (z[i] - mean[k]) * rstd[k];
        const T gu = span_grad_d(gy[i], s[k], gp[k], inv_hw) * act_grad(act, u[i]);
        gb[k] += gu;
        gg[k] += gu * zhat;
        out[i] = training ? gu : bn_grad_input(gu, zhat, scale[k], T(0), T(0), false);
      }
  }
  static void bwd_bn_train(const T* z, const T* gu, const T* mean, const T* rstd, const T* scale, const T* mgu,
                           const T* mguz, T* gz, int64_t rows, int64_t C) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < C; ++k) {
        const T zhat = (z[r * C + k] - mean[k]) * rstd[k];
        gz[r * C + k] = bn_grad_input(gu[r * C + k], zhat, scale[k], mgu[k], mguz[k], true);
      }
  }
  static void input_grads(const T* x, const T* gz, const T* wt, T* gx, T* gw, const Geom& g) {
    const int64_t C = g.c;
    std::fill(gx, gx + g.h * g.w * C, T(0));
    std::fill(gw, gw + 9 * C, T(0));
    int64_t xoff[9], woff[9];
    for (int64_t oh = 0; oh < g.ho; ++oh)
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const T* gzr = gz + (oh * g.wo + ow) * C;
        const int nt = valid_taps(g, oh, ow, xoff, woff);
        for (int t = 0; t < nt; ++t)
          for (int64_t k = 0; k < C; ++k) {
            gx[xoff[t] + k] += gzr[k] * wt[woff[t] + k];
            gw[woff[t] + k] += gzr[k] * x[xoff[t] + k];
          }
      }
  }
};

// The kernel set for an accumulation type: the vectorised float kernels, or the scalar double ones.
template <typename T>
struct Kernels {
  using K = ScalarSpan<T>;
  static K get() { return K(); }
};
template <>
struct Kernels<float> {
  static const SpanCpuKernels& get() { return span_cpu_kernels(); }
};

// One sample (C*H*W values of storage type S, channels_last or NCHW) as acc_t in (H*W, C) order:
// the storage itself when nothing needs converting, else a copy in `buf` (transposed from NCHW per
// sample, in cache, instead of a whole-tensor layout copy: fresh large tensors cost page faults).
template <typename S, typename acc_t>
const acc_t* load_hwc(const S* src, int64_t hw, int64_t C, bool cl, std::vector<acc_t>& buf) {
  if (cl && std::is_same<S, acc_t>::value) return reinterpret_cast<const acc_t*>(src);
  buf.resize(hw * C);
  if (cl) {
    for (int64_t i = 0; i < hw * C; ++i) buf[i] = static_cast<acc_t>(src[i]);
  } else {
    for (int64_t k = 0; k < C; ++k)
      for (int64_t r = 0; r < hw; ++r) buf[r * C + k] = static_cast<acc_t>(src[k * hw + r]);
  }
  return buf.data();
}

// Writes one sample from (H*W, C) acc_t values to storage S in its layout; nothing when src is dst.
template <typename S, typename acc_t>
void store_hwc(const acc_t* src, S* dst, int64_t hw, int64_t C, bool cl) {
  if (static_cast<const void*>(src) == static_cast<const void*>(dst)) return;
  if (cl) {
    for (int64_t i = 0; i < hw * C; ++i) dst[i] = static_cast<S>(src[i]);
  } else {
    for (int64_t k = 0; k < C; ++k)
      for (int64_t r = 0; r < hw; ++r) dst[k * hw + r] = static_cast<S>(src[r * C + k]);
  }
}

// Whether a sample's (H*W, C) accumulation-type result can be written straight into the output:
// channels_last storage of the accumulation type itself.
template <typename scalar_t, typename acc_t>
bool writes_in_place(bool cl) {
  return cl && std::is_same<scalar_t, acc_t>::value;
}

// Per-channel constants of the BN affine from the statistics (batch or running, acc_t (C,)):
// rstd, scale = gamma*rstd, shift = beta - mean*scale.
template <typename acc_t>
struct BnConstants {
  std::vector<acc_t> rstd, scale, shift;
  BnConstants(const at::Tensor& mean, const at::Tensor& var, const SpanParams& prm, double eps)
      : rstd(mean.numel()), scale(mean.numel()), shift(mean.numel()) {
    const acc_t *m = mean.const_data_ptr<acc_t>(), *v = var.const_data_ptr<acc_t>();
    const acc_t *gamma = prm.gamma.const_data_ptr<acc_t>(), *beta = prm.beta.const_data_ptr<acc_t>();
    for (int64_t k = 0; k < mean.numel(); ++k) {
      rstd[k] = bn_rstd(v[k], static_cast<acc_t>(eps));
      scale[k] = bn_scale(rstd[k], gamma[k]);
      shift[k] = bn_shift(m[k], scale[k], beta[k]);
    }
  }
};

// out[k] = sum over the rows r of part (rows, width) of part[r, k], in double and in a fixed order
// (deterministic); width = out.numel().
template <typename acc_t>
void sum_rows(const at::Tensor& part, const at::Tensor& out) {
  const acc_t* p = part.const_data_ptr<acc_t>();
  acc_t* o = out.mutable_data_ptr<acc_t>();
  const int64_t rows = part.size(0), width = out.numel();
  for (int64_t k = 0; k < width; ++k) {
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += p[r * width + k];
    o[k] = static_cast<acc_t>(sum);
  }
}

// ---------------------------------------------------------------------------------- forward

// Training forward, pass 1: per-sample (mean, M2) of the depthwise output, merged across samples in
// double (Chan's formula, fixed order) into the batch mean and the biased variance.
template <typename scalar_t>
void batch_stats(const at::Tensor& x, const SpanParams& prm, const SpanDims& d, const Geom& g, bool cl,
                 const at::Tensor& mean, const at::Tensor& var) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& K = Kernels<acc_t>::get();
  const scalar_t* px = x.const_data_ptr<scalar_t>();
  const acc_t* wt = prm.dw.const_data_ptr<acc_t>();
  const int64_t C = d.c, hw_in = d.h * d.w * C, hw_out = d.ho * d.wo;
  std::vector<acc_t> smean(d.n * C), sm2(d.n * C);
  at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
    std::vector<acc_t> xbuf, z(hw_out * C);
    for (int64_t n = n0; n < n1; ++n) {
      K.conv(load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, cl, xbuf), wt, nullptr, nullptr, 0, z.data(),
             nullptr, g);
      K.stats(z.data(), hw_out, C, smean.data() + n * C, sm2.data() + n * C);
    }
  });
  acc_t* pm = mean.mutable_data_ptr<acc_t>();
  acc_t* pv = var.mutable_data_ptr<acc_t>();
  for (int64_t k = 0; k < C; ++k) {
    double cnt = 0, mu = 0, m2 = 0;
    for (int64_t n = 0; n < d.n; ++n)
      welford_merge<double>(cnt, mu, m2, static_cast<double>(hw_out), smean[n * C + k], sm2[n * C + k]);
    pm[k] = static_cast<acc_t>(mu);
    pv[k] = static_cast<acc_t>(m2 / cnt);  // biased variance, as BatchNorm normalises with
  }
}

// The forward's last (eval: only) pass, per sample: conv -> BN -> act (kept in the per-thread
// buffer) -> pool -> SE MLP -> y = d * s. Writes y and pooled.
template <typename scalar_t>
void scale_pass(const at::Tensor& x, const SpanParams& prm, const at::Tensor& mean, const at::Tensor& var, double eps,
                const SpanDims& d, const Geom& g, bool cl, const at::Tensor& y, const at::Tensor& pooled) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& K = Kernels<acc_t>::get();
  const BnConstants<acc_t> bn(mean, var, prm, eps);
  const scalar_t* px = x.const_data_ptr<scalar_t>();
  const acc_t* wt = prm.dw.const_data_ptr<acc_t>();
  const acc_t *w1t = prm.w1t.const_data_ptr<acc_t>(), *b1 = prm.b1.const_data_ptr<acc_t>();
  const acc_t *w2t = prm.w2t.const_data_ptr<acc_t>(), *b2 = prm.b2.const_data_ptr<acc_t>();
  acc_t* pp = pooled.mutable_data_ptr<acc_t>();
  scalar_t* py = y.mutable_data_ptr<scalar_t>();
  const int64_t C = d.c, hw_in = d.h * d.w * C, hw_out = d.ho * d.wo, hid = d.hidden;
  const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(hw_out);
  const bool direct = writes_in_place<scalar_t, acc_t>(cl);
  at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
    std::vector<acc_t> xbuf, z(hw_out * C), ybuf(direct ? 0 : hw_out * C), psum(C), h1(hid), a1(hid), h2(C), s(C);
    for (int64_t n = n0; n < n1; ++n) {
      K.conv(load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, cl, xbuf), wt, bn.scale.data(), bn.shift.data(),
             d.act, z.data(), psum.data(), g);
      acc_t* p = pp + n * C;
      for (int64_t k = 0; k < C; ++k) p[k] = psum[k] * inv_hw;
      K.se_mlp(p, w1t, b1, w2t, b2, C, hid, d.act, h1.data(), a1.data(), h2.data());
      for (int64_t k = 0; k < C; ++k) s[k] = gate_forward(d.gate, h2[k]);
      scalar_t* yn = py + n * hw_out * C;
      acc_t* out = direct ? reinterpret_cast<acc_t*>(yn) : ybuf.data();
      K.scale_rows(z.data(), s.data(), out, hw_out, C);
      store_hwc<scalar_t, acc_t>(out, yn, hw_out, C, cl);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x_in, const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
    const at::Tensor& running_mean, const at::Tensor& running_var, const at::Tensor& se_w1, const at::Tensor& se_b1,
    const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride, double eps, bool training, std::string act,
    std::string gate) {
  const SpanDims d = check_span_args(kOp, x_in, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1,
                                     se_w2, se_b2, stride, act, gate, c10::DeviceType::CPU);
  // Works in either layout without whole-tensor copies (samples are converted in cache).
  const auto fmt = output_format(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt);
  const auto acc = acc_type_for(x.scalar_type());
  const SpanParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, DwWeightLayout::kTapMajor);
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor y = at::empty({d.n, d.c, d.ho, d.wo}, x.options().memory_format(fmt));
  at::Tensor mean = training ? at::empty({d.c}, acc_opts) : acc_copy(running_mean, acc);
  at::Tensor var = training ? at::empty({d.c}, acc_opts) : acc_copy(running_var, acc);
  at::Tensor pooled = at::empty({d.n, d.c}, acc_opts);
  const Geom g{d.c, d.h, d.w, d.ho, d.wo, static_cast<int>(stride)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_cpu", [&] {
    if (training) batch_stats<scalar_t>(x, prm, d, g, cl, mean, var);
    scale_pass<scalar_t>(x, prm, mean, var, eps, d, g, cl, y, pooled);
  });
  return {y, mean, var, pooled};
}

// ---------------------------------------------------------------------------------- backward
//
// Pass 1 (per sample): recompute z, u, d; gs = sum_hw(gy*d); the SE backward; gu and the per-sample
// BN sums. Then the BN sums across samples; training needs them before any input gradient, so its
// pass 2 recomputes z and turns gu (kept from pass 1) into gz; eval turns gu into gz in pass 1.
// Either way gz gives gx and the sample's depthwise weight gradient; those are summed last.

// One backward call: the inputs as the kernels read them, and the tensors its passes fill. Per-sample
// partial sums are reduced across samples afterwards, in a fixed order (deterministic).
struct BackwardCall {
  SpanDims d;
  Geom g;
  at::MemoryFormat fmt;
  bool cl, training;
  double eps;
  at::Tensor x, gy;  // x's storage dtype, layout fmt
  SpanParams prm;
  at::Tensor mean, var, pooled;  // the saved statistics and SE input, accumulation dtype
  at::Tensor gx;                 // x's storage dtype, layout fmt
  at::Tensor gbeta_n, ggamma_n;  // (N, C): per-sample sums of gu and gu * zhat
  at::Tensor gw_n;               // (N, 9, C): per-sample depthwise weight gradients
  at::Tensor gh2, a1, gh1;       // (N, C), (N, hid), (N, hid): for the SE parameter gradients
  at::Tensor gu;                 // training only, (N, Ho*Wo, C): the gradient at the BN output
  at::Tensor gbeta, ggamma, gw;  // (C), (C), (9, C): the sums across samples

  BackwardCall(const SpanDims& dims, const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& mean_in,
               const at::Tensor& var_in, const at::Tensor& pooled_in, SpanParams params, int64_t stride, double eps_in,
               bool training_in)
      : d(dims),
        g{dims.c, dims.h, dims.w, dims.ho, dims.wo, static_cast<int>(stride)},
        fmt(output_format(x_in)),
        cl(fmt == at::MemoryFormat::ChannelsLast),
        training(training_in),
        eps(eps_in),
        x(x_in.contiguous(fmt)),
        gy(grad_y.to(x.scalar_type()).contiguous(fmt)),
        prm(std::move(params)) {
    const auto acc = acc_type_for(x.scalar_type());
    mean = acc_copy(mean_in, acc);
    var = acc_copy(var_in, acc);
    pooled = acc_copy(pooled_in, acc);
    const auto acc_opts = x.options().dtype(acc);
    gx = at::empty({d.n, d.c, d.h, d.w}, x.options().memory_format(fmt));
    gbeta_n = at::empty({d.n, d.c}, acc_opts);
    ggamma_n = at::empty({d.n, d.c}, acc_opts);
    gw_n = at::empty({d.n, 9, d.c}, acc_opts);
    gh2 = at::empty({d.n, d.c}, acc_opts);
    a1 = at::empty({d.n, d.hidden}, acc_opts);
    gh1 = at::empty({d.n, d.hidden}, acc_opts);
    if (training) gu = at::empty({d.n, d.ho * d.wo, d.c}, acc_opts);
    gbeta = at::empty({d.c}, acc_opts);
    ggamma = at::empty({d.c}, acc_opts);
    gw = at::empty({9, d.c}, acc_opts);
  }
};

// Per-thread buffers of backward pass 1 (one sample at a time); gxb is empty when gx is written in place.
template <typename acc_t>
struct Pass1Buffers {
  std::vector<acc_t> xbuf, gybuf, z, u, gxb, gs, h1, a1, h2, gp, s;
  Pass1Buffers(const SpanDims& d, bool direct)
      : z(d.ho * d.wo * d.c),
        u(d.ho * d.wo * d.c),
        gxb(direct ? 0 : d.h * d.w * d.c),
        gs(d.c),
        h1(d.hidden),
        a1(d.hidden),
        h2(d.c),
        gp(d.c),
        s(d.c) {}
};

// The SE backward of sample n from its saved pooled mean and t.gs = sum_hw(gy * d): recomputes the
// MLP (t.h1, t.a1, t.h2), writes t.s = gate(h2), t.gp (the gradient at the pooled mean) and the
// sample's rows of gh2, a1 and gh1.
template <typename acc_t>
void se_backward_sample(const BackwardCall& b, int64_t n, Pass1Buffers<acc_t>& t) {
  const int64_t C = b.d.c, hid = b.d.hidden;
  const SpanParams& prm = b.prm;
  Kernels<acc_t>::get().se_mlp(b.pooled.const_data_ptr<acc_t>() + n * C, prm.w1t.const_data_ptr<acc_t>(),
                               prm.b1.const_data_ptr<acc_t>(), prm.w2t.const_data_ptr<acc_t>(),
                               prm.b2.const_data_ptr<acc_t>(), C, hid, b.d.act, t.h1.data(), t.a1.data(), t.h2.data());
  const acc_t *w1 = prm.w1.const_data_ptr<acc_t>(), *w2 = prm.w2.const_data_ptr<acc_t>();
  acc_t* gh2 = b.gh2.mutable_data_ptr<acc_t>() + n * C;
  acc_t* a1 = b.a1.mutable_data_ptr<acc_t>() + n * hid;
  acc_t* gh1 = b.gh1.mutable_data_ptr<acc_t>() + n * hid;
  for (int64_t k = 0; k < C; ++k) {
    t.s[k] = gate_forward(b.d.gate, t.h2[k]);
    gh2[k] = t.gs[k] * gate_grad(b.d.gate, t.h2[k]);
  }
  for (int64_t j = 0; j < hid; ++j) {
    acc_t v = 0;
    for (int64_t k = 0; k < C; ++k) v += gh2[k] * w2[k * hid + j];
    a1[j] = t.a1[j];
    gh1[j] = v * act_grad(b.d.act, t.h1[j]);
  }
  for (int64_t k = 0; k < C; ++k) {
    acc_t v = 0;
    for (int64_t j = 0; j < hid; ++j) v += gh1[j] * w1[j * C + k];
    t.gp[k] = v;
  }
}

// gz -> gx of sample n (scattered through the taps, stored in x's layout) and the sample's depthwise
// weight-gradient partial (row n of gw_n). gxb: a buffer of H*W*C, unused when gx is written in place.
template <typename scalar_t, typename acc_t>
void sample_input_grads(const BackwardCall& b, int64_t n, const acc_t* xs, const acc_t* gz, std::vector<acc_t>& gxb) {
  const int64_t C = b.d.c, hw_in = b.d.h * b.d.w * C;
  scalar_t* gxn = b.gx.mutable_data_ptr<scalar_t>() + n * hw_in;
  acc_t* gxo = writes_in_place<scalar_t, acc_t>(b.cl) ? reinterpret_cast<acc_t*>(gxn) : gxb.data();
  Kernels<acc_t>::get().input_grads(xs, gz, b.prm.dw.const_data_ptr<acc_t>(), gxo,
                                    b.gw_n.mutable_data_ptr<acc_t>() + n * 9 * C, b.g);
  store_hwc<scalar_t, acc_t>(gxo, gxn, b.d.h * b.d.w, C, b.cl);
}

// Backward pass 1 (see above the BackwardCall).
template <typename scalar_t>
void backward_pass1(const BackwardCall& b, const BnConstants<at::opmath_type<scalar_t>>& bn) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& K = Kernels<acc_t>::get();
  const SpanDims& d = b.d;
  const int64_t C = d.c, hw_in = d.h * d.w * C, hw_out = d.ho * d.wo;
  const scalar_t *px = b.x.const_data_ptr<scalar_t>(), *pgy = b.gy.const_data_ptr<scalar_t>();
  const acc_t *wt = b.prm.dw.const_data_ptr<acc_t>(), *mean = b.mean.const_data_ptr<acc_t>();
  acc_t *gb = b.gbeta_n.mutable_data_ptr<acc_t>(), *gg = b.ggamma_n.mutable_data_ptr<acc_t>();
  acc_t* gu = b.training ? b.gu.mutable_data_ptr<acc_t>() : nullptr;
  const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(hw_out);
  at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
    Pass1Buffers<acc_t> t(d, writes_in_place<scalar_t, acc_t>(b.cl));
    for (int64_t n = n0; n < n1; ++n) {
      const acc_t* xs = load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, b.cl, t.xbuf);
      K.conv(xs, wt, nullptr, nullptr, 0, t.z.data(), nullptr, b.g);
      const acc_t* gyn = load_hwc<scalar_t, acc_t>(pgy + n * hw_out * C, hw_out, C, b.cl, t.gybuf);
      K.bwd_gate_sum(t.z.data(), gyn, bn.scale.data(), bn.shift.data(), d.act, t.u.data(), t.gs.data(), hw_out, C);
      se_backward_sample<acc_t>(b, n, t);
      // gu = (gy*s + gp/HW) * act'(u) and the per-sample sums of gu and gu*zhat; eval turns gu
      // into gz in place of z, training keeps gu for pass 2.
      acc_t* gun = b.training ? gu + n * hw_out * C : t.z.data();
      K.bwd_gu(t.z.data(), t.u.data(), gyn, t.s.data(), t.gp.data(), inv_hw, mean, bn.rstd.data(), bn.scale.data(),
               d.act, b.training, gun, gb + n * C, gg + n * C, hw_out, C);
      if (!b.training) sample_input_grads<scalar_t, acc_t>(b, n, xs, t.z.data(), t.gxb);
    }
  });
}

// Backward pass 2 (training): gz from gu and the batch means of gu and gu*zhat, then gx and gw.
template <typename scalar_t>
void backward_pass2(const BackwardCall& b, const BnConstants<at::opmath_type<scalar_t>>& bn) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& K = Kernels<acc_t>::get();
  const SpanDims& d = b.d;
  const int64_t C = d.c, hw_in = d.h * d.w * C, hw_out = d.ho * d.wo;
  const acc_t count = static_cast<acc_t>(d.n * hw_out);
  std::vector<acc_t> mgu(C), mguz(C);
  const acc_t *gbeta = b.gbeta.const_data_ptr<acc_t>(), *ggamma = b.ggamma.const_data_ptr<acc_t>();
  for (int64_t k = 0; k < C; ++k) {
    mgu[k] = gbeta[k] / count;
    mguz[k] = ggamma[k] / count;
  }
  const scalar_t* px = b.x.const_data_ptr<scalar_t>();
  const acc_t *wt = b.prm.dw.const_data_ptr<acc_t>(), *mean = b.mean.const_data_ptr<acc_t>();
  const acc_t* gu = b.gu.const_data_ptr<acc_t>();
  const bool direct = writes_in_place<scalar_t, acc_t>(b.cl);
  at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
    std::vector<acc_t> xbuf, z(hw_out * C), gxb(direct ? 0 : hw_in);
    for (int64_t n = n0; n < n1; ++n) {
      const acc_t* xs = load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, b.cl, xbuf);
      K.conv(xs, wt, nullptr, nullptr, 0, z.data(), nullptr, b.g);
      K.bwd_bn_train(z.data(), gu + n * hw_out * C, mean, bn.rstd.data(), bn.scale.data(), mgu.data(), mguz.data(),
                     z.data(), hw_out, C);
      sample_input_grads<scalar_t, acc_t>(b, n, xs, z.data(), gxb);
    }
  });
}

template <typename scalar_t>
void backward_passes(const BackwardCall& b) {
  using acc_t = at::opmath_type<scalar_t>;
  const BnConstants<acc_t> bn(b.mean, b.var, b.prm, b.eps);
  backward_pass1<scalar_t>(b, bn);
  sum_rows<acc_t>(b.gbeta_n, b.gbeta);
  sum_rows<acc_t>(b.ggamma_n, b.ggamma);
  if (b.training) backward_pass2<scalar_t>(b, bn);
  sum_rows<acc_t>(b.gw_n, b.gw);
}

SpanGrads backward_cpu(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& dw_weight,
                       const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& mean,
                       const at::Tensor& var, const at::Tensor& pooled, const at::Tensor& se_w1,
                       const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride,
                       double eps, bool training, std::string act, std::string gate) {
  const SpanDims d =
      check_span_backward_args(kBackwardOp, grad_y, x_in, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1,
                               se_b1, se_w2, se_b2, stride, act, gate, c10::DeviceType::CPU);
  const BackwardCall b(d, grad_y, x_in, mean, var, pooled,
                       SpanParams(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2,
                                  acc_type_for(x_in.scalar_type()), DwWeightLayout::kTapMajor),
                       stride, eps, training);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.x.scalar_type(), "dw_bn_act_se_backward_cpu",
                                  [&] { backward_passes<scalar_t>(b); });
  const at::Tensor gw = b.gw.t().contiguous();  // (C, 9)
  return span_grads(b.gx, b.fmt, gw, b.ggamma, b.gbeta, b.gh2, b.a1, b.gh1, b.pooled, dw_weight, bn_weight, bn_bias,
                    se_w1, se_b1, se_w2, se_b2);
}

}  // namespace

TORCH_LIBRARY_IMPL(yyfast, CPU, m) {
  m.impl("dw_bn_act_se_cuda", &forward_cpu);
  m.impl("dw_bn_act_se_cuda_backward", &backward_cpu);
}

}  // namespace yyfast
