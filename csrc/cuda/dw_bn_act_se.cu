// CUDA implementation of dw_bn_act_se (forward and backward, training and eval), designed for an
// H100: the op is memory-bound (9 multiply-adds per output), so the kernels never store the
// depthwise output, the BN output or the activation; each pass recomputes them from x (L2-resident
// for the sizes YYNet uses) and the only activation-sized tensors written are y, and in backward
// gz (float32) and gx. Saved for backward: x, the per-channel mean/var, the (N, C) SE input `pooled`.
//
// Passes over x (each a read of x, plus what is named):
//   forward training: stats, pool, apply (+ write y)                              = 3 reads
//   forward eval:     pool, apply (+ write y)                                     = 2 reads
//   backward:         gs (+gy), bn sums (+gy), gz/gw (+gy, write gz), gx (read gz, write gx)
// Two dependent passes are unavoidable in each direction (BN statistics and the SE mean must be
// complete before any output is normalised/scaled); the third forward pass trades one more read of
// x for not writing and re-reading the unscaled activation.
//
// Work layout: x is channels_last (N, H, W, C) (NCHW input is converted, the output converted back).
// A block is 32 channels (threadIdx.x, coalesced) x 8 row-lanes (threadIdx.y); blockIdx.z is the
// sample, blockIdx.y a tile of kTileRows output positions of that sample. Per-channel reductions
// write one partial per (sample, tile) block and a small finishing kernel combines them in a fixed
// order (deterministic, no atomics). Per-sample SE work is one block per sample. All indices into
// activation tensors are 64-bit. The per-element math is common/dw_bn_act_se_math.h, shared with
// the C++ CPU twin (cpu/dw_bn_act_se.cpp), which the CPU test-suite proves on every CI run.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/dw_bn_act_se_math.h"
#include "../dw_bn_act_se_host.h"

namespace yyfast {
namespace {

constexpr int kChanPerBlock = 32;  // threadIdx.x
constexpr int kRowLanes = 8;       // threadIdx.y
constexpr int kTileRows = 128;     // output positions per block (16 per thread)
constexpr int kSeThreads = 256;    // per-sample SE kernels

struct Shape {
  int64_t C, H, W, Ho, Wo, HWo;
  int stride;
  int tiles;  // tiles of kTileRows output positions per sample
};

// z at output (oh, ow), channel c, of one sample (xs = its channels_last base); also returns the
// nine input taps (0 where the tap falls in the padding) for the weight gradient.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t dwconv_at(const scalar_t* __restrict__ xs, const acc_t (&w)[9], int64_t c,
                                           const Shape& s, int64_t oh, int64_t ow, acc_t (&taps)[9]) {
  acc_t z = acc_t(0);
#pragma unroll
  for (int kh = 0; kh < 3; ++kh) {
    const int64_t ih = oh * s.stride - 1 + kh;
#pragma unroll
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t iw = ow * s.stride - 1 + kw;
      acc_t v = acc_t(0);
      if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) v = static_cast<acc_t>(xs[(ih * s.W + iw) * s.C + c]);
      taps[kh * 3 + kw] = v;
      z += v * w[kh * 3 + kw];
    }
  }
  return z;
}

// The output positions [tile_begin, tile_end) of this block's sample.
__device__ __forceinline__ int64_t tile_begin() { return blockIdx.y * (int64_t)kTileRows; }
__device__ __forceinline__ int64_t tile_end(const Shape& s) {
  const int64_t e = (blockIdx.y + 1) * (int64_t)kTileRows;
  return e < s.HWo ? e : s.HWo;
}

template <typename acc_t>
__device__ __forceinline__ void load_weights(const acc_t* __restrict__ wgt, int64_t c, bool active, acc_t (&w)[9]) {
#pragma unroll
  for (int t = 0; t < 9; ++t) w[t] = active ? wgt[c * 9 + t] : acc_t(0);
}

// Per-channel BN constants from the statistics (mean/var: batch or running, acc_t (C,)).
template <typename acc_t>
__device__ __forceinline__ void channel_bn(const acc_t* mean, const acc_t* var, const acc_t* gamma, const acc_t* beta,
                                           acc_t eps, int64_t c, acc_t& rstd, acc_t& scale, acc_t& shift) {
  rstd = bn_rstd(var[c], eps);
  scale = bn_scale(rstd, gamma[c]);
  shift = bn_shift(mean[c], scale, beta[c]);
}

