// softmax / log_softmax over the last dimension, forward and backward.
//   forward:  y = exp(x - max) / sum(exp(x - max))        (LOG: y = (x - max) - log(sum(...)))
//   backward: dx = y * (dy - sum(dy * y))                  (LOG: dx = dy - exp(y) * sum(dy))
// Tensors: x, y, dy, dx are [rows, cols] of T = float, __half or __nv_bfloat16, contiguous (the
//   Python layer moves `dim` last).
// Work split: one row per warp for short rows (BLOCK=false: blockDim.x/32 rows per block), one
//   row per block for long rows (BLOCK=true); rows stride over the grid. VEC16 moves 16 bytes
//   a load, VEC = 16/sizeof(T) elements (cvk::Packed128; the plan picks it when cols % VEC == 0
//   and the base pointers are 16-byte aligned); otherwise one element a load.
// Numerics: in fp32 (acc_t) whatever T is; outputs rounded once to T. The forward keeps a
//   running (max, sum) pair per thread ("online softmax"), merged across the warp by shuffles
//   and across warps through shared memory, so x is read twice (stats, then output).
//   expf/logf, not the fast intrinsics. A NaN anywhere in a row makes the whole row NaN, and a
//   row of all -inf gives NaN, as in PyTorch. log_softmax subtracts max before log(sum), so
//   large logits keep their precision. Deterministic.
// Napkin math (8192 x 8192 fp32): the op must move 256 MiB in + 256 MiB out = 537 MB; at the
//   H200's ~4.2 TB/s copy rate the floor is 0.128 ms. The second read of a 32 KiB row is meant
//   to hit L1/L2.
#pragma once
#include "cvk/common.cuh"
#include "cvk/vec.cuh"

namespace cvk {

// Merge two (max, sum-of-exp relative to max) pairs; -inf maxima contribute nothing, and a NaN
// maximum poisons the pair (fmaxf alone would drop it).
__device__ __forceinline__ void ms_merge(float& m, float& s, float m2, float s2) {
  const float mn = (m != m || m2 != m2) ? m + m2 : fmaxf(m, m2);
  const float a = m == neg_inf() ? 0.f : s * expf(m - mn);
  const float b = m2 == neg_inf() ? 0.f : s2 * expf(m2 - mn);
  m = mn;
  s = a + b;
}

template <bool BLOCK>
__device__ __forceinline__ void ms_allreduce(float& m, float& s, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(FULL_MASK, m, offset);
    const float s2 = __shfl_xor_sync(FULL_MASK, s, offset);
    ms_merge(m, s, m2, s2);
  }
  if (BLOCK) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) {
      scratch[warp] = m;
      scratch[32 + warp] = s;
    }
    __syncthreads();
    m = scratch[0];
    s = scratch[32];
    for (int w = 1; w < nwarps; ++w) ms_merge(m, s, scratch[w], scratch[32 + w]);
    __syncthreads();
  }
}

template <bool BLOCK>
__device__ __forceinline__ float sum_allreduce(float v, float* scratch) {
  return BLOCK ? block_allreduce(v, SumOp(), scratch) : warp_allreduce(v, SumOp());
}

// Rows handled by this thread's group (a warp or the block): first row, step, lane, group size.
template <bool BLOCK>
struct RowGroup {
  i64 first, step;
  int lane, size;
  __device__ __forceinline__ RowGroup() {
    if (BLOCK) {
      first = blockIdx.x;
      step = gridDim.x;
      lane = threadIdx.x;
      size = blockDim.x;
    } else {
      const int warps = blockDim.x >> 5;
      first = static_cast<i64>(blockIdx.x) * warps + (threadIdx.x >> 5);
      step = static_cast<i64>(gridDim.x) * warps;
      lane = threadIdx.x & 31;
      size = 32;
    }
  }
};

}  // namespace cvk

template <class T, bool LOG, bool BLOCK, bool VEC16>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       long long rows, long long cols) {
  using cvk::i64;
  constexpr int VEC = VEC16 ? cvk::Packed128<T>::size : 1;
  __shared__ float scratch[64];
  const cvk::RowGroup<BLOCK> g;
  for (i64 row = g.first; row < rows; row += g.step) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    float m = cvk::neg_inf(), s = 0.f;
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float v[VEC];
      cvk::load_vec<T, VEC>(xr + c, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) cvk::ms_merge(m, s, v[i], 1.f);
    }
    cvk::ms_allreduce<BLOCK>(m, s, scratch);
    const float log_s = logf(s), inv = 1.f / s;
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float v[VEC];
      cvk::load_vec<T, VEC>(xr + c, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = LOG ? (v[i] - m) - log_s : expf(v[i] - m) * inv;
      cvk::store_vec<T, VEC>(yr + c, v);
    }
  }
}

template <class T, bool LOG, bool BLOCK, bool VEC16>
__global__ void softmax_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ y,
                                        T* __restrict__ grad_in,
                                        long long rows, long long cols) {
  using cvk::i64;
  constexpr int VEC = VEC16 ? cvk::Packed128<T>::size : 1;
  __shared__ float scratch[64];
  const cvk::RowGroup<BLOCK> g;
  for (i64 row = g.first; row < rows; row += g.step) {
    const T* gr = grad_out + row * cols;
    const T* yr = y + row * cols;
    T* dr = grad_in + row * cols;
    float acc = 0.f;  // softmax: sum(dy * y); log_softmax: sum(dy)
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float gv[VEC], yv[VEC];
      cvk::load_vec<T, VEC>(gr + c, gv);
      if (!LOG) cvk::load_vec<T, VEC>(yr + c, yv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc += LOG ? gv[i] : gv[i] * yv[i];
    }
    acc = cvk::sum_allreduce<BLOCK>(acc, scratch);
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float gv[VEC], yv[VEC], out[VEC];
      cvk::load_vec<T, VEC>(gr + c, gv);
      cvk::load_vec<T, VEC>(yr + c, yv);
#pragma unroll
      for (int i = 0; i < VEC; ++i)
        out[i] = LOG ? gv[i] - expf(yv[i]) * acc : yv[i] * (gv[i] - acc);
      cvk::store_vec<T, VEC>(dr + c, out);
    }
  }
}
