// matmul_tc: C = A @ B on tensor cores; fp16 or bf16 inputs, fp32 accumulate, fp32 output.
//
// Tensors (row-major, contiguous):
//   A  [M, K]  T = __half or __nv_bfloat16 (moved as 16-bit storage; only the mma reads values)
//   B  [K, N]  same type
//   C  [M, N]  fp32, written (fp32 out: the caller rounds to fp16/bf16 if it wants that)
// Template knobs: T; VEC, the elements one copy moves (8, 4, 2: a 16-, 8- or 4-byte
//   cp.async; 1: a plain synchronous load). The plan picks the largest VEC dividing K and N with
//   A and B aligned to 2*VEC bytes, so a chunk is either wholly inside the matrix or wholly
//   outside (then zero-filled through cp.async's src-size = 0).
// Work split: one block of 4 warps per 64 x 64 tile of C (blockIdx.x over N, .y over M); warp w
//   owns the 32 x 32 quarter (w / 2, w % 2), i.e. 2 x 4 m16n8k16 tiles, 32 fp32 accumulators per
//   thread. K advances in 32-wide slices through a 3-stage cp.async pipeline in shared memory
//   (A slice 64 x 32 and B slice 32 x 64 per stage, rows padded by 8 elements so the 16-byte
//   ldmatrix rows of 8 consecutive rows hit distinct banks). Per 16-wide k step a warp loads A
//   with 2 ldmatrix.x4, B with 2 ldmatrix.x4.trans (B is k-major in memory, the mma wants it
//   "col"), and issues 8 mma.sync.m16n8k16. Out-of-range rows, columns and k are zero-filled on
//   load and masked on store, so any M, N, K >= 1 works.
// Pipeline invariant: before computing slice kt, wait_group<STAGES-2> lands this thread's copies
//   of slice kt, and the __syncthreads after it publishes every thread's copies and guarantees
//   that all warps are done with slice kt-1, whose stage the prefetch of slice kt+STAGES-1 then
//   overwrites. One group is committed per slice, empty past the end, so the count is uniform.
// Numerics: products exact, fp32 accumulation (in k order within each mma on the simulator, in
//   the tensor core's order on a GPU); deterministic, no atomics. Small-integer inputs whose
//   products and sums stay below 2^24 give exact results.
// Napkin math (4096^3): 2*4096^3 = 137 GFLOP; at an H100/H200's ~990 TFLOP/s dense fp16 tensor
//   peak (reached by wgmma; mma.sync tops out well below) the floor is 0.14 ms. Memory: A and B
//   are 32 MiB each and C is 64 MiB; with 64 x 64 tiles each A row-slice is re-read N/64 = 64
//   times (4 GiB from L2 for A and B together), so this tile size is L2-bound long before it is
//   tensor-bound. A correctness vehicle: the matmul issue makes it fast.
// ptxas -v (nvcc 13, -O3), every T x VEC variant alike: sm_90 80 registers, 0 spill
//   stores/loads, 0 stack, 29184 bytes static shared memory (3 x (64*40 + 32*72) x 2 B);
//   sm_80 95-96 registers, 0 spills, same shared memory. 128 threads x 80 registers and 28.5
//   KiB: up to 6 blocks (24 warps) an SM on an H100 by registers, 7 by shared memory. SASS mix
//   not read yet (nvdisasm was not available where this was written).
#pragma once
#include "cvk/common.cuh"
#include "cvk/cp_async.cuh"
#include "cvk/mma.cuh"

