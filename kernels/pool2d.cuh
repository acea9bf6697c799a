// 2-D pooling over NCHW planes, forward and backward: max_pool2d, avg_pool2d,
// adaptive_avg_pool2d (with a global-average fast path) and adaptive_max_pool2d.
//   max:      y[p,oy,ox] = max over the window of x[p,.,.] (kernel k, stride s, padding p,
//             dilation d; -inf padding), idx = its flat index iy*W+ix in the plane
//   avg:      y = sum over the window clipped to the input / divisor (torch's divisor rules:
//             divisor_override, else the window size with or without the zero padding)
//   adaptive: output oy covers rows [floor(oy*H/Ho), ceil((oy+1)*H/Ho)), likewise columns
//   backward: dx[p,iy,ix] = sum over the outputs o whose window holds (iy,ix) of dy[o]/div[o]
//             (avg), or of dy[o] where idx[o] == iy*W+ix (max)
// Tensors: x, dx [P, H, W], y, dy, idx [P, Ho, Wo], P = N*C planes, contiguous; x, y, dx, dy of
//   T = float, __half or __nv_bfloat16; idx int64 (torch's indices).
// Work split: one thread per output (forwards) or per input element (backwards): threadIdx.x
//   and blockIdx.x along a row, threadIdx.y and blockIdx.y down the plane's rows with a
//   grid-stride loop, blockIdx.z over planes with a grid-stride loop; no division splits a flat
//   index. The plan sets blockDim.x = min(row length, 128) so a 56-wide row wastes no lanes.
//   Every backward is a gather over the outputs that can cover the input element (torch's
//   NCHW CUDA scheme), not a scatter: no atomics. Global average pooling (output 1x1) is one
//   warp per plane (BLOCK=false) or one block per plane (BLOCK=true, planes > 1024 elements),
//   16-byte loads when the planes allow them (VEC16).
// Numerics: fp32 accumulation whatever T is, results rounded once to T. Window sums run in
//   row-major order; gathers in ascending output order; the global mean sums per-lane strided
//   partials then a fixed butterfly: every result is bitwise deterministic. Max follows torch:
//   the first maximum in scan order wins ties, a NaN wins over everything (the last NaN in scan
//   order is kept); a window that holds only padding (possible with dilation) gives -inf, -1.
//   Max pooling is exact. The max backward trusts that idx came from the forward with the same
//   geometry (an index outside its window is not found by the gather).
// Napkin math (max_pool 3x3 s2 p1, 32x64x112x112 fp32, no indices): reads 102.8 MB, writes
//   25.7 MB (56x56 outputs); each input row is read by 1.5 output rows and each column by 1.5
//   threads, reuse that L1/L2 absorb, so DRAM moves ~128.5 MB: at the H200's ~4.2 TB/s copy
//   rate the floor is 0.031 ms (torch: 0.110 ms, also writing 51 MB of int64 indices; with
//   return_indices ours moves 180 MB, floor 0.043 ms). 9 compares per output: 58 MFLOP, nothing.
//   Global average pool 32x2048x7x7 fp32: 12.8 MB read, 0.26 MB written: floor 3 us.
// ptxas -v (sm_90, nvcc 13; registers fp32/fp16/bf16, no spills, no stack anywhere):
//   max_pool2d_forward <INDICES=false/true> 36/36/36 | max_pool2d_backward 56/48/48
//   avg_pool2d_forward 48/48/48 | avg_pool2d_backward 56/56/56
//   adaptive_avg_pool2d_forward 39/34/34 | adaptive_avg_pool2d_backward 64/64/64
//   adaptive_max_pool2d_forward <false> 37, <true> 46 | adaptive_max_pool2d_backward 66
//   global_avg_pool2d_forward <BLOCK,VEC16> ff 31/30/30, ft 34/32/32, tf 28, tt 30 (1 barrier,
//   128 B smem). The bench kernel (36 registers, 56x4 = 224 threads) fits 8 blocks = 1792
//   threads an SM (88% occupancy): enough loads in flight for a bandwidth-bound kernel.
//   SASS not read (no cuobjdump on this host).
// Ladder: v1 (this file) is one thread per output reading its window through L1; untimed (no
//   GPU in this session). Next rungs if it misses the bar: 2 outputs per thread along a row
//   (shares a column of taps at stride 2), then a shared-memory tile of input rows.
#pragma once
#include "cvk/common.cuh"
#include "cvk/vec.cuh"

