// cvk/common.cuh: what every kernel source includes. Portable across nvcc, NVRTC and g++ (the
// CPU simulator, selected by -DCVK_SIM): index types, warp and block reductions, accumulator
// types. No host-only headers here: NVRTC cannot see them.
#pragma once

#ifdef CVK_SIM
#include "cvk/sim.h"
#else
// Dynamic shared memory, declared the same way under nvcc/NVRTC and the simulator.
#define CVK_EXTERN_SHARED(T, name)                                   \
  extern __shared__ __align__(16) unsigned char cvk_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(cvk_dynamic_smem_)
#endif
#include "cvk/dtype.cuh"

namespace cvk {

typedef long long i64;  // element offsets: tensors may pass 2^31 elements

constexpr unsigned FULL_MASK = 0xffffffffu;

template <class T>
struct acc_type {
  typedef float type;  // fp16/bf16/fp32 accumulate in fp32
};
template <>
struct acc_type<double> {
  typedef double type;
};

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly reduction: every lane ends with the result.
template <class Op>
__device__ __forceinline__ float warp_allreduce(float v, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(FULL_MASK, v, offset));
  return v;
}

// Every thread of the block ends with the result. `scratch` holds >= 32 floats of shared
// memory; the trailing barrier lets the caller reuse it at once. blockDim.x % 32 == 0.
template <class Op>
__device__ __forceinline__ float block_allreduce(float v, Op op, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_allreduce(v, op);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < nwarps; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

}  // namespace cvk

// Float atomicCAS / atomicMax / atomicMin, which CUDA lacks: CAS loops on the bits, the same
// code on the GPU and in the simulator. The loop starts from an atomic read (others write
// concurrently). NaN arguments never replace the stored value.
__device__ __forceinline__ float atomicCAS(float* addr, float compare, float val) {
  return __int_as_float(atomicCAS(reinterpret_cast<int*>(addr), __float_as_int(compare),
                                  __float_as_int(val)));
}

template <class Better>
__device__ __forceinline__ float cvk_atomic_float_update(float* addr, float v, Better better) {
  int* a = reinterpret_cast<int*>(addr);
  int old = atomicAdd(a, 0), assumed;
  do {
    assumed = old;
    if (!better(v, __int_as_float(assumed))) break;
    old = atomicCAS(a, assumed, __float_as_int(v));
  } while (old != assumed);
  return __int_as_float(old);
}

struct CvkGreater {
  __device__ __forceinline__ bool operator()(float a, float b) const { return a > b; }
};
struct CvkLess {
  __device__ __forceinline__ bool operator()(float a, float b) const { return a < b; }
};

__device__ __forceinline__ float atomicMax(float* addr, float v) {
  return cvk_atomic_float_update(addr, v, CvkGreater());
}
__device__ __forceinline__ float atomicMin(float* addr, float v) {
  return cvk_atomic_float_update(addr, v, CvkLess());
}
