// cross_entropy (fused log_softmax + nll) and nll_loss, forward and backward, as torch.
//   logp[r, c] = x[r, c] - lse[r],  lse = m + log(sum_c exp(x[r, c] - m)),  m = max_c x[r, c]
//   MODE 0 (class index t): loss = -w[t] logp[t]                      (0 where t == ignore)
//   MODE 1 (index + smoothing eps): loss = keep * -w[t] logp[t] + smooth * -sum_c w[c] logp[c]
//   MODE 2 (probabilities p): loss = -sum_c q[c] logp[c],  q[c] = (p[c] keep + smooth) w[c]
//   with keep = 1 - eps, smooth = eps / C (rounded to fp32 on the host, as the reference),
//   w = 1 without a weight. Backward: dx[r, c] = g[r] * (softmax[r, c] * Q[r] - q[r, c]),
//   Q = sum_c q (class targets: q = keep w[t] [c == t] + smooth w[c]); grad of the
//   probabilities: -keep * g * w[c] * logp[c]. g = grad_out (reduction none), grad_out / denom
//   (mean; denom = sum of w[t] over non-ignored rows, or the row count for probabilities), and
//   0 on ignored rows.
//   nll_loss: loss = -w[t] x[r, t]; dx = -w[t] g at t, 0 elsewhere.
// Tensors: x, target probabilities, grads: [rows, cols] of T (float, __half, __nv_bfloat16),
//   contiguous, the class axis last (the Python layer moves it there). The nll kernels read
//   [N, C, inner] in place (row r = (n, s), class stride `inner`). target: int64 [rows].
//   weight: T [cols] or null. row_loss, row_w: fp32 [rows] (per-row loss and target weight);
//   out: T [rows] for reduction 'none'. bad: one uint32, 0xffffffff on entry.
// Work split: as softmax.cuh: one row per warp (BLOCK=false) or per block (BLOCK=true), rows
//   striding over the grid; VEC16 moves 16 bytes a load. The forward reads each logit once:
//   a running (max, sum-exp) pair plus the smoothing/probability sums (sum w x, sum w or
//   sum q x, sum q) per thread, merged by shuffles and shared memory; the row's own target
//   logit is re-read by one lane (an L1 hit). The backward reads the row twice (stats, then
//   the gradient; the second read is meant to hit L1/L2). nll kernels: one thread per row
//   (forward) or per element of dx (backward).
// Reduction: per-row fp32 losses and weights, then cross_entropy_reduce_kernel: each block sums
//   a fixed chunk in a fixed order (strided per thread, then a shuffle/shared tree), a second
//   launch of the same kernel sums the block partials. No float atomics: bitwise
//   deterministic, and independent of the device (the chunking depends on rows only).
// Bad targets: a class index outside [0, C) that is not ignore_index sets `bad` to the
//   smallest such row (atomicMin on an integer: deterministic); the op reads it after the
//   launch and raises IndexOutOfRange naming `target`. No __trap/assert: no sticky error.
// Numerics: fp32 whatever T is; expf/logf. Infinities as torch: +inf or NaN in a row makes
//   m or s NaN, so the whole row's loss and gradient are NaN; a row of all -inf gives
//   lse = -inf and NaN; 0 * -inf is computed, not skipped (a zero weight or probability
//   against a -inf logit is NaN, as torch's multiply). The smoothing sum is formed as
//   W * lse - sum w x (one pass), which costs a cancellation of (K + 40) u sum|w x| with
//   K = ceil(C / 32) (the spec's error model). One expf per logit (+ one per 16-byte vector).
// Napkin math (8192 x 8192 fp32, class targets, fwd + bwd): forward reads 268 MB, backward
//   reads 268 MB (+ a second read meant for L1/L2) and writes 268 MB: >= 805 MB of DRAM
//   traffic, 0.19 ms at the H200's ~4.2 TB/s copy rate (0.24 ms at the H100's 3.35 TB/s).
//   torch's unfused path (log_softmax out, nll_loss, a zero-filled grad of logp, then
//   log_softmax's backward reading that grad and its output) moves >= 6 x 268 MB = 1.6 GB:
//   0.38 ms at 4.2 TB/s, so the floor ratio is ~2x. FLOPs (~15 per logit, 3 expf over fwd +
//   bwd) stay far below the compute floor. Each op reads the 4-byte bad-target flag back
//   (one host sync per call, a few microseconds), the price of raising on the host.
// ptxas -v (sm_90, nvcc 13.0, the generated TUs; all 78 instantiations: 0 spills, 0 stack):
//   forward fp32, MODE 0/1/2: BLOCK+VEC16 32/39/39 registers, warp+VEC16 32/40/47;
//   backward fp32: BLOCK+VEC16 32/32/32, warp+VEC16 32/40/40; fp16/bf16 at most 63 (forward
//   MODE 2, warp, VEC16); reduce 32; nll forward 36 (fp32) / 20; nll backward 32 / 26.
//   SASS (forward fp32 MODE 0 BLOCK VEC16): one LDG.128 per loop trip, no local memory.
#pragma once
#include "cvk/common.cuh"
#include "cvk/vec.cuh"
#include "softmax.cuh"

