// The device code of dw_bn_act_se: compiled by nvcc (dw_bn_act_se.cu, yyfast._C) and by the host
// compiler with csrc/emu/cuda_emu.h in front (the CUDA-on-CPU emulator of the tests), so the code
// the emulator proves is exactly the code the GPU runs. Include it after kernel_api.cuh, once per
// translation unit: everything is in an anonymous namespace, so the nvcc build and the emulated
// build (two shared libraries that may live in one process) never share a symbol.
//
// CUDA implementation of dw_bn_act_se (forward and backward, training and eval), designed for an
// H100: the op is memory-bound (9 multiply-adds per output), so the kernels never store the
// depthwise output, the BN output or the activation; each pass recomputes them from x (L2-resident
// for the sizes YYNet uses) and the only activation-sized tensors written are y, and in backward
// gz (in the accumulation type: float32, or float64 for float64 x) and gx. Saved for backward: x,
// the per-channel mean/var, the (N, C) SE input `pooled`.
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
#pragma once

#include <cstdint>

#include "../common/dw_bn_act_se_math.h"
#include "kernel_api.cuh"

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

// What a thread of a per-(sample, tile) kernel (grid rows_grid, block kChanPerBlock x kRowLanes)
// works on: channel c of sample n, that sample's x (channels_last) and the channel's nine weights,
// loaded into the kernel's own array `w`. (With the array a member, 28 of the 48 sm_80/sm_90 builds
// of these six kernels changed register count, up to 16 more, by cuobjdump --dump-resource-usage;
// this way all but one keep the count they had before this helper, and that one has 6 fewer.)
// Idle lanes of a partial last channel block have active == false and zero weights; in kernels that
// synchronise they must still reach every __syncthreads.
template <typename scalar_t, typename acc_t>
struct TileThread {
  int64_t c, n;
  bool active;
  const scalar_t* xs;
  const acc_t (&w)[9];

  __device__ __forceinline__ TileThread(const scalar_t* __restrict__ x, const acc_t* __restrict__ wgt, const Shape& s,
                                        acc_t (&weights)[9])
      : c(blockIdx.x * (int64_t)kChanPerBlock + threadIdx.x),
        n(blockIdx.z),
        active(c < s.C),
        xs(x + n * s.H * s.W * s.C),
        w(weights) {
    load_weights(wgt, c, active, weights);
  }
  // Sample n's rows of an activation-sized (N, Ho*Wo, C) tensor such as gy or y.
  template <typename T>
  __device__ __forceinline__ T* out_rows(T* t, const Shape& s) const {
    return t + n * s.HWo * s.C;
  }
  // z at output position r of this thread's channel; also the nine input taps (dwconv_at).
  __device__ __forceinline__ acc_t z_at(const Shape& s, int64_t r, acc_t (&taps)[9]) const {
    return dwconv_at(xs, w, c, s, r / s.Wo, r % s.Wo, taps);
  }
  // This block's row among the (sample, tile) partials.
  __device__ __forceinline__ int64_t part(const Shape& s) const { return n * s.tiles + blockIdx.y; }
};

// Sum of v over threadIdx.y within the block (result valid in threadIdx.y == 0). `buf` is a
// YY_SHARED_2D(acc_t, buf, kRowLanes, kChanPerBlock) (a pointer to its rows under nvcc).
template <typename acc_t, typename Rows>
__device__ __forceinline__ acc_t block_sum_rows(acc_t v, Rows buf) {
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
  YY_SHARED_2D(acc_t, bc, kRowLanes, kChanPerBlock);
  YY_SHARED_2D(acc_t, bm, kRowLanes, kChanPerBlock);
  YY_SHARED_2D(acc_t, bq, kRowLanes, kChanPerBlock);
  acc_t w[9];
  const TileThread<scalar_t, acc_t> t(x, wgt, s, w);
  acc_t taps[9];
  acc_t cnt = 0, mean = 0, m2 = 0;
  const int64_t r_end = tile_end(s);
  if (t.active) {
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      welford_add(cnt, mean, m2, t.z_at(s, r, taps));
    }
  }
  bc[threadIdx.y][threadIdx.x] = cnt;
  bm[threadIdx.y][threadIdx.x] = mean;
  bq[threadIdx.y][threadIdx.x] = m2;
  __syncthreads();
  if (threadIdx.y == 0 && t.active) {
    for (int r = 1; r < kRowLanes; ++r)
      welford_merge<acc_t>(cnt, mean, m2, bc[r][threadIdx.x], bm[r][threadIdx.x], bq[r][threadIdx.x]);
    const int64_t p = t.part(s);
    part_cnt[p * s.C + t.c] = cnt;
    part_mean[p * s.C + t.c] = mean;
    part_m2[p * s.C + t.c] = m2;
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
                                    const acc_t* __restrict__ gamma, const acc_t* __restrict__ beta, acc_t eps, int act,
                                    Shape s, acc_t* __restrict__ part_pool) {
  YY_SHARED_2D(acc_t, buf, kRowLanes, kChanPerBlock);
  acc_t w[9];
  const TileThread<scalar_t, acc_t> t(x, wgt, s, w);
  acc_t taps[9];
  acc_t sum = 0;
  if (t.active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, t.c, rstd, scale, shift);
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes)
      sum += act_forward(act, bn_affine(t.z_at(s, r, taps), scale, shift));
  }
  const acc_t total = block_sum_rows(sum, buf);
  if (threadIdx.y == 0 && t.active) part_pool[t.part(s) * s.C + t.c] = total;
}

