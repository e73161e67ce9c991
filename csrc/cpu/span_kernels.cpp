// Builds the per-sample kernels of span_kernels.h twice from span_kernels.inc -- for the baseline
// ISA and for AVX2+FMA -- and picks one at run time. The AVX2 build uses GCC's target pragma on
// this file's own functions only (every header is included before it), so nothing shared with
// other translation units is compiled for AVX2 and the library still loads on any x86-64 CPU.
#include "span_kernels.h"

// The baseline build of 8-lane vectors returns them in two SSE registers; every such function is
// inlined into its caller, so the ABI note GCC gives for it does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "../common/dw_bn_act_se_math.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define YYFAST_SPAN_AVX2 1
#else
#define YYFAST_SPAN_AVX2 0
#endif

namespace yyfast {
namespace span_baseline {
constexpr const char* kIsaName = "baseline";
#include "vec_math.inc"
#include "span_kernels.inc"
}  // namespace span_baseline
}  // namespace yyfast

#if YYFAST_SPAN_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace yyfast {
namespace span_avx2 {
constexpr const char* kIsaName = "avx2+fma";
#include "vec_math.inc"
#include "span_kernels.inc"
}  // namespace span_avx2
}  // namespace yyfast
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// AVX-512: the same source with 16-lane vectors. On AMD Zen 4 (which runs 512-bit operations as
// two 256-bit halves) it still wins, with fewer instructions per element: conv+GELU 0.97-1.28 ns an
// output element against 1.33 for AVX2+FMA (csrc/tests/bench_span_kernels.cpp, C=256 32x32, one
// thread, best of 5, on a loaded 2-core EPYC), and the MBConv block op 8-10% faster (mbconv_eval.cpp).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
#endif
#define YYFAST_VEC_LANES 16
namespace yyfast {
namespace span_avx512 {
constexpr const char* kIsaName = "avx512";
#include "vec_math.inc"
#include "span_kernels.inc"
}  // namespace span_avx512
}  // namespace yyfast
#undef YYFAST_VEC_LANES
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace yyfast {
namespace {

bool cpu_has_avx2_fma() {
#if YYFAST_SPAN_AVX2
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if YYFAST_SPAN_AVX2
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#else
  return false;
#endif
}

const SpanCpuKernels* default_kernels() {
  const char* env = std::getenv("YYFAST_CPU_ISA");
  if (env != nullptr && std::strcmp(env, "baseline") == 0) return &span_baseline::kKernels;
  if (env != nullptr && std::strcmp(env, "avx2+fma") == 0 && span_cpu_kernels_named("avx2+fma") != nullptr)
    return span_cpu_kernels_named("avx2+fma");
  for (const char* isa : {"avx512", "avx2+fma"})
    if (const SpanCpuKernels* best = span_cpu_kernels_named(isa)) return best;
  return &span_baseline::kKernels;
}

const SpanCpuKernels*& current() {
  static const SpanCpuKernels* k = default_kernels();
  return k;
}

}  // namespace

const SpanCpuKernels* span_cpu_kernels_named(const char* isa) {
  if (std::strcmp(isa, "baseline") == 0) return &span_baseline::kKernels;
#if YYFAST_SPAN_AVX2
  if (std::strcmp(isa, "avx2+fma") == 0 && cpu_has_avx2_fma()) return &span_avx2::kKernels;
  if (std::strcmp(isa, "avx512") == 0 && cpu_has_avx512()) return &span_avx512::kKernels;
#endif
  return nullptr;
}

const SpanCpuKernels& span_cpu_kernels() { return *current(); }

bool set_span_cpu_isa(const char* isa) {
  const SpanCpuKernels* k = span_cpu_kernels_named(isa);
  if (k == nullptr) return false;
  current() = k;
  return true;
}

}  // namespace yyfast
