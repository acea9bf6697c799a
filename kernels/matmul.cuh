// matmul: C[b] = op(A[b]) @ op(B[b]) (+ bias); op(X) is X or X^T (TRANS_A, TRANS_B).
//
// Tensors (all of element type T = float, __half or __nv_bfloat16; row-major, contiguous within
// a batch item):
//   A      [batch, M, K], or [batch, K, M] when TRANS_A; batch item b at A + b*stride_a
//          (stride_a = 0 broadcasts one matrix over the batch)
//   B      [batch, K, N], or [batch, N, K] when TRANS_B; likewise stride_b
//   bias   [N] when HAS_BIAS (linear: x @ W^T + b is TRANS_B with HAS_BIAS), else unused
//   C      [batch, M, N], written, contiguous
// Work split: one block per BM x BN tile of C (blockIdx.x over N, .y over M, .z strides over the
// batch); the mainloop is cvk/gemm_simt.cuh's, shared with conv2d. Each of the (BM/TM)*(BN/TN)
// threads owns a TM x TN sub-tile, strided across the tile so that shared-memory reads are
// conflict-free and stores coalesce. K advances in BK slices staged
// through shared memory (A stored k-major, padded by 4 to spread the transposing stores over
// banks). Out-of-range rows, columns and k are zero-filled on load and masked on store, so any
// M, N, K >= 1 works.
// Numerics: tiles are converted to fp32 as they are staged in shared memory; fp32 accumulate
//   with fmaf in k order (acc_t); the bias is added in fp32 and C rounded once to T (round to
//   nearest even). Deterministic (no atomics). Small-integer inputs give exact results.
//   fp16/bf16 go through the same SIMT mainloop (no tensor cores: that is cvk/mma.cuh's
//   matmul_tc); the 16-bit loads are scalar.
// Napkin math (4096^3): 2*4096^3 = 137 GFLOP; at the H200's ~60 TFLOP/s fp32 peak the floor is
//   2.3 ms (cuBLAS measured 46.6 TFLOP/s = 2.95 ms). Traffic with 128x128 tiles: each of A and B
//   is read N/128 resp. M/128 times = 2 * 32 * 64 MiB = 4 GiB, mostly from L2.
// Ladder: v1 one thread per output with 16x16 shared tiles (not kept); v2 (this) register
//   blocking, 8x8 per thread. Unmeasured on a GPU so far: see bench/results/.
#pragma once
#include "cvk/common.cuh"
#include "cvk/gemm_simt.cuh"

template <class T, int BM, int BN, int BK, int TM, int TN, bool TRANS_A, bool TRANS_B,
          bool HAS_BIAS>
// At most 128 registers a thread, so two 256-thread blocks fit on an SM (one hides the other's
// barrier stalls). ptxas -v (sm_90): 123-128 registers for 128x128 tiles, with 8-16 bytes of
// spill in three of the eight instantiations; without the cap, 122-155 registers and one block
// per SM. Which is faster is unmeasured.
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
matmul_forward_kernel(const T* __restrict__ A, const T* __restrict__ B,
                      const T* __restrict__ bias, T* __restrict__ C, long long batch,
                      long long M, long long N, long long K, long long stride_a,
                      long long stride_b) {
  using cvk::i64;
  using G = cvk::GemmSimt<BM, BN, BK, TM, TN>;
  __shared__ typename G::Smem smem;

  const int tid = threadIdx.x;
  const i64 m0 = static_cast<i64>(blockIdx.y) * BM, n0 = static_cast<i64>(blockIdx.x) * BN;

  for (i64 b = blockIdx.z; b < batch; b += gridDim.z) {
    // B[k, n] is the row-major [K, N] matrix (TRANS_B: [N, K]) seen as N rows of length K.
    const cvk::RowMajorLoader<T, TRANS_A> la{A + b * stride_a, m0, M, K};
    const cvk::RowMajorLoader<T, !TRANS_B> lb{B + b * stride_b, n0, N, K};
    T* Cb = C + b * M * N;
    float acc[TM][TN];
    G::mainloop(acc, smem, 0, K, la, lb);

#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const i64 m = m0 + G::row(tid, i);
      if (m >= M) continue;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const i64 n = n0 + G::col(tid, j);
        if (n < N)
          Cb[m * N + n] = cvk::from_float<T>(HAS_BIAS ? acc[i][j] + cvk::to_float(bias[n])
                                                      : acc[i][j]);
      }
    }
  }
}