namespace matmul_tc {
constexpr int BM = 64, BN = 64, BK = 32, STAGES = 3, WM = 32, WN = 32, THREADS = 128;
constexpr int PAD = 8, AS = BK + PAD, BS = BN + PAD;  // shared row strides, elements
static_assert((AS * 2) % 16 == 0 && (BS * 2) % 16 == 0, "ldmatrix rows must stay 16-byte aligned");

// One chunk of VEC elements from global (src) to shared (dst), or zeros when !inside.
template <int VEC>
__device__ __forceinline__ void copy_chunk(unsigned short* dst, const unsigned short* src,
                                           bool inside) {
  if constexpr (VEC == 8) cvk::cp_async_cg<16>(dst, src, inside ? 16 : 0);
  else if constexpr (VEC == 4) cvk::cp_async_ca<8>(dst, src, inside ? 8 : 0);
  else if constexpr (VEC == 2) cvk::cp_async_ca<4>(dst, src, inside ? 4 : 0);
  else *dst = inside ? *src : static_cast<unsigned short>(0);  // 2 bytes: below cp.async's 4
}

// Issue the copies of K-slice kt into one stage: A rows m0.., B columns n0...
template <int VEC>
__device__ __forceinline__ void load_slice(unsigned short* As, unsigned short* Bs,
                                           const unsigned short* __restrict__ A,
                                           const unsigned short* __restrict__ B, long long M,
                                           long long N, long long K, long long m0, long long n0,
                                           long long kt) {
  const long long k0 = kt * BK;
#pragma unroll
  for (int c = threadIdx.x; c < BM * BK / VEC; c += THREADS) {
    const int r = c / (BK / VEC), col = (c % (BK / VEC)) * VEC;
    const long long gm = m0 + r, gk = k0 + col;
    const bool inside = gm < M && gk < K;
    copy_chunk<VEC>(As + r * AS + col, inside ? A + gm * K + gk : A, inside);
  }
#pragma unroll
  for (int c = threadIdx.x; c < BK * BN / VEC; c += THREADS) {
    const int r = c / (BN / VEC), col = (c % (BN / VEC)) * VEC;
    const long long gk = k0 + r, gn = n0 + col;
    const bool inside = gk < K && gn < N;
    copy_chunk<VEC>(Bs + r * BS + col, inside ? B + gk * N + gn : B, inside);
  }
}
}  // namespace matmul_tc

template <class T, int VEC>
__global__ void __launch_bounds__(matmul_tc::THREADS)
matmul_tc_forward_kernel(const T* __restrict__ A_, const T* __restrict__ B_,
                         float* __restrict__ C, long long M, long long N, long long K) {
  using namespace matmul_tc;
  static_assert(sizeof(T) == 2, "matmul_tc: T is __half or __nv_bfloat16");
  constexpr bool IS_BF16 = cvk::is_bf16<T>::value;
  const unsigned short* A = reinterpret_cast<const unsigned short*>(A_);
  const unsigned short* B = reinterpret_cast<const unsigned short*>(B_);
  static_assert(VEC == 1 || VEC == 2 || VEC == 4 || VEC == 8, "VEC is 1, 2, 4 or 8 elements");
  __shared__ __align__(16) unsigned short As[STAGES][BM * AS];
  __shared__ __align__(16) unsigned short Bs[STAGES][BK * BS];

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = (warp / 2) * WM, wn = (warp % 2) * WN;
  const long long m0 = static_cast<long long>(blockIdx.y) * BM;
  const long long n0 = static_cast<long long>(blockIdx.x) * BN;
  const long long KT = (K + BK - 1) / BK;

  float acc[2][4][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) load_slice<VEC>(As[s], Bs[s], A, B, M, N, K, m0, n0, s);
    cvk::cp_async_commit_group();
  }

  for (long long kt = 0; kt < KT; ++kt) {
    cvk::cp_async_wait_group<STAGES - 2>();
    __syncthreads();
    const long long pre = kt + STAGES - 1;
    if (pre < KT) load_slice<VEC>(As[pre % STAGES], Bs[pre % STAGES], A, B, M, N, K, m0, n0, pre);
    cvk::cp_async_commit_group();

    const unsigned short* as = As[kt % STAGES];
    const unsigned short* bs = Bs[kt % STAGES];
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      cvk::warp_mma_32x32_k16<IS_BF16, AS, BS>(acc, as, bs, wm, wn, kk, lane);
    }
  }
  cvk::cp_async_wait_all();  // only empty groups remain; no copy may outlive the thread

#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // accumulator layout: rows g, g+8; cols 2*tig, 2*tig+1
        const long long row = m0 + wm + mi * 16 + lane / 4 + (i >= 2 ? 8 : 0);
        const long long col = n0 + wn + ni * 8 + (lane % 4) * 2 + (i & 1);
        if (row < M && col < N) C[row * N + col] = acc[mi][ni][i];
      }
}