// Sum of v over threadIdx.y within the block (result valid in threadIdx.y == 0).
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum_rows(acc_t v, acc_t (*buf)[kChanPerBlock]) {
  buf[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  acc_t total = acc_t(0);
  if (threadIdx.y == 0) {
    for (int r = 0; r < kRowLanes; ++r) total += buf[r][threadIdx.x];
  }
  __syncthreads();
  return total;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// ---------------------------------------------------------------------------------- forward

// Partial (count, mean, M2) of z per (sample, tile) block and channel (Welford, then Chan merges).
template <typename scalar_t, typename acc_t>
__global__ void stats_partial_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ wgt, Shape s,
                                     acc_t* __restrict__ part_cnt, acc_t* __restrict__ part_mean,
                                     acc_t* __restrict__ part_m2) {
  __shared__ acc_t bc[kRowLanes][kChanPerBlock], bm[kRowLanes][kChanPerBlock], bq[kRowLanes][kChanPerBlock];
  const int64_t c = blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x;
  const bool active = c < s.C;
  const int64_t n = blockIdx.z;
  const scalar_t* xs = x + n * s.H * s.W * s.C;
  acc_t w[9], taps[9];
  load_weights(wgt, c, active, w);
  acc_t cnt = 0, mean = 0, m2 = 0;
  const int64_t r_end = tile_end(s);
  if (active) {
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      welford_add(cnt, mean, m2, dwconv_at(xs, w, c, s, r / s.Wo, r % s.Wo, taps));
    }
  }
  bc[threadIdx.y][threadIdx.x] = cnt;
  bm[threadIdx.y][threadIdx.x] = mean;
  bq[threadIdx.y][threadIdx.x] = m2;
  __syncthreads();
  if (threadIdx.y == 0 && active) {
    for (int r = 1; r < kRowLanes; ++r) welford_merge(cnt, mean, m2, bc[r][threadIdx.x], bm[r][threadIdx.x], bq[r][threadIdx.x]);
    const int64_t p = n * s.tiles + blockIdx.y;
    part_cnt[p * s.C + c] = cnt;
    part_mean[p * s.C + c] = mean;
    part_m2[p * s.C + c] = m2;
  }
}

// One thread per channel: merge the partials in a fixed order (in double) -> batch mean, biased var.
template <typename acc_t>
__global__ void stats_finish_kernel(const acc_t* __restrict__ part_cnt, const acc_t* __restrict__ part_mean,
                                    const acc_t* __restrict__ part_m2, int64_t parts, int64_t C,
                                    acc_t* __restrict__ mean_out, acc_t* __restrict__ var_out) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C) return;
  double cnt = 0, mean = 0, m2 = 0;
  for (int64_t p = 0; p < parts; ++p)
    welford_merge<double>(cnt, mean, m2, part_cnt[p * C + c], part_mean[p * C + c], part_m2[p * C + c]);
  mean_out[c] = static_cast<acc_t>(mean);
  var_out[c] = static_cast<acc_t>(m2 / cnt);
}

// Partial sums over the tile of d = act(BN(z)), for the SE mean.
template <typename scalar_t, typename acc_t>
__global__ void pool_partial_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ wgt,
                                    const acc_t* __restrict__ mean, const acc_t* __restrict__ var,
                                    const acc_t* __restrict__ gamma, const acc_t* __restrict__ beta, acc_t eps,
                                    int act, Shape s, acc_t* __restrict__ part_pool) {
  __shared__ acc_t buf[kRowLanes][kChanPerBlock];
  const int64_t c = blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x;
  const bool active = c < s.C;
  const int64_t n = blockIdx.z;
  const scalar_t* xs = x + n * s.H * s.W * s.C;
  acc_t w[9], taps[9];
  load_weights(wgt, c, active, w);
  acc_t sum = 0;
  if (active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, c, rstd, scale, shift);
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes)
      sum += act_forward(act, bn_affine(dwconv_at(xs, w, c, s, r / s.Wo, r % s.Wo, taps), scale, shift));
  }
  const acc_t total = block_sum_rows(sum, buf);
  if (threadIdx.y == 0 && active) part_pool[(n * s.tiles + blockIdx.y) * s.C + c] = total;
}

