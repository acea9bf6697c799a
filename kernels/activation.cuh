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
// Napkin math (forward, 2^28 = 268M fp32 elements, the bench case 16384 x 16384): 1.07 GB read
//   + 1.07 GB written; at the H200's ~4.2 TB/s copy rate the floor is 0.51 ms (fp16/bf16: 0.26
//   ms). Backward moves 3/2 that (0.77 ms). Compute, from the SASS (sass_stats, sm_90): the
//   fp32 VEC16 loop of gelu 'none' is 212 instructions (12 MUFU) per 4 elements, ~53 an element:
//   14 G thread-instructions, at 132 SMs x 128 lanes x ~1.98 GHz = 33 T/s about 0.42 ms, just
//   under the fp32 memory floor; relu is a handful an element. So fp32 activations are
//   bytes-bound, but fp16/bf16 gelu (8 elements per 16 bytes, about the same instructions per
//   element) is compute-bound at ~0.42 ms against a 0.26 ms memory floor: a cheaper erfc (or
//   the tanh form) is where fp16 gelu would gain. Unmeasured on a GPU.
// ptxas -v, sm_90, nvcc 13, -ftz=true, every instantiation (7 ACT x VEC16 x 3 dtypes):
//   forward fp32 22-32 registers, fp16/bf16 13-40; backward fp32 24-32, fp16/bf16 15-36;
//   0 spills, 0 stack, 0 shared memory. VEC16 loops use one LDG.E.128 per operand.
#pragma once
#include "cvk/activation.cuh"
#include "cvk/common.cuh"
#include "cvk/vec.cuh"

namespace cvk {
// The grid-stride loop of an elementwise kernel: vec(v) for each 16-byte vector v < n / V when
// VEC16, then one(i) for every element the vectors did not cover.
template <int V, bool VEC16, class Vec, class One>
__device__ __forceinline__ void eltwise_loop(i64 n, Vec vec, One one) {
  const i64 tid = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
  i64 done = 0;
  if (VEC16) {
    for (i64 v = tid; v < n / V; v += step) vec(v);
    done = n / V * V;
  }
  for (i64 i = done + tid; i < n; i += step) one(i);
}
}  // namespace cvk

template <class T, int ACT, bool VEC16>
__global__ void activation_forward_kernel(const T* x, T* y, long long n, float alpha) {
  using Op = cvk::Act<ACT>;
  constexpr int V = cvk::Packed128<T>::size;
  cvk::eltwise_loop<V, VEC16>(
      n,
      [&](cvk::i64 v) {
        const cvk::Packed128<T> in = cvk::load128cs(x + v * V);
        cvk::Packed128<T> out;
#pragma unroll
        for (int k = 0; k < V; ++k)
          out[k] = cvk::from_float<T>(Op::fwd(cvk::to_float(in[k]), alpha));
        cvk::store128cs(y + v * V, out);
      },
      [&](cvk::i64 i) { y[i] = cvk::from_float<T>(Op::fwd(cvk::to_float(x[i]), alpha)); });
}

// z is x, or y when cvk::Act<ACT>::FROM_OUTPUT.
template <class T, int ACT, bool VEC16>
__global__ void activation_backward_kernel(const T* grad_out, const T* z, T* grad_input,
                                           long long n, float alpha) {
  using Op = cvk::Act<ACT>;
  constexpr int V = cvk::Packed128<T>::size;
  cvk::eltwise_loop<V, VEC16>(
      n,
      [&](cvk::i64 v) {
        const cvk::Packed128<T> g = cvk::load128cs(grad_out + v * V);
        const cvk::Packed128<T> zz = cvk::load128cs(z + v * V);
        cvk::Packed128<T> out;
#pragma unroll
        for (int k = 0; k < V; ++k)
          out[k] = cvk::from_float<T>(Op::bwd(cvk::to_float(g[k]), cvk::to_float(zz[k]), alpha));
        cvk::store128cs(grad_input + v * V, out);
      },
      [&](cvk::i64 i) {
        grad_input[i] =
            cvk::from_float<T>(Op::bwd(cvk::to_float(grad_out[i]), cvk::to_float(z[i]), alpha));
      });
}
