// The CUDA kernels and their launch code (csrc/cuda/*_kernels.cuh, *_launch.h), compiled by the host
// compiler for the CUDA-on-CPU emulator (cuda_emu.h) and registered as the ops of the namespace
// `yyfast_emu` on CPU tensors, with the schemas of `yyfast` (inferred from the same functions the
// .cu files register). Test code: tests/cuda_emu.py compiles it on demand (so a changed .cu header is
// what runs) and routes the `yyfast` ops' CPU kernels to it for the shared op proofs.
#include "cuda_emu.h"  // first: the CUDA built-ins the kernels use

#include <torch/library.h>

#include "../cuda/dw_bn_act_se_launch.h"
#include "../cuda/yinyang_fuse_launch.h"

TORCH_LIBRARY(yyfast_emu, m) {
  m.def("dw_bn_act_se_cuda", TORCH_FN(yyfast::forward_cuda));
  m.def("dw_bn_act_se_cuda_backward", TORCH_FN(yyfast::backward_cuda));
  m.def("yinyang_fuse_cuda", TORCH_FN(yyfast::fuse_cuda));
  m.def("yinyang_fuse_cuda_backward", TORCH_FN(yyfast::fuse_backward_cuda));
}