namespace cvk {

constexpr unsigned NO_BAD_ROW = 0xffffffffu;

// Record a bad target row: the smallest one wins (rows past 2^32 - 2 are clamped).
__device__ __forceinline__ void flag_bad_row(unsigned* bad, i64 row) {
  if (bad) atomicMin(bad, static_cast<unsigned>(row < 0xfffffffeLL ? row : 0xfffffffeLL));
}

// Fold VEC logits into the running (m, s) with one rescale: the chunk's NaN-propagating max,
// then sum expf(v - max). One expf per logit plus one per chunk, not two per logit (the MUFU
// pipe is the forward's second-tightest limit after DRAM). A chunk of -inf adds nothing (its
// NaN sum is dropped by ms_merge); +inf or NaN make s NaN, as torch's row.
template <int VEC>
__device__ __forceinline__ void ms_fold(float& m, float& s, const float (&v)[VEC]) {
  float cm = v[0];
#pragma unroll
  for (int i = 1; i < VEC; ++i) cm = (cm != cm || v[i] != v[i]) ? cm + v[i] : fmaxf(cm, v[i]);
  float cs = 0.f;
#pragma unroll
  for (int i = 0; i < VEC; ++i) cs += expf(v[i] - cm);
  ms_merge(m, s, cm, cs);
}

// VEC class weights from c on, or ones without a weight.
template <class T, int VEC>
__device__ __forceinline__ void load_weights(const T* weight, i64 c, float (&wv)[VEC]) {
  if (weight) {
    load_vec<T, VEC>(weight + c, wv);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) wv[i] = 1.f;
  }
}

}  // namespace cvk

template <class T, int MODE, bool BLOCK, bool VEC16>
__global__ void cross_entropy_forward_kernel(const T* __restrict__ x,
                                             const long long* __restrict__ target,
                                             const T* __restrict__ target_prob,
                                             const T* __restrict__ weight,
                                             float* __restrict__ row_loss,
                                             float* __restrict__ row_w, T* __restrict__ out,
                                             unsigned* __restrict__ bad, long long rows,
                                             long long cols, long long ignore_index, float keep,
                                             float smooth) {
  using cvk::i64;
  constexpr int VEC = VEC16 ? cvk::Packed128<T>::size : 1;
  __shared__ float scratch[64];
  const cvk::RowGroup<BLOCK> g;
  for (i64 row = g.first; row < rows; row += g.step) {
    const T* xr = x + row * cols;
    float m = cvk::neg_inf(), s = 0.f, a = 0.f, b = 0.f;
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float v[VEC], wv[VEC], tv[VEC];
      cvk::load_vec<T, VEC>(xr + c, v);
      if (MODE != 0) cvk::load_weights<T, VEC>(weight, c, wv);
      if (MODE == 2) cvk::load_vec<T, VEC>(target_prob + row * cols + c, tv);
      cvk::ms_fold<VEC>(m, s, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (MODE == 1) {
          a += wv[i] * v[i];
          b += wv[i];
        } else if (MODE == 2) {
          const float q = (tv[i] * keep + smooth) * wv[i];
          a += q * v[i];
          b += q;
        }
      }
    }
    cvk::ms_allreduce<BLOCK>(m, s, scratch);
    if (MODE != 0) {
      a = cvk::sum_allreduce<BLOCK>(a, scratch);
      b = cvk::sum_allreduce<BLOCK>(b, scratch);
    }
    if (g.lane != 0) continue;
    const float log_s = logf(s);
    float loss, wt = 0.f;
    if (MODE == 2) {
      loss = b * (m + log_s) - a;    // sum_c q (lse - x_c)
    } else {
      const i64 t = target[row];
      if (t == ignore_index) {
        loss = 0.f;
      } else if (t < 0 || t >= cols) {
        cvk::flag_bad_row(bad, row);
        loss = __int_as_float(0x7fffffff);
      } else {
        wt = weight ? cvk::to_float(weight[t]) : 1.f;
        const float nll = -(wt * ((cvk::to_float(xr[t]) - m) - log_s));
        loss = MODE == 1 ? keep * nll + smooth * (b * (m + log_s) - a) : nll;
      }
    }
    if (row_loss) row_loss[row] = loss;
    if (row_w) row_w[row] = wt;
    if (out) out[row] = cvk::from_float<T>(loss);
  }
}

