// conv2d_depthwise: direct (not implicit-GEMM) depthwise 2-D convolution, groups == C_in == C_out.
//   forward:          y[n,c,oy,ox]  = b[c] + sum_{i,j} w[c,0,i,j] * x[n,c, oy*sH - pT + i*dH,
//                                                                       ox*sW - pL + j*dW]
//   backward-data:    gx[n,c,iy,ix] = sum over the taps (i,j) and outputs (oy,ox) that read (iy,ix)
//                                     of g[n,c,oy,ox] * w[c,0,i,j]       (a gather, no atomics)
//   backward-weight:  gw[c,0,i,j]   = sum_{n,oy,ox} g[n,c,oy,ox] * x[n,c, oy*sH - pT + i*dH, ...]
//                     gb[c]         = sum_{n,oy,ox} g[n,c,oy,ox]
//   (x read outside [0,H) x [0,W) is the zero padding.)
// Tensors (T = float, __half or __nv_bfloat16; contiguous NCHW): x, gx [N,C,H,W]; y, g
//   [N,C,Ho,Wo]; w, gw [C,1,kH,kW]; b, gb [C] (optional); partial: fp32 workspace
//   [C, splits, kH*kW + 1]. Only the top and left padding (pT, pL) reach the kernels: the bottom
//   and right padding are implied by Ho and Wo, so asymmetric ('same' with an even kernel)
//   padding needs nothing more. Template K: 3 = a 3x3 kernel known at compile time (taps
//   unrolled, one pass for backward-weight); 0 = any kH x kW at run time.
// Work split:
//   forward, backward-data: one thread per output (input) pixel of a plane, blockIdx.x tiles
//     the plane, blockIdx.y strides over the N*C planes (so the weights and bias are
//     block-uniform: broadcast loads). Every thread gathers its kH*kW taps through L1/L2; no
//     shared memory, no barriers.
//   backward-weight, stage 1: grid (C, splits); block (c, s) covers images [s*ips, (s+1)*ips)
//     of channel c; each thread keeps G fp32 sums (G = 10 for 3x3: nine taps and the bias)
//     over the pixels p = tid, tid + blockDim, ... of each image in order, then a warp
//     butterfly and a fixed-order sum over the warps write partial[c, s, :].
//     Stage 2 (reduce): one thread per (c, tap) sums the splits in order and rounds once to T.
// Numerics: fp32 accumulation (fmaf), taps in row-major order, the bias added last, one rounding
//   to T. No atomics anywhere: every result is bitwise repeatable. The backward-weight order
//   depends only on the shape (splits and blockDim come from N, C, Ho, Wo, not from the SM
//   count), so it is also the same on every GPU.
// Napkin math (depthwise 3x3, 128 ch, 56x56, N=32, fp32, stride 1, pad 1): x and y are 51.4 MB
//   each, FLOPs 2*9*12.8M = 0.23 GFLOP (nothing). Forward moves >= 103 MB: floor 24 us on an
//   H200 (4.2 TB/s), 31 us on an H100 (3.35 TB/s); cuDNN takes 134 us on the H200. Backward
//   reads g and x and writes gx (154 MB, floor 37 us H200), plus g and x again for the weights
//   (103 MB, 24 us) unless they still sit in the 50-60 MB L2. Each input element is read
//   kH*kW times by neighbouring threads, from L1: per warp of 32 outputs, 9 input loads (~2
//   wavefronts each, rows are not 128-byte aligned), 9 broadcast weight loads, bias, store:
//   ~30 L1 wavefronts; 401k warps / 132 SMs * 30 ~ 91k cycles ~ 50 us at 1.8 GHz. So the v1
//   forward is L1-bound, estimated ~2x above the DRAM floor and ~2.5x under cuDNN.
//   Backward-data: the same gather, the stride tests stepped without divisions. Estimates
//   only: unmeasured on a GPU so far.
// Ladder: v1 (this file) direct gather per pixel; v2 (not written) smem row tile + register
//   window, several outputs per thread (weights and overlapping rows loaded once).
// ptxas -v, sm_90, nvcc 13, the same for fp32, fp16 and bf16 (registers / spills / smem):
//   forward<K=3>, forward<K=0>, backward_data<K=3>: 32 regs; backward_data<K=0>: 37 regs;
//   backward_weight<K=3>: 44 regs, 1280 B static smem; backward_weight<K=0>: 32 regs, 512 B;
//   backward_weight_reduce: 32 regs. No spills, no stack frame. (No nvdisasm here: SASS unread.)
#pragma once
#include "cvk/common.cuh"

