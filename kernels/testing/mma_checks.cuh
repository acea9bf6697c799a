// mma_checks: test-only kernels for the tensor-core and cp.async wrappers (cvk/mma.cuh,
// cvk/cp_async.cuh), run on the simulator in CI and on a GPU where one is found. The tests pack
// and unpack the fragments with tests/mma_layouts.py, a NumPy model of the PTX ISA's tables.
//   mma_m16n8k16_check_kernel<BF16>  per lane t (global thread id): a[4t..4t+3], b[2t..2t+1],
//                                    c[4t..4t+3] -> d[4t..4t+3]; one m16n8k16 per warp;
//                                    grid * block threads, block a multiple of 32 for valid use
//   mma_m16n8k8_tf32_check_kernel    the same with m16n8k8 .tf32 (a, b hold fp32 bit patterns)
//   mma_partial_warp_kernel          lanes >= `active` return first, the rest call the mma:
//                                    a usage error on the simulator (undefined on a GPU: never
//                                    launched there)
//   ldmatrix_check_kernel<NUM,TRANS> copies src[0..n) (b16) to dynamic shared memory, then lane
//                                    t of warp w calls ldmatrix with row address
//                                    smem + row_offsets[32w + t] (elements) and writes its NUM
//                                    registers to out[NUM*(32w + t) ..]
//   cp_async_groups_kernel<BYTES,CG> one warp; lane t issues, for g = 0..3, a BYTES copy of
//                                    chunk 32g+t of src to the same chunk of dynamic shared
//                                    memory (src_bytes from src, rest zero-filled), committing
//                                    groups 0, 1, 2 and leaving 3 uncommitted; it snapshots its
//                                    four chunks before any wait (stage 0), after wait_group 2,
//                                    1, 0 (stages 1-3) and after wait_all (stage 4) into
//                                    out[((stage*4 + g)*32 + t)*BYTES ..]. The stage-0..3 reads
//                                    of pending copies are deliberate: never run it under ASan.
//   cp_async_misuse_kernel           thread 0 issues one 16-byte cp.async.cg from src + src_off to
//                                    smem + dst_off (bytes) with src_bytes, then waits
// Tensors: 1-D buffers as documented per kernel. Not library operators.
#pragma once
#include "cvk/common.cuh"
#include "cvk/cp_async.cuh"
#include "cvk/mma.cuh"