namespace cvk {
namespace pool {

// A clipped window along one axis: begin, begin+step, ... < end.
struct Span {
  i64 begin, end;
  int step;
};

// max_pool2d's window of output o: start o*s-p, taps every d, clipped to [0, size).
__device__ __forceinline__ Span max_window(i64 o, int k, int s, int p, int d, i64 size) {
  i64 b = o * s - p;
  const i64 e = b + static_cast<i64>(k - 1) * d + 1;
  if (b < 0) b += ((-b + d - 1) / d) * d;
  return Span{b, e < size ? e : size, d};
}

// adaptive window of output o of n over size: [floor(o*size/n), ceil((o+1)*size/n)).
__device__ __forceinline__ Span adaptive_window(i64 o, i64 n, i64 size) {
  return Span{(o * size) / n, ((o + 1) * size + n - 1) / n, 1};
}

// Max over the window (torch's rule: first maximum wins, NaN wins); idx -1 if empty.
template <class T>
__device__ __forceinline__ void window_max(const T* __restrict__ plane, i64 W, Span ry, Span rx,
                                           float& best, i64& idx) {
  best = neg_inf();
  idx = (ry.begin < ry.end && rx.begin < rx.end) ? ry.begin * W + rx.begin : -1;
  for (i64 y = ry.begin; y < ry.end; y += ry.step) {
    const T* row = plane + y * W;
    for (i64 x = rx.begin; x < rx.end; x += rx.step) {
      const float v = to_float(row[x]);
      if (v > best || v != v) {
        best = v;
        idx = y * W + x;
      }
    }
  }
}

template <class T>
__device__ __forceinline__ float window_sum(const T* __restrict__ plane, i64 W, i64 y0, i64 y1,
                                            i64 x0, i64 x1) {
  float s = 0.f;
  for (i64 y = y0; y < y1; ++y) {
    const T* row = plane + y * W;
    for (i64 x = x0; x < x1; ++x) s += to_float(row[x]);
  }
  return s;
}

// Calls f(plane, row, col) for this thread's positions of a [planes, rows, cols] grid.
template <class F>
__device__ __forceinline__ void for_each_position(i64 planes, i64 rows, i64 cols, F f) {
  const i64 c = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const i64 r0 = static_cast<i64>(blockIdx.y) * blockDim.y + threadIdx.y;
  const i64 rstep = static_cast<i64>(gridDim.y) * blockDim.y;
  for (i64 p = blockIdx.z; p < planes; p += gridDim.z)
    for (i64 r = r0; r < rows; r += rstep) f(p, r, c);
}

// The outputs o in [lo, hi] of stride s, padding p whose (undilated extent `reach`) window
// starting at o*s-p can hold input position i: o*s-p <= i <= o*s-p+reach.
__device__ __forceinline__ void covering(i64 i, int s, int p, i64 reach, i64 n, i64& lo,
                                         i64& hi) {
  const i64 t = i + p - reach;
  lo = t <= 0 ? 0 : (t + s - 1) / s;
  hi = (i + p) / s;
  if (hi > n - 1) hi = n - 1;
}

// avg_pool2d's divisor of output (oy, ox), torch's rule.
__device__ __forceinline__ float avg_divisor(i64 oy, i64 ox, i64 H, i64 W, int kh, int kw,
                                             int sh, int sw, int ph, int pw,
                                             int count_include_pad, int divisor_override) {
  if (divisor_override) return static_cast<float>(divisor_override);
  i64 y0 = oy * sh - ph, x0 = ox * sw - pw;
  i64 y1 = y0 + kh, x1 = x0 + kw;
  if (y1 > H + ph) y1 = H + ph;  // a ceil_mode window stops at the right padding
  if (x1 > W + pw) x1 = W + pw;
  i64 n = (y1 - y0) * (x1 - x0);
  if (!count_include_pad) {
    y0 = y0 < 0 ? 0 : y0;
    x0 = x0 < 0 ? 0 : x0;
    y1 = y1 > H ? H : y1;
    x1 = x1 > W ? W : x1;
    n = (y1 - y0) * (x1 - x0);
  }
  return n > 0 ? static_cast<float>(n) : 1.f;  // an empty window averages to 0
}

// The adaptive outputs along one axis whose window holds input i: a candidate range
// [floor(i*n/size), ceil((i+1)*n/size)) is checked against each window, so rounding at the
// ends cannot add or drop one.
template <class F>
__device__ __forceinline__ void for_adaptive_covering(i64 i, i64 n, i64 size, F f) {
  i64 hi = ((i + 1) * n + size - 1) / size;
  hi = hi > n ? n : hi;
  for (i64 o = (i * n) / size; o < hi; ++o) {
    const Span r = adaptive_window(o, n, size);
    if (r.begin <= i && i < r.end) f(o, r.end - r.begin);
  }
}

// The max forwards: y (and idx) of every output, windows from rows(oy) and cols(ox).
template <class T, bool INDICES, class Rows, class Cols>
__device__ __forceinline__ void max_forward(const T* __restrict__ x, T* __restrict__ y,
                                            long long* __restrict__ indices, i64 planes, i64 H,
                                            i64 W, i64 Ho, i64 Wo, Rows rows, Cols cols) {
  for_each_position(planes, Ho, Wo, [&](i64 p, i64 oy, i64 ox) {
    float best;
    i64 idx;
    window_max(x + p * H * W, W, rows(oy), cols(ox), best, idx);
    const i64 o = (p * Ho + oy) * Wo + ox;
    y[o] = from_float<T>(best);
    if (INDICES) indices[o] = idx;
  });
}

}  // namespace pool
}  // namespace cvk

