// cp_async_controls: the sanitizer negative control for cp.async, with its correct twin.
//   cp_async_stages_kernel      out[i] = in[(i + 4) % 128 + 128*s] for both stages s of a
//                               two-stage cp.async pipeline: each of 32 threads copies 16 bytes
//                               per stage into shared memory; wait_group 1 + __syncthreads
//                               before stage 0 is read (a neighbour's chunk), wait_group 0 +
//                               __syncthreads before stage 1 is read. Correct (no report).
//   cp_async_early_read_kernel  the same, reading stage 1 one wait too early (after wait_group 1
//                               only): on the simulator it reads the poison pattern (NaN), and
//                               the ASan build must report use-after-poison
// Tensors: in, out fp32 [256]; one block of 32 threads; 1024 bytes of dynamic shared memory.
// These are negative controls, not library operators: nothing in cvkernels calls them.
#pragma once
#include "cvk/common.cuh"
#include "cvk/cp_async.cuh"

template <bool EARLY>
__device__ __forceinline__ void two_stage_copy(const float* in, float* out) {
  CVK_EXTERN_SHARED(float, smem);
  const int t = threadIdx.x, mine = 4 * t, next = 4 * ((t + 1) % 32);
  for (int s = 0; s < 2; ++s) {
    cvk::cp_async_cg<16>(smem + 128 * s + mine, in + 128 * s + mine);
    cvk::cp_async_commit_group();
  }
  cvk::cp_async_wait_group<1>();
  __syncthreads();
  for (int j = 0; j < 4; ++j) out[mine + j] = smem[next + j];
  if (!EARLY) {
    cvk::cp_async_wait_group<0>();
    __syncthreads();
  }
  for (int j = 0; j < 4; ++j) out[128 + mine + j] = smem[128 + next + j];  // BUG if EARLY
  __syncthreads();  // every thread reads before any lands stage 1: the early read is seen always
  cvk::cp_async_wait_all();
}

__global__ void cp_async_stages_kernel(const float* in, float* out) {
  two_stage_copy<false>(in, out);
}

__global__ void cp_async_early_read_kernel(const float* in, float* out) {
  two_stage_copy<true>(in, out);
}

#ifdef CVK_REGISTER_TEST_KERNELS
CVK_REGISTER(cp_async_stages_kernel)
CVK_REGISTER(cp_async_early_read_kernel)
#endif
