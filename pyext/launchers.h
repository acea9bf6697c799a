// launchers.h: launch_<op>_<dir>: raw pointers, sizes and a stream in; the plan picks the
// kernel and the grid; nothing is allocated. Compiled into both extensions.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "registry.h"

namespace cvk {

using ptr_t = std::uintptr_t;

void launch_by_name(const std::string& kernel, const Plan& plan, ptr_t stream,
                    const std::vector<Arg>& args);

void launch_matmul_forward(ptr_t a, ptr_t b, ptr_t bias, ptr_t c, long long batch, long long M,
                           long long N, long long K, long long stride_a, long long stride_b,
                           bool trans_a, bool trans_b, ptr_t stream);
void launch_softmax_forward(ptr_t x, ptr_t y, long long rows, long long cols, bool log,
                            ptr_t stream);
void launch_softmax_backward(ptr_t grad_out, ptr_t y, ptr_t grad_in, long long rows,
                             long long cols, bool log, ptr_t stream);

}  // namespace cvk
