// conv2d_tc: the conv2d forward (kernels/conv2d.cuh) on tensor cores, fp16/bf16 in and out, fp32
// accumulate: the same implicit GEMM (M = C_out/groups, N = N*H_out*W_out pixels,
// K = C_in/groups*kH*kW, per group), with matmul_tc's warp tiling and mma.sync.
//
// Tensors: as conv2d_forward_kernel (NCHW, contiguous; T = __half or __nv_bfloat16, moved as
//   16-bit storage: only the mma reads values). Included by conv2d.cuh (one family).
// Work split: one block of 4 warps per 64 (output channels) x 64 (pixels) tile, groups strided
//   over grid z; warp w owns the 32 x 32 quarter (w / 2, w % 2): 2 x 4 m16n8k16 tiles, 32 fp32
//   accumulators a thread. K advances in 32-wide slices through shared memory (rows padded by 8
//   elements, so the 16-byte ldmatrix rows of 8 consecutive rows hit distinct banks); per 16-wide
//   k step a warp loads A with 2 ldmatrix.x4, B with 2 ldmatrix.x4.trans, and issues 8 mma.
//   Staging is SYNCHRONOUS in this first version (plain 16-bit loads of the weights and of the
//   im2col gather, through the same pixel table and tap math as the SIMT kernel; no cp.async
//   pipeline: the gather is 2-byte granular and the weights' rows need not be 16-byte aligned).
// Numerics: products exact, fp32 accumulation (k order within each mma on the simulator, the
//   tensor core's order on a GPU), bias added in fp32, one rounding to T. Deterministic, no
//   atomics. Small integers whose sums stay below 2^11 (fp16 output) are exact.
// Napkin math (bench shape, 7.4 GFLOP): at mma.sync's practical ~600 TFLOP/s a 12 us floor; the
//   bytes (~25 MB in fp16) are 6 us at 4.2 TB/s; cuDNN fp16 measured 69 us. With synchronous
//   staging each slice's loads are exposed (2 x 2048 elements a slice for 4 warps): expect this
//   version to be load-latency bound; the cp.async pipeline for the weights and a register
//   double buffer for the gather are the next rung. Unmeasured on a GPU.
// ptxas -v (sm_90, nvcc 13): 105 registers (HAS_BIAS) / 127 (no bias), 0 spills, 11264 B of
//   static shared memory (fp16 and bf16 alike).
#pragma once
#include "cvk/common.cuh"
#include "cvk/mma.cuh"

namespace conv2d_tc {
constexpr int BM = 64, BN = 64, BK = 32, WM = 32, WN = 32, THREADS = 128;
constexpr int PAD = 8, AS = BK + PAD, BS = BN + PAD;  // shared row strides, elements
static_assert((AS * 2) % 16 == 0 && (BS * 2) % 16 == 0, "ldmatrix rows must stay 16-byte aligned");

}  // namespace conv2d_tc

template <class T, bool HAS_BIAS>
__global__ void __launch_bounds__(conv2d_tc::THREADS)
conv2d_tc_forward_kernel(const T* __restrict__ input_, const T* __restrict__ weight_,
                         const T* __restrict__ bias, T* __restrict__ output, CVK_CONV_GEOMETRY) {
  using namespace conv2d_tc;
  using cvk::i64;
  static_assert(sizeof(T) == 2, "conv2d_tc: T is __half or __nv_bfloat16");
  const unsigned short* input = reinterpret_cast<const unsigned short*>(input_);
  const unsigned short* weight = reinterpret_cast<const unsigned short*>(weight_);
  __shared__ __align__(16) unsigned short As[BM * AS];
  __shared__ __align__(16) unsigned short Bs[BK * BS];
  __shared__ i64 in_base[BN], out_base[BN];
  __shared__ int tap_y[BN], tap_x[BN];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = (warp / 2) * WM, wn = (warp % 2) * WN, KK = kH * kW;
  const i64 HW = H * W, HWo = H_out * W_out, P = batch * HWo, Cig = C_in / groups,
            Cog = C_out / groups, Kg = Cig * KK;
  const i64 p0 = static_cast<i64>(blockIdx.x) * BN, m0 = static_cast<i64>(blockIdx.y) * BM;
  cvk::conv_pixel_table<BN, THREADS>(in_base, out_base, tap_y, tap_x, p0, P, W_out, HWo,
                                     C_in * HW, C_out * HWo, stride_h, stride_w, -pad_h, -pad_w);
  for (i64 g = blockIdx.z; g < groups; g += gridDim.z) {
    const unsigned short* wg = weight + g * Cog * Kg;
    const unsigned short* img = input + g * Cig * HW;
    const cvk::ConvIm2colLoader<unsigned short> gather{img, in_base, tap_y, tap_x, H, W, KK,
                                                       kW, dilation_h, dilation_w};
    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.f;

    for (i64 k0 = 0; k0 < Kg; k0 += BK) {
#pragma unroll
      for (int e = tid; e < BM * BK; e += THREADS) {  // weights: consecutive threads walk k
        const int r = e / BK, kk = e % BK;
        const i64 m = m0 + r, k = k0 + kk;
        As[r * AS + kk] = m < Cog && k < Kg ? wg[m * Kg + k] : static_cast<unsigned short>(0);
      }
#pragma unroll
      for (int e = tid; e < BK * BN; e += THREADS) {  // im2col: consecutive threads walk pixels
        const int kk = e / BN, c = e % BN;
        const i64 k = k0 + kk, o = k < Kg ? gather.offset(c, k) : -1;
        Bs[kk * BS + c] = o < 0 ? static_cast<unsigned short>(0) : img[o];
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; kk += 16) {
        cvk::warp_mma_32x32_k16<cvk::is_bf16<T>::value, AS, BS>(acc, As, Bs, wm, wn, kk, lane);
      }
      __syncthreads();  // the next slice overwrites As/Bs
    }

#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int i = 0; i < 4; ++i) {  // accumulator layout: rows g, g+8; cols 2*tig, 2*tig+1
          const i64 m = m0 + wm + mi * 16 + lane / 4 + (i >= 2 ? 8 : 0);
          const int c = wn + ni * 8 + (lane % 4) * 2 + (i & 1);
          if (m < Cog && p0 + c < P) {
            const i64 oc = g * Cog + m;
            const float b = HAS_BIAS ? cvk::to_float(bias[oc]) : 0.f;
            output[out_base[c] + oc * HWo] = cvk::from_float<T>(acc[mi][ni][i] + b);
          }
        }
  }
}
