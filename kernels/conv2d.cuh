// conv2d: implicit-GEMM 2-D convolution (cross-correlation), forward, backward-data and
// backward-weight; conv_transpose2d runs on the same kernels (its forward is backward-data).
//
//   y[n, g*Cog+o, oy, ox] = bias[g*Cog+o]
//       + sum_{c < Cig, i < kH, j < kW} x[n, g*Cig+c, oy*sH - pH + i*dH, ox*sW - pW + j*dW]
//                                       * w[g*Cog+o, c, i, j]        (zero outside the image)
//
// Tensors (element type T = float, __half or __nv_bfloat16; NCHW, contiguous):
//   input / grad_input  [N, C_in, H, W]        weight / grad_weight [C_out, C_in/groups, kH, kW]
//   output / grad_out   [N, C_out, H_out, W_out]          bias / grad_bias [C_out] (or C_in: below)
//   Cig = C_in/groups, Cog = C_out/groups; pad_h/pad_w are the top/left pads (an extra
//   bottom/right pad of padding='same' is implied by H_out/W_out, which are arguments).
// The three GEMMs, per group g (all three run cvk/gemm_simt.cuh's mainloop, shared with matmul;
// the loaders below compute the im2col addresses on the fly, nothing is materialised):
//   forward          M = Cog, N = N*H_out*W_out (pixels), K = Cig*kH*kW
//                    A = w[g] as [Cog, Cig*kH*kW] (row-major), B = im2col(x) (gather)
//   backward_data    M = Cig, N = N*H*W (input pixels), K = Cog*kH*kW
//                    A[c, (o,i,j)] = w[g*Cog+o, c, i, j]; B[(o,i,j), (n,h,w)] = grad_out at
//                    ((h+pH-i*dH)/sH, (w+pW-j*dW)/sW) where those divide exactly and fall inside
//                    (a gather, so every grad_input element is written once: no atomics).
//                    conv_transpose2d's forward is this kernel with conv_transpose's input as
//                    grad_out, and HAS_BIAS adds its bias (indexed by the C_in side).
//   backward_weight  M = Cog, N = Cig*kH*kW, K = N*H_out*W_out (the sum over the batch and
//                    the pixels), split into `splits` chunks of k_chunk (a multiple of BK):
//                    block (tile, g, s) writes its partial sum to workspace[s] (fp32,
//                    [splits, C_out, Cig*kH*kW]); conv2d_backward_weight_reduce_kernel then adds
//                    the partials of each element in the fixed order s = 0, 1, ... and rounds once.
//   grad_bias        conv2d_backward_bias_kernel: one block per channel, fixed-order block sum.
// Work split: one block per BM x BN tile (blockIdx.x over N, .y over M, .z strides over groups,
// times splits for backward_weight). Each block first tabulates its BN columns (pixel offsets,
// first tap) in shared memory, so that the per-element address math in the loaders is the
// decomposition of k alone (32-bit divisions; the plan checks that K and the pixel counts fit).
// Numerics: elements are converted to fp32 as they are staged; fp32 fmaf in increasing k order;
//   bias added in fp32; the output rounded once to T. DETERMINISTIC: no atomics anywhere; the
//   backward-weight split-K reduction is a second kernel summing the partials in a fixed order,
//   so two runs with the same plan (same device) are bitwise equal (the number of splits depends
//   on the SM count, so results may differ in the last bits between devices). Small-integer
//   inputs give exact results on every path.
// Napkin math (the bench shape: N=32, 64->64 channels, 56x56, 3x3, pad 1): 2*32*64*64*9*3136 =
//   7.4 GFLOP; bytes: x and y 25.7 MB each (fp32), w 147 KB: ~51 MB, 12 us at 4.2 TB/s, so it is
//   compute-bound: at the H200's ~67 TFLOP/s fp32 SIMT peak the floor is 0.11 ms (cuDNN fp32,
//   TF32 off, measured 28.6 TFLOP/s = 0.26 ms). fp16 on this SIMT path has the same 0.11 ms
//   floor, while cuDNN fp16 (tensor cores) ran at 107 TFLOP/s = 69 us: the fp16 bar (0.5x) needs
//   tensor cores, hence conv2d_tc.cuh for the fp16/bf16 forward. backward_weight: the same FLOPs
//   plus the workspace (splits * C_out * Cig*kH*kW * 4 B, e.g. 30 * 147 KB = 4.4 MB) written and
//   read once.
// Ladder: v1 (this) SIMT implicit GEMM on the matmul tiles; unmeasured on a GPU so far.
//   fp16/bf16 forwards go to the tensor-core kernel (conv2d_tc.cuh, v1: synchronous staging).
//   Next rungs: a 64x128 tile for C_out = 64 (the bench shape wastes nothing in M then), 16-byte
//   loads of the weights, tensor cores for the fp16/bf16 backward kernels (not written).
// ptxas -v (sm_90, nvcc 13, __launch_bounds__(256, 2) so at most 128 registers; fp32, fp16 and
//   bf16 alike within 3 registers), registers / spill stores / static smem:
//   forward          64x64: 80-83 / 0 / 5760 B     128x128: 127 / 0 / 11392 B
//   backward_data    64x64: 83 / 0 / 5760 B        128x128: 127 / 0 / 11392 B
//   backward_weight  64x64: 128 / 0 / 5248 B       128x128: 128 / 44 B (80 B loads) / 10368 B
//   weight_reduce    22-24 / 0                     backward_bias: 26 / 0 / 128 B
//   conv2d_tc_forward (fp16, bf16; 128 threads)   105 (HAS_BIAS) / 127 / 0 / 11264 B
//   SASS mix not read: no nvdisasm on the machine this was written on.
//   (backward_weight decomposes k = pixel in both loaders: the two extra divisions cost the
//   registers; matmul on the shared mainloop: 80 (64x64) and 128 with 24-32 B of spill (128x128),
//   vs 95 and 128 with 8-16 B before the refactor.)
#pragma once
#include "cvk/common.cuh"
#include "cvk/gemm_simt.cuh"