// One block per sample: pooled p = mean_hw(d); h1 = W1 p + b1 (a warp per hidden unit);
// a1 = act(h1); h2 = W2 a1 + b2 (a thread per channel); s = gate(h2).
template <typename acc_t>
__global__ void se_forward_kernel(const acc_t* __restrict__ part_pool, const acc_t* __restrict__ w1,
                                  const acc_t* __restrict__ b1, const acc_t* __restrict__ w2,
                                  const acc_t* __restrict__ b2, int64_t C, int64_t hid, int tiles, acc_t inv_hw,
                                  int act, int gate, acc_t* __restrict__ pooled, acc_t* __restrict__ se_scale) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* p = reinterpret_cast<acc_t*>(smem_raw);  // C
  acc_t* a1 = p + C;                              // hid
  const int64_t n = blockIdx.x;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    acc_t sum = 0;
    for (int t = 0; t < tiles; ++t) sum += part_pool[(n * tiles + t) * C + c];
    p[c] = sum * inv_hw;
    pooled[n * C + c] = p[c];
  }
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t j = warp; j < hid; j += warps) {
    acc_t t = 0;
    for (int64_t c = lane; c < C; c += 32) t += w1[j * C + c] * p[c];
    t = warp_sum(t);
    if (lane == 0) a1[j] = act_forward(act, t + b1[j]);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    acc_t t = b2[c];
    for (int64_t j = 0; j < hid; ++j) t += w2[c * hid + j] * a1[j];
    se_scale[n * C + c] = gate_forward(gate, t);
  }
}

// y = d * s, recomputing d from x.
template <typename scalar_t, typename acc_t>
__global__ void apply_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ wgt,
                             const acc_t* __restrict__ mean, const acc_t* __restrict__ var,
                             const acc_t* __restrict__ gamma, const acc_t* __restrict__ beta, acc_t eps, int act,
                             const acc_t* __restrict__ se_scale, Shape s, scalar_t* __restrict__ y) {
  const int64_t c = blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x;
  if (c >= s.C) return;  // no block-wide synchronisation in this kernel
  const int64_t n = blockIdx.z;
  const scalar_t* xs = x + n * s.H * s.W * s.C;
  scalar_t* ys = y + n * s.HWo * s.C;
  acc_t w[9], taps[9];
  load_weights(wgt, c, true, w);
  acc_t rstd, scale, shift;
  channel_bn(mean, var, gamma, beta, eps, c, rstd, scale, shift);
  const acc_t sc = se_scale[n * s.C + c];
  const int64_t r_end = tile_end(s);
  for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
    const acc_t d = act_forward(act, bn_affine(dwconv_at(xs, w, c, s, r / s.Wo, r % s.Wo, taps), scale, shift));
    ys[r * s.C + c] = static_cast<scalar_t>(d * sc);
  }
}

// ---------------------------------------------------------------------------------- backward

// Partial sums over the tile of gy * d (the SE scale's gradient, before the gate).
template <typename scalar_t, typename acc_t>
__global__ void gs_partial_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ gy,
                                  const acc_t* __restrict__ wgt, const acc_t* __restrict__ mean,
                                  const acc_t* __restrict__ var, const acc_t* __restrict__ gamma,
                                  const acc_t* __restrict__ beta, acc_t eps, int act, Shape s,
                                  acc_t* __restrict__ part_gs) {
  __shared__ acc_t buf[kRowLanes][kChanPerBlock];
  const int64_t c = blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x;
  const bool active = c < s.C;
  const int64_t n = blockIdx.z;
  const scalar_t* xs = x + n * s.H * s.W * s.C;
  const scalar_t* gys = gy + n * s.HWo * s.C;
  acc_t w[9], taps[9];
  load_weights(wgt, c, active, w);
  acc_t sum = 0;
  if (active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, c, rstd, scale, shift);
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      const acc_t d = act_forward(act, bn_affine(dwconv_at(xs, w, c, s, r / s.Wo, r % s.Wo, taps), scale, shift));
      sum += static_cast<acc_t>(gys[r * s.C + c]) * d;
    }
  }
  const acc_t total = block_sum_rows(sum, buf);
  if (threadIdx.y == 0 && active) part_gs[(n * s.tiles + blockIdx.y) * s.C + c] = total;
}