template <class T, int MODE, bool BLOCK, bool VEC16>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ grad_out,
                                              const float* __restrict__ denom,
                                              const T* __restrict__ x,
                                              const long long* __restrict__ target,
                                              const T* __restrict__ target_prob,
                                              const T* __restrict__ weight,
                                              T* __restrict__ grad_in, T* __restrict__ grad_target,
                                              unsigned* __restrict__ bad, long long rows,
                                              long long cols, long long gstride,
                                              long long ignore_index, float keep, float smooth) {
  using cvk::i64;
  constexpr int VEC = VEC16 ? cvk::Packed128<T>::size : 1;
  __shared__ float scratch[64];
  const cvk::RowGroup<BLOCK> g;
  for (i64 row = g.first; row < rows; row += g.step) {
    const T* xr = x + row * cols;
    const T* pr = MODE == 2 ? target_prob + row * cols : nullptr;
    float ge = cvk::to_float(grad_out[row * gstride]);
    if (denom) ge = ge / *denom;
    i64 t = -1;
    float wt = 0.f;
    bool valid = MODE == 2;
    if (MODE != 2) {
      t = target[row];
      if (t == ignore_index) {
        ge = 0.f;
      } else if (t < 0 || t >= cols) {
        if (g.lane == 0) cvk::flag_bad_row(bad, row);
        ge = __int_as_float(0x7fffffff);
      } else {
        wt = weight ? cvk::to_float(weight[t]) : 1.f;
        valid = true;
      }
    }
    float m = cvk::neg_inf(), s = 0.f, b = 0.f;   // b: sum w (MODE 1), sum q (MODE 2)
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float v[VEC], wv[VEC], tv[VEC];
      cvk::load_vec<T, VEC>(xr + c, v);
      if (MODE != 0) cvk::load_weights<T, VEC>(weight, c, wv);
      if (MODE == 2) cvk::load_vec<T, VEC>(pr + c, tv);
      cvk::ms_fold<VEC>(m, s, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (MODE == 1) b += wv[i];
        if (MODE == 2) b += (tv[i] * keep + smooth) * wv[i];
      }
    }
    cvk::ms_allreduce<BLOCK>(m, s, scratch);
    if (MODE != 0) b = cvk::sum_allreduce<BLOCK>(b, scratch);
    // Q = sum_c q: the target's share plus the smoothing share (0 on ignored rows)
    const float Q = MODE == 2 ? b : (valid ? keep * wt + (MODE == 1 ? smooth * b : 0.f) : 0.f);
    const float inv_s = 1.f / s, log_s = logf(s);
    for (i64 c = static_cast<i64>(g.lane) * VEC; c < cols; c += static_cast<i64>(g.size) * VEC) {
      float v[VEC], wv[VEC], tv[VEC], dx[VEC], dt[VEC];
      cvk::load_vec<T, VEC>(xr + c, v);
      if (MODE != 0) cvk::load_weights<T, VEC>(weight, c, wv);
      if (MODE == 2) cvk::load_vec<T, VEC>(pr + c, tv);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        float q;
        if (MODE == 2) {
          q = (tv[i] * keep + smooth) * wv[i];
          dt[i] = -keep * ge * wv[i] * ((v[i] - m) - log_s);
        } else {
          q = valid && c + i == t ? keep * wt : 0.f;
          if (MODE == 1 && valid) q += smooth * wv[i];
        }
        dx[i] = ge * (expf(v[i] - m) * inv_s * Q - q);
      }
      cvk::store_vec<T, VEC>(grad_in + row * cols + c, dx);
      if (MODE == 2 && grad_target) cvk::store_vec<T, VEC>(grad_target + row * cols + c, dt);
    }
  }
}