namespace cvk {

// A tap row/column far outside any image: a column past the end of the GEMM reads zeros.
constexpr int CONV_FAR = -(1 << 30);

// forward B: im2col(x)[k = (c, i, j), column], columns tabulated as (image base, first tap).
template <class T>
struct ConvIm2colLoader {
  static constexpr bool K_FAST = false;  // consecutive threads walk output pixels (x contiguous)
  const T* img;                          // input + g*Cig*H*W
  const i64* base;                       // per column: n*C_in*H*W
  const int *tap_y, *tap_x;              // per column: oy*sH - pH, ox*sW - pW
  i64 H, W;
  int KK, kW, dH, dW;
  // The element's offset from img, or -1 where the tap falls in the padding (or past the end).
  __device__ __forceinline__ i64 offset(int col, i64 k) const {
    const int kk = static_cast<int>(k), c = kk / KK, r = kk - c * KK, i = r / kW, j = r - i * kW;
    const i64 iy = tap_y[col] + i * dH, ix = tap_x[col] + j * dW;
    if (iy < 0 || iy >= H || ix < 0 || ix >= W) return -1;
    return base[col] + static_cast<i64>(c) * H * W + iy * W + ix;
  }
  __device__ __forceinline__ float operator()(int col, int, i64 k) const {
    const i64 o = offset(col, k);
    return o < 0 ? 0.f : to_float(img[o]);
  }
};

// backward_data A: w[g] read as [Cig, Cog*kH*kW]: A[c, (o, ij)] = w[o, c, ij].
template <class T>
struct ConvWeightTLoader {
  static constexpr bool K_FAST = true;  // (i, j) contiguous in memory
  const T* w;                           // weight + g*Cog*Cig*kH*kW
  i64 c0, Cig;
  int KK;
  __device__ __forceinline__ float operator()(int r, int, i64 k) const {
    const i64 c = c0 + r;
    if (c >= Cig) return 0.f;
    const int kk = static_cast<int>(k), o = kk / KK, ij = kk - o * KK;
    return to_float(w[(static_cast<i64>(o) * Cig + c) * KK + ij]);
  }
};

// backward_data B: grad_out gathered to input pixels, columns tabulated as
// (grad_out image base, h + pH, w + pW).
template <class T>
struct ConvGatherLoader {
  static constexpr bool K_FAST = false;
  const T* gy;        // grad_out + g*Cog*H_out*W_out
  const i64* base;    // per column: n*C_out*H_out*W_out
  const int *py, *px; // per column: h + pH, w + pW
  i64 Ho, Wo;
  int KK, kW, sH, sW, dH, dW;
  __device__ __forceinline__ float operator()(int col, int, i64 k) const {
    const int kk = static_cast<int>(k), o = kk / KK, r = kk - o * KK, i = r / kW, j = r - i * kW;
    const int yy = py[col] - i * dH, xx = px[col] - j * dW;
    if (yy < 0 || xx < 0) return 0.f;
    const int y = yy / sH, x = xx / sW;
    if (y * sH != yy || x * sW != xx || y >= Ho || x >= Wo) return 0.f;
    return to_float(gy[base[col] + static_cast<i64>(o) * Ho * Wo + static_cast<i64>(y) * Wo + x]);
  }
};

// backward_weight A: grad_out[n, g*Cog + o, pix] with k = n*H_out*W_out + pix.
template <class T>
struct ConvGradRowsLoader {
  static constexpr bool K_FAST = true;  // k walks pixels: contiguous
  const T* gy;                          // grad_out + g*Cog*H_out*W_out
  i64 o0, Cog, batch_stride;            // batch_stride = C_out*H_out*W_out
  unsigned HWo;
  __device__ __forceinline__ float operator()(int r, int, i64 k) const {
    const i64 o = o0 + r;
    if (o >= Cog) return 0.f;
    const unsigned p = static_cast<unsigned>(k), n = p / HWo, pix = p - n * HWo;
    return to_float(gy[n * batch_stride + o * HWo + pix]);
  }
};

// backward_weight B: x at the tap of column (c, i, j) for pixel k, columns tabulated as
// (c*H*W, i*dH - pH, j*dW - pW).
template <class T>
struct ConvTapLoader {
  static constexpr bool K_FAST = true;
  const T* img;                // input + g*Cig*H*W
  const i64* coff;             // per column: c*H*W
  const int *oy, *ox;          // per column: i*dH - pH, j*dW - pW
  i64 batch_stride, H, W;      // batch_stride = C_in*H*W
  unsigned HWo, Wo;
  int sH, sW;
  __device__ __forceinline__ float operator()(int col, int, i64 k) const {
    const unsigned p = static_cast<unsigned>(k), n = p / HWo, pix = p - n * HWo, y = pix / Wo,
                   x = pix - y * Wo;
    const i64 iy = static_cast<i64>(y) * sH + oy[col], ix = static_cast<i64>(x) * sW + ox[col];
    if (iy < 0 || iy >= H || ix < 0 || ix >= W) return 0.f;
    return to_float(img[n * batch_stride + coff[col] + iy * W + ix]);
  }
};

// Tabulate a tile's BN columns p0.. of an [N, Hp, Wp] pixel grid (P = N*Hp*Wp): read_base =
// n*read_stride, write_base = n*write_stride + pixel, first tap (y*sy + oy, x*sx + ox). Columns
// past P get a far tap (their loads read zeros) and are not stored. Ends with a barrier.
template <int BN, int NT>
__device__ __forceinline__ void conv_pixel_table(i64* read_base, i64* write_base, int* tap_y,
                                                 int* tap_x, i64 p0, i64 P, i64 Wp, i64 HWp,
                                                 i64 read_stride, i64 write_stride, int sy,
                                                 int sx, int oy, int ox) {
  for (int c = threadIdx.x; c < BN; c += NT) {
    const i64 p = p0 + c;
    const bool in = p < P;
    const i64 n = in ? p / HWp : 0, pix = p - n * HWp, y = pix / Wp, x = pix - y * Wp;
    read_base[c] = n * read_stride;
    write_base[c] = n * write_stride + pix;
    tap_y[c] = in ? static_cast<int>(y) * sy + oy : CONV_FAR;
    tap_x[c] = in ? static_cast<int>(x) * sx + ox : CONV_FAR;
  }
  __syncthreads();
}

// The SIMT epilogue of forward and backward_data: out[write_base[col] + (g*Mg + m)*HWp] =
// acc (+ bias[g*Mg + m]), rounded once, for the rows m < Mg and columns p0 + col < P.
template <class G, class T, bool HAS_BIAS>
__device__ __forceinline__ void conv_store(const float (&acc)[G::TM][G::TN], T* out,
                                           const T* bias, const i64* write_base, i64 m0, i64 Mg,
                                           i64 g, i64 HWp, i64 p0, i64 P) {
#pragma unroll
  for (int i = 0; i < G::TM; ++i) {
    const i64 m = m0 + G::row(threadIdx.x, i);
    if (m >= Mg) continue;
    const i64 ch = g * Mg + m;
    const float b = HAS_BIAS ? to_float(bias[ch]) : 0.f;
#pragma unroll
    for (int j = 0; j < G::TN; ++j) {
      const int c = G::col(threadIdx.x, j);
      if (p0 + c < P) out[write_base[c] + ch * HWp] = from_float<T>(acc[i][j] + b);
    }
  }
}

}  // namespace cvk