// One block per sample: the SE backward. Recomputes h1, a1, h2, s from the saved pooled mean;
// gh2 = gs * gate'(h2); ga1 = W2^T gh2; gh1 = ga1 * act'(h1); gp = W1^T gh1. Writes s, gh2, a1,
// gh1 (for the SE parameter gradients) and gp.
template <typename acc_t>
__global__ void se_backward_kernel(const acc_t* __restrict__ part_gs, const acc_t* __restrict__ pooled,
                                   const acc_t* __restrict__ w1, const acc_t* __restrict__ b1,
                                   const acc_t* __restrict__ w2, const acc_t* __restrict__ b2, int64_t C,
                                   int64_t hid, int tiles, int act, int gate, acc_t* __restrict__ se_scale,
                                   acc_t* __restrict__ gh2_out, acc_t* __restrict__ a1_out,
                                   acc_t* __restrict__ gh1_out, acc_t* __restrict__ gp_out) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* p = reinterpret_cast<acc_t*>(smem_raw);  // C
  acc_t* gh2 = p + C;                             // C
  acc_t* h1 = gh2 + C;                            // hid
  acc_t* a1 = h1 + hid;                           // hid
  acc_t* gh1 = a1 + hid;                          // hid
  const int64_t n = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) p[c] = pooled[n * C + c];
  __syncthreads();
  for (int64_t j = warp; j < hid; j += warps) {
    acc_t t = 0;
    for (int64_t c = lane; c < C; c += 32) t += w1[j * C + c] * p[c];
    t = warp_sum(t);
    if (lane == 0) {
      h1[j] = t + b1[j];
      a1[j] = act_forward(act, h1[j]);
      a1_out[n * hid + j] = a1[j];
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    acc_t h2 = b2[c];
    for (int64_t j = 0; j < hid; ++j) h2 += w2[c * hid + j] * a1[j];
    acc_t gs = 0;
    for (int t = 0; t < tiles; ++t) gs += part_gs[(n * tiles + t) * C + c];
    se_scale[n * C + c] = gate_forward(gate, h2);
    gh2[c] = gs * gate_grad(gate, h2);
    gh2_out[n * C + c] = gh2[c];
  }
  __syncthreads();
  for (int64_t j = warp; j < hid; j += warps) {
    acc_t t = 0;
    for (int64_t c = lane; c < C; c += 32) t += w2[c * hid + j] * gh2[c];
    t = warp_sum(t);
    if (lane == 0) {
      gh1[j] = t * act_grad(act, h1[j]);
      gh1_out[n * hid + j] = gh1[j];
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    acc_t t = 0;
    for (int64_t j = 0; j < hid; ++j) t += gh1[j] * w1[j * C + c];
    gp_out[n * C + c] = t;
  }
}

// gu at one output element (the gradient at the BN output), recomputing z and u.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t grad_u_at(const scalar_t* xs, const scalar_t* gys, const acc_t (&w)[9], int64_t c,
                                           const Shape& s, int64_t r, acc_t scale, acc_t shift, acc_t sc, acc_t gp,
                                           acc_t inv_hw, int act, acc_t& z, acc_t (&taps)[9]) {
  z = dwconv_at(xs, w, c, s, r / s.Wo, r % s.Wo, taps);
  const acc_t u = bn_affine(z, scale, shift);
  const acc_t gd = span_grad_d(static_cast<acc_t>(gys[r * s.C + c]), sc, gp, inv_hw);
  return gd * act_grad(act, u);
}

// Partial sums over the tile of gu and gu * zhat (-> grad of beta and gamma).
template <typename scalar_t, typename acc_t>
__global__ void bn_partial_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ gy,
                                  const acc_t* __restrict__ wgt, const acc_t* __restrict__ mean,
                                  const acc_t* __restrict__ var, const acc_t* __restrict__ gamma,
                                  const acc_t* __restrict__ beta, acc_t eps, int act,
                                  const acc_t* __restrict__ se_scale, const acc_t* __restrict__ gp, Shape s,
                                  acc_t* __restrict__ part_gu, acc_t* __restrict__ part_guz) {
  __shared__ acc_t buf[kRowLanes][kChanPerBlock];
  const int64_t c = blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x;
  const bool active = c < s.C;
  const int64_t n = blockIdx.z;
  const scalar_t* xs = x + n * s.H * s.W * s.C;
  const scalar_t* gys = gy + n * s.HWo * s.C;
  acc_t w[9], taps[9];
  load_weights(wgt, c, active, w);
  acc_t sum_gu = 0, sum_guz = 0;
  if (active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, c, rstd, scale, shift);
    const acc_t sc = se_scale[n * s.C + c], g = gp[n * s.C + c], inv_hw = acc_t(1) / static_cast<acc_t>(s.HWo);
    const acc_t mu = mean[c];
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      acc_t z;
      const acc_t gu = grad_u_at(xs, gys, w, c, s, r, scale, shift, sc, g, inv_hw, act, z, taps);
      sum_gu += gu;
      sum_guz += gu * ((z - mu) * rstd);
    }
  }
  const acc_t t_gu = block_sum_rows(sum_gu, buf);
  const acc_t t_guz = block_sum_rows(sum_guz, buf);
  if (threadIdx.y == 0 && active) {
    const int64_t p = n * s.tiles + blockIdx.y;
    part_gu[p * s.C + c] = t_gu;
    part_guz[p * s.C + c] = t_guz;
  }
}

