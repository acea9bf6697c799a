// simulator_checks: test-only kernels that pin down the simulator's semantics, run on the
// simulator in CI and on a GPU where one is found, against the same expected values.
//   warp_intrinsics_kernel  out[t*8 + j]: shuffles (idx, xor, down, up, width 8), ballot, any,
//                           all of in[t]; one block, blockDim.x % 32 == 0
//   atomics_kernel          every thread hits the same counters: atomicAdd (float, int),
//                           atomicMax/Min (int, float), and atomicCAS loops (int, float)
//   warp_partial_mask_kernel  divergent lanes with their own masks: lanes 0-15 shuffle and
//                           vote among themselves, lanes 16-23 likewise, lanes 24-31 return
//   warp_mask_misuse_kernel every lane calls a shuffle whose mask names only lane 0: undefined
//                           on a GPU (never launched there), an error on the simulator
//   indexing_smem_kernel    3-D grid and block; each block reverses its inputs through dynamic
//                           shared memory (extern __shared__) and tags them with its indices
// Tensors: int32/float32 1-D buffers as documented per kernel. Not library operators.
#pragma once
#include "cvk/common.cuh"

__global__ void warp_intrinsics_kernel(const int* in, int* out) {
  const int t = threadIdx.x, lane = t & 31;
  const int v = in[t];
  int* o = out + t * 8;
  o[0] = __shfl_sync(cvk::FULL_MASK, v, (lane + 3) & 31);
  o[1] = __shfl_xor_sync(cvk::FULL_MASK, v, 5);
  o[2] = __shfl_down_sync(cvk::FULL_MASK, v, 4);
  o[3] = __shfl_up_sync(cvk::FULL_MASK, v, 4);
  o[4] = static_cast<int>(__ballot_sync(cvk::FULL_MASK, v % 3 == 0));
  o[5] = __any_sync(cvk::FULL_MASK, v == 7);
  o[6] = __all_sync(cvk::FULL_MASK, v >= 0);
  o[7] = __shfl_down_sync(cvk::FULL_MASK, v, 1, 8);
  __syncwarp();
}

__global__ void warp_partial_mask_kernel(const int* in, int* out) {
  const int t = threadIdx.x, lane = t & 31;
  const int v = in[t];
  if (lane < 16) {
    out[t * 2] = __shfl_xor_sync(0x0000ffffu, v, 1);
    out[t * 2 + 1] = static_cast<int>(__ballot_sync(0x0000ffffu, v & 1));
    __syncwarp(0x0000ffffu);
  } else if (lane < 24) {
    out[t * 2] = __shfl_down_sync(0x00ff0000u, v, 2, 8);
    out[t * 2 + 1] = __any_sync(0x00ff0000u, v == 3);
  }
}

__global__ void warp_mask_misuse_kernel(const int* in, int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, in[threadIdx.x], 0);
}

// fcount[0] += 1; fcount[1] = max(t); fcount[2] = min(-t); fcount[3] += 0.5 by CAS
// icount[0] += 1; icount[1] = max(t); icount[2] = min(-t); icount[3] += 2 by CAS
__global__ void atomics_kernel(float* fcount, int* icount) {
  const int t = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(fcount, 1.0f);
  atomicMax(fcount + 1, static_cast<float>(t));
  atomicMin(fcount + 2, static_cast<float>(-t));
  atomicAdd(icount, 1);
  atomicMax(icount + 1, t);
  atomicMin(icount + 2, -t);
  int old = atomicAdd(icount + 3, 0), assumed;
  do {
    assumed = old;
    old = atomicCAS(icount + 3, assumed, assumed + 2);
  } while (old != assumed);
  float fold = atomicAdd(fcount + 3, 0.0f), fassumed;
  do {
    fassumed = fold;
    fold = atomicCAS(fcount + 3, fassumed, fassumed + 0.5f);
  } while (__float_as_int(fold) != __float_as_int(fassumed));
}

// out[i] for i in block b (linear), thread t (linear): in[b*nt + nt-1-t] + 1000*b + t... see test
__global__ void indexing_smem_kernel(const float* __restrict__ in, float* __restrict__ out) {
  CVK_EXTERN_SHARED(float, buf);
  const long long nt = 1ll * blockDim.x * blockDim.y * blockDim.z;
  const long long t = threadIdx.x + 1ll * blockDim.x * (threadIdx.y + 1ll * blockDim.y * threadIdx.z);
  const long long b = blockIdx.x + 1ll * gridDim.x * (blockIdx.y + 1ll * gridDim.y * blockIdx.z);
  buf[t] = __ldg(in + b * nt + t);
  __syncthreads();
  out[b * nt + t] = buf[nt - 1 - t] + 1000.0f * static_cast<float>(b);
}

