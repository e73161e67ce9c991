// yyfast::mbconv_eval: a whole BatchNorm-folded MBConv block in eval mode, float32 CPU, in one call:
//   out = project'(span'(act(expand'(x)))) + residual
// where span' = DWConv3x3(stride)+bias -> act -> SE (the SE scale s folded into the projection's
// weights per sample: (z * s) @ Wp == z @ (s * Wp), a 256x64 product instead of a pass over z).
//
// Why one op: optimize_for_inference otherwise writes the two expanded tensors (4x the block's
// channels; 256 MiB each at batch 256, 32x32) to fresh memory that glibc maps and page-faults on
// every call and returns on free, which was most of the batch-256 gap to onnxruntime (issue 17).
// Here each sample's expanded activations live in per-thread buffers (Hin*Win*Ce and Ho*Wo*Ce
// floats, 1 MiB each at 256 channels 32x32) that persist across calls (thread_local, grown when a
// larger shape comes), so the expanded tensors never touch the allocator or leave the cache
// hierarchy; only the block's narrow input, residual and output are full tensors.
//
// Per sample: h = act(x @ We + be) (one GEMM, the bias and activation in its epilogue),
// z = act(dwconv(h) + bd) with the SE pooling sums in the same pass, the SE MLP, then
// out = z @ (s * Wp) + bp + residual (one GEMM with that epilogue; a shortcut conv computed here is a
// second product into the same accumulators). The GEMMs are span_kernels' own (gemm_kernels.inc) when Ce
// and Cout are multiples of the vector width, else MKL's with separate epilogue passes. The whole
// optimized yynet_small_64, interleaved in one process, MKL's against the own GEMMs: batch 1, 2 threads
// 4.02 vs 3.22 ms; one thread 5.95 vs 5.17; batch 16, 2 threads 46.1 vs 39.0 (2-core EPYC, 2026-11-28).
// The numbers below are from before, with MKL. The element-wise passes are span_kernels'
// (AVX-512 where the CPU has it). One thread, one 32x32 sample, interleaved against the previous
// op (addmm + at::gelu_ + AVX2 conv) on this Zen 4: stride 2 0.62 vs 0.69 ms median; stride 1
// between 8% faster (1.20 vs 1.30) and even (1.42 vs 1.41) across runs. Of a stride-1 sample's
// ~1.35 ms, the two GEMMs take ~0.63 (~100 GFLOP/s, MKL's peak for these shapes on one core here),
// the conv+GELU+pool pass ~0.4 and bias+GELU ~0.2 (measured by skipping each, AVX2 build).
//
// Parallelism: over samples (at::parallel_for), everything single-threaded inside. With too few
// samples to give each thread whole ones (batch 1 on 2 threads), each sample's rows are split
// over the threads instead (sample_split), rather than running one sample's GEMMs "multithreaded" and its depthwise
// conv, activations and SE on one thread: batch 1, 2 threads, the 32x32 stride-1 block took 0.77 ms
// min / 1.26 median against 1.08 / 5.40 before (300 interleaved rounds on a loaded 2-core machine;
// the whole optimized yynet_small_64 at batch 1: 1.18x median, 6.68 vs 8.80 ms min).
// Thread-safe: the buffers are per OS thread, a row split's shared ones belong to the calling
// thread; nothing else is shared or mutated.
//
// The block's 1x1 shortcut can be computed here too (shortcut_wt given, residual None):
// out += pool(x) @ shortcut_wt, pool = MaxPool(3, stride, padding 1) at stride 2, else x itself; its bias
// is the packer's to add into proj_b. At batch 1 the max pool and the 1x1 conv were two more calls and a
// tensor per stride-2 block, ~0.1 ms of a 0.55 ms block.
//
// Layouts (yyfast/cpu_eval/mbconv_op.py's pack): x, residual: (N, Cin|Cout, H, W) channels_last
// float32; expand_wt (Cin, Ce); expand_b (Ce); dw_wt (9, Ce); dw_b (Ce); se_w1t (Ce, hid); se_b1 (hid);
// se_w2t (hid, Ce); se_b2 (Ce); proj_wt (Ce, Cout); proj_b (Cout); shortcut_wt (Cin, Cout). Each matrix
// contiguous, or the transpose of a contiguous one: pack passes the layers' own weights that way (views,
// no copies), so a write to a parameter is what the next call reads and the folded model's forward need
// not compare those parameters with a snapshot (0.6 instead of 2.9 MB a batch-1 forward of
// yynet_small_64; fast_forward.cpp). The own GEMMs read B row-major: a transposed expand or shortcut
// weight is copied transposed once a call (16384 floats at 64 -> 256 channels, ~4 us), the SE-scaled
// projection weights are written row-major whatever wp's layout; MKL takes either layout as it is. The
// SE MLP on the Linear layers' own layouts is a dot product per output, and a transposed dw_wt is
// copied to (9, Ce) once a call (2304 floats at 256 channels).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <c10/util/ParallelGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <atomic>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../common/dw_bn_act_se_math.h"
#include "span_kernels.h"
#include "eval_ops.h"