// One block per sample: pooled p = mean_hw(d); h1 = W1 p + b1 (a warp per hidden unit);
// a1 = act(h1); h2 = W2 a1 + b2 (a thread per channel); s = gate(h2).
template <typename acc_t>
__global__ void se_forward_kernel(const acc_t* __restrict__ part_pool, const acc_t* __restrict__ w1,
                                  const acc_t* __restrict__ b1, const acc_t* __restrict__ w2,
                                  const acc_t* __restrict__ b2, int64_t C, int64_t hid, int tiles, acc_t inv_hw,
                                  int act, int gate, acc_t* __restrict__ pooled, acc_t* __restrict__ se_scale) {
  YY_DYNAMIC_SHARED(acc_t, p);  // C
  const auto a1 = p + C;        // hid
  const int64_t n = blockIdx.x;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    acc_t sum = 0;
    for (int t = 0; t < tiles; ++t) sum += part_pool[(n * tiles + t) * C + c];
    const acc_t mean = sum * inv_hw;
    p[c] = mean;
    pooled[n * C + c] = mean;
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
  acc_t w[9];
  const TileThread<scalar_t, acc_t> t(x, wgt, s, w);
  if (!t.active) return;  // no block-wide synchronisation in this kernel
  scalar_t* ys = t.out_rows(y, s);
  acc_t taps[9];
  acc_t rstd, scale, shift;
  channel_bn(mean, var, gamma, beta, eps, t.c, rstd, scale, shift);
  const acc_t sc = se_scale[t.n * s.C + t.c];
  const int64_t r_end = tile_end(s);
  for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
    const acc_t d = act_forward(act, bn_affine(t.z_at(s, r, taps), scale, shift));
    ys[r * s.C + t.c] = static_cast<scalar_t>(d * sc);
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
  YY_SHARED_2D(acc_t, buf, kRowLanes, kChanPerBlock);
  acc_t w[9];
  const TileThread<scalar_t, acc_t> t(x, wgt, s, w);
  const scalar_t* gys = t.out_rows(gy, s);
  acc_t taps[9];
  acc_t sum = 0;
  if (t.active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, t.c, rstd, scale, shift);
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      const acc_t d = act_forward(act, bn_affine(t.z_at(s, r, taps), scale, shift));
      sum += static_cast<acc_t>(gys[r * s.C + t.c]) * d;
    }
  }
  const acc_t total = block_sum_rows(sum, buf);
  if (threadIdx.y == 0 && t.active) part_gs[t.part(s) * s.C + t.c] = total;
}

