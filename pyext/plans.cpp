#include "plans.h"

#include <algorithm>
#include <stdexcept>

namespace cvk {
namespace {

const char* b(bool v) { return v ? "true" : "false"; }
long long ceil_div(long long a, long long d) { return (a + d - 1) / d; }
constexpr long long kMaxGridYZ = 65535, kMaxGridX = 2147483647;

}  // namespace

Plan plan_matmul_forward(long long batch, long long M, long long N, long long K, bool trans_a,
                         bool trans_b, bool has_bias) {
  if (batch < 1 || M < 1 || N < 1 || K < 1)
    throw std::invalid_argument("matmul: plan needs batch, M, N, K >= 1");
  // 128x128 tiles with 8x8 per thread once there are enough tiles to fill the GPU; else 64x64
  // with 4x4, so small problems still spread over the SMs.
  const bool big = batch * ceil_div(M, 128) * ceil_div(N, 128) >= 132;
  const int BM = big ? 128 : 64, BN = BM, BK = 8, TM = big ? 8 : 4, TN = TM;
  Plan p;
  p.kernel = "matmul_forward_kernel<" + std::to_string(BM) + ", " + std::to_string(BN) + ", " +
             std::to_string(BK) + ", " + std::to_string(TM) + ", " + std::to_string(TN) + ", " +
             b(trans_a) + ", " + b(trans_b) + ", " + b(has_bias) + ">";
  p.source = "matmul.cuh";
  if (ceil_div(M, BM) > kMaxGridYZ || ceil_div(N, BN) > kMaxGridX)
    throw std::invalid_argument("matmul: M or N too large for one launch");
  p.grid = {static_cast<unsigned>(ceil_div(N, BN)), static_cast<unsigned>(ceil_div(M, BM)),
            static_cast<unsigned>(std::min(batch, kMaxGridYZ))};
  p.block = {static_cast<unsigned>((BM / TM) * (BN / TN)), 1, 1};
  return p;
}

namespace {

Plan plan_softmax(const char* kernel, long long rows, long long cols, bool log, bool aligned16) {
  if (rows < 1 || cols < 1) throw std::invalid_argument("softmax: plan needs rows, cols >= 1");
  const int vec = (aligned16 && cols % 4 == 0) ? 4 : 1;
  const bool block = cols > 1024;  // short rows: one warp each; long rows: one block each
  Plan p;
  p.kernel = std::string(kernel) + "<" + b(log) + ", " + b(block) + ", " + std::to_string(vec) +
             ">";
  p.source = "softmax.cuh";
  unsigned threads;
  long long blocks;
  if (block) {
    // about 8 vector loads per thread per pass, 128..1024 threads
    long long want = ceil_div(ceil_div(cols, vec), 8);
    threads = 128;
    while (threads < want && threads < 1024) threads *= 2;
    blocks = rows;
  } else {
    threads = 128;  // 4 rows per block
    blocks = ceil_div(rows, threads / 32);
  }
  p.grid = {static_cast<unsigned>(std::min(blocks, kMaxGridX)), 1, 1};  // rows stride the grid
  p.block = {threads, 1, 1};
  return p;
}

}  // namespace

Plan plan_softmax_forward(long long rows, long long cols, bool log, bool aligned16) {
  return plan_softmax("softmax_forward_kernel", rows, cols, log, aligned16);
}

Plan plan_softmax_backward(long long rows, long long cols, bool log, bool aligned16) {
  return plan_softmax("softmax_backward_kernel", rows, cols, log, aligned16);
}

}  // namespace cvk
