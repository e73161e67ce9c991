// yyfast::same_values(Tensor[] current, Tensor[] snapshot) -> bool: whether every tensor of `current`
// holds exactly the values of its snapshot (same dtype, shape, strides, device, bytes), in one call. Only
// dense CPU tensors are compared byte for byte (any memory format: the same strides cover the same bytes);
// anything else counts as changed.
//
// Why: optimize_for_inference's model prepares weights once (the block op's packing, Winograd's
// transform, the bound per-block calls) and must see every later edit of a parameter. The version
// counter misses writes through `.data` (p.data.copy_() bumps another tensor's counter), so the key
// is the values themselves, as for yyfast.YYNet's eval fold (eval_fold.FoldCache). Compared from
// Python, 105 torch.equal calls took ~0.5 ms a forward (yynet_small_64, 2-core EPYC); here they are one
// call of memcmp over 2.9 MB.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "eval_ops.h"

namespace yyfast {

bool same_values(const std::vector<at::Tensor>& current, const std::vector<at::Tensor>& snapshot) {
  if (current.size() != snapshot.size()) return false;
  for (size_t i = 0; i < current.size(); ++i) {
    const at::Tensor &a = current[i], &b = snapshot[i];
    if (!a.defined() || !b.defined() || a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes() ||
        a.device() != b.device() || !a.device().is_cpu() || a.strides() != b.strides() ||
        !a.is_non_overlapping_and_dense())
      return false;  // a layout this fast check does not compare: the caller treats it as changed
  }
  // Split by bytes, not by tensor: the parameters range from 64 bytes to 256 KiB, and a split by index
  // left one thread with most of the bytes.
  std::vector<int64_t> ends(current.size());
  int64_t total = 0;
  for (size_t i = 0; i < current.size(); ++i) ends[i] = total += static_cast<int64_t>(current[i].nbytes());
  std::atomic<bool> same{true};
  constexpr int64_t kChunk = 64 * 1024;
  at::parallel_for(0, (total + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    const int64_t lo = c0 * kChunk, hi = std::min(total, c1 * kChunk);
    size_t i = std::upper_bound(ends.begin(), ends.end(), lo) - ends.begin();  // the tensor holding byte lo
    for (int64_t pos = lo; pos < hi && same.load(std::memory_order_relaxed); ++i) {
      const int64_t start = ends[i] - static_cast<int64_t>(current[i].nbytes());
      const int64_t from = pos - start, to = std::min(hi, ends[i]) - start;
      const char* a = static_cast<const char*>(current[i].const_data_ptr()) + from;
      const char* b = static_cast<const char*>(snapshot[i].const_data_ptr()) + from;
      if (std::memcmp(a, b, to - from) != 0) same = false;
      pos = start + to;
    }
  });
  return same.load();
}

TORCH_LIBRARY_FRAGMENT(yyfast, m) { m.def("same_values(Tensor[] current, Tensor[] snapshot) -> bool", &same_values); }

}  // namespace yyfast