#define CVK_CONV_GEOMETRY                                                                \
  long long batch, long long C_in, long long H, long long W, long long C_out,            \
      long long H_out, long long W_out, int groups, int kH, int kW, int stride_h,        \
      int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w

template <class T, int BM, int BN, int BK, int TM, int TN, bool HAS_BIAS>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
conv2d_forward_kernel(const T* __restrict__ input, const T* __restrict__ weight,
                      const T* __restrict__ bias, T* __restrict__ output, CVK_CONV_GEOMETRY) {
  using cvk::i64;
  using G = cvk::GemmSimt<BM, BN, BK, TM, TN>;
  __shared__ typename G::Smem smem;
  __shared__ i64 in_base[BN], out_base[BN];
  __shared__ int tap_y[BN], tap_x[BN];
  const int KK = kH * kW;
  const i64 HW = H * W, HWo = H_out * W_out, P = batch * HWo, Cig = C_in / groups,
            Cog = C_out / groups, Kg = Cig * KK;
  const i64 p0 = static_cast<i64>(blockIdx.x) * BN, m0 = static_cast<i64>(blockIdx.y) * BM;
  cvk::conv_pixel_table<BN, G::NT>(in_base, out_base, tap_y, tap_x, p0, P, W_out, HWo,
                                   C_in * HW, C_out * HWo, stride_h, stride_w, -pad_h, -pad_w);
  for (i64 g = blockIdx.z; g < groups; g += gridDim.z) {
    const cvk::RowMajorLoader<T, false> la{weight + g * Cog * Kg, m0, Cog, Kg};
    const cvk::ConvIm2colLoader<T> lb{input + g * Cig * HW, in_base, tap_y, tap_x, H, W, KK, kW,
                                      dilation_h, dilation_w};
    float acc[TM][TN];
    G::mainloop(acc, smem, 0, Kg, la, lb);
    cvk::conv_store<G, T, HAS_BIAS>(acc, output, bias, out_base, m0, Cog, g, HWo, p0, P);
  }
}

