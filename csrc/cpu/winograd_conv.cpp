// yyfast::conv3x3_winograd_eval: y = act(conv3x3(x, stride 1, padding 1) + bias (+ residual)), float32 CPU,
// channels_last, eval only, by Winograd F(2x2, 3x3) or F(4x4, 3x3), as u's shape says (the transforms:
// winograd_kernels.inc; the model uses F(4x4, 3x3), 30% faster here: yyfast/cpu_eval/winograd.py).
//
// Why: the two 64->64 3x3 convolutions of the stems are about a third of yynet_small_64's FLOPs, and
// oneDNN already runs them at this core's peak (105 GFLOP/s one thread, 32x32; issue 17's profile), so
// only fewer multiplications make them faster: F(2x2, 3x3) needs 16 per 2x2 output tile and channel
// pair instead of 36 (2.25x fewer), as 16 GEMMs of (tiles x Cin) @ (Cin x Cout), plus additions-only
// transforms; F(4x4, 3x3) needs 36 per 4x4 tile instead of 144 (4x fewer), as 36 GEMMs. Accuracy:
// F(2x2, 3x3)'s transform matrices hold only 0 and +-1 (G's halves are in the weights, transformed once
// in float64), so its float32 result is a sum of products like the direct one, in another order;
// F(4x4, 3x3)'s hold powers of two and 3/2, 5/2, which round: about 1e-6 of the largest output (the
// tests hold both to the float64 reference).
//
// Work split: each task is one sample's tile rows [ty0, ty1) (in blocks of at most kMaxTiles tiles,
// so V and M, 16 x tiles x channels floats, stay in per-thread buffers that persist across calls); a
// batch with fewer samples than threads (and not a multiple of them) splits each sample's tile rows
// over the threads, like mbconv_eval.
//
// Layouts: x (N, Cin, H, W) and residual (N, Cout, H, W) channels_last; u (16, Cin, Cout), the
// transformed weights G g G^T at (xi, nu) = (xi * 4 + nu), or u (36, Cin, Cout) at (xi * 6 + nu) for
// F(4x4, 3x3); bias (Cout). Cin, Cout multiples of 16.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../common/dw_bn_act_se_math.h"
#include "span_kernels.h"
#include "eval_ops.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "conv3x3_winograd_eval";
// Tiles per GEMM block: 256 (a whole 32x32 sample) keeps V and M at 1 MiB each for 64 channels; F(4x4,
// 3x3)'s 8 (one tile row of a 32x32 sample; wider images take one row), 72 KiB each, so V and M stay in
// L1/L2 between the transforms and the GEMMs: 64 -> 64 with GELU, 32x32, medians against 64 tiles (a whole
// sample, 576 KiB each): one thread 287 vs 307 us at batch 1, 4868 vs 5199 at batch 16; two threads 155
// vs 168, 2334 vs 2479 (interleaved, 2-core EPYC, 2026-11-28).
constexpr int64_t kMaxTiles = 256;
constexpr int64_t kMaxTiles4 = 8;
// A sample's tile rows are split over the threads only from this many tiles: each thread reads all of U
// (590 KiB for F(4x4, 3x3), 64 channels) for its few tiles. 64 -> 64 with add + GELU at batch 1, 1 vs 2
// threads: 8x8 (4 tiles) 37 vs 46 us; 16x16 (16 tiles) 101 vs 61 (2-core EPYC, 2026-11-28).
constexpr int64_t kMinSplitTiles = 8;

struct WinoScratch {
  std::vector<float> v, m;
};
WinoScratch& wino_scratch() {
  thread_local WinoScratch s;
  return s;
}

