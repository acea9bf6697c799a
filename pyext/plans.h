// plans.h: the launch logic of every kernel (which instantiation, grid, block, shared memory),
// written once. The pybind11 launchers call these; the rawkernel backend calls the same
// functions through the extension, so both launch paths launch identically.
#pragma once
#include <cstddef>
#include <string>

namespace cvk {

struct Dim {
  unsigned x = 1, y = 1, z = 1;
};

struct Plan {
  std::string kernel;  // registered name == NVRTC name expression
  std::string source;  // kernel file under kernels/
  Dim grid, block;
  std::size_t smem = 0;  // dynamic shared memory, bytes
};

Plan plan_matmul_forward(long long batch, long long M, long long N, long long K, bool trans_a,
                         bool trans_b, bool has_bias);
Plan plan_softmax_forward(long long rows, long long cols, bool log, bool aligned16);
Plan plan_softmax_backward(long long rows, long long cols, bool log, bool aligned16);

}  // namespace cvk