template <bool BF16>
__global__ void mma_m16n8k16_check_kernel(const unsigned* a, const unsigned* b, const float* c,
                                          float* d) {
  const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned ra[4], rb[2];
  float rc[4], rd[4];
  for (int i = 0; i < 4; ++i) ra[i] = a[4 * t + i], rc[i] = c[4 * t + i];
  rb[0] = b[2 * t], rb[1] = b[2 * t + 1];
  if (BF16) cvk::mma_m16n8k16_bf16(rd, ra, rb, rc);
  else cvk::mma_m16n8k16_f16(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[4 * t + i] = rd[i];
}

__global__ void mma_m16n8k8_tf32_check_kernel(const unsigned* a, const unsigned* b,
                                              const float* c, float* d) {
  const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned ra[4], rb[2];
  float rc[4], rd[4];
  for (int i = 0; i < 4; ++i) ra[i] = a[4 * t + i], rc[i] = c[4 * t + i];
  rb[0] = b[2 * t], rb[1] = b[2 * t + 1];
  cvk::mma_m16n8k8_tf32(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[4 * t + i] = rd[i];
}

__global__ void mma_partial_warp_kernel(const unsigned* a, float* d, int active) {
  const int t = threadIdx.x;
  if ((t & 31) >= active) return;
  unsigned ra[4] = {a[0], a[1], a[2], a[3]}, rb[2] = {a[0], a[1]};
  float rc[4] = {0.f, 0.f, 0.f, 0.f}, rd[4];
  cvk::mma_m16n8k16_f16(rd, ra, rb, rc);
  d[t] = rd[0];
}

template <int NUM, bool TRANS>
__global__ void ldmatrix_check_kernel(const unsigned short* src, const int* row_offsets,
                                      unsigned* out, int n) {
  CVK_EXTERN_SHARED(unsigned short, smem);
  for (int i = threadIdx.x; i < n; i += blockDim.x) smem[i] = src[i];
  __syncthreads();
  const int t = threadIdx.x;
  unsigned r[NUM];
  cvk::ldmatrix<NUM, TRANS>(r, smem + row_offsets[t]);
  for (int j = 0; j < NUM; ++j) out[NUM * t + j] = r[j];
}

template <int BYTES, bool CG>
__device__ __forceinline__ void cp_async_bytes(void* dst, const void* src, int src_bytes) {
  if constexpr (CG) cvk::cp_async_cg<BYTES>(dst, src, src_bytes);
  else cvk::cp_async_ca<BYTES>(dst, src, src_bytes);
}

template <int BYTES>
__device__ __forceinline__ void snapshot_chunks(const unsigned char* smem, unsigned char* out,
                                                int stage) {
  const int t = threadIdx.x;
  for (int g = 0; g < 4; ++g)
    for (int i = 0; i < BYTES; ++i)
      out[((stage * 4 + g) * 32 + t) * BYTES + i] = smem[(g * 32 + t) * BYTES + i];
}

template <int BYTES, bool CG>
__global__ void cp_async_groups_kernel(const unsigned char* src, unsigned char* out,
                                       int src_bytes) {
  CVK_EXTERN_SHARED(unsigned char, smem);
  const int t = threadIdx.x;
  for (int g = 0; g < 4; ++g) {
    const int chunk = (g * 32 + t) * BYTES;
    cp_async_bytes<BYTES, CG>(smem + chunk, src + chunk, src_bytes);
    if (g < 3) cvk::cp_async_commit_group();
  }
  snapshot_chunks<BYTES>(smem, out, 0);
  cvk::cp_async_wait_group<2>();
  snapshot_chunks<BYTES>(smem, out, 1);
  cvk::cp_async_wait_group<1>();
  snapshot_chunks<BYTES>(smem, out, 2);
  cvk::cp_async_wait_group<0>();
  snapshot_chunks<BYTES>(smem, out, 3);
  cvk::cp_async_wait_all();
  snapshot_chunks<BYTES>(smem, out, 4);
}

__global__ void cp_async_misuse_kernel(const unsigned char* src, long long src_off,
                                       long long dst_off, int src_bytes) {
  CVK_EXTERN_SHARED(unsigned char, smem);
  if (threadIdx.x == 0) {
    cvk::cp_async_cg<16>(smem + dst_off, src + src_off, src_bytes);
    cvk::cp_async_wait_all();
  }
}

#ifdef CVK_REGISTER_TEST_KERNELS
CVK_REGISTER(mma_m16n8k16_check_kernel<false>)
CVK_REGISTER(mma_m16n8k16_check_kernel<true>)
CVK_REGISTER(mma_m16n8k8_tf32_check_kernel)
CVK_REGISTER(mma_partial_warp_kernel)
CVK_REGISTER(ldmatrix_check_kernel<1, false>)
CVK_REGISTER(ldmatrix_check_kernel<2, false>)
CVK_REGISTER(ldmatrix_check_kernel<4, false>)
CVK_REGISTER(ldmatrix_check_kernel<1, true>)
CVK_REGISTER(ldmatrix_check_kernel<2, true>)
CVK_REGISTER(ldmatrix_check_kernel<4, true>)
CVK_REGISTER(cp_async_groups_kernel<4, false>)
CVK_REGISTER(cp_async_groups_kernel<8, false>)
CVK_REGISTER(cp_async_groups_kernel<16, false>)
CVK_REGISTER(cp_async_groups_kernel<16, true>)
CVK_REGISTER(cp_async_misuse_kernel)
#endif
