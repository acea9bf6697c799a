// sanitizer_controls: test-only kernels that prove the simulator's sanitizer builds look.
//   reverse_kernel            out[i] = in[n-1-i] through shared memory, correct (no report)
//   reverse_racy_kernel       the same with the __syncthreads removed: ThreadSanitizer must
//                             report a data race on the shared buffer
//   copy_kernel               out[i] = in[i] for i < n, correct (no report)
//   copy_oob_kernel           the same with an off-by-one guard (i <= n): AddressSanitizer must
//                             report a heap-buffer-overflow on out
//   warp_swap_kernel          lanes swap values with lane^1 through shared memory, after a
//                             shuffle, with a __syncwarp between store and load (no report)
//   warp_swap_racy_kernel     the same without the __syncwarp: ThreadSanitizer must report a
//                             data race on the shared buffer
// Tensors: in, out fp32 [n], n <= blockDim.x for the reverse and swap kernels; one block of <= 1024.
// These are negative controls, not library operators: nothing in cvkernels calls them.
#pragma once
#include "cvk/common.cuh"

template <bool SYNC>
__device__ __forceinline__ void reverse_through_smem(const float* in, float* out, long long n) {
  __shared__ float buf[1024];
  const int i = threadIdx.x;
  if (i < n) buf[i] = in[i];
  if (SYNC) __syncthreads();
  if (i < n) out[i] = buf[n - 1 - i];
}

__global__ void reverse_kernel(const float* in, float* out, long long n) {
  reverse_through_smem<true>(in, out, n);
}

__global__ void reverse_racy_kernel(const float* in, float* out, long long n) {
  reverse_through_smem<false>(in, out, n);
}

__global__ void copy_kernel(const float* in, float* out, long long n) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

__global__ void copy_oob_kernel(const float* in, float* out, long long n) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = in[i < n ? i : 0];  // BUG on purpose: stores out[n]
}

// out[i] = in[(i ^ 1) ^ 2] where that index is < n, else 0; one block of <= 1024 threads.
template <bool SYNC>
__device__ __forceinline__ void warp_swap_through_smem(const float* in, float* out, long long n) {
  __shared__ float buf[1024];
  const int i = threadIdx.x;
  const float v = i < n ? in[i] : 0.f;
  buf[i] = __shfl_xor_sync(cvk::FULL_MASK, v, 2);  // lanes of the warp met here already
  if (SYNC) __syncwarp();
  if (i < n) out[i] = buf[i ^ 1];
}

__global__ void warp_swap_kernel(const float* in, float* out, long long n) {
  warp_swap_through_smem<true>(in, out, n);
}

__global__ void warp_swap_racy_kernel(const float* in, float* out, long long n) {
  warp_swap_through_smem<false>(in, out, n);
}

#ifdef CVK_REGISTER_TEST_KERNELS
CVK_REGISTER(reverse_kernel)
CVK_REGISTER(reverse_racy_kernel)
CVK_REGISTER(copy_kernel)
CVK_REGISTER(copy_oob_kernel)
CVK_REGISTER(warp_swap_kernel)
CVK_REGISTER(warp_swap_racy_kernel)
#endif  // CVK_REGISTER_TEST_KERNELS
