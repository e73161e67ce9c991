// The CUDA kernels of csrc/cuda run in the CUDA-on-CPU emulator on raw buffers, without libtorch,
// so this driver builds in seconds and with AddressSanitizer (ctest "cuda_emu_*", CMakeLists.txt):
//
//   yyfast_emu_driver            every kernel of dw_bn_act_se (forward training and eval, backward)
//                                and yinyang_fuse, float and double, on shapes with several tiles,
//                                several channel blocks and a partial channel block; every buffer is
//                                exactly sized, so ASan reports any out-of-bounds global access;
//                                exits 1 on any emulator error or non-finite output.
//   yyfast_emu_driver --faults   deliberately broken tiny kernels: each check of the emulator must
//                                fire (prints "caught <fault>: <message>"); exits 1 if one does not.
//   yyfast_emu_driver --global-oob  a kernel writes one element past its output: ASan must abort.
//
// The launch sequence below mirrors csrc/cuda/dw_bn_act_se_launch.h with the same kernels, block
// shapes and constants; the real launch code runs in the emulator through the Python op proofs
// (tests/test_cuda_emu.py). tests/test_cuda_emu.py also compiles this driver against mutated copies
// of the kernels (a removed __syncthreads, an off-by-one bound, ...) and asserts they are caught.
#include "emu/cuda_emu.h"  // first: the CUDA built-ins

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda/dw_bn_act_se_kernels.cuh"
#include "cuda/yinyang_fuse_kernels.cuh"

