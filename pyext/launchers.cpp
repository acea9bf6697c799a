#include <string>
#include <vector>

#include "registry.h"
#include "launchers.h"

namespace cvk {
namespace {
bool aligned16(std::initializer_list<ptr_t> ps) {
  for (ptr_t p : ps)
    if (p % 16) return false;
  return true;
}
}  // namespace

void launch_by_name(const std::string& kernel, const Plan& plan, ptr_t stream,
                    const std::vector<Arg>& args) {
  find_kernel(kernel)(plan, stream, args);
}

void launch_matmul_forward(ptr_t a, ptr_t b, ptr_t bias, ptr_t c, long long batch, long long M,
                           long long N, long long K, long long stride_a, long long stride_b,
                           bool trans_a, bool trans_b, ptr_t stream) {
  const Plan p = plan_matmul_forward(batch, M, N, K, trans_a, trans_b, bias != 0);
  launch_by_name(p.kernel, p, stream,
                 {Arg::ptr(a), Arg::ptr(b), Arg::ptr(bias), Arg::ptr(c), Arg::i64(batch),
                  Arg::i64(M), Arg::i64(N), Arg::i64(K), Arg::i64(stride_a), Arg::i64(stride_b)});
}

void launch_softmax_forward(ptr_t x, ptr_t y, long long rows, long long cols, bool log,
                            ptr_t stream) {
  const Plan p = plan_softmax_forward(rows, cols, log, aligned16({x, y}));
  launch_by_name(p.kernel, p, stream, {Arg::ptr(x), Arg::ptr(y), Arg::i64(rows), Arg::i64(cols)});
}

void launch_softmax_backward(ptr_t grad_out, ptr_t y, ptr_t grad_in, long long rows,
                             long long cols, bool log, ptr_t stream) {
  const Plan p = plan_softmax_backward(rows, cols, log, aligned16({grad_out, y, grad_in}));
  launch_by_name(p.kernel, p, stream,
                 {Arg::ptr(grad_out), Arg::ptr(y), Arg::ptr(grad_in), Arg::i64(rows),
                  Arg::i64(cols)});
}

}  // namespace cvk