#ifdef CVK_SIM
// The cvk::sim API for warp-collective emulations (simulator only):
//   sim_api_kernel  blocks of 64 threads, threads 56..63 return at once. Per thread t of block
//                   b, out[(b*64 + t)*9 + k]: k0 lane(), k1 alive_lanes(), k2..k4 sums of a
//                   12-byte struct gathered over alive_lanes(), k5 thread_storage<int> after
//                   += t+1, k6/k7 thread_storage<GatherItem>.a before/after setting it to 99,
//                   k8 lane^1's item through a 16-lane gather (lanes 0..15 only)
//   gather_exited_lane_kernel   lanes 16..31 return, lanes 0..15 gather over the full mask
//   gather_outside_mask_kernel  every lane gathers over a mask naming lane 0 only
//   static_smem_48k_kernel / static_smem_50k_kernel  static shared storage at and above 48 KiB
struct GatherItem {
  int a;
  float b;
  short c;
};

__global__ void sim_api_kernel(const int* in, int* out) {
  const int t = threadIdx.x;
  if (t >= 56) return;
  int* o = out + (static_cast<long long>(blockIdx.x) * blockDim.x + t) * 9;
  const int v = in[blockIdx.x * blockDim.x + t];
  __syncthreads();  // the returned threads have left: alive_lanes() is settled
  const unsigned alive = cvk::sim::alive_lanes();
  o[0] = cvk::sim::lane();
  o[1] = static_cast<int>(alive);
  const GatherItem mine{v, 0.5f * static_cast<float>(v), static_cast<short>(t)};
  GatherItem all[32];
  cvk::sim::warp_gather(alive, mine, all);
  int sa = 0, sc = 0;
  float sb = 0.f;
  for (int l = 0; l < 32; ++l)
    if (alive >> l & 1u) {
      sa += all[l].a;
      sb += all[l].b;
      sc += all[l].c;
    }
  o[2] = sa;
  o[3] = static_cast<int>(2.f * sb);
  o[4] = sc;
  int& s = cvk::sim::thread_storage<int>();
  s += t + 1;
  o[5] = cvk::sim::thread_storage<int>();
  o[6] = cvk::sim::thread_storage<GatherItem>().a;
  cvk::sim::thread_storage<GatherItem>().a = 99;
  o[7] = cvk::sim::thread_storage<GatherItem>().a;
  if (cvk::sim::lane() < 16) {
    cvk::sim::warp_gather(0xffffu, mine, all);
    o[8] = all[cvk::sim::lane() ^ 1].a;
  }
}

__global__ void gather_exited_lane_kernel(const int* in, int* out) {
  if (cvk::sim::lane() >= 16) return;
  int all[32];
  cvk::sim::warp_gather(cvk::FULL_MASK, in[threadIdx.x], all);
  out[threadIdx.x] = all[0];
}

__global__ void gather_outside_mask_kernel(const int* in, int* out) {
  int all[32];
  cvk::sim::warp_gather(0x1u, in[threadIdx.x], all);
  out[threadIdx.x] = all[0];
}

// Static shared storage at ptxas's limit (48 KiB: runs) and above it, split between the kernel
// and a helper (25 KiB each: refused, as ptxas refuses it on a GPU). out[b*32 + t] = t + 1.
__device__ __forceinline__ float smem_25k_helper(float v) {
  __shared__ float h[6400];
  h[threadIdx.x] = v;
  __syncthreads();
  return h[(threadIdx.x + 1) % blockDim.x];
}

__global__ void static_smem_48k_kernel(float* out) {
  __shared__ float s[12288];
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] =
      s[(threadIdx.x + 1) % blockDim.x] + (threadIdx.x + 1 == blockDim.x ? blockDim.x : 0);
}

__global__ void static_smem_50k_kernel(float* out) {
  __shared__ float s[6400];
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = smem_25k_helper(s[threadIdx.x]);
}
#endif  // CVK_SIM

#ifdef CVK_REGISTER_TEST_KERNELS
CVK_REGISTER(warp_intrinsics_kernel)
CVK_REGISTER(warp_partial_mask_kernel)
CVK_REGISTER(warp_mask_misuse_kernel)
CVK_REGISTER(atomics_kernel)
CVK_REGISTER(indexing_smem_kernel)
#ifdef CVK_SIM
CVK_REGISTER(sim_api_kernel)
CVK_REGISTER(gather_exited_lane_kernel)
CVK_REGISTER(gather_outside_mask_kernel)
CVK_REGISTER(static_smem_48k_kernel)
CVK_REGISTER(static_smem_50k_kernel)
#endif
#endif  // CVK_REGISTER_TEST_KERNELS