float* grow_to(std::vector<float>& buf, int64_t n) {
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

struct WinoConv {
  const float *x, *u, *bias, *res;
  float* y;
  int64_t cin, cout, h, w, th, tw;
  int64_t tile, planes;  // output tile side (2 or 4) and transformed elements per tile ((tile + 2)^2)
  int act;
  const SpanCpuKernels* K;
};

// Tile rows [ty0, ty0 + rows) of sample n: V = B^T d B, M = V @ U (one GEMM per transformed element),
// y = A^T M A + epilogue.
void tile_rows(const WinoConv& P, int64_t n, int64_t ty0, int64_t rows) {
  const int64_t tiles = rows * P.tw;
  WinoScratch& S = wino_scratch();
  float* v = grow_to(S.v, P.planes * tiles * P.cin);
  float* m = grow_to(S.m, P.planes * tiles * P.cout);
  const int64_t in_n = P.h * P.w * P.cin, out_n = P.h * P.w * P.cout;
  const float* res = P.res != nullptr ? P.res + n * out_n : nullptr;
  (P.tile == 4 ? P.K->wino4_input : P.K->wino_input)(P.x + n * in_n, P.h, P.w, P.cin, ty0, rows, P.tw, v);
  // One GEMM per plane by span_kernels' gemm (Cout a multiple of 16: every build takes it). MKL's bmm
  // took 19% longer: 64 -> 64 channels with GELU, 32x32, one thread, 331 against 279 us at batch 1, 5871
  // against 4959 at batch 16 (interleaved in one process, 2-core EPYC, 2026-11-28).
  for (int64_t p = 0; p < P.planes; ++p) {
    GemmArgs a{};
    a.a = v + p * tiles * P.cin, a.lda = P.cin, a.b = P.u + p * P.cin * P.cout, a.ldb = P.cout, a.k = P.cin;
    a.act = -1, a.c = m + p * tiles * P.cout, a.ldc = P.cout, a.m = tiles, a.n = P.cout;
    P.K->gemm(a);
  }
  (P.tile == 4 ? P.K->wino4_output : P.K->wino_output)(m, P.bias, res, P.act, P.h, P.w, P.cout, ty0, rows, P.tw,
                                                       P.y + n * out_n);
}

void check_inputs(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, const std::string& act) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat, kOp,
              ": x must be a 4-d float32 CPU tensor, got ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(x.size(0) > 0 && x.size(2) > 0 && x.size(3) > 0, kOp, ": x must have no empty dimension, got ",
              x.sizes());
  TORCH_CHECK(u.dim() == 3 && (u.size(0) == 16 || u.size(0) == 36) && u.size(1) == x.size(1) && u.device().is_cpu() &&
                  u.scalar_type() == at::kFloat && u.is_contiguous(),
              kOp, ": u must be a contiguous float32 CPU tensor of shape (16 or 36, ", x.size(1), ", Cout), got ",
              u.sizes(), " ", u.scalar_type());
  TORCH_CHECK(x.size(1) % 16 == 0 && u.size(2) % 16 == 0 && u.size(2) > 0, kOp,
              ": the channel counts must be positive multiples of 16, got Cin=", x.size(1), ", Cout=", u.size(2));
  TORCH_CHECK(bias.dim() == 1 && bias.numel() == u.size(2) && bias.scalar_type() == at::kFloat &&
                  bias.device().is_cpu() && bias.is_contiguous(),
              kOp, ": bias must be a contiguous float32 CPU tensor of shape (", u.size(2), "), got ", bias.sizes());
  TORCH_CHECK(act == "none" || act == "gelu" || act == "silu", kOp, ": act must be 'none', 'gelu' or 'silu', got '",
              act, "'");
}

}  // namespace

at::Tensor conv3x3_winograd_eval_cpu(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias,
                                     const c10::optional<at::Tensor>& residual, std::string act) {
  check_inputs(x, u, bias, act);
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), Cout = u.size(2);
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor res;
  if (residual.has_value() && residual->defined()) {
    const auto& r = *residual;
    TORCH_CHECK(r.device().is_cpu() && r.scalar_type() == at::kFloat && r.sizes() == at::IntArrayRef({N, Cout, H, W}),
                kOp, ": residual must be a float32 CPU tensor of shape ", at::IntArrayRef({N, Cout, H, W}), ", got ",
                r.sizes(), " ", r.scalar_type());
    res = r.contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor out = at::empty({N, Cout, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t tile = u.size(0) == 36 ? 4 : 2;
  const WinoConv P{xc.const_data_ptr<float>(),
                   u.const_data_ptr<float>(),
                   bias.const_data_ptr<float>(),
                   res.defined() ? res.const_data_ptr<float>() : nullptr,
                   out.mutable_data_ptr<float>(),
                   x.size(1),
                   Cout,
                   H,
                   W,
                   (H + tile - 1) / tile,
                   (W + tile - 1) / tile,
                   tile,
                   u.size(0),
                   act == "none" ? -1 : (act == "gelu" ? kGelu : kSilu),
                   &span_cpu_kernels()};
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t chunks = (threads > 1 && N % threads != 0 && N < 4 * threads && P.th * P.tw >= kMinSplitTiles)
                             ? std::min(P.th, threads)
                             : 1;
  const int64_t block_rows = std::max<int64_t>(1, (tile == 4 ? kMaxTiles4 : kMaxTiles) / P.tw);
  at::parallel_for(0, N * chunks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / chunks, c = i % chunks;
      const int64_t ty1 = P.th * (c + 1) / chunks;
      for (int64_t ty = P.th * c / chunks; ty < ty1; ty += block_rows)
        tile_rows(P, n, ty, std::min(block_rows, ty1 - ty));
    }
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(yyfast, m) {
  m.def("conv3x3_winograd_eval(Tensor x, Tensor u, Tensor bias, Tensor? residual, str act) -> Tensor");
}

TORCH_LIBRARY_IMPL(yyfast, CPU, m) { m.impl("conv3x3_winograd_eval", &conv3x3_winograd_eval_cpu); }

}  // namespace yyfast
