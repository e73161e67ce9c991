// Per-element math of yinyang_fuse: out = c1*A*I + c2*A + c3*I, and its two partial derivatives.
// Included by cpu/yinyang_fuse.cpp and cuda/yinyang_fuse.cu so the CPU tests prove the GPU's math.
#pragma once
#include "macros.h"

namespace yyfast {

// T is the accumulation type: float for float/half/bfloat16 storage, double for double.
template <typename T>
YY_HD T fuse_forward(T a, T i, T c1, T c2, T c3) {
  return a * (c1 * i + c2) + c3 * i;
}
// d out / d A = g * (c1*I + c2)
template <typename T>
YY_HD T fuse_grad_a(T g, T i, T c1, T c2) { return g * (c1 * i + c2); }
// d out / d I = g * (c1*A + c3)
template <typename T>
YY_HD T fuse_grad_i(T g, T a, T c1, T c3) { return g * (c1 * a + c3); }

}  // namespace yyfast
