// instantiate.h: every kernel instantiation the plans can name, registered by name. Included
// once by kernels_cuda.cu (nvcc) and once by kernels_sim.cpp (g++ -DCVK_SIM).
#pragma once
#include "registry.h"

#include "matmul.cuh"
#include "softmax.cuh"
#include "testing/sanitizer_controls.cuh"
#include "testing/simulator_checks.cuh"

#define CVK_MATMUL_TILE(BM, BN, BK, TM, TN)                                               \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, false, false, false>)           \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, false, false, true>)            \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, false, true, false>)            \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, false, true, true>)             \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, true, false, false>)            \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, true, false, true>)             \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, true, true, false>)             \
  CVK_REGISTER(matmul_forward_kernel<BM, BN, BK, TM, TN, true, true, true>)
CVK_MATMUL_TILE(128, 128, 8, 8, 8)
CVK_MATMUL_TILE(64, 64, 8, 4, 4)

#define CVK_SOFTMAX(DIR, LOG)                               \
  CVK_REGISTER(softmax_##DIR##_kernel<LOG, false, 1>)       \
  CVK_REGISTER(softmax_##DIR##_kernel<LOG, false, 4>)       \
  CVK_REGISTER(softmax_##DIR##_kernel<LOG, true, 1>)        \
  CVK_REGISTER(softmax_##DIR##_kernel<LOG, true, 4>)
CVK_SOFTMAX(forward, false)
CVK_SOFTMAX(forward, true)
CVK_SOFTMAX(backward, false)
CVK_SOFTMAX(backward, true)

CVK_REGISTER(reverse_kernel)
CVK_REGISTER(reverse_racy_kernel)
CVK_REGISTER(copy_kernel)
CVK_REGISTER(copy_oob_kernel)
CVK_REGISTER(warp_intrinsics_kernel)
CVK_REGISTER(warp_partial_mask_kernel)
CVK_REGISTER(warp_mask_misuse_kernel)
CVK_REGISTER(atomics_kernel)
CVK_REGISTER(indexing_smem_kernel)
CVK_REGISTER(warp_swap_kernel)
CVK_REGISTER(warp_swap_racy_kernel)
#ifdef CVK_SIM
CVK_REGISTER(sim_api_kernel)
CVK_REGISTER(gather_exited_lane_kernel)
CVK_REGISTER(gather_outside_mask_kernel)
CVK_REGISTER(static_smem_48k_kernel)
CVK_REGISTER(static_smem_50k_kernel)
#endif
