// Host-side code of yinyang_fuse shared by the CPU and the CUDA implementations (and the CUDA
// emulator, which compiles the CUDA launch code): the argument checks.
#pragma once
#include <ATen/core/Tensor.h>

namespace yyfast {

// Checks that `other` (the argument called `name`: i, or the incoming gradient) has a's shape,
// dtype and device, and that the device is of `device_type` (the device the implementation runs on).
inline void check_fuse_pair(const at::Tensor& a, const at::Tensor& other, const char* name,
                            c10::DeviceType device_type) {
  TORCH_CHECK(a.sizes() == other.sizes(), "yinyang_fuse: ", name, " must have the shape of a ", a.sizes(), ", got ",
              other.sizes());
  TORCH_CHECK(a.scalar_type() == other.scalar_type(), "yinyang_fuse: ", name, " must have the dtype of a (",
              a.scalar_type(), "), got ", other.scalar_type());
  TORCH_CHECK(other.device().type() == device_type && other.device() == a.device(), "yinyang_fuse: ", name, " is on ",
              other.device(), " but a is on ", a.device());
}

}  // namespace yyfast
