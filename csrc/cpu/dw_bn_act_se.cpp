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
#include <vector>

#include "../common/dw_bn_act_se_math.h"
#include "../dw_bn_act_se_host.h"
#include "span_kernels.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "dw_bn_act_se";

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
  static void se_mlp(const T* p, const T* w1t, const T* b1, const T* w2t, const T* b2, int64_t C, int64_t hid,
                     int act, T* h1, T* a1, T* h2) {
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
  static void bwd_gate_sum(const T* z, const T* gy, const T* scale, const T* shift, int act, T* u, T* gs,
                           int64_t rows, int64_t C) {
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

// Per-channel constants of the BN affine: scale = gamma*rstd, shift = beta - mean*scale.
template <typename acc_t>
void bn_constants(const acc_t* mean, const acc_t* var, const acc_t* gamma, const acc_t* beta, acc_t eps, int64_t C,
                  acc_t* rstd, acc_t* scale, acc_t* shift) {
  for (int64_t k = 0; k < C; ++k) {
    rstd[k] = bn_rstd(var[k], eps);
    scale[k] = bn_scale(rstd[k], gamma[k]);
    shift[k] = bn_shift(mean[k], scale[k], beta[k]);
  }
}

// Per-call constants in the accumulation type, shared by forward and backward.
struct Params {
  at::Tensor wt, gamma, beta, w1t, b1, w2t, b2, w1, w2;
  Params(const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& se_w1,
         const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2, at::ScalarType acc, int64_t C) {
    wt = acc_copy(dw_weight.reshape({C, 9}).t(), acc);  // (9, C): channels contiguous
    gamma = acc_copy(bn_weight, acc);
    beta = acc_copy(bn_bias, acc);
    w1 = acc_copy(se_w1.reshape({se_w1.size(0), C}), acc);     // (hid, C)
    w2 = acc_copy(se_w2.reshape({C, se_w2.size(1)}), acc);     // (C, hid)
    w1t = w1.t().contiguous();                                  // (C, hid)
    w2t = w2.t().contiguous();                                  // (hid, C)
    b1 = acc_copy(se_b1, acc);
    b2 = acc_copy(se_b2, acc);
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x_in, const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
    const at::Tensor& running_mean, const at::Tensor& running_var, const at::Tensor& se_w1, const at::Tensor& se_b1,
    const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride, double eps, bool training, std::string act,
    std::string gate) {
  const SpanDims d = check_span_args(kOp, x_in, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1,
                                     se_b1, se_w2, se_b2, stride, act, gate, c10::DeviceType::CPU);
  // Works in either layout without whole-tensor copies (samples are converted in cache).
  const auto fmt = output_format(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt);
  const auto acc = acc_type_for(x.scalar_type());
  const Params prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor y = at::empty({d.n, d.c, d.ho, d.wo}, x.options().memory_format(fmt));
  at::Tensor mean = training ? at::empty({d.c}, acc_opts) : acc_copy(running_mean, acc);
  at::Tensor var = training ? at::empty({d.c}, acc_opts) : acc_copy(running_var, acc);
  at::Tensor pooled = at::empty({d.n, d.c}, acc_opts);
  const Geom g{d.c, d.h, d.w, d.ho, d.wo, static_cast<int>(stride)};
  const int64_t C = d.c, hw_in = d.h * d.w * C, hw_out = d.ho * d.wo, hid = d.hidden;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& K = Kernels<acc_t>::get();
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const acc_t* wt = prm.wt.const_data_ptr<acc_t>();
    if (training) {
      // Pass 1: per-sample (mean, M2) of the depthwise output, merged across samples in double.
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
    std::vector<acc_t> rstd(C), scale(C), shift(C);
    bn_constants<acc_t>(mean.const_data_ptr<acc_t>(), var.const_data_ptr<acc_t>(), prm.gamma.const_data_ptr<acc_t>(),
                        prm.beta.const_data_ptr<acc_t>(), static_cast<acc_t>(eps), C, rstd.data(), scale.data(),
                        shift.data());
    const acc_t *w1t = prm.w1t.const_data_ptr<acc_t>(), *b1 = prm.b1.const_data_ptr<acc_t>();
    const acc_t *w2t = prm.w2t.const_data_ptr<acc_t>(), *b2 = prm.b2.const_data_ptr<acc_t>();
    acc_t* pp = pooled.mutable_data_ptr<acc_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(hw_out);
    // Pass 2: conv -> BN -> act (kept in the per-thread buffer) -> pool -> SE MLP -> y = d * s.
    at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
      const bool direct = cl && std::is_same<scalar_t, acc_t>::value;  // y written in place
      std::vector<acc_t> xbuf, z(hw_out * C), ybuf(direct ? 0 : hw_out * C), psum(C), h1(hid), a1(hid), h2(C), s(C);
      for (int64_t n = n0; n < n1; ++n) {
        K.conv(load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, cl, xbuf), wt, scale.data(), shift.data(),
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
  });
  return {y, mean, var, pooled};
}

SpanGrads
backward_cpu(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& dw_weight, const at::Tensor& bn_weight,
             const at::Tensor& bn_bias, const at::Tensor& mean, const at::Tensor& var, const at::Tensor& pooled,
             const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2,
             int64_t stride, double eps, bool training, std::string act, std::string gate) {
  const char* op = "dw_bn_act_se_backward";
  const SpanDims d = check_span_args(op, x_in, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2,
                                     stride, act, gate, c10::DeviceType::CPU);
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == d.n && grad_y.size(1) == d.c && grad_y.size(2) == d.ho &&
                  grad_y.size(3) == d.wo,
              op, ": grad_y must have shape (", d.n, ", ", d.c, ", ", d.ho, ", ", d.wo, "), got ", grad_y.sizes());
  TORCH_CHECK(grad_y.device() == x_in.device(), op, ": grad_y is on ", grad_y.device(), " but x is on ", x_in.device());
  TORCH_CHECK(pooled.dim() == 2 && pooled.size(0) == d.n && pooled.size(1) == d.c, op, ": pooled must have shape (",
              d.n, ", ", d.c, "), got ", pooled.sizes());
  const auto fmt = output_format(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous(fmt);
  const auto acc = acc_type_for(x.scalar_type());
  const Params prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const at::Tensor mean_a = acc_copy(mean, acc), var_a = acc_copy(var, acc), pooled_a = acc_copy(pooled, acc);
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor gx = at::empty({d.n, d.c, d.h, d.w}, x.options().memory_format(fmt));
  // Per-sample partial sums (reduced across samples below, deterministically).
  at::Tensor gbeta_n = at::empty({d.n, d.c}, acc_opts), ggamma_n = at::empty({d.n, d.c}, acc_opts);
  at::Tensor gw_n = at::empty({d.n, 9, d.c}, acc_opts);
  at::Tensor gh2 = at::empty({d.n, d.c}, acc_opts), a1_all = at::empty({d.n, d.hidden}, acc_opts);
  at::Tensor gh1 = at::empty({d.n, d.hidden}, acc_opts);
  // Training keeps gu (the gradient at the BN output) between the two passes.
  at::Tensor gu_all = training ? at::empty({d.n, d.ho * d.wo, d.c}, acc_opts) : at::Tensor();
  at::Tensor gbeta = at::empty({d.c}, acc_opts), ggamma = at::empty({d.c}, acc_opts);
  at::Tensor gw = at::empty({d.c, 9}, acc_opts);
  const Geom g{d.c, d.h, d.w, d.ho, d.wo, static_cast<int>(stride)};
  const int64_t C = d.c, hw_in = d.h * d.w * C, hw_out = d.ho * d.wo, hid = d.hidden;
  const int64_t count = d.n * hw_out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& K = Kernels<acc_t>::get();
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pgy = gy.const_data_ptr<scalar_t>();
    const acc_t* wt = prm.wt.const_data_ptr<acc_t>();
    const acc_t *w1 = prm.w1.const_data_ptr<acc_t>(), *b1 = prm.b1.const_data_ptr<acc_t>();
    const acc_t *w2 = prm.w2.const_data_ptr<acc_t>(), *b2 = prm.b2.const_data_ptr<acc_t>();
    const acc_t *w1t = prm.w1t.const_data_ptr<acc_t>(), *w2t = prm.w2t.const_data_ptr<acc_t>();
    const acc_t* pmean = mean_a.const_data_ptr<acc_t>();
    std::vector<acc_t> rstd(C), scale(C), shift(C);
    bn_constants<acc_t>(pmean, var_a.const_data_ptr<acc_t>(), prm.gamma.const_data_ptr<acc_t>(),
                        prm.beta.const_data_ptr<acc_t>(), static_cast<acc_t>(eps), C, rstd.data(), scale.data(),
                        shift.data());
    const acc_t* pp = pooled_a.const_data_ptr<acc_t>();
    acc_t *pgb = gbeta_n.mutable_data_ptr<acc_t>(), *pgg = ggamma_n.mutable_data_ptr<acc_t>();
    acc_t *pgh2 = gh2.mutable_data_ptr<acc_t>(), *pa1 = a1_all.mutable_data_ptr<acc_t>();
    acc_t* pgh1 = gh1.mutable_data_ptr<acc_t>();
    acc_t* pgw = gw_n.mutable_data_ptr<acc_t>();
    acc_t* pgu = training ? gu_all.mutable_data_ptr<acc_t>() : nullptr;
    scalar_t* pgx = gx.mutable_data_ptr<scalar_t>();
    const int act_k = d.act, gate_k = d.gate;
    const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(hw_out);
    const bool direct = cl && std::is_same<scalar_t, acc_t>::value;  // gx written in place

    // gz -> gx of sample n (scatter through the taps) and its depthwise weight-gradient partial.
    auto input_grads = [&](int64_t n, const acc_t* xs, const acc_t* gz, std::vector<acc_t>& gxb) {
      scalar_t* gxn = pgx + n * hw_in;
      acc_t* gxo = direct ? reinterpret_cast<acc_t*>(gxn) : gxb.data();
      K.input_grads(xs, gz, wt, gxo, pgw + n * 9 * C, g);
      store_hwc<scalar_t, acc_t>(gxo, gxn, d.h * d.w, C, cl);
    };

    // Pass 1 (per sample): recompute z, u, d; gs = sum_hw(gy*d); the SE backward; gu; BN sums.
    at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
      std::vector<acc_t> xbuf, gybuf, z(hw_out * C), u(hw_out * C), gxb(direct ? 0 : hw_in), gs(C), h1(hid), a1(hid),
          h2(C), gp(C), s(C);
      for (int64_t n = n0; n < n1; ++n) {
        const acc_t* xs = load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, cl, xbuf);
        K.conv(xs, wt, nullptr, nullptr, 0, z.data(), nullptr, g);
        const acc_t* gyn = load_hwc<scalar_t, acc_t>(pgy + n * hw_out * C, hw_out, C, cl, gybuf);
        K.bwd_gate_sum(z.data(), gyn, scale.data(), shift.data(), act_k, u.data(), gs.data(), hw_out, C);
        // SE backward for this sample: recompute the MLP from the saved pooled mean.
        const acc_t* p = pp + n * C;
        K.se_mlp(p, w1t, b1, w2t, b2, C, hid, act_k, h1.data(), a1.data(), h2.data());
        for (int64_t k = 0; k < C; ++k) {
          s[k] = gate_forward(gate_k, h2[k]);
          pgh2[n * C + k] = gs[k] * gate_grad(gate_k, h2[k]);
        }
        for (int64_t j = 0; j < hid; ++j) {
          acc_t t = 0;
          for (int64_t k = 0; k < C; ++k) t += pgh2[n * C + k] * w2[k * hid + j];
          pa1[n * hid + j] = a1[j];
          pgh1[n * hid + j] = t * act_grad(act_k, h1[j]);
        }
        for (int64_t k = 0; k < C; ++k) {
          acc_t t = 0;
          for (int64_t j = 0; j < hid; ++j) t += pgh1[n * hid + j] * w1[j * C + k];
          gp[k] = t;
        }
        // gu = (gy*s + gp/HW) * act'(u) and the per-sample sums of gu and gu*zhat; eval turns gu
        // into gz in place of z, training keeps gu for pass 2.
        acc_t* gun = training ? pgu + n * hw_out * C : z.data();
        K.bwd_gu(z.data(), u.data(), gyn, s.data(), gp.data(), inv_hw, pmean, rstd.data(), scale.data(), act_k,
                 training, gun, pgb + n * C, pgg + n * C, hw_out, C);
        if (!training) input_grads(n, xs, z.data(), gxb);
      }
    });

    // Per-channel sums across samples (double, fixed order).
    acc_t *pgbeta = gbeta.mutable_data_ptr<acc_t>(), *pggamma = ggamma.mutable_data_ptr<acc_t>();
    for (int64_t k = 0; k < C; ++k) {
      double sb = 0, sg = 0;
      for (int64_t n = 0; n < d.n; ++n) {
        sb += pgb[n * C + k];
        sg += pgg[n * C + k];
      }
      pgbeta[k] = static_cast<acc_t>(sb);
      pggamma[k] = static_cast<acc_t>(sg);
    }

    if (training) {
      // Pass 2 (per sample): gz from gu and the batch means of gu and gu*zhat; then gx and gw.
      std::vector<acc_t> mgu(C), mguz(C);
      for (int64_t k = 0; k < C; ++k) {
        mgu[k] = pgbeta[k] / static_cast<acc_t>(count);
        mguz[k] = pggamma[k] / static_cast<acc_t>(count);
      }
      at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
        std::vector<acc_t> xbuf, z(hw_out * C), gxb(direct ? 0 : hw_in);
        for (int64_t n = n0; n < n1; ++n) {
          const acc_t* xs = load_hwc<scalar_t, acc_t>(px + n * hw_in, d.h * d.w, C, cl, xbuf);
          K.conv(xs, wt, nullptr, nullptr, 0, z.data(), nullptr, g);
          K.bwd_bn_train(z.data(), pgu + n * hw_out * C, pmean, rstd.data(), scale.data(), mgu.data(), mguz.data(),
                         z.data(), hw_out, C);
          input_grads(n, xs, z.data(), gxb);
        }
      });
    }
    acc_t* pgwt = gw.mutable_data_ptr<acc_t>();
    for (int64_t k = 0; k < C; ++k)
      for (int t = 0; t < 9; ++t) {
        double sw = 0;
        for (int64_t n = 0; n < d.n; ++n) sw += pgw[(n * 9 + t) * C + k];
        pgwt[k * 9 + t] = static_cast<acc_t>(sw);
      }
  });
  return span_grads(gx, fmt, gw, ggamma, gbeta, gh2, a1_all, gh1, pooled_a, dw_weight, bn_weight, bn_bias, se_w1,
                    se_b1, se_w2, se_b2);
}

}  // namespace

TORCH_LIBRARY_IMPL(yyfast, CPU, m) {
  m.impl("dw_bn_act_se_cuda", &forward_cpu);
  m.impl("dw_bn_act_se_cuda_backward", &backward_cpu);
}

}  // namespace yyfast
