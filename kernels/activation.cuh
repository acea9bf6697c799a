// activation: y = f(x) elementwise, f in {relu, leaky_relu, elu, gelu ('none' and 'tanh'),
// sigmoid, tanh} (the functors of cvk/activation.cuh, template parameter ACT), and its backward
// grad_input = grad_out * f'(x), computed from x, or from y = f(x) for sigmoid and tanh (torch
// saves the output for those two).
// Tensors (T = float, __half or __nv_bfloat16): x, y, grad_out, z, grad_input are n contiguous
//   elements (the Python layer flattens any shape and makes strided views contiguous). y may be
//   x itself (inplace=True): each element is read before it is written, by the same thread.
// Work split: grid-stride loops. VEC16 (the plan's choice when every base pointer is 16-byte
//   aligned): each step moves one Packed128 (4 fp32 or 8 fp16/bf16) with streaming loads/stores,
//   then the n % VEC tail goes one element a thread. Otherwise one element a step.
// Numerics: fp32 math whatever T, rounded once to T; deterministic; NaN propagates. Error:
//   expf/expm1f/erfcf/tanhf's documented ulps plus a few roundings, see specs/activation.py.
// Napkin math (forward, 2^28 = 268M fp32 elements, the bench case): 1.07 GB read + 1.07 GB
//   written; at the H200's ~4.2 TB/s copy rate the floor is 0.51 ms. Backward moves 3/2 that
//   (0.77 ms). Compute: gelu 'none' is ~30 FP32 instructions an element (erfcf dominates), i.e.
//   8 G instructions; at 67 TFLOP/s-equivalent (~33.5 T instr/s) ~0.24 ms, under the memory floor,
//   so every activation is bytes-bound. fp16/bf16 halve the bytes (floor 0.26 ms) and come
//   closer to the compute time for gelu. Unmeasured on a GPU.
// ptxas -v, sm_90, nvcc 13 (registers, no spills, no shared memory): see the table at the end
//   of this file.
#pragma once
#include "cvk/activation.cuh"
#include "cvk/common.cuh"
#include "cvk/vec.cuh"

template <class T, int ACT, bool VEC16>
__global__ void activation_forward_kernel(const T* x, T* y, long long n, float alpha) {
  using cvk::i64;
  using Op = cvk::Act<ACT>;
  const i64 tid = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
  i64 done = 0;
  if (VEC16) {
    constexpr int V = cvk::Packed128<T>::size;
    const i64 nv = n / V;
    for (i64 v = tid; v < nv; v += step) {
      const cvk::Packed128<T> in = cvk::load128cs(x + v * V);
      cvk::Packed128<T> out;
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = cvk::from_float<T>(Op::fwd(cvk::to_float(in[k]), alpha));
      cvk::store128cs(y + v * V, out);
    }
    done = nv * V;
  }
  for (i64 i = done + tid; i < n; i += step)
    y[i] = cvk::from_float<T>(Op::fwd(cvk::to_float(x[i]), alpha));
}

// z is x, or y when cvk::Act<ACT>::FROM_OUTPUT.
template <class T, int ACT, bool VEC16>
__global__ void activation_backward_kernel(const T* grad_out, const T* z, T* grad_input,
                                           long long n, float alpha) {
  using cvk::i64;
  using Op = cvk::Act<ACT>;
  const i64 tid = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
  i64 done = 0;
  if (VEC16) {
    constexpr int V = cvk::Packed128<T>::size;
    const i64 nv = n / V;
    for (i64 v = tid; v < nv; v += step) {
      const cvk::Packed128<T> g = cvk::load128cs(grad_out + v * V), zz = cvk::load128cs(z + v * V);
      cvk::Packed128<T> out;
#pragma unroll
      for (int k = 0; k < V; ++k)
        out[k] = cvk::from_float<T>(Op::bwd(cvk::to_float(g[k]), cvk::to_float(zz[k]), alpha));
      cvk::store128cs(grad_input + v * V, out);
    }
    done = nv * V;
  }
  for (i64 i = done + tid; i < n; i += step)
    grad_input[i] = cvk::from_float<T>(Op::bwd(cvk::to_float(grad_out[i]), cvk::to_float(z[i]), alpha));
}
