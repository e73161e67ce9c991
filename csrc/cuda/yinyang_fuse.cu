// CUDA implementation of yinyang_fuse (forward and backward): the kernels are in
// yinyang_fuse_kernels.cuh, the launch code in yinyang_fuse_launch.h; both are also compiled for the
// CUDA-on-CPU emulator the tests run (csrc/emu).
#include <torch/library.h>

#include "yinyang_fuse_launch.h"

namespace yyfast {

TORCH_LIBRARY_IMPL(yyfast, CUDA, m) {
  m.impl("yinyang_fuse_cuda", &fuse_cuda);
  m.impl("yinyang_fuse_cuda_backward", &fuse_backward_cuda);
}

}  // namespace yyfast
