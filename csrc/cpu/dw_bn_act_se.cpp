// C++ CPU implementation of dw_bn_act_se (forward and backward, training and eval): the twin of
// cuda/dw_bn_act_se.cu, built on the same per-element math (common/dw_bn_act_se_math.h).
//
// Layout: the kernels work in channels_last (N, H, W, C): every inner loop runs over contiguous
// channels, so it vectorises. NCHW input is converted on the way in and the output converted back.
// Parallelism: over samples (at::parallel_for over N). One sample's depthwise output lives in a
// per-thread buffer (Ho*Wo*C floats: 1 MB at 256 channels 32x32), so everything done to it after
// the convolution (BN, activation, SE pooling, SE scaling) runs from cache.
//
// Passes over x: eval forward 1 (conv -> buffer -> pool -> scale); training forward 2 (statistics,
// then the eval pass with the batch statistics); backward 1 (eval) or 2 (training: the per-channel
// sums of the BN backward are needed before any input gradient).
// Statistics accumulate per sample in the accumulation type (float, or double for double) as a
// (mean, M2) pair, merged across samples in double with Chan's formula: no sum-of-squares cancellation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/dw_bn_act_se_math.h"
#include "../dw_bn_act_se_host.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "dw_bn_act_se";

// One sample's geometry.
struct Geom {
  int64_t c, h, w, ho, wo;
  int stride;
};

// z[oh, ow, :] = sum over the valid 3x3 taps of x[ih, iw, :] * wt[tap, :] for one sample (HWC).
// wt is the depthwise weight transposed to (9, C) so the channel loop is contiguous in both.
template <typename acc_t>
void dwconv_sample(const acc_t* __restrict x, const acc_t* __restrict wt, acc_t* __restrict z, const Geom& g) {
  const int64_t C = g.c;
  for (int64_t oh = 0; oh < g.ho; ++oh) {
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      acc_t* __restrict zr = z + (oh * g.wo + ow) * C;
      for (int64_t k = 0; k < C; ++k) zr[k] = acc_t(0);
      for (int kh = 0; kh < 3; ++kh) {
        const int64_t ih = oh * g.stride - 1 + kh;
        if (ih < 0 || ih >= g.h) continue;
        for (int kw = 0; kw < 3; ++kw) {
          const int64_t iw = ow * g.stride - 1 + kw;
          if (iw < 0 || iw >= g.w) continue;
          const acc_t* __restrict xr = x + (ih * g.w + iw) * C;
          const acc_t* __restrict wr = wt + (kh * 3 + kw) * C;
          for (int64_t k = 0; k < C; ++k) zr[k] += xr[k] * wr[k];
        }
      }
    }
  }
}

// The same convolution for one NCHW sample (C, H, W) -> (C, Ho, Wo), w in its (C, 9) layout: the
// inner loop runs along a contiguous output row (stride 1 vectorises; stride 2 reads every other x).
template <typename acc_t>
void dwconv_sample_nchw(const acc_t* __restrict x, const acc_t* __restrict w, acc_t* __restrict z, const Geom& g) {
  const int64_t plane_in = g.h * g.w, plane_out = g.ho * g.wo;
  for (int64_t k = 0; k < g.c; ++k) {
    const acc_t* __restrict xc = x + k * plane_in;
    acc_t* __restrict zc = z + k * plane_out;
    for (int64_t r = 0; r < plane_out; ++r) zc[r] = acc_t(0);
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      acc_t* __restrict zr = zc + oh * g.wo;
      for (int kh = 0; kh < 3; ++kh) {
        const int64_t ih = oh * g.stride - 1 + kh;
        if (ih < 0 || ih >= g.h) continue;
        const acc_t* __restrict xr = xc + ih * g.w;
        for (int kw = 0; kw < 3; ++kw) {
          if (g.w - kw < 0) continue;  // (only W == 1, kw == 2)
          const acc_t wv = w[k * 9 + kh * 3 + kw];
          // valid ow: 0 <= ow*stride - 1 + kw < W, i.e. ow >= (kw == 0) and ow <= (W - kw) / stride
          const int64_t lo = kw == 0 ? 1 : 0;
          const int64_t hi = std::min<int64_t>(g.wo, (g.w - kw) / g.stride + 1);  // exclusive
          if (g.stride == 1) {
            for (int64_t ow = lo; ow < hi; ++ow) zr[ow] += xr[ow - 1 + kw] * wv;
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) zr[ow] += xr[ow * 2 - 1 + kw] * wv;
          }
        }
      }
    }
  }
}