// One thread per channel: sum `rows` partials of `width` values each (fixed order, double).
template <typename acc_t>
__global__ void sum_partials_kernel(const acc_t* __restrict__ part, int64_t parts, int64_t width,
                                    acc_t* __restrict__ out) {
  const int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (k >= width) return;
  double sum = 0;
  for (int64_t p = 0; p < parts; ++p) sum += part[p * width + k];
  out[k] = static_cast<acc_t>(sum);
}

// gz = BN input gradient (written, float/double, for the gx kernel) and the partial sums over the
// tile of gz * x_tap for the nine depthwise weights (part_gw: [part][tap][C]).
template <typename scalar_t, typename acc_t>
__global__ void gz_gw_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ gy,
                             const acc_t* __restrict__ wgt, const acc_t* __restrict__ mean,
                             const acc_t* __restrict__ var, const acc_t* __restrict__ gamma,
                             const acc_t* __restrict__ beta, acc_t eps, int act, bool training,
                             const acc_t* __restrict__ se_scale, const acc_t* __restrict__ gp,
                             const acc_t* __restrict__ gbeta, const acc_t* __restrict__ ggamma, Shape s,
                             acc_t* __restrict__ gz_out, acc_t* __restrict__ part_gw) {
  __shared__ acc_t buf[kRowLanes][kChanPerBlock];
  const int64_t c = blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x;
  const bool active = c < s.C;
  const int64_t n = blockIdx.z;
  const scalar_t* xs = x + n * s.H * s.W * s.C;
  const scalar_t* gys = gy + n * s.HWo * s.C;
  acc_t w[9], taps[9], gw[9];
  load_weights(wgt, c, active, w);
#pragma unroll
  for (int t = 0; t < 9; ++t) gw[t] = acc_t(0);
  if (active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, c, rstd, scale, shift);
    const acc_t sc = se_scale[n * s.C + c], g = gp[n * s.C + c], inv_hw = acc_t(1) / static_cast<acc_t>(s.HWo);
    const acc_t count = static_cast<acc_t>(gridDim.z) * static_cast<acc_t>(s.HWo);
    const acc_t mean_gu = gbeta[c] / count, mean_guz = ggamma[c] / count, mu = mean[c];
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      acc_t z;
      const acc_t gu = grad_u_at(xs, gys, w, c, s, r, scale, shift, sc, g, inv_hw, act, z, taps);
      const acc_t gz = bn_grad_input(gu, (z - mu) * rstd, scale, mean_gu, mean_guz, training);
      gz_out[(n * s.HWo + r) * s.C + c] = gz;
#pragma unroll
      for (int t = 0; t < 9; ++t) gw[t] += gz * taps[t];
    }
  }
  const int64_t p = n * s.tiles + blockIdx.y;
#pragma unroll
  for (int t = 0; t < 9; ++t) {
    const acc_t total = block_sum_rows(gw[t], buf);
    if (threadIdx.y == 0 && active) part_gw[(p * 9 + t) * s.C + c] = total;
  }
}

// gx[n, ih, iw, c] = sum over the taps that read (ih, iw) of gz[n, oh, ow, c] * w[c, tap]:
// the transposed depthwise convolution, one thread per input element (grid-stride, 64-bit).
template <typename scalar_t, typename acc_t>
__global__ void gx_kernel(const acc_t* __restrict__ gz, const acc_t* __restrict__ wgt, Shape s, int64_t total,
                          scalar_t* __restrict__ gx) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = k % s.C;
    const int64_t pix = k / s.C;
    const int64_t iw = pix % s.W;
    const int64_t ih = (pix / s.W) % s.H;
    const int64_t n = pix / (s.W * s.H);
    acc_t sum = 0;
    for (int kh = 0; kh < 3; ++kh) {
      const int64_t th = ih + 1 - kh;  // = oh * stride
      if (th < 0 || th % s.stride != 0) continue;
      const int64_t oh = th / s.stride;
      if (oh >= s.Ho) continue;
      for (int kw = 0; kw < 3; ++kw) {
        const int64_t tw = iw + 1 - kw;
        if (tw < 0 || tw % s.stride != 0) continue;
        const int64_t ow = tw / s.stride;
        if (ow >= s.Wo) continue;
        sum += gz[((n * s.Ho + oh) * s.Wo + ow) * s.C + c] * wgt[c * 9 + kh * 3 + kw];
      }
    }
    gx[k] = static_cast<scalar_t>(sum);
  }
}