namespace yyfast {
namespace {

constexpr const char* kOp = "mbconv_eval";
// Below this many samples per thread (and not a multiple of the thread count) each sample's rows are
// split over the threads instead of giving each thread whole samples.
constexpr int64_t kSplitBelowSamplesPerThread = 4;
// ... and only with at least this many input positions a sample: below it one thread does the sample alone
// (each thread of a split reads all the block's weights for a few rows). Batch 1, 64 -> 256 -> 64 channels,
// 1 vs 2 threads: stride 1 at 4x4 29 vs 36 us, 6x6 48 vs 47, 8x8 78 vs 62; stride 2 at 6x6 38 vs 47, 8x8
// 56 vs 52 (2-core EPYC, 2026-11-28).
constexpr int64_t kMinSplitPositions = 48;

void check_weight(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, kOp, ": ", name,
              " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), kOp, ": ", name, " must have shape ", at::IntArrayRef(shape),
              ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", name, " must be contiguous");
}

// A 2-D weight (rows, cols): contiguous, or the transpose of a contiguous (cols, rows) tensor (strides
// (1, rows)): the packer passes the folded model's own parameters as such views (mbconv_op.pack), so
// that a write to a parameter, by any route, is what the next call reads (nothing to keep in step).
struct Mat {
  const float* p;
  int64_t s0, s1;  // element (i, j) at p[i * s0 + j * s1]
  bool transposed() const { return s0 == 1; }
};

Mat check_matrix(const at::Tensor& t, const char* name, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, kOp, ": ", name,
              " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, kOp, ": ", name, " must have shape [", rows, ", ",
              cols, "], got ", t.sizes());
  if (t.is_contiguous()) return {t.const_data_ptr<float>(), cols, 1};
  TORCH_CHECK(t.t().is_contiguous(), kOp, ": ", name,
              " must be contiguous or the transpose of a contiguous tensor, got strides ", t.strides());
  return {t.const_data_ptr<float>(), 1, rows};
}

float* grow(std::vector<float>& buf, int64_t n) {
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// Per-thread scratch that persists across calls (grown on the first or a larger shape, then reused).
struct Scratch {
  std::vector<float> h;      // expanded activations of the input rows one task needs
  std::vector<float> hs;     // a row split's expanded sample, shared by the threads
  std::vector<float> z;      // one sample's span output (a task's own sample, or the shared one of a row split)
  std::vector<float> psum;   // per-chunk channel sums of z (a row split's partial sums)
  std::vector<float> total;  // a row split's channel sums, added up by each thread
  std::vector<float> ws;     // SE-scaled projection weights (Ce, Cout)
  std::vector<float> small;  // SE MLP vectors
  std::vector<float> dw;     // the depthwise weights as (9, Ce), when given transposed
  std::vector<float> wt;     // the expand and shortcut weights as (Cin, Ce) and (Cin, Cout), when given transposed
  std::vector<float> pool;   // the shortcut's max-pooled input rows
  std::vector<float> sc;     // the shortcut's output rows
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// The block's weights and shapes for one call.
struct Block {
  Mat we;  // (Cin, Ce)
  const float *be, *wd, *bd;
  Mat w1t;  // (Ce, hid)
  const float* b1;
  Mat w2t;  // (hid, Ce)
  const float* b2;
  Mat wp;  // (Ce, Cout)
  const float* bp;
  Mat wsc;  // the shortcut's 1x1 weights (Cin, Cout); wsc.p nullptr for none
  int64_t cin, ce, hid, cout;
  int act, gate;
  Geom g;
  const SpanCpuKernels* K;
  // The GEMMs by K->gemm (Ce and Cout multiples of its vector width), with the expand and shortcut
  // weights row-major (Cin, Ce) and (Cin, Cout) here; else by MKL on we and wsc.
  bool own_gemm;
  const float *we_rm, *wsc_rm;
};

// c (m, n) = a (m, k) @ b (k, n), a and c row-major contiguous, b in either layout (Mat; MKL takes the
// transposed one as it is): ATen's BLAS call without a bias (addmm first copies its broadcast bias into
// c: 82 ms of the batch-256 profile), single-threaded inside a parallel region. Calling MKL's sgemm_ directly instead
// measured no different (two calls a sample).
void gemm(const float* a, const Mat& b, float* c, int64_t m, int64_t k, int64_t n) {
  const auto f = at::TensorOptions().dtype(at::kFloat);
  at::Tensor ct = at::from_blob(c, {m, n}, f);
  at::mm_out(ct, at::from_blob(const_cast<float*>(a), {m, k}, f),
             at::from_blob(const_cast<float*>(b.p), {k, n}, {b.s0, b.s1}, f));
}

// h = act(x @ We + be) for input rows [i0, i1) of one sample, into h ((i1 - i0) * W rows of Ce).
void expand_rows(const Block& B, const float* xn, float* h, int64_t i0, int64_t i1) {
  const Geom& g = B.g;
  if (B.own_gemm) {  // the bias and activation in the GEMM's epilogue
    GemmArgs a{};
    a.a = xn + i0 * g.w * B.cin, a.lda = B.cin, a.b = B.we_rm, a.ldb = B.ce, a.k = B.cin;
    a.bias = B.be, a.act = B.act, a.c = h, a.ldc = B.ce, a.m = (i1 - i0) * g.w, a.n = B.ce;
    B.K->gemm(a);
  } else {
    gemm(xn + i0 * g.w * B.cin, B.we, h, (i1 - i0) * g.w, B.cin, B.ce);
    B.K->bias_act(h, B.be, B.act, (i1 - i0) * g.w, B.ce);
  }
}

// Output rows [o0, o1) of one sample's span: z = act(dwconv(act(x @ We + be)) + bd) into z (the
// sample's (Ho*Wo, Ce) buffer), psum[k] += their channel sums. Only the input rows those output rows
// read are expanded (into this thread's buffer). Expanding a few rows at a time right before the
// depthwise conv reads them (to keep them in L1/L2) measured no faster: 1.08 vs 1.10 ms min, 1.205
// vs 1.201 median, a 32x32 stride-1 sample on one thread, tiles of 128 positions vs whole.
void span_rows(const Block& B, const float* xn, float* z, float* psum, int64_t o0, int64_t o1) {
  const Geom& g = B.g;
  const int64_t s = g.stride;
  const int64_t i0 = std::max<int64_t>(0, o0 * s - 1), i1 = std::min<int64_t>(g.h, (o1 - 1) * s + 2);
  float* h = grow(scratch().h, (i1 - i0) * g.w * B.ce);
  expand_rows(B, xn, h, i0, i1);
  B.K->conv_rows(h, i0, B.wd, B.bd, B.act, z, psum, g, o0, o1);
}

// The SE scale s = gate(W2 act(W1 mean(z) + b1) + b2) from psum (the channel sums of z), folded into
// the projection: ws = diag(s) Wp, so (z * s) @ Wp is z @ ws. ws is laid out as wp, or row-major (Ce,
// Cout) for K->gemm (B.own_gemm).
void se_weights(const Block& B, const float* psum, float* ws) {
  const int64_t ce = B.ce, hid = B.hid;
  float* sm = grow(scratch().small, 2 * ce + 2 * hid);
  float *p = sm, *h2 = sm + ce, *h1 = sm + 2 * ce, *a1 = h1 + hid;
  const float inv_hw = 1.0f / static_cast<float>(B.g.ho * B.g.wo);
  for (int64_t k = 0; k < ce; ++k) p[k] = psum[k] * inv_hw;
  if (!B.w1t.transposed() && !B.w2t.transposed()) {
    B.K->se_mlp(p, B.w1t.p, B.b1, B.w2t.p, B.b2, ce, hid, B.act, h1, a1, h2);
  } else {  // the Linear layers' own (hid, Ce) and (Ce, hid) weights: a dot product per output
    if (B.w1t.transposed()) {
      B.K->gemv_rows(B.w1t.p, p, B.b1, h1, hid, ce);
    } else {
      gemm(p, B.w1t, h1, 1, ce, hid);
      std::transform(h1, h1 + hid, B.b1, h1, std::plus<float>());
    }
    for (int64_t j = 0; j < hid; ++j) a1[j] = act_forward(B.act, h1[j]);
    if (B.w2t.transposed()) {
      B.K->gemv_rows(B.w2t.p, a1, B.b2, h2, ce, hid);
    } else {
      gemm(a1, B.w2t, h2, 1, hid, ce);
      std::transform(h2, h2 + ce, B.b2, h2, std::plus<float>());
    }
  }
  float* sk = p;  // the gates, over the pooled means (no longer needed)
  for (int64_t k = 0; k < ce; ++k) sk[k] = gate_forward(B.gate, h2[k]);
  if (B.own_gemm && B.wp.transposed()) {  // the projection's own (Cout, Ce) weights, transposed and scaled
    B.K->transpose_scale(B.wp.p, sk, ws, B.cout, ce);
  } else if (!B.wp.transposed()) {
    for (int64_t k = 0; k < ce; ++k) {
      const float* wr = B.wp.p + k * B.cout;
      float* o = ws + k * B.cout;
      for (int64_t j = 0; j < B.cout; ++j) o[j] = sk[k] * wr[j];
    }
  } else {  // the projection's own (Cout, Ce) weights: ws in the same layout
    for (int64_t j = 0; j < B.cout; ++j) {
      const float* wr = B.wp.p + j * ce;
      float* o = ws + j * ce;
      for (int64_t k = 0; k < ce; ++k) o[k] = sk[k] * wr[k];
    }
  }
}

// Rows [o0, o1) of MaxPool(3, stride, padding 1) over one sample's x (H, W, Cin) into p ((o1-o0)*Wo, Cin).
void max_pool_rows(const Block& B, const float* xn, float* p, int64_t o0, int64_t o1) {
  const Geom& g = B.g;
  const int64_t c = B.cin, s = g.stride;
  for (int64_t oh = o0; oh < o1; ++oh)
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      float* __restrict pr = p + ((oh - o0) * g.wo + ow) * c;
      bool first = true;
      for (int64_t ih = std::max<int64_t>(0, oh * s - 1); ih <= std::min<int64_t>(g.h - 1, oh * s + 1); ++ih)
        for (int64_t iw = std::max<int64_t>(0, ow * s - 1); iw <= std::min<int64_t>(g.w - 1, ow * s + 1); ++iw) {
          const float* __restrict xr = xn + (ih * g.w + iw) * c;
          for (int64_t k = 0; k < c; ++k) pr[k] = first ? xr[k] : std::max(pr[k], xr[k]);
          first = false;
        }
    }
}

// The shortcut conv's input for output rows [o0, o1) of one sample, (o1-o0)*Wo x Cin: at stride 1 the
// output rows' own input rows, else their max pool (in this thread's buffer).
const float* shortcut_input(const Block& B, const float* xn, int64_t o0, int64_t o1) {
  if (B.g.stride == 1) return xn + o0 * B.g.w * B.cin;
  float* p = grow(scratch().pool, (o1 - o0) * B.g.wo * B.cin);
  max_pool_rows(B, xn, p, o0, o1);
  return p;
}

// The shortcut's rows [o0, o1) of one sample, (o1-o0)*Wo x Cout, in this thread's buffer.
const float* shortcut_rows(const Block& B, const float* xn, int64_t o0, int64_t o1) {
  const int64_t rows = (o1 - o0) * B.g.wo;
  float* t = grow(scratch().sc, rows * B.cout);
  gemm(shortcut_input(B, xn, o0, o1), B.wsc, t, rows, B.cin, B.cout);
  return t;
}

// Output rows [o0, o1) of one sample: out = z @ ws + bp (+ residual, or + the shortcut computed here).
void project_rows(const Block& B, const float* xn, const float* z, const float* ws, const float* res, float* out,
                  int64_t o0, int64_t o1) {
  const int64_t rows = (o1 - o0) * B.g.wo, off = o0 * B.g.wo * B.cout;
  if (B.own_gemm) {  // one pass: z @ ws (+ pool(x) @ Wsc) + bp (+ residual)
    GemmArgs a{};
    a.a = z + o0 * B.g.wo * B.ce, a.lda = B.ce, a.b = ws, a.ldb = B.cout, a.k = B.ce;
    if (B.wsc.p != nullptr)
      a.a2 = shortcut_input(B, xn, o0, o1), a.lda2 = B.cin, a.b2 = B.wsc_rm, a.ldb2 = B.cout, a.k2 = B.cin;
    a.bias = B.bp, a.act = -1, a.add = res != nullptr ? res + off : nullptr, a.ldadd = B.cout;
    a.c = out + off, a.ldc = B.cout, a.m = rows, a.n = B.cout;
    return B.K->gemm(a);
  }
  const Mat wsm = B.wp.transposed() ? Mat{ws, 1, B.ce} : Mat{ws, B.cout, 1};  // ws is laid out as wp
  gemm(z + o0 * B.g.wo * B.ce, wsm, out + off, rows, B.ce, B.cout);
  const float* add = B.wsc.p != nullptr ? shortcut_rows(B, xn, o0, o1) : (res != nullptr ? res + off : nullptr);
  B.K->add_bias_rows(out + off, B.bp, add, rows, B.cout);
}

// One whole sample on this thread.
void sample(const Block& B, const float* xn, const float* res, float* out) {
  const Geom& g = B.g;
  Scratch& S = scratch();
  float* z = grow(S.z, g.ho * g.wo * B.ce);
  float* psum = grow(S.psum, B.ce);
  float* ws = grow(S.ws, B.ce * B.cout);
  std::fill(psum, psum + B.ce, 0.0f);
  span_rows(B, xn, z, psum, 0, g.ho);
  se_weights(B, psum, ws);
  project_rows(B, xn, z, ws, res, out, 0, g.ho);
}

// The SE weights from the chunks' partial sums, into this thread's buffers (chunk 0's sums, then the
// others' added in order: every thread gets the same bits).
const float* split_se_weights(const Block& B, const float* psum, int64_t chunks) {
  Scratch& S = scratch();
  float* total = grow(S.total, B.ce);
  float* ws = grow(S.ws, B.ce * B.cout);
  std::copy(psum, psum + B.ce, total);
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t k = 0; k < B.ce; ++k) total[k] += psum[c * B.ce + k];
  se_weights(B, total, ws);
  return ws;
}

// One sample with its rows split over `chunks` tasks: the span, then the SE and the projection. Without
// OpenMP, each task expands the input rows its output rows read (the one-row halo twice).
//
// With OpenMP (torch's CPU builds): one parallel region in three steps with barriers between them: the
// expansion of the sample's input rows, split evenly, into one shared buffer (no halo row expanded twice:
// at 32x32, 2 threads, each thread expanded 17 rows instead of 16, and at stride 2 one thread 17 against
// the other's 16, a 5% longer span for that thread; the whole optimized yynet_small_64, A/B in one process:
// batch 1 2.27 vs 2.33 ms and 2.24 vs 2.32, batch 3 6.49 vs 6.61); the depthwise conv of each task's output rows; then
// the SE, which every thread works out itself (a 256x64 MLP and scaling: ~10 us) instead of one thread
// while the others wait at a join, and the projection. One fork/join a block.
void sample_split(const Block& B, const float* xn, const float* res, float* out, int64_t chunks) {
  const Geom& g = B.g;
  Scratch& S = scratch();
  float* z = grow(S.z, g.ho * g.wo * B.ce);
  float* psum = grow(S.psum, chunks * B.ce);
  std::fill(psum, psum + chunks * B.ce, 0.0f);
  auto rows = [&](int64_t c) { return std::make_pair(g.ho * c / chunks, g.ho * (c + 1) / chunks); };
#if AT_PARALLEL_OPENMP && defined(_OPENMP)
  // An exception must not leave the region (nor skip the barrier): the first is kept and rethrown after.
  std::atomic<bool> failed{false};
  std::atomic_flag first = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
  auto guarded = [&](auto&& fn) {
    try {
      fn();
    } catch (...) {
      if (!first.test_and_set()) error = std::current_exception();
      failed = true;
    }
  };
  // No num_threads clause (see ATen's invoke_parallel: GOMP's thread pool); each thread takes every
  // team-size-th chunk.
  float* hs = grow(S.hs, g.h * g.w * B.ce);
#pragma omp parallel
  {
    const int64_t team = omp_get_num_threads(), tid = omp_get_thread_num();
    at::internal::ThreadIdGuard tid_guard(static_cast<int>(tid));
    c10::ParallelGuard parallel_guard(true);
    guarded([&] {
      for (int64_t c = tid; c < chunks; c += team) {
        const int64_t i0 = g.h * c / chunks, i1 = g.h * (c + 1) / chunks;
        expand_rows(B, xn, hs + i0 * g.w * B.ce, i0, i1);
      }
    });
#pragma omp barrier
    guarded([&] {
      if (failed) return;
      for (int64_t c = tid; c < chunks; c += team)
        B.K->conv_rows(hs, 0, B.wd, B.bd, B.act, z, psum + c * B.ce, g, rows(c).first, rows(c).second);
    });
#pragma omp barrier
    guarded([&] {
      if (tid >= chunks || failed) return;
      const float* ws = split_se_weights(B, psum, chunks);
      for (int64_t c = tid; c < chunks; c += team) project_rows(B, xn, z, ws, res, out, rows(c).first, rows(c).second);
    });
  }
  if (error) std::rethrow_exception(error);
#else
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) span_rows(B, xn, z, psum + c * B.ce, rows(c).first, rows(c).second);
  });
  const float* ws = split_se_weights(B, psum, chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) project_rows(B, xn, z, ws, res, out, rows(c).first, rows(c).second);
  });
