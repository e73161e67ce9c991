// The C++ CPU span kernels (cpu/span_kernels.h) without libtorch, for each ISA build this CPU runs:
//
//   yyfast_span_bench --check   ctest "span_kernels": the fused conv+BN+act+pool kernel against a
//                               double-precision scalar evaluation (awkward shapes, both strides,
//                               GELU and SiLU); the exit status is the number of failures.
//   yyfast_span_bench [C H W]   single-thread timing of that kernel (default 256 32 32, stride 1):
//                               ns per output element without the epilogue and with GELU / SiLU.
//                               The numbers quoted in cpu/vec_math.inc come from this.
//
// Build: cmake -S . -B build && cmake --build build --target yyfast_span_bench
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "common/dw_bn_act_se_math.h"
#include "cpu/span_kernels.h"

using namespace yyfast;

static const char* kIsas[] = {"avx512", "avx2+fma", "baseline"};

// The same contract evaluated in double: z = act(dwconv(x)*scale + shift) (or the bare conv), and
// the per-channel sums of z.
static void reference(const std::vector<float>& x, const std::vector<float>& wt, const std::vector<float>& sc,
                      const std::vector<float>& sh, int act, bool epi, const Geom& g, std::vector<double>& z,
                      std::vector<double>& psum) {
  z.assign(g.ho * g.wo * g.c, 0.0);
  psum.assign(g.c, 0.0);
  int64_t xoff[9], woff[9];
  for (int64_t oh = 0; oh < g.ho; ++oh)
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      const int nt = valid_taps(g, oh, ow, xoff, woff);
      for (int64_t k = 0; k < g.c; ++k) {
        double acc = 0;
        for (int t = 0; t < nt; ++t) acc += double(x[xoff[t] + k]) * double(wt[woff[t] + k]);
        if (epi) {
          acc = act_forward(act, acc * double(sc[k]) + double(sh[k]));
          psum[k] += acc;
        }
        z[(oh * g.wo + ow) * g.c + k] = acc;
      }
    }
}

static int check() {
  int failures = 0;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int64_t shapes[][3] = {{37, 33, 33}, {5, 1, 1}, {16, 1, 1}, {12, 2, 3}, {8, 4, 6}, {64, 9, 7}};
  for (const char* isa : kIsas) {
    const SpanCpuKernels* K = span_cpu_kernels_named(isa);
    if (K == nullptr) {
      std::printf("%s: not available on this CPU, skipped\n", isa);
      continue;
    }
    for (const auto& s : shapes)
      for (int stride = 1; stride <= 2; ++stride)
        for (int mode = 0; mode < 3; ++mode) {  // bare conv, GELU epilogue, SiLU epilogue
          const Geom g{s[0], s[1], s[2], (s[1] - 1) / stride + 1, (s[2] - 1) / stride + 1, stride};
          std::vector<float> x(g.h * g.w * g.c), wt(9 * g.c), sc(g.c), sh(g.c), z(g.ho * g.wo * g.c, NAN),
              psum(g.c, NAN);
          for (auto& v : x) v = 2.0f * nd(rng);
          for (auto& v : wt) v = 0.4f * nd(rng);
          for (auto& v : sc) v = 1.0f + 0.3f * nd(rng);
          for (auto& v : sh) v = 0.5f * nd(rng);
          const bool epi = mode > 0;
          const int act = mode == 2 ? kSilu : kGelu;
          K->conv(x.data(), wt.data(), epi ? sc.data() : nullptr, sh.data(), act, z.data(), psum.data(), g);
          std::vector<double> zr, pr;
          reference(x, wt, sc, sh, act, epi, g, zr, pr);
          double num = 0, den = 0, pnum = 0, pden = 0;
          for (size_t i = 0; i < zr.size(); ++i) {
            num += (z[i] - zr[i]) * (z[i] - zr[i]);
            den += zr[i] * zr[i];
          }
          for (int64_t k = 0; epi && k < g.c; ++k) {
            pnum += (psum[k] - pr[k]) * (psum[k] - pr[k]);
            pden += pr[k] * pr[k];
          }
          const double err = std::sqrt(num / std::max(den, 1e-300)),
                       perr = epi ? std::sqrt(pnum / std::max(pden, 1e-300)) : 0;
          if (!(err < 1e-5) || !(perr < 1e-5)) {
            std::printf("FAIL %s C=%lld H=%lld W=%lld s%d mode %d: relative error z %.3g, pool %.3g\n", isa,
                        (long long)g.c, (long long)g.h, (long long)g.w, stride, mode, err, perr);
            ++failures;
          }
        }
    std::printf("%s: conv / conv+GELU / conv+SiLU on %zu shapes x 2 strides checked\n", isa,
                sizeof(shapes) / sizeof(shapes[0]));
  }
  std::printf(failures ? "FAILED: %d failure(s)\n" : "OK: %d failure(s)\n", failures);
  return failures;
}

static void bench(int64_t c, int64_t h, int64_t w) {
  const Geom g{c, h, w, h, w, 1};
  const int64_t samples = 8;
  std::vector<float> x(samples * h * w * c), wt(9 * c), sc(c, 1.0f), sh(c, 0.1f), z(h * w * c), ps(c);
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  for (auto& v : wt) v = 0.3f * nd(rng);
  for (const char* isa : kIsas) {
    const SpanCpuKernels* K = span_cpu_kernels_named(isa);
    if (K == nullptr) continue;
    const char* names[] = {"conv", "conv+GELU", "conv+SiLU"};
    for (int mode = 0; mode < 3; ++mode) {
      double best = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t n = 0; n < samples; ++n)
          K->conv(x.data() + n * h * w * c, wt.data(), mode ? sc.data() : nullptr, sh.data(), mode == 2 ? kSilu : kGelu,
                  z.data(), ps.data(), g);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("%-9s %-10s C=%lld %lldx%lld: %.2f ns an output element (best of 5, one thread)\n", isa, names[mode],
                  (long long)c, (long long)h, (long long)w, best * 1e9 / double(samples * h * w * c));
    }
  }
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--check") == 0) return check();
  const int64_t c = argc > 1 ? std::atoll(argv[1]) : 256, h = argc > 2 ? std::atoll(argv[2]) : 32,
                w = argc > 3 ? std::atoll(argv[3]) : 32;
  if (c < 1 || h < 1 || w < 1) {
    std::fprintf(stderr, "usage: yyfast_span_bench [--check | C H W] (positive sizes)\n");
    return 2;
  }
  bench(c, h, w);
  return 0;
}
