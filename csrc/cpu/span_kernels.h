// The float32 channels_last inner kernels of the C++ CPU dw_bn_act_se and mbconv_eval, one sample
// per call.
//
// They are compiled three times from one source (span_kernels.inc, vec_math.inc): for the build's
// baseline ISA, for AVX2+FMA and for AVX-512 (x86-64 with GCC or Clang), and span_cpu_kernels()
// picks the best the running CPU supports, once. Every loop runs over contiguous channels in 8-lane
// (AVX-512: 16-lane) vectors
// (GCC/Clang vector extensions), including GELU/SiLU, which use vectorised exp/erfc
// (vec_math.inc) instead of scalar libm calls: scalar erff alone made the eval forward run at
// ~10% of copy bandwidth.
//
// Layouts (one sample): x (H, W, C); the depthwise weight as wt (9, C); z, u, d, y, gy, gz
// (Ho*Wo, C); per-channel vectors (C); SE weights transposed: w1t (C, hid), w2t (hid, C).
#pragma once
#include <cstdint>

namespace yyfast {

// One sample's geometry.
struct Geom {
  int64_t c, h, w, ho, wo;
  int stride;
};

// Offsets (in elements, from the sample's start) of x and of the (9, C) weight for the valid 3x3
// taps of output position (oh, ow); returns how many there are (9 inside, fewer on the border).
inline int valid_taps(const Geom& g, int64_t oh, int64_t ow, int64_t* xoff, int64_t* woff) {
  int nt = 0;
  for (int kh = 0; kh < 3; ++kh) {
    const int64_t ih = oh * g.stride - 1 + kh;
    if (ih < 0 || ih >= g.h) continue;
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t iw = ow * g.stride - 1 + kw;
      if (iw < 0 || iw >= g.w) continue;
      xoff[nt] = (ih * g.w + iw) * g.c;
      woff[nt] = (kh * 3 + kw) * g.c;
      ++nt;
    }
  }
  return nt;
}

// c (m, n) = epilogue(a (m, k) @ b (k, n) [+ a2 (m, k2) @ b2 (k2, n)]), every matrix row-major with the
// given row strides (lda etc.); n a multiple of the vector width (8; 16 in the AVX-512 build). The epilogue
// is c = act(acc + bias) + add, each part optional: bias nullptr, act < 0, add nullptr for none.
struct GemmArgs {
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  int64_t k;
  const float* a2;  // nullptr: no second product
  int64_t lda2;
  const float* b2;
  int64_t ldb2;
  int64_t k2;
  const float* bias;
  int act;
  const float* add;
  int64_t ldadd;
  float* c;
  int64_t ldc;
  int64_t m, n;
};