template <class T, int K>
__global__ void conv2d_depthwise_forward_kernel(
    const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
    T* __restrict__ y, long long planes, int C, int H, int W, int Ho, int Wo, int kh_, int kw_,
    int sh, int sw, int pt, int pl, int dh, int dw) {
  using cvk::i64;
  const int kh = K ? K : kh_, kw = K ? K : kw_;
  const int hwo = Ho * Wo;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= hwo) return;  // no barriers below
  const int oy = p / Wo, ox = p - oy * Wo;
  const int iy0 = oy * sh - pt, ix0 = ox * sw - pl;
  for (i64 plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int c = static_cast<int>(plane % C);
    const T* xp = x + plane * H * W;
    const T* wp = weight + static_cast<i64>(c) * kh * kw;
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < kh; ++i) {
      const int iy = iy0 + i * dh;
      const bool row_in = iy >= 0 && iy < H;
#pragma unroll
      for (int j = 0; j < kw; ++j) {
        const int ix = ix0 + j * dw;
        // a tap in the zero padding adds 0 * w: nothing for a finite weight, NaN for a NaN or
        // infinite one, as zero padding does in torch's CPU convolution and in the reference
        const float xv = row_in && ix >= 0 && ix < W
                             ? cvk::to_float(xp[static_cast<i64>(iy) * W + ix]) : 0.f;
        acc = fmaf(xv, cvk::to_float(wp[i * kw + j]), acc);
      }
    }
    if (bias != nullptr) acc += cvk::to_float(bias[c]);
    y[plane * hwo + p] = cvk::from_float<T>(acc);
  }
}

template <class T, int K>
__global__ void conv2d_depthwise_backward_data_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ weight, T* __restrict__ grad_input,
    long long planes, int C, int H, int W, int Ho, int Wo, int kh_, int kw_, int sh, int sw,
    int pt, int pl, int dh, int dw) {
  using cvk::i64;
  const int kh = K ? K : kh_, kw = K ? K : kw_;
  const int hw = H * W, hwo = Ho * Wo;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= hw) return;  // no barriers below
  const int iy = p / W, ix = p - iy * W;
  // Output row of tap i: ty = iy + pT - i*dH = qy*sH + ry (0 <= ry < sH), valid when ry == 0
  // and 0 <= qy < Ho. Stepping i subtracts dH = dqh*sH + drh: no division inside the tap loops
  // (a runtime division costs ~20 instructions, and there would be two per tap).
  const int dqh = dh / sh, drh = dh - dqh * sh, dqw = dw / sw, drw = dw - dqw * sw;
  const int qy0 = (iy + pt) / sh, ry0 = iy + pt - qy0 * sh;
  const int qx0 = (ix + pl) / sw, rx0 = ix + pl - qx0 * sw;
  for (i64 plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int c = static_cast<int>(plane % C);
    const T* gp = grad_out + plane * hwo;
    const T* wp = weight + static_cast<i64>(c) * kh * kw;
    float acc = 0.f;
    int qy = qy0, ry = ry0;
#pragma unroll
    for (int i = 0; i < kh; ++i) {
      if (qy < 0) break;  // ty < 0 here and for every later tap
      if (ry == 0 && qy < Ho) {
        int qx = qx0, rx = rx0;
#pragma unroll
        for (int j = 0; j < kw; ++j) {
          if (qx < 0) break;
          if (rx == 0 && qx < Wo)
            acc = fmaf(cvk::to_float(gp[static_cast<i64>(qy) * Wo + qx]),
                       cvk::to_float(wp[i * kw + j]), acc);
          rx -= drw;
          qx -= dqw;
          if (rx < 0) { rx += sw; --qx; }
        }
      }
      ry -= drh;
      qy -= dqh;
      if (ry < 0) { ry += sh; --qy; }
    }
    grad_input[plane * hw + p] = cvk::from_float<T>(acc);
  }
}

