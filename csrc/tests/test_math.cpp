// libtorch-free checks of the shared per-element math (common/*_math.h), run by ctest:
// derivatives against central finite differences (in double), float against double, the gate
// and BN formulas against their definitions, Welford/Chan statistics against two-pass ones, and
// the fusion coefficients. Each check prints what it compares; the exit status is the number of
// failures.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "common/dw_bn_act_se_math.h"
#include "common/yinyang_fuse_math.h"

// The 8-lane math of the C++ CPU kernels (cpu/vec_math.inc), here in its baseline build. Its
// vectors never cross a non-inlined call, so GCC's note on their ABI does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
namespace vm {
#include "cpu/vec_math.inc"
}  // namespace vm

using namespace yyfast;

static int failures = 0;

static void expect_close(const char* what, double got, double want, double tol) {
  const double err = std::fabs(got - want) / std::fmax(1.0, std::fabs(want));
  if (!(err <= tol)) {
    std::printf("FAIL %s: got %.17g want %.17g (err %.3g > %.3g)\n", what, got, want, err, tol);
    ++failures;
  }
}

template <typename F>
static double central_diff(F f, double v) {
  const double h = 1e-6;
  return (f(v + h) - f(v - h)) / (2 * h);
}

// The vectorised exp, GELU, SiLU and their derivatives against the double scalar math over a dense
// grid, 8 lanes at a time: |err| / max(1, |value|) below tol everywhere.
static void check_vec_math() {
  struct Fn {
    const char* name;
    vm::v8f (*vec)(vm::v8f);
    double (*ref)(double);
    double lo, hi, tol;
  };
  const Fn fns[] = {
      // vgelu: 1 + erf(u/sqrt2) in float32 keeps an absolute error of ~1.7e-7 for u < 0 (the
      // rational erf's rounding, 3.4e-7 absolute), so GELU's error grows to ~9e-7 near u = -5.
      {"vgelu", vm::vgelu, [](double u) { return gelu(u); }, -12, 12, 1e-6},
      {"vgelu_grad", vm::vgelu_grad, [](double u) { return gelu_grad(u); }, -12, 12, 5e-7},
      {"vsilu", vm::vsilu, [](double u) { return silu(u); }, -40, 40, 5e-7},
      {"vsilu_grad", vm::vsilu_grad, [](double u) { return silu_grad(u); }, -40, 40, 5e-7},
      {"vsigmoid", vm::vsigmoid, [](double u) { return sigmoid(u); }, -40, 40, 5e-7},
  };
  for (const Fn& fn : fns) {
    double worst = 0;
    for (double u0 = fn.lo; u0 < fn.hi; u0 += 8e-3) {
      float in[8], out[8];
      for (int l = 0; l < 8; ++l) in[l] = static_cast<float>(u0 + l * 1e-3);
      vm::vst(out, fn.vec(vm::vld(in)));
      for (int l = 0; l < 8; ++l) {
        const double want = fn.ref(in[l]);
        worst = std::fmax(worst, std::fabs(out[l] - want) / std::fmax(1.0, std::fabs(want)));
      }
    }
    std::printf("%s: worst error %.3g on [%g, %g]\n", fn.name, worst, fn.lo, fn.hi);
    expect_close(fn.name, worst, 0.0, fn.tol);
  }
  // exp: relative error on [-87, 88] (its clamped range), and the clamp beyond.
  double worst = 0;
  for (double v0 = -87.0; v0 < 88.0; v0 += 8e-3) {
    float in[8], out[8];
    for (int l = 0; l < 8; ++l) in[l] = static_cast<float>(std::fmin(88.0, v0 + l * 1e-3));
    vm::vst(out, vm::vexp(vm::vld(in)));
    for (int l = 0; l < 8; ++l) worst = std::fmax(worst, std::fabs(out[l] / std::exp(double(in[l])) - 1.0));
  }
  std::printf("vexp: worst relative error %.3g on [-87, 88]\n", worst);
  expect_close("vexp relative error", worst, 0.0, 2e-7);
  float big[8] = {-1000.f, -200.f, -88.f, 100.f, 1000.f, 0.f, 1.f, -1.f}, out[8];
  vm::vst(out, vm::vgelu(vm::vld(big)));
  expect_close("vgelu(-1000)", out[0], 0.0, 1e-30);
  expect_close("vgelu(1000)", out[4], 1000.0, 1e-7);
  vm::vst(out, vm::vsilu(vm::vld(big)));
  expect_close("vsilu(-200)", out[1], 0.0, 1e-30);
  expect_close("vsilu(100)", out[3], 100.0, 1e-7);
}