namespace {

using namespace yyfast;

std::mt19937 rng(1234);

template <typename T>
std::vector<T> random(size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(n);
  for (auto& e : v) e = static_cast<T>(u(rng));
  return v;
}

// Exactly sized and NaN-filled, like the NaN-poisoned allocations of the Python tests.
template <typename T>
std::vector<T> empty(size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

template <typename T>
bool all_finite(const std::vector<T>& v, const char* what) {
  for (size_t k = 0; k < v.size(); ++k)
    if (!std::isfinite(static_cast<double>(v[k]))) {
      std::printf("FAIL: %s[%zu] is not finite\n", what, k);
      return false;
    }
  return true;
}

template <typename T>
bool run_span(int64_t N, int64_t C, int64_t H, int64_t W, int stride, bool training) {
  const cuda_emu::stream_t stream{};
  Shape s{};
  s.C = C;
  s.H = H;
  s.W = W;
  s.Ho = (H - 1) / stride + 1;
  s.Wo = (W - 1) / stride + 1;
  s.HWo = s.Ho * s.Wo;
  s.stride = stride;
  s.tiles = static_cast<int>((s.HWo + kTileRows - 1) / kTileRows);
  const int64_t hid = std::max<int64_t>(1, C / 4), parts = N * s.tiles;
  const dim3 grid(static_cast<unsigned>((C + kChanPerBlock - 1) / kChanPerBlock), s.tiles, N);
  const dim3 block(kChanPerBlock, kRowLanes);
  const int fin_threads = 256;
  const unsigned fin_blocks = static_cast<unsigned>((C + fin_threads - 1) / fin_threads);
  const int act = kGelu, gate = kSigmoid;
  const T eps = T(1e-5), inv_hw = T(1) / static_cast<T>(s.HWo);

  auto x = random<T>(N * H * W * C, -2, 2), w = random<T>(C * 9, -0.6, 0.6);
  auto gamma = random<T>(C, 0.5, 1.5), beta = random<T>(C, -0.5, 0.5);
  auto w1 = random<T>(hid * C, -0.8, 0.8), b1 = random<T>(hid, -0.3, 0.3);
  auto w2 = random<T>(C * hid, -0.8, 0.8), b2 = random<T>(C, -0.3, 0.3);
  auto gy = random<T>(N * s.HWo * C, -1, 1);
  auto mean = training ? empty<T>(C) : random<T>(C, -0.3, 0.3), var = training ? empty<T>(C) : random<T>(C, 0.5, 2);
  auto part_cnt = empty<T>(parts * C), part_mean = empty<T>(parts * C), part_m2 = empty<T>(parts * C);
  auto part_pool = empty<T>(parts * C), pooled = empty<T>(N * C), se_scale = empty<T>(N * C);
  auto y = empty<T>(N * s.HWo * C);

  // forward (dw_bn_act_se_launch.h: forward_cuda)
  if (training) {
    launch_kernel("stats_partial_kernel", stats_partial_kernel<T, T>, grid, block, 0, stream, x.data(), w.data(), s,
                  part_cnt.data(), part_mean.data(), part_m2.data());
    launch_kernel("stats_finish_kernel", stats_finish_kernel<T>, fin_blocks, fin_threads, 0, stream, part_cnt.data(),
                  part_mean.data(), part_m2.data(), parts, C, mean.data(), var.data());
  }
  launch_kernel("pool_partial_kernel", pool_partial_kernel<T, T>, grid, block, 0, stream, x.data(), w.data(),
                mean.data(), var.data(), gamma.data(), beta.data(), eps, act, s, part_pool.data());
  launch_kernel("se_forward_kernel", se_forward_kernel<T>, static_cast<unsigned>(N), kSeThreads, (C + hid) * sizeof(T),
                stream, part_pool.data(), w1.data(), b1.data(), w2.data(), b2.data(), C, hid, s.tiles, inv_hw, act,
                gate, pooled.data(), se_scale.data());
  launch_kernel("apply_kernel", apply_kernel<T, T>, grid, block, 0, stream, x.data(), w.data(), mean.data(), var.data(),
                gamma.data(), beta.data(), eps, act, se_scale.data(), s, y.data());

  // backward (backward_cuda)
  auto part = empty<T>(parts * C), part2 = empty<T>(parts * C), part_gw = empty<T>(parts * 9 * C);
  auto gh2 = empty<T>(N * C), a1 = empty<T>(N * hid), gh1 = empty<T>(N * hid), gp = empty<T>(N * C);
  auto gbeta = empty<T>(C), ggamma = empty<T>(C), gz = empty<T>(N * s.HWo * C), gw_t = empty<T>(9 * C);
  auto gx = empty<T>(N * H * W * C);
  launch_kernel("gs_partial_kernel", gs_partial_kernel<T, T>, grid, block, 0, stream, x.data(), gy.data(), w.data(),
                mean.data(), var.data(), gamma.data(), beta.data(), eps, act, s, part.data());
  launch_kernel("se_backward_kernel", se_backward_kernel<T>, static_cast<unsigned>(N), kSeThreads,
                (2 * C + 3 * hid) * sizeof(T), stream, part.data(), pooled.data(), w1.data(), b1.data(), w2.data(),
                b2.data(), C, hid, s.tiles, act, gate, se_scale.data(), gh2.data(), a1.data(), gh1.data(), gp.data());
  launch_kernel("bn_partial_kernel", bn_partial_kernel<T, T>, grid, block, 0, stream, x.data(), gy.data(), w.data(),
                mean.data(), var.data(), gamma.data(), beta.data(), eps, act, se_scale.data(), gp.data(), s,
                part.data(), part2.data());
  launch_kernel("sum_partials_kernel", sum_partials_kernel<T>, fin_blocks, fin_threads, 0, stream, part.data(), parts,
                C, gbeta.data());
  launch_kernel("sum_partials_kernel", sum_partials_kernel<T>, fin_blocks, fin_threads, 0, stream, part2.data(), parts,
                C, ggamma.data());
  launch_kernel("gz_gw_kernel", gz_gw_kernel<T, T>, grid, block, 0, stream, x.data(), gy.data(), w.data(), mean.data(),
                var.data(), gamma.data(), beta.data(), eps, act, training, se_scale.data(), gp.data(), gbeta.data(),
                ggamma.data(), s, gz.data(), part_gw.data());
  const unsigned gw_blocks = static_cast<unsigned>((9 * C + fin_threads - 1) / fin_threads);
  launch_kernel("sum_partials_kernel", sum_partials_kernel<T>, gw_blocks, fin_threads, 0, stream, part_gw.data(), parts,
                9 * C, gw_t.data());
  const int64_t total = N * H * W * C;
  const int64_t gx_blocks = std::min<int64_t>((total + 255) / 256, int64_t(65535) * 8);
  launch_kernel("gx_kernel", gx_kernel<T, T>, static_cast<unsigned>(gx_blocks), 256, 0, stream, gz.data(), w.data(), s,
                total, gx.data());

  return all_finite(y, "y") && all_finite(pooled, "pooled") && all_finite(gx, "gx") && all_finite(gw_t, "gw") &&
         all_finite(gbeta, "gbeta") && all_finite(ggamma, "ggamma") && all_finite(gh1, "gh1") && all_finite(gp, "gp");
}

template <typename T>
bool run_fuse(int64_t n) {
  auto a = random<T>(n, -2, 2), i = random<T>(n, -2, 2), g = random<T>(n, -1, 1);
  auto out = empty<T>(n), ga = empty<T>(n), gi = empty<T>(n);
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  launch_kernel("fuse_forward_kernel", fuse_forward_kernel<T, T>, blocks, 256, 0, cuda_emu::stream_t{}, a.data(),
                i.data(), out.data(), n, 1.0f, 0.5f, 0.25f);
  launch_kernel("fuse_backward_kernel", fuse_backward_kernel<T, T>, blocks, 256, 0, cuda_emu::stream_t{}, g.data(),
                a.data(), i.data(), ga.data(), gi.data(), n, 1.0f, 0.5f, 0.25f);
  return all_finite(out, "fuse out") && all_finite(ga, "fuse ga") && all_finite(gi, "fuse gi");
}

int run_kernels() {
  bool ok = true;
  try {
    // (N, C, H, W, stride, training): 37 and 70 channels -> 2 and 3 channel blocks, the last partial;
    // 13x21 = 273 positions -> 3 tiles per sample; stride 2 and eval statistics.
    ok = run_span<float>(2, 37, 13, 21, 1, true) && ok;
    ok = run_span<float>(1, 70, 9, 15, 2, false) && ok;
    ok = run_span<double>(2, 37, 13, 21, 2, true) && ok;
    ok = run_fuse<float>(1000) && ok;
    ok = run_fuse<double>(300) && ok;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf(ok ? "every kernel ran clean\n" : "FAIL: non-finite outputs\n");
  return ok ? 0 : 1;
}

// ------------------------------------------------------------------------------ deliberate faults
__global__ void race_kernel(float* out) {  // the second write is not separated from the reads
  YY_SHARED_2D(float, buf, 1, 64);
  buf[0][threadIdx.x] = 0.f;
  __syncthreads();
  buf[0][threadIdx.x] = static_cast<float>(threadIdx.x);
  out[threadIdx.x] = buf[0][(threadIdx.x + 1) % 64];
}
__global__ void oob_shared_kernel(float* out) {  // off-by-one: reads row 8 of an 8-row array
  YY_SHARED_2D(float, buf, 8, 32);
  buf[threadIdx.y][threadIdx.x] = 1.f;
  __syncthreads();
  float t = 0.f;
  if (threadIdx.y == 0)
    for (int r = 0; r <= 8; ++r) t += buf[r][threadIdx.x];
  out[threadIdx.x] = t;
}
__global__ void uninit_kernel(float* out) {  // the last element is never written
  YY_DYNAMIC_SHARED(float, p);
  if (threadIdx.x + 1 < blockDim.x) p[threadIdx.x] = 1.f;
  __syncthreads();
  out[threadIdx.x] = p[blockDim.x - 1 - threadIdx.x];
}
__global__ void dyn_oob_kernel(float* out) {  // reads past the launch's dynamic allocation
  YY_DYNAMIC_SHARED(float, p);
  p[threadIdx.x] = 1.f;
  __syncthreads();
  out[threadIdx.x] = p[threadIdx.x + 1];
}
__global__ void shfl_exited_kernel(float* out) {  // lane 31 returns before the full-mask shuffle
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 1);
}
__global__ void shfl_partial_warp_kernel(float* out) {  // a full mask in a 48-thread block
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}
__global__ void barrier_divergence_kernel(float* out) {  // half the block returns before the barrier
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}
__global__ void deadlock_kernel(float* out) {  // lane 63 waits at the barrier, its warp in a shuffle
  if (threadIdx.x == 63) {
    __syncthreads();
    return;
  }
  if (threadIdx.x >= 32) out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 1);
  __syncthreads();
}
__global__ void fine_kernel(float* out) { out[threadIdx.x + blockIdx.x * blockDim.x] = 1.f; }

template <typename Launch>
bool expect_fault(const char* fault, const char* expect, Launch launch) {
  try {
    launch();
  } catch (const cuda_emu::Error& e) {
    const std::string msg = e.what();
    if (msg.find(expect) != std::string::npos) {
      std::printf("caught %s: %s\n", fault, msg.c_str());
      return true;
    }
    std::printf("FAIL: %s raised the wrong error (wanted \"%s\"): %s\n", fault, expect, msg.c_str());
    return false;
  }
  std::printf("FAIL: %s was not caught\n", fault);
  return false;
}

int run_faults() {
  std::vector<float> out(4096, 0.f);
  float* o = out.data();
  const cuda_emu::stream_t st{};
  bool ok = true;
  ok &= expect_fault("missing __syncthreads", "shared-memory race",
                     [&] { launch_kernel("race_kernel", race_kernel, 1, 64, 0, st, o); });
  ok &= expect_fault("off-by-one static shared bound", "out-of-bounds shared access",
                     [&] { launch_kernel("oob_shared_kernel", oob_shared_kernel, 1, dim3(32, 8), 0, st, o); });
  ok &= expect_fault("uninitialised shared read", "uninitialised shared memory",
                     [&] { launch_kernel("uninit_kernel", uninit_kernel, 1, 64, 64 * sizeof(float), st, o); });
  ok &= expect_fault("dynamic shared overrun", "out-of-bounds shared access",
                     [&] { launch_kernel("dyn_oob_kernel", dyn_oob_kernel, 1, 64, 64 * sizeof(float), st, o); });
  ok &= expect_fault("shuffle with an exited lane", "exited",
                     [&] { launch_kernel("shfl_exited_kernel", shfl_exited_kernel, 1, 32, 0, st, o); });
  ok &= expect_fault("shuffle mask beyond a partial warp", "partial warp",
                     [&] { launch_kernel("shfl_partial_warp_kernel", shfl_partial_warp_kernel, 1, 48, 0, st, o); });
  ok &= expect_fault("divergent __syncthreads", "not reached by every thread",
                     [&] { launch_kernel("barrier_divergence_kernel", barrier_divergence_kernel, 1, 32, 0, st, o); });
  ok &= expect_fault("deadlock between a barrier and a shuffle", "deadlock",
                     [&] { launch_kernel("deadlock_kernel", deadlock_kernel, 1, 64, 0, st, o); });
  ok &= expect_fault("1025 threads per block", "threads per block",
                     [&] { launch_kernel("fine_kernel", fine_kernel, 1, 1025, 0, st, o); });
  ok &= expect_fault("grid.y of 65536", "exceeds the limits",
                     [&] { launch_kernel("fine_kernel", fine_kernel, dim3(1, 65536), 1, 0, st, o); });
  ok &= expect_fault("48 KiB + 4 of dynamic shared memory", "dynamic shared memory",
                     [&] { launch_kernel("fine_kernel", fine_kernel, 1, 32, 48 * 1024 + 4, st, o); });
  std::printf(ok ? "every deliberate fault was caught\n" : "FAIL: a deliberate fault was not caught\n");
  return ok ? 0 : 1;
}

__global__ void global_oob_kernel(float* out, int n) {  // off-by-one: writes out[n]
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k <= n) out[k] = 1.f;
}

int run_global_oob() {
  std::vector<float> out(100);
  launch_kernel("global_oob_kernel", global_oob_kernel, 1, 128, 0, cuda_emu::stream_t{}, out.data(), 100);
  std::printf("FAIL: the out-of-bounds global write was not reported\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "--faults") return run_faults();
  if (mode == "--global-oob") return run_global_oob();
  if (!mode.empty()) {
    std::fprintf(stderr, "usage: %s [--faults | --global-oob]\n", argv[0]);
    return 2;
  }
  return run_kernels();
}