#endif
}

}  // namespace

at::Tensor mbconv_eval_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& residual, const at::Tensor& expand_wt,
                           const at::Tensor& expand_b, const at::Tensor& dw_wt, const at::Tensor& dw_b,
                           const at::Tensor& se_w1t, const at::Tensor& se_b1, const at::Tensor& se_w2t,
                           const at::Tensor& se_b2, const at::Tensor& proj_wt, const at::Tensor& proj_b, int64_t stride,
                           std::string act, std::string gate, const c10::optional<at::Tensor>& shortcut_wt) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat, kOp,
              ": x must be a 4-d float32 CPU tensor, got ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(stride == 1 || stride == 2, kOp, ": stride must be 1 or 2, got ", stride);
  TORCH_CHECK(act == "gelu" || act == "silu", kOp, ": act must be 'gelu' or 'silu', got '", act, "'");
  TORCH_CHECK(gate == "sigmoid" || gate == "hardsigmoid", kOp, ": gate must be 'sigmoid' or 'hardsigmoid', got '", gate,
              "'");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(N > 0 && Cin > 0 && H > 0 && W > 0, kOp, ": x must have no empty dimension, got ", x.sizes());
  const int64_t Ce = expand_b.numel(), hid = se_b1.numel(), Cout = proj_b.numel();
  const Mat we = check_matrix(expand_wt, "expand_wt", Cin, Ce);
  check_weight(expand_b, "expand_b", {Ce});
  const Mat wd = check_matrix(dw_wt, "dw_wt", 9, Ce);
  check_weight(dw_b, "dw_b", {Ce});
  const Mat w1t = check_matrix(se_w1t, "se_w1t", Ce, hid);
  check_weight(se_b1, "se_b1", {hid});
  const Mat w2t = check_matrix(se_w2t, "se_w2t", hid, Ce);
  check_weight(se_b2, "se_b2", {Ce});
  const Mat wp = check_matrix(proj_wt, "proj_wt", Ce, Cout);
  check_weight(proj_b, "proj_b", {Cout});
  const bool own_shortcut = shortcut_wt.has_value() && shortcut_wt->defined();
  Mat wsc{nullptr, 0, 0};
  if (own_shortcut) {
    wsc = check_matrix(*shortcut_wt, "shortcut_wt", Cin, Cout);
    TORCH_CHECK(!(residual.has_value() && residual->defined()), kOp,
                ": give residual or shortcut_wt, not both (shortcut_wt makes the op compute the residual)");
  }
  const int64_t Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor res;
  if (residual.has_value() && residual->defined()) {
    const auto& r = *residual;
    TORCH_CHECK(r.device().is_cpu() && r.scalar_type() == at::kFloat && r.sizes() == at::IntArrayRef({N, Cout, Ho, Wo}),
                kOp, ": residual must be a float32 CPU tensor of shape ", at::IntArrayRef({N, Cout, Ho, Wo}), ", got ",
                r.sizes(), " ", r.scalar_type());
    res = r.contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor out = at::empty({N, Cout, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const SpanCpuKernels& K = span_cpu_kernels();
  const float* dw = wd.p;
  if (wd.transposed()) {  // the conv's own (Ce, 9) weights: the kernel reads (9, Ce) channel vectors
    float* t = grow(scratch().dw, 9 * Ce);
    K.transpose_scale(wd.p, nullptr, t, Ce, 9);
    dw = t;
  }
  const bool own_gemm = Ce % K.lanes == 0 && Cout % K.lanes == 0;
  const float *we_rm = we.p, *wsc_rm = wsc.p;
  if (own_gemm && (we.transposed() || (own_shortcut && wsc.transposed()))) {
    // The convolutions' own (Ce, Cin) and (Cout, Cin) weights, as the GEMM's row-major B: 16384 floats at
    // 64 -> 256 channels, ~4 us once a call.
    float* t = grow(scratch().wt, Cin * (Ce + Cout));
    if (we.transposed()) K.transpose_scale(we.p, nullptr, t, Ce, Cin), we_rm = t;
    if (own_shortcut && wsc.transposed())
      K.transpose_scale(wsc.p, nullptr, t + Cin * Ce, Cout, Cin), wsc_rm = t + Cin * Ce;
  }
  const Block B{we,
                expand_b.const_data_ptr<float>(),
                dw,
                dw_b.const_data_ptr<float>(),
                w1t,
                se_b1.const_data_ptr<float>(),
                w2t,
                se_b2.const_data_ptr<float>(),
                wp,
                proj_b.const_data_ptr<float>(),
                wsc,
                Cin,
                Ce,
                hid,
                Cout,
                act == "gelu" ? kGelu : kSilu,
                gate == "sigmoid" ? kSigmoid : kHardSigmoid,
                Geom{Ce, H, W, Ho, Wo, static_cast<int>(stride)},
                &K,
                own_gemm,
                we_rm,
                wsc_rm};
  const float* px = xc.const_data_ptr<float>();
  const float* pres = res.defined() ? res.const_data_ptr<float>() : nullptr;
  float* pout = out.mutable_data_ptr<float>();
  const int64_t in_n = H * W * Cin, out_n = Ho * Wo * Cout;
  auto run = [&](int64_t n, bool split, int64_t chunks) {
    const float* rn = pres != nullptr ? pres + n * out_n : nullptr;
    if (split)
      sample_split(B, px + n * in_n, rn, pout + n * out_n, chunks);
    else
      sample(B, px + n * in_n, rn, pout + n * out_n);
  };
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads > 1 && N % threads != 0 && N < kSplitBelowSamplesPerThread * threads && Ho >= threads &&
      H * W >= kMinSplitPositions) {
    // Too few samples to keep every thread busy with whole ones (batch 1 on 2 threads; batch 3 would
    // leave one thread idle for a third of the call): each sample's rows are split over the threads.
    for (int64_t n = 0; n < N; ++n) run(n, true, threads);
  } else {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) run(n, false, 1);
    });
  }
  return out;
}

// A separate fragment (not in ops.cpp's TORCH_LIBRARY block), so this eval-only op stays in one file.
TORCH_LIBRARY_FRAGMENT(yyfast, m) {
  m.def(
      "mbconv_eval(Tensor x, Tensor? residual, Tensor expand_wt, Tensor expand_b, Tensor dw_wt, Tensor dw_b, "
      "Tensor se_w1t, Tensor se_b1, Tensor se_w2t, Tensor se_b2, Tensor proj_wt, Tensor proj_b, int stride, "
      "str act, str gate, Tensor? shortcut_wt=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(yyfast, CPU, m) { m.impl("mbconv_eval", &mbconv_eval_cpu); }

}  // namespace yyfast