int main() {
  check_vec_math();
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> uni(-6.0, 6.0);
  std::vector<double> pts = {-5.5, -3.5, -2.0, -1.0, -0.3, 0.0, 0.2, 1.0, 2.5, 4.0};
  for (int k = 0; k < 200; ++k) pts.push_back(uni(rng));

  for (double v : pts) {
    // GELU erf form against its definition and its derivative against finite differences.
    expect_close("gelu(v) == v*Phi(v)", gelu(v), v * 0.5 * (1 + std::erf(v / std::sqrt(2.0))), 1e-15);
    expect_close("gelu_grad == d gelu", gelu_grad(v), central_diff([](double t) { return gelu(t); }, v), 1e-8);
    expect_close("silu(v) == v/(1+e^-v)", silu(v), v / (1 + std::exp(-v)), 1e-15);
    expect_close("silu_grad == d silu", silu_grad(v), central_diff([](double t) { return silu(t); }, v), 1e-8);
    expect_close("sigmoid_grad == d sigmoid", sigmoid_grad(v), central_diff([](double t) { return sigmoid(t); }, v),
                 1e-8);
    expect_close("hardsigmoid == clamp(v/6+1/2)", hardsigmoid(v), std::fmin(1.0, std::fmax(0.0, v / 6 + 0.5)), 1e-15);
    if (std::fabs(std::fabs(v) - 3.0) > 1e-3)  // away from the kinks
      expect_close("hardsigmoid_grad == d hardsigmoid", hardsigmoid_grad(v),
                   central_diff([](double t) { return hardsigmoid(t); }, v), 1e-7);
    // The float instantiations (what the kernels run for fp32/fp16/bf16) track the double ones.
    const float f = static_cast<float>(v);
    expect_close("gelu<float>", gelu(f), gelu(static_cast<double>(f)), 1e-6);
    expect_close("gelu_grad<float>", gelu_grad(f), gelu_grad(static_cast<double>(f)), 1e-6);
    expect_close("silu<float>", silu(f), silu(static_cast<double>(f)), 1e-6);
    expect_close("silu_grad<float>", silu_grad(f), silu_grad(static_cast<double>(f)), 1e-6);
    expect_close("sigmoid<float>", sigmoid(f), sigmoid(static_cast<double>(f)), 1e-6);
    // The runtime switches select the right functions.
    expect_close("act_forward(gelu)", act_forward(kGelu, v), gelu(v), 0);
    expect_close("act_forward(silu)", act_forward(kSilu, v), silu(v), 0);
    expect_close("act_grad(silu)", act_grad(kSilu, v), silu_grad(v), 0);
    expect_close("gate_forward(hardsigmoid)", gate_forward(kHardSigmoid, v), hardsigmoid(v), 0);
    expect_close("gate_grad(sigmoid)", gate_grad(kSigmoid, v), sigmoid_grad(v), 0);
  }
  // torch's hardsigmoid_backward: 1/6 strictly inside (-3, 3), 0 at and beyond the ends.
  expect_close("hardsigmoid_grad(3) == 0", hardsigmoid_grad(3.0), 0.0, 0);
  expect_close("hardsigmoid_grad(-3) == 0", hardsigmoid_grad(-3.0), 0.0, 0);
  expect_close("hardsigmoid_grad(0) == 1/6", hardsigmoid_grad(0.0), 1.0 / 6.0, 1e-7);

  // BN affine: z*scale + shift == (z - mean)*rstd*gamma + beta.
  {
    const double mean = 0.37, var = 1.9, gamma = 1.3, beta = -0.2, eps = 1e-5;
    const double rstd = bn_rstd(var, eps), scale = bn_scale(rstd, gamma), shift = bn_shift(mean, scale, beta);
    for (double z : pts)
      expect_close("bn_affine", bn_affine(z, scale, shift), (z - mean) / std::sqrt(var + eps) * gamma + beta, 1e-14);
  }

  // BN backward: the training formula against finite differences of the loss sum(g * BN(z)).
  {
    const int m = 7;
    std::vector<double> z(m), g(m);
    for (int k = 0; k < m; ++k) {
      z[k] = uni(rng);
      g[k] = uni(rng);
    }
    const double gamma = 0.8, eps = 1e-5;
    auto loss = [&](const std::vector<double>& zz) {
      double mu = 0, var = 0, out = 0;
      for (double v : zz) mu += v / m;
      for (double v : zz) var += (v - mu) * (v - mu) / m;
      for (int k = 0; k < m; ++k) out += g[k] * ((zz[k] - mu) / std::sqrt(var + eps) * gamma);
      return out;
    };
    double mu = 0, var = 0;
    for (double v : z) mu += v / m;
    for (double v : z) var += (v - mu) * (v - mu) / m;
    const double rstd = bn_rstd(var, eps), scale = bn_scale(rstd, gamma);
    double sg = 0, sgz = 0;
    for (int k = 0; k < m; ++k) {
      sg += g[k];
      sgz += g[k] * (z[k] - mu) * rstd;
    }
    for (int k = 0; k < m; ++k) {
      std::vector<double> zp = z, zm = z;
      zp[k] += 1e-6;
      zm[k] -= 1e-6;
      const double fd = (loss(zp) - loss(zm)) / 2e-6;
      expect_close("bn_grad_input(training) == d loss/dz",
                   bn_grad_input(g[k], (z[k] - mu) * rstd, scale, sg / m, sgz / m, true), fd, 1e-6);
    }
    expect_close("bn_grad_input(eval)", bn_grad_input(0.3, 0.1, scale, 9.0, 9.0, false), 0.3 * scale, 1e-15);
  }

  // Welford updates and Chan merges against the two-pass mean and M2 (shifted data: cancellation bait).
  {
    std::vector<double> v(1000);
    for (auto& t : v) t = 1000.0 + uni(rng);
    double mu = 0, m2 = 0;
    for (double t : v) mu += t / v.size();
    for (double t : v) m2 += (t - mu) * (t - mu);
    double na = 0, ma = 0, qa = 0, nb = 0, mb = 0, qb = 0;
    for (size_t k = 0; k < 300; ++k) welford_add(na, ma, qa, v[k]);
    for (size_t k = 300; k < v.size(); ++k) welford_add(nb, mb, qb, v[k]);
    welford_merge(na, ma, qa, nb, mb, qb);
    expect_close("welford count", na, 1000, 0);
    expect_close("welford mean", ma, mu, 1e-14);
    expect_close("welford M2", qa, m2, 1e-10);
    double n0 = 0, m0 = 0, q0 = 0;
    welford_merge(n0, m0, q0, na, ma, qa);  // merging into an empty partial copies it
    expect_close("welford merge into empty", q0, qa, 0);
  }

  // SE spread of the pooled gradient and the direct path.
  expect_close("span_grad_d", span_grad_d(0.5, 0.25, 2.0, 0.125), 0.5 * 0.25 + 2.0 * 0.125, 1e-15);
  expect_close("conv3x3_out_size(7, 2)", static_cast<double>(conv3x3_out_size(7, 2)), 4, 0);
  expect_close("conv3x3_out_size(1, 2)", static_cast<double>(conv3x3_out_size(1, 2)), 1, 0);

  // Fusion: out = c1*A*I + c2*A + c3*I and its partial derivatives (finite differences).
  const double cs[6][3] = {{0, 1, 1}, {1, 0, 0}, {-1, 1, 0}, {1, 1, 1}, {-1, 2, -1}, {-1, 2, 1}};
  for (const auto& c : cs) {
    for (int k = 0; k < 20; ++k) {
      const double a = uni(rng), i = uni(rng), g = uni(rng);
      expect_close("fuse_forward", fuse_forward(a, i, c[0], c[1], c[2]), c[0] * a * i + c[1] * a + c[2] * i, 1e-14);
      const double da = central_diff([&](double t) { return fuse_forward(t, i, c[0], c[1], c[2]); }, a);
      const double di = central_diff([&](double t) { return fuse_forward(a, t, c[0], c[1], c[2]); }, i);
      expect_close("fuse_grad_a", fuse_grad_a(g, i, c[0], c[1]), g * da, 1e-8);
      expect_close("fuse_grad_i", fuse_grad_i(g, a, c[0], c[2]), g * di, 1e-8);
    }
  }

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures == 0 ? 0 : 1;
}