// grad_input of conv2d (and conv_transpose2d's forward, with HAS_BIAS). The geometry is the
// conv2d's: H, W, C_in describe grad_input; H_out, W_out, C_out describe grad_out.
template <class T, int BM, int BN, int BK, int TM, int TN, bool HAS_BIAS>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
conv2d_backward_data_kernel(const T* __restrict__ grad_out, const T* __restrict__ weight,
                            const T* __restrict__ bias, T* __restrict__ grad_input,
                            CVK_CONV_GEOMETRY) {
  using cvk::i64;
  using G = cvk::GemmSimt<BM, BN, BK, TM, TN>;
  __shared__ typename G::Smem smem;
  __shared__ i64 g_base[BN], x_base[BN];
  __shared__ int pos_y[BN], pos_x[BN];
  const int KK = kH * kW;
  const i64 HW = H * W, HWo = H_out * W_out, P = batch * HW, Cig = C_in / groups,
            Cog = C_out / groups, Kg = Cog * KK;
  const i64 p0 = static_cast<i64>(blockIdx.x) * BN, m0 = static_cast<i64>(blockIdx.y) * BM;
  cvk::conv_pixel_table<BN, G::NT>(g_base, x_base, pos_y, pos_x, p0, P, W, HW, C_out * HWo,
                                   C_in * HW, 1, 1, pad_h, pad_w);
  for (i64 g = blockIdx.z; g < groups; g += gridDim.z) {
    const cvk::ConvWeightTLoader<T> la{weight + g * Cog * Cig * KK, m0, Cig, KK};
    const cvk::ConvGatherLoader<T> lb{grad_out + g * Cog * HWo, g_base, pos_y, pos_x, H_out,
                                      W_out, KK, kW, stride_h, stride_w, dilation_h,
                                      dilation_w};
    float acc[TM][TN];
    G::mainloop(acc, smem, 0, Kg, la, lb);
    cvk::conv_store<G, T, HAS_BIAS>(acc, grad_input, bias, x_base, m0, Cig, g, HW, p0, P);
  }
}