// ---- max_pool2d ------------------------------------------------------------------------------

template <class T, bool INDICES>
__global__ void max_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          long long* __restrict__ indices, long long planes,
                                          long long H, long long W, long long Ho, long long Wo,
                                          int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                          int dw) {
  using cvk::i64;
  cvk::pool::max_forward<T, INDICES>(
      x, y, indices, planes, H, W, Ho, Wo,
      [=](i64 oy) { return cvk::pool::max_window(oy, kh, sh, ph, dh, H); },
      [=](i64 ox) { return cvk::pool::max_window(ox, kw, sw, pw, dw, W); });
}

template <class T>
__global__ void max_pool2d_backward_kernel(const T* __restrict__ grad_out,
                                           const long long* __restrict__ indices,
                                           T* __restrict__ grad_in, long long planes,
                                           long long H, long long W, long long Ho, long long Wo,
                                           int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                           int dw) {
  using cvk::i64;
  cvk::pool::for_each_position(planes, H, W, [&](i64 p, i64 iy, i64 ix) {
    i64 oy0, oy1, ox0, ox1;
    cvk::pool::covering(iy, sh, ph, static_cast<i64>(kh - 1) * dh, Ho, oy0, oy1);
    cvk::pool::covering(ix, sw, pw, static_cast<i64>(kw - 1) * dw, Wo, ox0, ox1);
    const i64 me = iy * W + ix;
    float acc = 0.f;
    for (i64 oy = oy0; oy <= oy1; ++oy) {
      if ((iy + ph - oy * sh) % dh) continue;  // a dilation gap, not a tap
      const i64 row = (p * Ho + oy) * Wo;
      for (i64 ox = ox0; ox <= ox1; ++ox)
        if (indices[row + ox] == me) acc += cvk::to_float(grad_out[row + ox]);
    }
    grad_in[(p * H + iy) * W + ix] = cvk::from_float<T>(acc);
  });
}