// One block per sample: the SE backward. Recomputes h1, a1, h2, s from the saved pooled mean;
// gh2 = gs * gate'(h2); ga1 = W2^T gh2; gh1 = ga1 * act'(h1); gp = W1^T gh1. Writes s, gh2, a1,
// gh1 (for the SE parameter gradients) and gp.
template <typename acc_t>
__global__ void se_backward_kernel(const acc_t* __restrict__ part_gs, const acc_t* __restrict__ pooled,
                                   const acc_t* __restrict__ w1, const acc_t* __restrict__ b1,
                                   const acc_t* __restrict__ w2, const acc_t* __restrict__ b2, int64_t C, int64_t hid,
                                   int tiles, int act, int gate, acc_t* __restrict__ se_scale,
                                   acc_t* __restrict__ gh2_out, acc_t* __restrict__ a1_out, acc_t* __restrict__ gh1_out,
                                   acc_t* __restrict__ gp_out) {
  YY_DYNAMIC_SHARED(acc_t, p);  // C
  const auto gh2 = p + C;       // C
  const auto h1 = gh2 + C;      // hid
  const auto a1 = h1 + hid;     // hid
  const auto gh1 = a1 + hid;    // hid
  const int64_t n = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) p[c] = pooled[n * C + c];
  __syncthreads();
  for (int64_t j = warp; j < hid; j += warps) {
    acc_t t = 0;
    for (int64_t c = lane; c < C; c += 32) t += w1[j * C + c] * p[c];
    t = warp_sum(t);
    if (lane == 0) {
      const acc_t h = t + b1[j], a = act_forward(act, h);
      h1[j] = h;
      a1[j] = a;
      a1_out[n * hid + j] = a;
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    acc_t h2 = b2[c];
    for (int64_t j = 0; j < hid; ++j) h2 += w2[c * hid + j] * a1[j];
    acc_t gs = 0;
    for (int t = 0; t < tiles; ++t) gs += part_gs[(n * tiles + t) * C + c];
    se_scale[n * C + c] = gate_forward(gate, h2);
    const acc_t g = gs * gate_grad(gate, h2);
    gh2[c] = g;
    gh2_out[n * C + c] = g;
  }
  __syncthreads();
  for (int64_t j = warp; j < hid; j += warps) {
    acc_t t = 0;
    for (int64_t c = lane; c < C; c += 32) t += w2[c * hid + j] * gh2[c];
    t = warp_sum(t);
    if (lane == 0) {
      const acc_t g = t * act_grad<acc_t>(act, h1[j]);
      gh1[j] = g;
      gh1_out[n * hid + j] = g;
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
__device__ __forceinline__ acc_t grad_u_at(const TileThread<scalar_t, acc_t>& t, const scalar_t* gys, const Shape& s,
                                           int64_t r, acc_t scale, acc_t shift, acc_t sc, acc_t gp, acc_t inv_hw,
                                           int act, acc_t& z, acc_t (&taps)[9]) {
  z = t.z_at(s, r, taps);
  const acc_t u = bn_affine(z, scale, shift);
  const acc_t gd = span_grad_d(static_cast<acc_t>(gys[r * s.C + t.c]), sc, gp, inv_hw);
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
  YY_SHARED_2D(acc_t, buf, kRowLanes, kChanPerBlock);
  acc_t w[9];
  const TileThread<scalar_t, acc_t> t(x, wgt, s, w);
  const scalar_t* gys = t.out_rows(gy, s);
  acc_t taps[9];
  acc_t sum_gu = 0, sum_guz = 0;
  if (t.active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, t.c, rstd, scale, shift);
    const int64_t i = t.n * s.C + t.c;
    const acc_t sc = se_scale[i], g = gp[i], inv_hw = acc_t(1) / static_cast<acc_t>(s.HWo);
    const acc_t mu = mean[t.c];
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      acc_t z;
      const acc_t gu = grad_u_at(t, gys, s, r, scale, shift, sc, g, inv_hw, act, z, taps);
      sum_gu += gu;
      sum_guz += gu * ((z - mu) * rstd);
    }
  }
  const acc_t t_gu = block_sum_rows(sum_gu, buf);
  const acc_t t_guz = block_sum_rows(sum_guz, buf);
  if (threadIdx.y == 0 && t.active) {
    const int64_t p = t.part(s);
    part_gu[p * s.C + t.c] = t_gu;
    part_guz[p * s.C + t.c] = t_guz;
  }
}

// One thread per value: sum `parts` partials of `width` values each (fixed order, double).
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
  YY_SHARED_2D(acc_t, buf, kRowLanes, kChanPerBlock);
  acc_t w[9];
  const TileThread<scalar_t, acc_t> t(x, wgt, s, w);
  const scalar_t* gys = t.out_rows(gy, s);
  acc_t* gzs = t.out_rows(gz_out, s);
  acc_t taps[9], gw[9];
#pragma unroll
  for (int k = 0; k < 9; ++k) gw[k] = acc_t(0);
  if (t.active) {
    acc_t rstd, scale, shift;
    channel_bn(mean, var, gamma, beta, eps, t.c, rstd, scale, shift);
    const int64_t i = t.n * s.C + t.c;
    const acc_t sc = se_scale[i], g = gp[i], inv_hw = acc_t(1) / static_cast<acc_t>(s.HWo);
    const acc_t count = static_cast<acc_t>(gridDim.z) * static_cast<acc_t>(s.HWo);
    const acc_t mean_gu = gbeta[t.c] / count, mean_guz = ggamma[t.c] / count, mu = mean[t.c];
    const int64_t r_end = tile_end(s);
    for (int64_t r = tile_begin() + threadIdx.y; r < r_end; r += kRowLanes) {
      acc_t z;
      const acc_t gu = grad_u_at(t, gys, s, r, scale, shift, sc, g, inv_hw, act, z, taps);
      const acc_t gz = bn_grad_input(gu, (z - mu) * rstd, scale, mean_gu, mean_guz, training);
      gzs[r * s.C + t.c] = gz;
#pragma unroll
      for (int k = 0; k < 9; ++k) gw[k] += gz * taps[k];
    }
  }
  const int64_t p = t.part(s);
#pragma unroll
  for (int k = 0; k < 9; ++k) {
    const acc_t total = block_sum_rows(gw[k], buf);
    if (threadIdx.y == 0 && t.active) part_gw[(p * 9 + k) * s.C + t.c] = total;
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

}  // namespace
}  // namespace yyfast