// Partial grad_weight sums: workspace[s, g*Cog + o, (c, i, j)] = sum over k in chunk s.
// Geometry as conv2d's: input is x [N, C_in, H, W], grad_out is [N, C_out, H_out, W_out].
template <class T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), 2)
conv2d_backward_weight_kernel(const T* __restrict__ grad_out, const T* __restrict__ input,
                              float* __restrict__ workspace, CVK_CONV_GEOMETRY, long long splits,
                              long long k_chunk) {
  using cvk::i64;
  using G = cvk::GemmSimt<BM, BN, BK, TM, TN>;
  __shared__ typename G::Smem smem;
  __shared__ i64 coff[BN];
  __shared__ int off_y[BN], off_x[BN];
  const int tid = threadIdx.x, KK = kH * kW;
  const i64 HW = H * W, HWo = H_out * W_out, P = batch * HWo, Cig = C_in / groups,
            Cog = C_out / groups, Kg = Cig * KK;
  const i64 n0 = static_cast<i64>(blockIdx.x) * BN, m0 = static_cast<i64>(blockIdx.y) * BM;
  for (int c = tid; c < BN; c += G::NT) {
    const i64 col = n0 + c;
    const bool in = col < Kg;
    const int ch = in ? static_cast<int>(col / KK) : 0, r = static_cast<int>(col - i64{ch} * KK),
              i = r / kW, j = r - i * kW;
    coff[c] = static_cast<i64>(ch) * HW;
    off_y[c] = in ? i * dilation_h - pad_h : cvk::CONV_FAR;
    off_x[c] = in ? j * dilation_w - pad_w : cvk::CONV_FAR;
  }
  __syncthreads();
  for (i64 z = blockIdx.z; z < groups * splits; z += gridDim.z) {
    const i64 g = z / splits, s = z - g * splits;
    const i64 k_begin = s * k_chunk, k_end = k_begin + k_chunk < P ? k_begin + k_chunk : P;
    const cvk::ConvGradRowsLoader<T> la{grad_out + g * Cog * HWo, m0, Cog, C_out * HWo,
                                        static_cast<unsigned>(HWo)};
    const cvk::ConvTapLoader<T> lb{input + g * Cig * HW, coff, off_y, off_x, C_in * HW, H, W,
                                   static_cast<unsigned>(HWo), static_cast<unsigned>(W_out),
                                   stride_h, stride_w};
    float acc[TM][TN];
    G::mainloop(acc, smem, k_begin, k_end, la, lb);
    float* ws = workspace + (s * C_out + g * Cog) * Kg;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const i64 m = m0 + G::row(tid, i);
      if (m >= Cog) continue;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const i64 col = n0 + G::col(tid, j);
        if (col < Kg) ws[m * Kg + col] = acc[i][j];
      }
    }
  }
}

// grad_weight[e] = sum_{s = 0..splits-1} partials[s*count + e], in that order, rounded once.
template <class T>
__global__ void conv2d_backward_weight_reduce_kernel(const float* __restrict__ partials,
                                                     T* __restrict__ grad_weight, long long count,
                                                     long long splits) {
  using cvk::i64;
  const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
  for (i64 e = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += step) {
    float acc = 0.f;
    for (i64 s = 0; s < splits; ++s) acc += partials[s * count + e];
    grad_weight[e] = cvk::from_float<T>(acc);
  }
}

// grad_bias[c] = sum over n and pixels of grad_out[n, c, :]: one block per channel (strided),
// each thread sums a fixed strided subset, then a fixed-order block reduction: deterministic.
template <class T>
__global__ void __launch_bounds__(256)
conv2d_backward_bias_kernel(const T* __restrict__ grad_out, T* __restrict__ grad_bias,
                            long long batch, long long channels, long long pixels) {
  using cvk::i64;
  __shared__ float scratch[32];
  for (i64 c = blockIdx.x; c < channels; c += gridDim.x) {
    float acc = 0.f;
    for (i64 n = 0; n < batch; ++n) {
      const T* row = grad_out + (n * channels + c) * pixels;
      for (i64 i = threadIdx.x; i < pixels; i += blockDim.x) acc += cvk::to_float(row[i]);
    }
    acc = cvk::block_allreduce(acc, cvk::SumOp(), scratch);
    if (threadIdx.x == 0) grad_bias[c] = cvk::from_float<T>(acc);
  }
}

#include "conv2d_tc.cuh"  // the tensor-core forward for fp16/bf16 (same family)

#undef CVK_CONV_GEOMETRY