// Sums of per-row losses and weights: block b sums [b * chunk, (b + 1) * chunk) in a fixed
// order. With `out` null, block b writes part_loss[b], part_w[b]; otherwise (one block) it
// writes result = {sum loss, denominator} (denominator: sum of w, or `count` when w is null)
// and out[0] = the sum ('sum') or the sum / denominator ('mean', MEAN != 0).
template <class T>
__global__ void cross_entropy_reduce_kernel(const float* __restrict__ loss,
                                            const float* __restrict__ w,
                                            float* __restrict__ part_loss,
                                            float* __restrict__ part_w,
                                            float* __restrict__ result, T* __restrict__ out,
                                            long long n, long long chunk, float count,
                                            int mean) {
  using cvk::i64;
  __shared__ float scratch[32];
  const i64 lo = static_cast<i64>(blockIdx.x) * chunk;
  const i64 hi = lo + chunk < n ? lo + chunk : n;
  float sl = 0.f, sw = 0.f;
  for (i64 i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    if (loss) sl += loss[i];
    if (w) sw += w[i];
  }
  sl = cvk::block_allreduce(sl, cvk::SumOp(), scratch);
  sw = cvk::block_allreduce(sw, cvk::SumOp(), scratch);
  if (threadIdx.x != 0) return;
  if (result == nullptr) {
    if (part_loss) part_loss[blockIdx.x] = sl;
    if (part_w) part_w[blockIdx.x] = sw;
    return;
  }
  const float d = w ? sw : count;
  result[0] = sl;
  result[1] = d;
  if (out) out[0] = cvk::from_float<T>(mean ? sl / d : sl);
}

// nll_loss forward on [N, C, inner] log-probabilities: one thread per row r = n * inner + s.
// x null: only the weights (the mean's denominator for a backward).
template <class T>
__global__ void nll_loss_forward_kernel(const T* __restrict__ x,
                                        const long long* __restrict__ target,
                                        const T* __restrict__ weight,
                                        float* __restrict__ row_loss, float* __restrict__ row_w,
                                        T* __restrict__ out, unsigned* __restrict__ bad,
                                        long long rows, long long cols, long long inner,
                                        long long ignore_index) {
  using cvk::i64;
  const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
  for (i64 r = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += step) {
    const i64 t = target[r];
    float loss = 0.f, wt = 0.f;
    if (t != ignore_index) {
      if (t < 0 || t >= cols) {
        cvk::flag_bad_row(bad, r);
        loss = __int_as_float(0x7fffffff);
      } else {
        wt = weight ? cvk::to_float(weight[t]) : 1.f;
        if (x) {
          const i64 n = r / inner, sp = r - n * inner;
          loss = -(wt * cvk::to_float(x[(n * cols + t) * inner + sp]));
        }
      }
    }
    if (row_loss) row_loss[r] = loss;
    if (row_w) row_w[r] = wt;
    if (out) out[r] = cvk::from_float<T>(loss);
  }
}

// nll_loss backward: one thread per element of grad_in [N, C, inner].
template <class T>
__global__ void nll_loss_backward_kernel(const T* __restrict__ grad_out,
                                         const float* __restrict__ denom,
                                         const long long* __restrict__ target,
                                         const T* __restrict__ weight, T* __restrict__ grad_in,
                                         unsigned* __restrict__ bad, long long rows,
                                         long long cols, long long inner, long long gstride,
                                         long long ignore_index) {
  using cvk::i64;
  const i64 n_el = rows * cols, step = static_cast<i64>(gridDim.x) * blockDim.x;
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_el; i += step) {
    const i64 sp = i % inner, nc = i / inner, c = nc % cols, n = nc / cols;
    const i64 r = n * inner + sp, t = target[r];
    float v = 0.f;
    if (t != ignore_index) {
      if (t < 0 || t >= cols) {
        if (c == 0) cvk::flag_bad_row(bad, r);
        v = __int_as_float(0x7fffffff);
      } else if (c == t) {
        float ge = cvk::to_float(grad_out[r * gstride]);
        if (denom) ge = ge / *denom;
        v = -((weight ? cvk::to_float(weight[t]) : 1.f) * ge);
      }
    }
    grad_in[i] = cvk::from_float<T>(v);
  }
}