// ---------------------------------------------------------------------------------- host side

struct CudaParams {
  at::Tensor w, gamma, beta, w1, b1, w2, b2;
  CudaParams(const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
             const at::Tensor& se_w1, const at::Tensor& se_b1, const at::Tensor& se_w2, const at::Tensor& se_b2,
             at::ScalarType acc, int64_t C) {
    w = acc_copy(dw_weight.reshape({C, 9}), acc);  // (C, 9)
    gamma = acc_copy(bn_weight, acc);
    beta = acc_copy(bn_bias, acc);
    w1 = acc_copy(se_w1, acc);
    b1 = acc_copy(se_b1, acc);
    w2 = acc_copy(se_w2, acc);
    b2 = acc_copy(se_b2, acc);
  }
};

Shape make_shape(const SpanDims& d, int64_t stride, const char* op) {
  Shape s{};
  s.C = d.c;
  s.H = d.h;
  s.W = d.w;
  s.Ho = d.ho;
  s.Wo = d.wo;
  s.HWo = d.ho * d.wo;
  s.stride = static_cast<int>(stride);
  const int64_t tiles = (s.HWo + kTileRows - 1) / kTileRows;
  TORCH_CHECK(d.n <= 65535, op, ": x has batch size ", d.n, "; the CUDA kernels take at most 65535 (split the batch)");
  TORCH_CHECK(tiles <= 65535, op, ": x's output plane ", d.ho, "x", d.wo, " is too large for the CUDA kernels");
  s.tiles = static_cast<int>(tiles);
  return s;
}

dim3 rows_grid(const SpanDims& d, const Shape& s) {
  return dim3(static_cast<unsigned>((d.c + kChanPerBlock - 1) / kChanPerBlock), static_cast<unsigned>(s.tiles),
              static_cast<unsigned>(d.n));
}