// ---- avg_pool2d ------------------------------------------------------------------------------

template <class T>
__global__ void avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          long long planes, long long H, long long W,
                                          long long Ho, long long Wo, int kh, int kw, int sh,
                                          int sw, int ph, int pw, int count_include_pad,
                                          int divisor_override) {
  using cvk::i64;
  cvk::pool::for_each_position(planes, Ho, Wo, [&](i64 p, i64 oy, i64 ox) {
    i64 y0 = oy * sh - ph, x0 = ox * sw - pw;
    i64 y1 = y0 + kh, x1 = x0 + kw;
    y0 = y0 < 0 ? 0 : y0;
    x0 = x0 < 0 ? 0 : x0;
    y1 = y1 > H ? H : y1;
    x1 = x1 > W ? W : x1;
    const float s = cvk::pool::window_sum(x + p * H * W, W, y0, y1, x0, x1);
    const float div = cvk::pool::avg_divisor(oy, ox, H, W, kh, kw, sh, sw, ph, pw,
                                             count_include_pad, divisor_override);
    y[(p * Ho + oy) * Wo + ox] = cvk::from_float<T>(s / div);
  });
}

template <class T>
__global__ void avg_pool2d_backward_kernel(const T* __restrict__ grad_out,
                                           T* __restrict__ grad_in, long long planes,
                                           long long H, long long W, long long Ho, long long Wo,
                                           int kh, int kw, int sh, int sw, int ph, int pw,
                                           int count_include_pad, int divisor_override) {
  using cvk::i64;
  cvk::pool::for_each_position(planes, H, W, [&](i64 p, i64 iy, i64 ix) {
    i64 oy0, oy1, ox0, ox1;
    cvk::pool::covering(iy, sh, ph, kh - 1, Ho, oy0, oy1);
    cvk::pool::covering(ix, sw, pw, kw - 1, Wo, ox0, ox1);
    float acc = 0.f;
    for (i64 oy = oy0; oy <= oy1; ++oy) {
      const T* g = grad_out + (p * Ho + oy) * Wo;
      for (i64 ox = ox0; ox <= ox1; ++ox)
        acc += cvk::to_float(g[ox]) / cvk::pool::avg_divisor(oy, ox, H, W, kh, kw, sh, sw, ph,
                                                              pw, count_include_pad,
                                                              divisor_override);
    }
    grad_in[(p * H + iy) * W + ix] = cvk::from_float<T>(acc);
  });
}

// ---- adaptive pools --------------------------------------------------------------------------

template <class T>
__global__ void adaptive_avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                   long long planes, long long H, long long W,
                                                   long long Ho, long long Wo) {
  using cvk::i64;
  cvk::pool::for_each_position(planes, Ho, Wo, [&](i64 p, i64 oy, i64 ox) {
    const cvk::pool::Span ry = cvk::pool::adaptive_window(oy, Ho, H);
    const cvk::pool::Span rx = cvk::pool::adaptive_window(ox, Wo, W);
    const float s = cvk::pool::window_sum(x + p * H * W, W, ry.begin, ry.end, rx.begin, rx.end);
    const float n = static_cast<float>((ry.end - ry.begin) * (rx.end - rx.begin));
    y[(p * Ho + oy) * Wo + ox] = cvk::from_float<T>(s / n);
  });
}