// Stage 1 of the weight gradient: partial[c, s, t] for t < kH*kW (taps) and t = kH*kW (bias).
// blockDim.x is a multiple of 32.
template <class T, int K>
__global__ void conv2d_depthwise_backward_weight_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ x, float* __restrict__ partial,
    long long N, int C, int H, int W, int Ho, int Wo, int kh_, int kw_, int sh, int sw, int pt,
    int pl, int dh, int dw, long long images_per_split) {
  using cvk::i64;
  constexpr int G = K ? K * K + 1 : 4;  // sums a thread keeps per pass over the data
  __shared__ float scratch[G * 32];
  const int kh = K ? K : kh_, kw = K ? K : kw_;
  const int taps = kh * kw, ntot = taps + 1;
  const int c = blockIdx.x, s = blockIdx.y, splits = gridDim.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int hwo = Ho * Wo;
  const int step_y = blockDim.x / Wo, step_x = blockDim.x - step_y * Wo;
  const int oy_first = threadIdx.x / Wo, ox_first = threadIdx.x - oy_first * Wo;
  const i64 n0 = s * images_per_split;
  const i64 n1 = n0 + images_per_split < N ? n0 + images_per_split : N;
  for (int t0 = 0; t0 < ntot; t0 += G) {
    float acc[G];
    int oy_tap[G], ox_tap[G];  // the pass's tap offsets (i*dH, j*dW): no division per pixel
#pragma unroll
    for (int g = 0; g < G; ++g) {
      acc[g] = 0.f;
      const int i = (t0 + g) / kw;
      oy_tap[g] = i * dh;
      ox_tap[g] = (t0 + g - i * kw) * dw;
    }
    for (i64 n = n0; n < n1; ++n) {
      const T* gp = grad_out + (n * C + c) * hwo;
      const T* xp = x + (n * C + c) * H * W;
      int oy = oy_first, ox = ox_first;  // (oy, ox) of p, stepped without a division
      for (int p = threadIdx.x; p < hwo; p += blockDim.x) {
        const int iy0 = oy * sh - pt, ix0 = ox * sw - pl;
        const float gv = cvk::to_float(gp[p]);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const int t = t0 + g;
          if (t < taps) {
            const int iy = iy0 + oy_tap[g], ix = ix0 + ox_tap[g];
            // a padded tap adds g * 0 (NaN for a NaN or infinite g, as zero padding does)
            const float xv = iy >= 0 && iy < H && ix >= 0 && ix < W
                                 ? cvk::to_float(xp[static_cast<i64>(iy) * W + ix]) : 0.f;
            acc[g] = fmaf(gv, xv, acc[g]);
          } else if (t == taps) {
            acc[g] += gv;
          }
        }
        ox += step_x;
        oy += step_y;
        if (ox >= Wo) { ox -= Wo; ++oy; }
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float v = cvk::warp_allreduce(acc[g], cvk::SumOp());
      if (lane == 0) scratch[g * 32 + warp] = v;
    }
    __syncthreads();
    const int t = t0 + static_cast<int>(threadIdx.x);
    if (static_cast<int>(threadIdx.x) < G && t < ntot) {
      float r = 0.f;
      for (int w = 0; w < nwarps; ++w) r += scratch[threadIdx.x * 32 + w];
      partial[(static_cast<i64>(c) * splits + s) * ntot + t] = r;
    }
    __syncthreads();  // scratch is rewritten by the next pass
  }
}

// Stage 2: one thread per (c, t) sums the splits in order; t == taps is the bias.
template <class T>
__global__ void conv2d_depthwise_backward_weight_reduce_kernel(
    const float* __restrict__ partial, T* __restrict__ grad_weight, T* __restrict__ grad_bias,
    int C, int taps, int splits) {
  using cvk::i64;
  const int ntot = taps + 1;
  const i64 idx = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<i64>(C) * ntot) return;
  const i64 c = idx / ntot;
  const int t = static_cast<int>(idx - c * ntot);
  float r = 0.f;
  for (int s = 0; s < splits; ++s) r += partial[(c * splits + s) * ntot + t];
  if (t < taps)
    grad_weight[c * taps + t] = cvk::from_float<T>(r);
  else if (grad_bias != nullptr)
    grad_bias[c] = cvk::from_float<T>(r);
}
