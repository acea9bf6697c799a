// dropout: y = x * (keep ? 1/(1-p) : 0), keep = (r >= threshold) with r the element's 32-bit
// Philox4x32-10 draw (cvk/philox.cuh) and threshold = floor(p * 2^32) (an int64 in [0, 2^32]:
// p = 1 keeps nothing, p = 0 everything), so P(keep) = 1 - threshold / 2^32. Element i of a
// launch uses draw offset + i of the stream of `seed`; offset is a multiple of 4, so element
// group 4j..4j+3 is one Philox call, block offset/4 + j. The backward is this same kernel on
// grad_out with the forward's (seed, offset, p): it regenerates the mask, nothing is stored.
// Tensors (T = float, __half or __nv_bfloat16): x, y are n contiguous elements (any shape,
//   flattened; strided views made contiguous first); y may be x (inplace).
// Work split: grid-stride loops over groups of 4 elements (one Philox call each). VEC16 (base
//   pointers 16-byte aligned): fp32 moves one Packed128 per group, fp16/bf16 one Packed128 per
//   two groups; the n % VEC tail goes one group a step. The mask depends only on the element
//   index, never on the plan: VEC16 or not, any grid, the same bits.
// Numerics: x * m in fp32 with m = scale or 0, rounded once to T (so, as torch's kernel, a NaN
//   or inf at a dropped position gives NaN, never a silent 0). Deterministic for (seed, offset).
// Napkin math (2^28 fp32 elements): 1.07 GB in + 1.07 GB out, floor 0.51 ms at ~4.2 TB/s (H200;
//   fp16/bf16 0.26 ms). Philox from the SASS: the fp32 VEC16 loop is 98 instructions per 4
//   elements (10 rounds of IMAD.WIDE.U32 + LOP3), ~6.6 G thread-instructions in all, ~0.2 ms
//   at ~33 T/s: hidden under the memory time in fp32, comparable to it in fp16/bf16.
//   torch's fused dropout also writes a 1-byte mask per element (1.25x our bytes in fp32).
//   Unmeasured on a GPU.
// ptxas -v, sm_90, nvcc 13, -ftz=true: fp32 30 (scalar) / 31 (VEC16) registers, fp16/bf16
//   26-30; 0 spills, 0 stack, 0 shared memory.
#pragma once
#include "cvk/common.cuh"
#include "cvk/philox.cuh"
#include "cvk/vec.cuh"

namespace cvk {
__device__ __forceinline__ float dropout_mult(unsigned int r, long long threshold, float scale) {
  return static_cast<long long>(r) >= threshold ? scale : 0.f;
}
}  // namespace cvk

template <class T, bool VEC16>
__global__ void dropout_forward_kernel(const T* x, T* y, long long n, long long seed,
                                       long long offset, long long threshold, float scale) {
  using cvk::i64;
  const i64 tid = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
  const unsigned long long s = static_cast<unsigned long long>(seed);
  const unsigned long long block0 = static_cast<unsigned long long>(offset) / 4;
  i64 done = 0;  // elements handled by the vector loop, a multiple of 4
  if (VEC16) {
    constexpr int V = cvk::Packed128<T>::size;  // 4 or 8: one or two Philox blocks
    const i64 nv = n / V;
    for (i64 v = tid; v < nv; v += step) {
      const cvk::Packed128<T> in = cvk::load128cs(x + v * V);
      cvk::Packed128<T> out;
#pragma unroll
      for (int h = 0; h < V / 4; ++h) {
        const cvk::u32x4 r =
            cvk::philox_block(s, block0 + static_cast<unsigned long long>(v * (V / 4) + h));
        const unsigned int rr[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int k = 0; k < 4; ++k)
          out[4 * h + k] = cvk::from_float<T>(cvk::to_float(in[4 * h + k]) *
                                              cvk::dropout_mult(rr[k], threshold, scale));
      }
      cvk::store128cs(y + v * V, out);
    }
    done = nv * V;
  }
  const i64 groups = (n + 3) / 4;
  for (i64 j = done / 4 + tid; j < groups; j += step) {
    const cvk::u32x4 r = cvk::philox_block(s, block0 + static_cast<unsigned long long>(j));
    const unsigned int rr[4] = {r.x, r.y, r.z, r.w};
    for (int k = 0; k < 4; ++k) {
      const i64 i = 4 * j + k;
      if (i < n)
        y[i] = cvk::from_float<T>(cvk::to_float(x[i]) *
                                  cvk::dropout_mult(rr[k], threshold, scale));
    }
  }
}
