// cvk/gemm_simt.cuh: the SIMT GEMM mainloop shared by matmul (kernels/matmul.cuh) and the
// implicit-GEMM convolutions (kernels/conv2d.cuh): C_tile[BM x BN] = sum_k A[m, k] * B[k, n].
//
// The mainloop knows nothing of where A and B live. Two tile loaders return single elements
// (already converted to fp32) at tile-local row r and global k; the mainloop decides which thread
// loads which element, stages BK-deep slices in shared memory and does the register-blocked
// product. A loader is a small struct:
//
//   struct Loader {
//     static constexpr bool K_FAST = ...;  // consecutive threads walk k (else they walk r), chosen
//                                          // so that consecutive threads read consecutive memory
//     __device__ float operator()(int r, int kk, cvk::i64 k) const;   // 0 outside the operand
//   };
//
// r is the tile-local row of A (0..BM) or column of B (0..BN); kk = k - k0 is the slice-local k;
// the mainloop masks k >= k_end itself, so a loader checks only its own bounds.
// Work split: (BM/TM) x (BN/TN) threads; thread (ty, tx) = (tid / CT, tid % CT) owns rows
// ty + i*RT and columns tx + j*CT (strided across the tile: conflict-free shared reads,
// coalescing stores). A is stored k-major and padded by 4 floats so that stores of rows that walk
// k spread over the banks.
// Numerics: fp32 fmaf in increasing k order, one accumulator per output: deterministic, and exact
// for small integers.
#pragma once
#include "cvk/common.cuh"

namespace cvk {

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct GemmSimt {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int RT = BM / TM, CT = BN / TN, NT = RT * CT;  // thread rows, columns, count
  static constexpr int PAD = 4;
  static_assert((BM * BK) % NT == 0 && (BN * BK) % NT == 0, "tile loads must split evenly");

  struct Smem {
    float As[BK][BM + PAD];
    float Bs[BK][BN];
  };

  // The tile-local row / column of accumulator acc[i][j] of thread tid.
  __device__ __forceinline__ static int row(int tid, int i) { return tid / CT + i * RT; }
  __device__ __forceinline__ static int col(int tid, int j) { return tid % CT + j * CT; }

  // acc = sum over k in [k_begin, k_end) of A[r, k] * B[k, c], in increasing k. Every thread of
  // the block calls it (it holds barriers); it ends with a barrier, so s may be reused at once.
  template <class LoadA, class LoadB>
  __device__ __forceinline__ static void mainloop(float (&acc)[TM][TN], Smem& s, i64 k_begin,
                                                  i64 k_end, const LoadA& la, const LoadB& lb) {
    const int tid = threadIdx.x, tx = tid % CT, ty = tid / CT;
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    for (i64 k0 = k_begin; k0 < k_end; k0 += BK) {
#pragma unroll
      for (int i = tid; i < BM * BK; i += NT) {
        const int r = LoadA::K_FAST ? i / BK : i % BM, kk = LoadA::K_FAST ? i % BK : i / BM;
        const i64 k = k0 + kk;
        s.As[kk][r] = k < k_end ? la(r, kk, k) : 0.f;
      }
#pragma unroll
      for (int i = tid; i < BN * BK; i += NT) {
        const int c = LoadB::K_FAST ? i / BK : i % BN, kk = LoadB::K_FAST ? i % BK : i / BN;
        const i64 k = k0 + kk;
        s.Bs[kk][c] = k < k_end ? lb(c, kk, k) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        float a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = s.As[kk][ty + i * RT];
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = s.Bs[kk][tx + j * CT];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();  // the next slice overwrites As/Bs
    }
  }
};

// The loader of a row-major [R, K] matrix (or [K, R] when TRANS), rows from r0, zero outside:
// matmul's A and B, and conv2d's weights seen as [C_out/groups, C_in/groups*kH*kW].
template <class T, bool TRANS>
struct RowMajorLoader {
  static constexpr bool K_FAST = !TRANS;  // k is the contiguous index
  const T* p;
  i64 r0, R, K;
  __device__ __forceinline__ float operator()(int r, int, i64 k) const {
    const i64 g = r0 + r;
    return g < R ? to_float(TRANS ? p[k * R + g] : p[g * K + k]) : 0.f;
  }
};

}  // namespace cvk