template <class T>
__global__ void adaptive_avg_pool2d_backward_kernel(const T* __restrict__ grad_out,
                                                    T* __restrict__ grad_in, long long planes,
                                                    long long H, long long W, long long Ho,
                                                    long long Wo) {
  using cvk::i64;
  cvk::pool::for_each_position(planes, H, W, [&](i64 p, i64 iy, i64 ix) {
    float acc = 0.f;
    cvk::pool::for_adaptive_covering(iy, Ho, H, [&](i64 oy, i64 ny) {
      const T* g = grad_out + (p * Ho + oy) * Wo;
      cvk::pool::for_adaptive_covering(ix, Wo, W, [&](i64 ox, i64 nx) {
        acc += cvk::to_float(g[ox]) / static_cast<float>(ny * nx);
      });
    });
    grad_in[(p * H + iy) * W + ix] = cvk::from_float<T>(acc);
  });
}

template <class T, bool INDICES>
__global__ void adaptive_max_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                   long long* __restrict__ indices,
                                                   long long planes, long long H, long long W,
                                                   long long Ho, long long Wo) {
  using cvk::i64;
  cvk::pool::max_forward<T, INDICES>(
      x, y, indices, planes, H, W, Ho, Wo,
      [=](i64 oy) { return cvk::pool::adaptive_window(oy, Ho, H); },
      [=](i64 ox) { return cvk::pool::adaptive_window(ox, Wo, W); });
}

template <class T>
__global__ void adaptive_max_pool2d_backward_kernel(const T* __restrict__ grad_out,
                                                    const long long* __restrict__ indices,
                                                    T* __restrict__ grad_in, long long planes,
                                                    long long H, long long W, long long Ho,
                                                    long long Wo) {
  using cvk::i64;
  cvk::pool::for_each_position(planes, H, W, [&](i64 p, i64 iy, i64 ix) {
    const i64 me = iy * W + ix;
    float acc = 0.f;
    cvk::pool::for_adaptive_covering(iy, Ho, H, [&](i64 oy, i64) {
      const i64 row = (p * Ho + oy) * Wo;
      cvk::pool::for_adaptive_covering(ix, Wo, W, [&](i64 ox, i64) {
        if (indices[row + ox] == me) acc += cvk::to_float(grad_out[row + ox]);
      });
    });
    grad_in[(p * H + iy) * W + ix] = cvk::from_float<T>(acc);
  });
}

// Global average pooling (adaptive output 1x1): y[p] = mean(x[p, :]) over hw = H*W elements.
// One warp per plane (BLOCK=false, blockDim.x/32 planes per block) or one block per plane.
template <class T, bool BLOCK, bool VEC16>
__global__ void global_avg_pool2d_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                 long long planes, long long hw) {
  using cvk::i64;
  constexpr int VEC = VEC16 ? cvk::Packed128<T>::size : 1;
  __shared__ float scratch[32];
  const int warps = blockDim.x >> 5;
  const int lane = BLOCK ? threadIdx.x : (threadIdx.x & 31);
  const int size = BLOCK ? blockDim.x : 32;
  const i64 first = BLOCK ? blockIdx.x : static_cast<i64>(blockIdx.x) * warps + (threadIdx.x >> 5);
  const i64 step = BLOCK ? gridDim.x : static_cast<i64>(gridDim.x) * warps;
  for (i64 p = first; p < planes; p += step) {
    const T* xp = x + p * hw;
    float s = 0.f;
    for (i64 i = static_cast<i64>(lane) * VEC; i < hw; i += static_cast<i64>(size) * VEC) {
      if constexpr (VEC16) {
        const cvk::Packed128<T> q = cvk::load128(xp + i);
#pragma unroll
        for (int j = 0; j < VEC; ++j) s += cvk::to_float(q[j]);
      } else {
        s += cvk::to_float(xp[i]);
      }
    }
    s = BLOCK ? cvk::block_allreduce(s, cvk::SumOp(), scratch)
              : cvk::warp_allreduce(s, cvk::SumOp());
    if (lane == 0) y[p] = cvk::from_float<T>(s / static_cast<float>(hw));
  }
}