// Calls f(r, k, index) for every element of one sample's (Ho*Wo, C) output, in memory order:
// index r*C + k in channels_last, k*HW + r in NCHW.
template <bool CL, typename F>
inline void for_each_elem(int64_t hw, int64_t C, F&& f) {
  if (CL) {
    for (int64_t r = 0; r < hw; ++r)
      for (int64_t k = 0; k < C; ++k) f(r, k, r * C + k);
  } else {
    for (int64_t k = 0; k < C; ++k)
      for (int64_t r = 0; r < hw; ++r) f(r, k, k * hw + r);
  }
}

// A sample of x as acc_t: the tensor itself for float/double, a converted copy for half types.
template <typename scalar_t, typename acc_t>
const acc_t* sample_as_acc(const scalar_t* src, int64_t count, std::vector<acc_t>& buf) {
  if (std::is_same<scalar_t, acc_t>::value) return reinterpret_cast<const acc_t*>(src);
  buf.resize(count);
  for (int64_t k = 0; k < count; ++k) buf[k] = static_cast<acc_t>(src[k]);
  return buf.data();
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

// SE MLP forward for one sample: h1 = W1 p + b1, a1 = act(h1), h2 = W2 a1 + b2 (W1 (hid, C), W2 (C, hid)).
template <typename acc_t>
void se_mlp_forward(const acc_t* p, const acc_t* w1, const acc_t* b1, const acc_t* w2, const acc_t* b2, int64_t C,
                    int64_t hid, int act, acc_t* h1, acc_t* a1, acc_t* h2) {
  for (int64_t j = 0; j < hid; ++j) {
    acc_t t = b1[j];
    for (int64_t k = 0; k < C; ++k) t += w1[j * C + k] * p[k];
    h1[j] = t;
    a1[j] = act_forward(act, t);
  }
  for (int64_t k = 0; k < C; ++k) {
    acc_t t = b2[k];
    for (int64_t j = 0; j < hid; ++j) t += w2[k * hid + j] * a1[j];
    h2[k] = t;
  }
}

// Per-call constants in the accumulation type, shared by forward and backward.
struct Params {
  at::Tensor wt, w, gamma, beta, w1, b1, w2, b2;
  Params(const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& se_w1,
         const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2, at::ScalarType acc, int64_t C) {
    wt = acc_copy(dw_weight.reshape({C, 9}).t(), acc);  // (9, C), for channels_last
    w = acc_copy(dw_weight.reshape({C, 9}), acc);       // (C, 9), for NCHW
    gamma = acc_copy(bn_weight, acc);
    beta = acc_copy(bn_bias, acc);
    w1 = acc_copy(se_w1, acc);
    b1 = acc_copy(se_b1, acc);
    w2 = acc_copy(se_w2, acc);
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
  // The forward runs natively in both layouts (no conversion copies around the op).
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
    auto run = [&](auto cl_tag) {
      constexpr bool CL = decltype(cl_tag)::value;
      const scalar_t* px = x.const_data_ptr<scalar_t>();
      const acc_t* wconv = CL ? prm.wt.const_data_ptr<acc_t>() : prm.w.const_data_ptr<acc_t>();
      auto conv = [&](const acc_t* xs, acc_t* z) {
        if (CL) {
          dwconv_sample<acc_t>(xs, wconv, z, g);
        } else {
          dwconv_sample_nchw<acc_t>(xs, wconv, z, g);
        }
      };
      if (training) {
        // Pass 1: per-sample (mean, M2) of the depthwise output, merged across samples in double.
        std::vector<double> smean(d.n * C), sm2(d.n * C);
        at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
          std::vector<acc_t> xbuf, z(hw_out * C), s(C);
          for (int64_t n = n0; n < n1; ++n) {
            conv(sample_as_acc<scalar_t, acc_t>(px + n * hw_in, hw_in, xbuf), z.data());
            std::fill(s.begin(), s.end(), acc_t(0));
            for_each_elem<CL>(hw_out, C, [&](int64_t, int64_t k, int64_t i) { s[k] += z[i]; });
            for (int64_t k = 0; k < C; ++k) s[k] /= static_cast<acc_t>(hw_out);
            for (int64_t k = 0; k < C; ++k) smean[n * C + k] = s[k];
            std::vector<acc_t> mu(s);
            std::fill(s.begin(), s.end(), acc_t(0));
            for_each_elem<CL>(hw_out, C, [&](int64_t, int64_t k, int64_t i) {
              const acc_t dz = z[i] - mu[k];
              s[k] += dz * dz;
            });
            for (int64_t k = 0; k < C; ++k) sm2[n * C + k] = s[k];
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
      bn_constants<acc_t>(mean.const_data_ptr<acc_t>(), var.const_data_ptr<acc_t>(),
                          prm.gamma.const_data_ptr<acc_t>(), prm.beta.const_data_ptr<acc_t>(),
                          static_cast<acc_t>(eps), C, rstd.data(), scale.data(), shift.data());
      const acc_t *w1 = prm.w1.const_data_ptr<acc_t>(), *b1 = prm.b1.const_data_ptr<acc_t>();
      const acc_t *w2 = prm.w2.const_data_ptr<acc_t>(), *b2 = prm.b2.const_data_ptr<acc_t>();
      acc_t* pp = pooled.mutable_data_ptr<acc_t>();
      scalar_t* py = y.mutable_data_ptr<scalar_t>();
      const int act_k = d.act, gate_k = d.gate;
      const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(hw_out);
      // Pass 2: conv -> BN -> act (kept in the per-thread buffer) -> pool -> SE MLP -> y = d * s.
      at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
        std::vector<acc_t> xbuf, z(hw_out * C), psum(C), h1(hid), a1(hid), h2(C), s(C);
        for (int64_t n = n0; n < n1; ++n) {
          conv(sample_as_acc<scalar_t, acc_t>(px + n * hw_in, hw_in, xbuf), z.data());
          std::fill(psum.begin(), psum.end(), acc_t(0));
          for_each_elem<CL>(hw_out, C, [&](int64_t, int64_t k, int64_t i) {
            const acc_t dv = act_forward(act_k, bn_affine(z[i], scale[k], shift[k]));
            z[i] = dv;
            psum[k] += dv;
          });
          acc_t* p = pp + n * C;
          for (int64_t k = 0; k < C; ++k) p[k] = psum[k] * inv_hw;
          se_mlp_forward<acc_t>(p, w1, b1, w2, b2, C, hid, act_k, h1.data(), a1.data(), h2.data());
          for (int64_t k = 0; k < C; ++k) s[k] = gate_forward(gate_k, h2[k]);
          scalar_t* yn = py + n * hw_out * C;
          for_each_elem<CL>(hw_out, C,
                            [&](int64_t, int64_t k, int64_t i) { yn[i] = static_cast<scalar_t>(z[i] * s[k]); });
        }
      });
    };
    if (cl) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
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
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  const auto acc = acc_type_for(x.scalar_type());
  const Params prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const at::Tensor mean_a = acc_copy(mean, acc), var_a = acc_copy(var, acc), pooled_a = acc_copy(pooled, acc);
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor gx = at::empty({d.n, d.c, d.h, d.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
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
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pgy = gy.const_data_ptr<scalar_t>();
    const acc_t* wt = prm.wt.const_data_ptr<acc_t>();
    const acc_t *w1 = prm.w1.const_data_ptr<acc_t>(), *b1 = prm.b1.const_data_ptr<acc_t>();
    const acc_t *w2 = prm.w2.const_data_ptr<acc_t>(), *b2 = prm.b2.const_data_ptr<acc_t>();
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

    // gz (in z's buffer) -> gx of sample n (scatter through the taps) and its dwconv weight-grad partial.
    auto input_grads = [&](int64_t n, const acc_t* xs, const acc_t* gz, std::vector<acc_t>& gxb) {
      std::fill(gxb.begin(), gxb.end(), acc_t(0));
      acc_t* gwn = pgw + n * 9 * C;
      std::fill(gwn, gwn + 9 * C, acc_t(0));
      for (int64_t oh = 0; oh < g.ho; ++oh)
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          const acc_t* __restrict gzr = gz + (oh * g.wo + ow) * C;
          for (int kh = 0; kh < 3; ++kh) {
            const int64_t ih = oh * g.stride - 1 + kh;
            if (ih < 0 || ih >= g.h) continue;
            for (int kw = 0; kw < 3; ++kw) {
              const int64_t iw = ow * g.stride - 1 + kw;
              if (iw < 0 || iw >= g.w) continue;
              const acc_t* __restrict wr = wt + (kh * 3 + kw) * C;
              const acc_t* __restrict xr = xs + (ih * g.w + iw) * C;
              acc_t* __restrict gxr = gxb.data() + (ih * g.w + iw) * C;
              acc_t* __restrict gwr = gwn + (kh * 3 + kw) * C;
              for (int64_t k = 0; k < C; ++k) {
                gxr[k] += gzr[k] * wr[k];
                gwr[k] += gzr[k] * xr[k];
              }
            }
          }
        }
      scalar_t* gxn = pgx + n * hw_in;
      for (int64_t k = 0; k < hw_in; ++k) gxn[k] = static_cast<scalar_t>(gxb[k]);
    };

    // Pass 1 (per sample): recompute z, u, d; gs = sum_hw(gy*d); the SE backward; gu; BN sums.
    at::parallel_for(0, d.n, 1, [&](int64_t n0, int64_t n1) {
      std::vector<acc_t> xbuf, z(hw_out * C), u(hw_out * C), gxb(training ? 0 : hw_in), gs(C), h1(hid), a1(hid),
          h2(C), ga1(hid), gp(C), s(C);
      for (int64_t n = n0; n < n1; ++n) {
        const acc_t* xs = sample_as_acc<scalar_t, acc_t>(px + n * hw_in, hw_in, xbuf);
        dwconv_sample<acc_t>(xs, wt, z.data(), g);
        const scalar_t* gyn = pgy + n * hw_out * C;
        std::fill(gs.begin(), gs.end(), acc_t(0));
        for (int64_t r = 0; r < hw_out; ++r)
          for (int64_t k = 0; k < C; ++k) {
            const acc_t uv = bn_affine(z[r * C + k], scale[k], shift[k]);
            u[r * C + k] = uv;
            gs[k] += static_cast<acc_t>(gyn[r * C + k]) * act_forward(act_k, uv);
          }
        // SE backward for this sample: recompute the MLP from the saved pooled mean.
        const acc_t* p = pp + n * C;
        se_mlp_forward<acc_t>(p, w1, b1, w2, b2, C, hid, act_k, h1.data(), a1.data(), h2.data());
        for (int64_t k = 0; k < C; ++k) {
          s[k] = gate_forward(gate_k, h2[k]);
          pgh2[n * C + k] = gs[k] * gate_grad(gate_k, h2[k]);
        }
        for (int64_t j = 0; j < hid; ++j) {
          acc_t t = 0;
          for (int64_t k = 0; k < C; ++k) t += pgh2[n * C + k] * w2[k * hid + j];
          ga1[j] = t;
          pa1[n * hid + j] = a1[j];
          pgh1[n * hid + j] = t * act_grad(act_k, h1[j]);
        }
        for (int64_t k = 0; k < C; ++k) {
          acc_t t = 0;
          for (int64_t j = 0; j < hid; ++j) t += pgh1[n * hid + j] * w1[j * C + k];
          gp[k] = t;
        }
        // gu = (gy*s + gp/HW) * act'(u); per-sample sums of gu and gu*zhat.
        acc_t* gbn = pgb + n * C;
        acc_t* ggn = pgg + n * C;
        std::fill(gbn, gbn + C, acc_t(0));
        std::fill(ggn, ggn + C, acc_t(0));
        acc_t* gun = training ? pgu + n * hw_out * C : z.data();  // eval: gz overwrites z in place
        for (int64_t r = 0; r < hw_out; ++r)
          for (int64_t k = 0; k < C; ++k) {
            const acc_t zhat = (z[r * C + k] - pmean[k]) * rstd[k];
            const acc_t gd = span_grad_d(static_cast<acc_t>(gyn[r * C + k]), s[k], gp[k], inv_hw);
            const acc_t gu = gd * act_grad(act_k, u[r * C + k]);
            gbn[k] += gu;
            ggn[k] += gu * zhat;
            gun[r * C + k] = training ? gu : bn_grad_input(gu, zhat, scale[k], acc_t(0), acc_t(0), false);
          }
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
        std::vector<acc_t> xbuf, z(hw_out * C), gxb(hw_in);
        for (int64_t n = n0; n < n1; ++n) {
          const acc_t* xs = sample_as_acc<scalar_t, acc_t>(px + n * hw_in, hw_in, xbuf);
          dwconv_sample<acc_t>(xs, wt, z.data(), g);
          const acc_t* gun = pgu + n * hw_out * C;
          for (int64_t r = 0; r < hw_out; ++r)
            for (int64_t k = 0; k < C; ++k) {
              const acc_t zhat = (z[r * C + k] - pmean[k]) * rstd[k];
              z[r * C + k] = bn_grad_input(gun[r * C + k], zhat, scale[k], mgu[k], mguz[k], true);
            }
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
  m.impl("dw_bn_act_se", &forward_cpu);
  m.impl("dw_bn_act_se_backward", &backward_cpu);
}

}  // namespace yyfast
