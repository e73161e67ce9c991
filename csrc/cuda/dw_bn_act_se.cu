// CUDA implementation of dw_bn_act_se (forward and backward, training and eval): the kernels are in
// dw_bn_act_se_kernels.cuh (design notes there), the launch code in dw_bn_act_se_launch.h; both are
// also compiled for the CUDA-on-CPU emulator the tests run (csrc/emu).
#include <torch/library.h>

#include "dw_bn_act_se_launch.h"

namespace yyfast {

TORCH_LIBRARY_IMPL(yyfast, CUDA, m) {
  m.impl("dw_bn_act_se_cuda", &forward_cuda);
  m.impl("dw_bn_act_se_cuda_backward", &backward_cuda);
}

}  // namespace yyfast