struct SpanCpuKernels {
  const char* isa;  // "avx512", "avx2+fma" or "baseline"
  // z = dwconv3x3(x). With scale != nullptr the BN/activation epilogue runs in the same pass:
  // z = act(z*scale + shift), and psum[k] = sum over positions of z (overwritten).
  void (*conv)(const float* x, const float* wt, const float* scale, const float* shift, int act, float* z, float* psum,
               const Geom& g);
  // Per-channel mean and sum of squared deviations of z (rows x C).
  void (*stats)(const float* z, int64_t rows, int64_t c, float* mean, float* m2);
  // y[r, k] = d[r, k] * s[k].
  void (*scale_rows)(const float* d, const float* s, float* y, int64_t rows, int64_t c);
  // SE MLP: h1 = W1 p + b1, a1 = act(h1), h2 = W2 a1 + b2.
  void (*se_mlp)(const float* p, const float* w1t, const float* b1, const float* w2t, const float* b2, int64_t c,
                 int64_t hid, int act, float* h1, float* a1, float* h2);
  // Backward, step 1: u = z*scale + shift (stored) and gs[k] = sum_r gy[r, k] * act(u[r, k]).
  void (*bwd_gate_sum)(const float* z, const float* gy, const float* scale, const float* shift, int act, float* u,
                       float* gs, int64_t rows, int64_t c);
  // Backward, step 2: gu = (gy*s + gp*inv_hw) * act'(u); gb[k] = sum_r gu, gg[k] = sum_r gu*zhat with
  // zhat = (z - mean)*rstd; out = gu (training) or gu*scale (eval: the input gradient of BN). out may be z.
  void (*bwd_gu)(const float* z, const float* u, const float* gy, const float* s, const float* gp, float inv_hw,
                 const float* mean, const float* rstd, const float* scale, int act, bool training, float* out,
                 float* gb, float* gg, int64_t rows, int64_t c);
  // Training BN input gradient: gz = scale*(gu - mgu - zhat*mguz), zhat = (z - mean)*rstd. gz may be z.
  void (*bwd_bn_train)(const float* z, const float* gu, const float* mean, const float* rstd, const float* scale,
                       const float* mgu, const float* mguz, float* gz, int64_t rows, int64_t c);
  // gx = the depthwise conv's input gradient (H, W, C) and gw (9, C) its weight gradient, both overwritten.
  void (*input_grads)(const float* x, const float* gz, const float* wt, float* gx, float* gw, const Geom& g);
  // The MBConv eval op (mbconv_eval.cpp). z rows [oh0, oh1) of act(dwconv3x3(x) + shift), with x
  // holding the sample's input from row ih0 on (rows outside the taps' reach need not exist), and
  // psum[k] += the sum of those rows of z (accumulated, not overwritten).
  void (*conv_rows)(const float* x, int64_t ih0, const float* wt, const float* shift, int act, float* z, float* psum,
                    const Geom& g, int64_t oh0, int64_t oh1);
  // y = act(y + b) in place (rows x C): the expand GEMM's bias and activation in one pass.
  void (*bias_act)(float* y, const float* b, int act, int64_t rows, int64_t c);
  // y += b (+ res when res != nullptr) in place (rows x C): the projection GEMM's epilogue.
  void (*add_bias_rows)(float* y, const float* b, const float* res, int64_t rows, int64_t c);
  // The eval 3x3 convolution by Winograd F(2x2, 3x3) (winograd_conv.cpp, winograd_kernels.inc), for tile
  // rows [ty0, ty0 + rows) of one sample (tw tiles a row); c and cout multiples of 16.
  // V (16, tiles, c) = B^T d B of each input tile.
  void (*wino_input)(const float* x, int64_t h, int64_t w, int64_t c, int64_t ty0, int64_t rows, int64_t tw, float* v);
  // y = act(A^T M A + bias (+ res)) for those tiles' in-image outputs; act < 0: no activation.
  void (*wino_output)(const float* m, const float* bias, const float* res, int act, int64_t h, int64_t w, int64_t cout,
                      int64_t ty0, int64_t rows, int64_t tw, float* y);
  // The same two steps by Winograd F(4x4, 3x3): V and M have 36 planes, tiles are 4x4 outputs.
  void (*wino4_input)(const float* x, int64_t h, int64_t w, int64_t c, int64_t ty0, int64_t rows, int64_t tw, float* v);
  void (*wino4_output)(const float* m, const float* bias, const float* res, int act, int64_t h, int64_t w, int64_t cout,
                       int64_t ty0, int64_t rows, int64_t tw, float* y);
  // A stem's first 3x3 convolution (stride, padding; act < 0: none) and its 1x1 shortcut of the same stride,
  // output rows [o0, o1) of one sample (stem_conv.cpp, stem_conv_kernels.inc); cout a multiple of 16.
  void (*stem_conv)(const float* x, int64_t h, int64_t w, int64_t cin, const float* wt, const float* b,
                    const float* wsc, const float* bsc, int act, int64_t stride, int64_t pad, int64_t wo, int64_t cout,
                    int64_t o0, int64_t o1, float* y, float* sc);
  // The vector width of this build (8, or 16 for AVX-512): gemm's n must be a multiple of it.
  int64_t lanes;
  // The small GEMMs of the eval ops with their epilogue (gemm_kernels.inc).
  void (*gemm)(const GemmArgs& g);
  // y[r] = dot(w[r, :], x) (+ b[r] when b != nullptr), w (rows, cols) row-major.
  void (*gemv_rows)(const float* w, const float* x, const float* b, float* y, int64_t rows, int64_t cols);
  // out (cols, rows) = w (rows, cols) transposed, out's row k scaled by s[k] (s nullptr: unscaled).
  void (*transpose_scale)(const float* w, const float* s, float* out, int64_t rows, int64_t cols);
};

// The kernels for this CPU: AVX-512, else AVX2+FMA, when built in and supported, else the baseline build.
// YYFAST_CPU_ISA=baseline or avx2+fma in the environment (read once) forces that build.
const SpanCpuKernels& span_cpu_kernels();

// Each build, for tests: "baseline" always; "avx2+fma" and "avx512" when compiled in and this CPU runs them.
// Returns nullptr for a name that is not available here.
const SpanCpuKernels* span_cpu_kernels_named(const char* isa);

// Selects the kernels span_cpu_kernels() returns from now on; returns false (and changes nothing)
// for a name span_cpu_kernels_named() does not offer.
bool set_span_cpu_isa(const char* isa);

}  // namespace yyfast
