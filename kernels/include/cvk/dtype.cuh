// cvk/dtype.cuh: the element types kernels are templated on (float, __half, __nv_bfloat16), and
// the conversions between them and the fp32 accumulator: cvk::to_float, cvk::from_float (round
// to nearest even), cvk::acc_t. Portable: cuda_fp16.h/cuda_bf16.h under nvcc and NVRTC (NVRTC
// does not carry them built in: compile with -I<CUDA include dir>), the simulator's own
// bit-exact types (cvk/sim_half.h) under g++ -DCVK_SIM. Included by cvk/common.cuh.
#pragma once

#ifdef CVK_SIM
#include "cvk/sim_half.h"
#else
#if defined(__CUDACC_RTC__) && defined(__has_include)
#if !__has_include(<cuda_fp16.h>)
#error "cvk/dtype.cuh: NVRTC has no cuda_fp16.h built in: pass -I<CUDA include dir>"
#endif
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace cvk {

template <class T>
struct acc_type;  // defined in cvk/common.cuh: float for float/half/bf16, double for double
template <class T>
using acc_t = typename acc_type<T>::type;

template <class T>
struct dependent_false {
  static constexpr bool value = false;
};

// Element -> fp32. Exact for every supported type.
template <class T>
__device__ __forceinline__ float to_float(T x) {
  static_assert(dependent_false<T>::value, "cvk::to_float: element type must be float, __half or __nv_bfloat16");
  return 0.0f;
}
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

// fp32 -> element, rounding to nearest even (overflow to inf; NaN to the canonical 0x7fff).
template <class T>
__device__ __forceinline__ T from_float(float x) {
  static_assert(dependent_false<T>::value, "cvk::from_float: element type must be float, __half or __nv_bfloat16");
  return T();
}
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

}  // namespace cvk
