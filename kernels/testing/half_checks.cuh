// half_checks: test-only kernels that pin down the element-type layer (cvk/dtype.cuh,
// cvk/vec.cuh) bit for bit, run on the simulator in CI and on a GPU where one is found, against
// the same expectations (tests/test_half_types.py). T is __half or __nv_bfloat16 unless noted;
// n is the element count; one thread per element, any 1-D grid.
//   half_to_float_kernel<T>   out[i] = to_float(in[i]); out[n+i] = float(in[i]) (operator float)
//   float_to_half_kernel<T>   out[i] = from_float<T>(in[i]); out[n+i] = __float2half_rn /
//                             __float2bfloat16_rn; out[2n+i] = T(in[i]) (converting constructor)
//   half_arith_kernel<T>      out[k*n+i], k = 0..9: __hadd, __hsub, __hmul, __hdiv, __hfma(a,b,c),
//                             a+b, a-b, a*b, a/b, -a; cmp[k*n+i], k = 0..5: a==b, a!=b, a<b, a<=b,
//                             a>b, a>=b (as 0/1)
//   vec_copy_kernel<T>        T = float/__half/__nv_bfloat16: out = in through load128/store128,
//                             one Packed128 per thread; n % Packed128<T>::size == 0
//   vec_add_kernel<T>         out = from_float(to_float(a) + to_float(b)) through load128cs and
//                             store128cs, element by element; acc in fp32
//   half_atomic_add_kernel<T> every thread: atomicAdd(acc, T(1)) and atomicAdd(acc + 1, T(-0.5)),
//                             sums exact in T for up to 256 threads
// Tensors are 1-D, contiguous; pointers 16-byte aligned for the vector kernels (a misaligned one
// is the point of the simulator's error test). Not library operators.
#pragma once
#include "cvk/common.cuh"
#include "cvk/vec.cuh"

__device__ __forceinline__ __half cvk_test_float2_rn(float x, __half*) { return __float2half_rn(x); }
__device__ __forceinline__ __nv_bfloat16 cvk_test_float2_rn(float x, __nv_bfloat16*) {
  return __float2bfloat16_rn(x);
}

template <class T>
__global__ void half_to_float_kernel(const T* __restrict__ in, float* __restrict__ out, long long n) {
  const long long i = blockIdx.x * 1ll * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = cvk::to_float(in[i]);
  out[n + i] = static_cast<float>(in[i]);
}

template <class T>
__global__ void float_to_half_kernel(const float* __restrict__ in, T* __restrict__ out, long long n) {
  const long long i = blockIdx.x * 1ll * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = in[i];
  out[i] = cvk::from_float<T>(x);
  out[n + i] = cvk_test_float2_rn(x, static_cast<T*>(nullptr));
  out[2 * n + i] = T(x);
}

template <class T>
__global__ void half_arith_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                  const T* __restrict__ c, T* __restrict__ out,
                                  int* __restrict__ cmp, long long n) {
  const long long i = blockIdx.x * 1ll * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T x = a[i], y = b[i], z = c[i];
  out[0 * n + i] = __hadd(x, y);
  out[1 * n + i] = __hsub(x, y);
  out[2 * n + i] = __hmul(x, y);
  out[3 * n + i] = __hdiv(x, y);
  out[4 * n + i] = __hfma(x, y, z);
  out[5 * n + i] = x + y;
  out[6 * n + i] = x - y;
  out[7 * n + i] = x * y;
  out[8 * n + i] = x / y;
  out[9 * n + i] = -x;
  cmp[0 * n + i] = x == y;
  cmp[1 * n + i] = x != y;
  cmp[2 * n + i] = x < y;
  cmp[3 * n + i] = x <= y;
  cmp[4 * n + i] = x > y;
  cmp[5 * n + i] = x >= y;
}

template <class T>
__global__ void vec_copy_kernel(const T* in, T* out, long long n) {
  constexpr int V = cvk::Packed128<T>::size;
  const long long i = (blockIdx.x * 1ll * blockDim.x + threadIdx.x) * V;
  if (i < n) cvk::store128(out + i, cvk::load128(in + i));
}

template <class T>
__global__ void vec_add_kernel(const T* a, const T* b, T* out, long long n) {
  constexpr int V = cvk::Packed128<T>::size;
  const long long i = (blockIdx.x * 1ll * blockDim.x + threadIdx.x) * V;
  if (i >= n) return;
  const cvk::Packed128<T> x = cvk::load128cs(a + i), y = cvk::load128cs(b + i);
  cvk::Packed128<T> r = cvk::Packed128<T>::zeros();
#pragma unroll
  for (int k = 0; k < V; ++k) {
    cvk::acc_t<T> s = cvk::to_float(x[k]) + cvk::to_float(y[k]);
    r[k] = cvk::from_float<T>(s);
  }
  cvk::store128cs(out + i, r);
}

template <class T>
__global__ void half_atomic_add_kernel(T* acc) {
  atomicAdd(acc, cvk::from_float<T>(1.0f));
  atomicAdd(acc + 1, cvk::from_float<T>(-0.5f));
}

#ifdef CVK_REGISTER_TEST_KERNELS
CVK_REGISTER(half_to_float_kernel<__half>)
CVK_REGISTER(half_to_float_kernel<__nv_bfloat16>)
CVK_REGISTER(float_to_half_kernel<__half>)
CVK_REGISTER(float_to_half_kernel<__nv_bfloat16>)
CVK_REGISTER(half_arith_kernel<__half>)
CVK_REGISTER(half_arith_kernel<__nv_bfloat16>)
CVK_REGISTER(vec_copy_kernel<float>)
CVK_REGISTER(vec_copy_kernel<__half>)
CVK_REGISTER(vec_copy_kernel<__nv_bfloat16>)
CVK_REGISTER(vec_add_kernel<float>)
CVK_REGISTER(vec_add_kernel<__half>)
CVK_REGISTER(vec_add_kernel<__nv_bfloat16>)
CVK_REGISTER(half_atomic_add_kernel<__half>)
CVK_REGISTER(half_atomic_add_kernel<__nv_bfloat16>)
#endif