size_t se_smem_bytes(int64_t floats, size_t elem, const char* op) {
  const size_t bytes = static_cast<size_t>(floats) * elem;
  TORCH_CHECK(bytes <= 48 * 1024, op, ": the SE layer is too wide for the CUDA kernels' shared memory (", bytes,
              " bytes > 48 KiB)");
  return bytes;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cuda(
    const at::Tensor& x_in, const at::Tensor& dw_weight, const at::Tensor& bn_weight, const at::Tensor& bn_bias,
    const at::Tensor& running_mean, const at::Tensor& running_var, const at::Tensor& se_w1, const at::Tensor& se_b1,
    const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride, double eps, bool training, std::string act,
    std::string gate) {
  const char* op = "dw_bn_act_se";
  const SpanDims d = check_span_args(op, x_in, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1,
                                     se_w2, se_b2, stride, act, gate, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Shape s = make_shape(d, stride, op);
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const auto acc = acc_type_for(x.scalar_type());
  const CudaParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor y = at::empty({d.n, d.c, d.ho, d.wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor mean = training ? at::empty({d.c}, acc_opts) : acc_copy(running_mean, acc);
  at::Tensor var = training ? at::empty({d.c}, acc_opts) : acc_copy(running_var, acc);
  at::Tensor pooled = at::empty({d.n, d.c}, acc_opts);
  const int64_t parts = d.n * s.tiles;
  at::Tensor part_pool = at::empty({parts, d.c}, acc_opts);
  at::Tensor se_scale = at::empty({d.n, d.c}, acc_opts);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 block(kChanPerBlock, kRowLanes), grid = rows_grid(d, s);
  const int fin_threads = 256;
  const unsigned fin_blocks = static_cast<unsigned>((d.c + fin_threads - 1) / fin_threads);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const acc_t* pw = prm.w.const_data_ptr<acc_t>();
    const acc_t eps_a = static_cast<acc_t>(eps);
    if (training) {
      at::Tensor part_cnt = at::empty({parts, d.c}, acc_opts), part_mean = at::empty({parts, d.c}, acc_opts),
                 part_m2 = at::empty({parts, d.c}, acc_opts);
      stats_partial_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
          px, pw, s, part_cnt.mutable_data_ptr<acc_t>(), part_mean.mutable_data_ptr<acc_t>(),
          part_m2.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      stats_finish_kernel<acc_t><<<fin_blocks, fin_threads, 0, stream>>>(
          part_cnt.const_data_ptr<acc_t>(), part_mean.const_data_ptr<acc_t>(), part_m2.const_data_ptr<acc_t>(), parts,
          d.c, mean.mutable_data_ptr<acc_t>(), var.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const acc_t *pmean = mean.const_data_ptr<acc_t>(), *pvar = var.const_data_ptr<acc_t>();
    const acc_t *pg = prm.gamma.const_data_ptr<acc_t>(), *pb = prm.beta.const_data_ptr<acc_t>();
    pool_partial_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(px, pw, pmean, pvar, pg, pb, eps_a, d.act, s,
                                                                     part_pool.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const size_t smem = se_smem_bytes(d.c + d.hidden, sizeof(acc_t), op);
    se_forward_kernel<acc_t><<<static_cast<unsigned>(d.n), kSeThreads, smem, stream>>>(
        part_pool.const_data_ptr<acc_t>(), prm.w1.const_data_ptr<acc_t>(), prm.b1.const_data_ptr<acc_t>(),
        prm.w2.const_data_ptr<acc_t>(), prm.b2.const_data_ptr<acc_t>(), d.c, d.hidden, s.tiles,
        acc_t(1) / static_cast<acc_t>(s.HWo), d.act, d.gate, pooled.mutable_data_ptr<acc_t>(),
        se_scale.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    apply_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(px, pw, pmean, pvar, pg, pb, eps_a, d.act,
                                                              se_scale.const_data_ptr<acc_t>(), s,
                                                              y.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {in_format(y, fmt), mean, var, pooled};
}

SpanGrads
backward_cuda(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& dw_weight,
              const at::Tensor& bn_weight, const at::Tensor& bn_bias, const at::Tensor& mean_in,
              const at::Tensor& var_in, const at::Tensor& pooled_in, const at::Tensor& se_w1, const at::Tensor& se_b1,
              const at::Tensor& se_w2, const at::Tensor& se_b2, int64_t stride, double eps, bool training,
              std::string act, std::string gate) {
  const char* op = "dw_bn_act_se_backward";
  const SpanDims d = check_span_args(op, x_in, dw_weight, bn_weight, bn_bias, mean_in, var_in, se_w1, se_b1, se_w2,
                                     se_b2, stride, act, gate, c10::DeviceType::CUDA);
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == d.n && grad_y.size(1) == d.c && grad_y.size(2) == d.ho &&
                  grad_y.size(3) == d.wo,
              op, ": grad_y must have shape (", d.n, ", ", d.c, ", ", d.ho, ", ", d.wo, "), got ", grad_y.sizes());
  TORCH_CHECK(grad_y.device() == x_in.device(), op, ": grad_y is on ", grad_y.device(), " but x is on ", x_in.device());
  TORCH_CHECK(pooled_in.dim() == 2 && pooled_in.size(0) == d.n && pooled_in.size(1) == d.c, op,
              ": pooled must have shape (", d.n, ", ", d.c, "), got ", pooled_in.sizes());
  TORCH_CHECK(pooled_in.device() == x_in.device(), op, ": pooled is on ", pooled_in.device(), " but x is on ",
              x_in.device());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Shape s = make_shape(d, stride, op);
  const auto fmt = output_format(x_in);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gy = grad_y.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  const auto acc = acc_type_for(x.scalar_type());
  const CudaParams prm(dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2, acc, d.c);
  const at::Tensor mean = acc_copy(mean_in, acc), var = acc_copy(var_in, acc), pooled = acc_copy(pooled_in, acc);
  const auto acc_opts = x.options().dtype(acc);
  const int64_t parts = d.n * s.tiles;
  at::Tensor part = at::empty({parts, d.c}, acc_opts), part2 = at::empty({parts, d.c}, acc_opts);
  at::Tensor part_gw = at::empty({parts, 9, d.c}, acc_opts);
  at::Tensor se_scale = at::empty({d.n, d.c}, acc_opts), gh2 = at::empty({d.n, d.c}, acc_opts);
  at::Tensor a1 = at::empty({d.n, d.hidden}, acc_opts), gh1 = at::empty({d.n, d.hidden}, acc_opts);
  at::Tensor gp = at::empty({d.n, d.c}, acc_opts);
  at::Tensor gbeta = at::empty({d.c}, acc_opts), ggamma = at::empty({d.c}, acc_opts);
  at::Tensor gz = at::empty({d.n, s.HWo, d.c}, acc_opts);
  at::Tensor gx = at::empty({d.n, d.c, d.h, d.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 block(kChanPerBlock, kRowLanes), grid = rows_grid(d, s);
  const int fin_threads = 256;
  const unsigned fin_blocks = static_cast<unsigned>((d.c + fin_threads - 1) / fin_threads);
  at::Tensor gw_t = at::empty({9, d.c}, acc_opts);  // summed as (9, C), transposed on return

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dw_bn_act_se_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pgy = gy.const_data_ptr<scalar_t>();
    const acc_t* pw = prm.w.const_data_ptr<acc_t>();
    const acc_t eps_a = static_cast<acc_t>(eps);
    const acc_t *pmean = mean.const_data_ptr<acc_t>(), *pvar = var.const_data_ptr<acc_t>();
    const acc_t *pg = prm.gamma.const_data_ptr<acc_t>(), *pb = prm.beta.const_data_ptr<acc_t>();
    gs_partial_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(px, pgy, pw, pmean, pvar, pg, pb, eps_a, d.act, s,
                                                                   part.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const size_t smem = se_smem_bytes(2 * d.c + 3 * d.hidden, sizeof(acc_t), op);
    se_backward_kernel<acc_t><<<static_cast<unsigned>(d.n), kSeThreads, smem, stream>>>(
        part.const_data_ptr<acc_t>(), pooled.const_data_ptr<acc_t>(), prm.w1.const_data_ptr<acc_t>(),
        prm.b1.const_data_ptr<acc_t>(), prm.w2.const_data_ptr<acc_t>(), prm.b2.const_data_ptr<acc_t>(), d.c,
        d.hidden, s.tiles, d.act, d.gate, se_scale.mutable_data_ptr<acc_t>(), gh2.mutable_data_ptr<acc_t>(),
        a1.mutable_data_ptr<acc_t>(), gh1.mutable_data_ptr<acc_t>(), gp.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // `part` is free again after the SE backward (stream order): reuse it for the sums of gu.
    bn_partial_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
        px, pgy, pw, pmean, pvar, pg, pb, eps_a, d.act, se_scale.const_data_ptr<acc_t>(), gp.const_data_ptr<acc_t>(),
        s, part.mutable_data_ptr<acc_t>(), part2.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_partials_kernel<acc_t><<<fin_blocks, fin_threads, 0, stream>>>(part.const_data_ptr<acc_t>(), parts, d.c,
                                                                       gbeta.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_partials_kernel<acc_t><<<fin_blocks, fin_threads, 0, stream>>>(part2.const_data_ptr<acc_t>(), parts, d.c,
                                                                       ggamma.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gz_gw_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
        px, pgy, pw, pmean, pvar, pg, pb, eps_a, d.act, training, se_scale.const_data_ptr<acc_t>(),
        gp.const_data_ptr<acc_t>(), gbeta.const_data_ptr<acc_t>(), ggamma.const_data_ptr<acc_t>(), s,
        gz.mutable_data_ptr<acc_t>(), part_gw.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const unsigned gw_blocks = static_cast<unsigned>((9 * d.c + fin_threads - 1) / fin_threads);
    sum_partials_kernel<acc_t><<<gw_blocks, fin_threads, 0, stream>>>(part_gw.const_data_ptr<acc_t>(), parts,
                                                                      9 * d.c, gw_t.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t total = gx.numel();
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(65535) * 8);
    gx_kernel<scalar_t, acc_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        gz.const_data_ptr<acc_t>(), pw, s, total, gx.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const at::Tensor gw = gw_t.t().contiguous();  // (C, 9)
  return span_grads(gx, fmt, gw, ggamma, gbeta, gh2, a1, gh1, pooled, dw_weight, bn_weight, bn_bias, se_w1, se_b1,
                    se_w2, se_b2);
}

}  // namespace

TORCH_LIBRARY_IMPL(yyfast, CUDA, m) {
  m.impl("dw_bn_act_se", &forward_cuda);
  m.impl("dw_bn_act_se_backward", &backward_cuda);
}

}  // namespace yyfast
