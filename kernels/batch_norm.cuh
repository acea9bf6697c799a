// batch_norm: y = (x - mean[c]) * invstd[c] * w[c] + b[c] over [N, C, S] (S = H*W..., 1 for 2-D
//   input), with batch statistics (training) or running ones (eval); and batch_norm_act, the
//   same with the epilogue fused: relu(y) or relu(y + residual) (ResNet's block end).
//   Backward: dz = grad_out masked by output > 0 (act), grad_residual = dz,
//   grad_input = w*invstd * (dz - sum(dz)/M - xhat * sum(dz*xhat)/M) (training; eval: w*invstd*dz),
//   grad_weight = sum(dz * xhat), grad_bias = sum(dz), sums over the M = N*S elements of a channel.
// Tensors: x, y, residual, grad_out, grad_input, grad_residual [N, C, S] of T = float, __half or
//   __nv_bfloat16, contiguous. weight, bias, running_mean/var, save_mean/invstd, grad_weight,
//   grad_bias: float [C] (the Python layer converts weight/bias, and running stats in other
//   dtypes, to fp32). partial: float workspace [C][chunks][3] (stats) or [C][chunks][2] (sums).
// Work split: grid (C, chunks); block (c, k) owns elements [k*chunk, (k+1)*chunk) of channel c's
//   M (index j = n*S + s), walking them VEC at a time (16-byte loads when S % VEC == 0 and the
//   pointers are aligned, VEC16) with an incremental (n, s) so no 64-bit division in the loop,
//   UNROLL (UNROLL_BWD) vector loads per array in flight per thread.
//   training forward = 2 launches: batch_norm_stats_kernel writes one Welford triple
//   (count, mean, M2) per block; batch_norm_forward_kernel's blocks each merge their channel's
//   triples (warp 0, fixed order: every block of a channel gets the same bits), block k=0 writes
//   save_mean/save_invstd and updates the running statistics, then all normalise (+epilogue).
//   eval forward = 1 launch (partial == nullptr: running statistics).
//   backward = 2 launches: batch_norm_backward_reduce_kernel writes (sum dz, sum dz*(x-mean))
//   per block; batch_norm_backward_kernel merges them per channel (fixed order), block k=0 writes
//   grad_weight/grad_bias, all write grad_input (and grad_residual). Two passes over the data.
// Numerics: fp32 (acc_t) throughout, outputs rounded once to T. Mean and variance by Welford
//   (per thread, one merge per VEC-vector; Chan's merge across lanes, warps and blocks), so a
//   channel with mean 1e4 and unit variance keeps its variance (E[x^2] - E[x]^2 would lose it
//   all). y = fma(x - mean, invstd*w, b). running = (1-f)*running + f*stat with the unbiased
//   variance M2/(M-1) and f = momentum or 1/num_batches_tracked (computed by the caller).
//   No atomics, fixed reduction orders: bitwise deterministic for a given plan.
// Napkin math (32x256x56x56 fp32, 25.7 M elements = 102.8 MB a tensor; H200 copy rate
//   ~4.2 TB/s): training forward reads x twice and writes y = 308 MB, 73 us; backward reads
//   grad_out and x twice and writes grad_input = 514 MB, 122 us; fwd+bwd floor 0.196 ms (torch
//   0.326 ms on the H200: the bar 1.0x needs >= 60% of the copy rate). The tensors are twice the
//   L2, so the second reads come from HBM. FLOPs (~10 a element) are irrelevant.
//   Grid for that shape on 132 SMs: C=256 x 5 chunks = 1280 blocks of 256 threads.
// ptxas -v (sm_90, nvcc 13.0), registers for T = float / __half / __nv_bfloat16 with VEC16
//   (scalar path in brackets, fp32), 0 spills and 0 stack everywhere:
//   stats 48/44/55 (38); forward EPI 0,1: 48/54/69 (40), EPI 2: 66/71/95 (48);
//   backward_reduce 38/39/54 (32), RELU: 44/52/72 (32); backward EPI 0: 46/52/64 (32),
//   EPI 1,2: 56/61/82 (42). At 256 threads, fp32's 48 registers allow 5 blocks (1280 threads)
//   a SM. PTX: 16-byte loads (ld.global.v4) UNROLL deep in every VEC16 loop.
// Unmeasured on a GPU (none was lent to this change).
#pragma once
#include "cvk/common.cuh"
#include "cvk/vec.cuh"

namespace cvk {
namespace bn {

// Vector loads in flight per thread per array: 4 for the one- and two-input passes, 2 for the
// backward's three inputs (keeps the registers, hence the occupancy, up).
constexpr int UNROLL = 4, UNROLL_BWD = 2;

// VEC consecutive elements, kept packed in T until used (few registers for fp16/bf16).
template <class T, int VEC>
struct Pack {
  T v[VEC];
};

template <class T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  Pack<T, VEC> r;
  if constexpr (VEC == Packed128<T>::size) {
    const Packed128<T> q = load128(p);
#pragma unroll
    for (int i = 0; i < VEC; ++i) r.v[i] = q[i];
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) r.v[i] = p[i];
  }
  return r;
}

// This thread's walk over block (c, k)'s chunk of channel c: element j of the channel is
// (n, s) = (j / S, j % S), at offset (n*C + c)*S + s. VEC divides S and the chunk, so a vector
// never crosses a row.
struct Walk {
  i64 j, end, step, n, s, qs, rs, C, S, c;
  __device__ __forceinline__ Walk(i64 C_, i64 S_, i64 count, i64 chunk, int vec)
      : C(C_), S(S_), c(blockIdx.x) {
    const i64 begin = static_cast<i64>(blockIdx.y) * chunk;
    end = begin + chunk < count ? begin + chunk : count;
    j = begin + static_cast<i64>(threadIdx.x) * vec;
    step = static_cast<i64>(blockDim.x) * vec;
    n = j / S;
    s = j - n * S;
    qs = step / S;
    rs = step - qs * S;
  }
  __device__ __forceinline__ bool more() const { return j < end; }
  __device__ __forceinline__ i64 offset() const { return (n * C + c) * S + s; }
  __device__ __forceinline__ void next() {
    j += step;
    n += qs;
    s += rs;
    if (s >= S) {
      s -= S;
      ++n;
    }
  }
  // The next N offsets of this thread (ok[u]: within the chunk).
  template <int N>
  __device__ __forceinline__ void take(i64 (&off)[N], bool (&ok)[N]) {
#pragma unroll
    for (int u = 0; u < N; ++u) {
      ok[u] = more();
      off[u] = offset();
      next();
    }
  }
};

struct Welford {
  float n, mean, m2;
};

// Chan et al.'s merge; not commutative bitwise, so callers merge in a fixed order.
__device__ __forceinline__ Welford merge(Welford a, Welford b) {
  if (b.n == 0.f) return a;
  if (a.n == 0.f) return b;
  const float n = a.n + b.n, d = b.mean - a.mean, r = b.n / n;
  return {n, a.mean + d * r, a.m2 + b.m2 + d * d * a.n * r};
}

// Lane 0 ends with the merge of the warp's 32 values, in a fixed tree order.
__device__ __forceinline__ Welford warp_merge(Welford w) {
  for (int off = 16; off > 0; off >>= 1) {
    Welford o;
    o.n = __shfl_down_sync(FULL_MASK, w.n, off);
    o.mean = __shfl_down_sync(FULL_MASK, w.mean, off);
    o.m2 = __shfl_down_sync(FULL_MASK, w.m2, off);
    w = merge(w, o);
  }
  return w;
}

__device__ __forceinline__ float warp_sum(float v) {  // lane 0: the fixed-order tree sum
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(FULL_MASK, v, off);
  return v;
}

// Mean and invstd of channel blockIdx.x for every thread of the block: merged from the
// chunks' Welford triples (training) or from the running statistics (eval: partial null).
// Block k = 0 saves them and updates the running statistics.
__device__ __forceinline__ void channel_stats(const float* partial, float* running_mean,
                                              float* running_var, float* save_mean,
                                              float* save_invstd, i64 count, float factor,
                                              float eps, float& mean, float& invstd) {
  __shared__ float st[2];
  const i64 c = blockIdx.x;
  if (threadIdx.x < 32) {
    float m, is;
    if (partial != nullptr) {
      const int chunks = gridDim.y;
      Welford w{0.f, 0.f, 0.f};
      for (int k = threadIdx.x; k < chunks; k += 32) {
        const float* p = partial + (c * chunks + k) * 3;
        w = merge(w, Welford{p[0], p[1], p[2]});
      }
      w = warp_merge(w);
      m = w.mean;
      is = 1.f / sqrtf(w.m2 / static_cast<float>(count) + eps);
      if (threadIdx.x == 0 && blockIdx.y == 0 && running_mean != nullptr) {
        const float unbiased = w.m2 / static_cast<float>(count - 1);
        running_mean[c] = (1.f - factor) * running_mean[c] + factor * m;
        running_var[c] = (1.f - factor) * running_var[c] + factor * unbiased;
      }
    } else {
      m = running_mean[c];
      is = 1.f / sqrtf(running_var[c] + eps);
    }
    if (threadIdx.x == 0) {
      st[0] = m;
      st[1] = is;
      if (blockIdx.y == 0) {
        save_mean[c] = m;
        save_invstd[c] = is;
      }
    }
  }
  __syncthreads();
  mean = st[0];
  invstd = st[1];
}

__device__ __forceinline__ float relu(float v) { return v > 0.f || v != v ? v : 0.f; }

// The backward passes' loads: grad_out, x (when LOAD_X) and y (when Y) at the UNROLL_BWD
// offsets; entries outside the chunk are zero ({}: also keeps g++'s maybe-uninitialized quiet).
template <class T, int VEC, bool Y>
__device__ __forceinline__ void load_bwd(const T* grad_out, const T* x, const T* y, bool load_x,
                                         const i64 (&off)[UNROLL_BWD],
                                         const bool (&ok)[UNROLL_BWD],
                                         Pack<T, VEC> (&g)[UNROLL_BWD],
                                         Pack<T, VEC> (&xv)[UNROLL_BWD],
                                         Pack<T, VEC> (&yv)[UNROLL_BWD]) {
#pragma unroll
  for (int u = 0; u < UNROLL_BWD; ++u) {
    g[u] = xv[u] = yv[u] = Pack<T, VEC>{};
    if (!ok[u]) continue;
    g[u] = load_pack<T, VEC>(grad_out + off[u]);
    if (load_x) xv[u] = load_pack<T, VEC>(x + off[u]);
    if (Y) yv[u] = load_pack<T, VEC>(y + off[u]);
  }
}

}  // namespace bn
}  // namespace cvk

// One Welford triple (count, mean, M2) per block: partial[(c*chunks + k)*3 + {0,1,2}].
template <class T, bool VEC16>
__global__ void batch_norm_stats_kernel(const T* __restrict__ x, float* __restrict__ partial,
                                        long long C, long long S, long long count,
                                        long long chunk) {
  using namespace cvk;
  using namespace cvk::bn;
  constexpr int VEC = VEC16 ? Packed128<T>::size : 1;
  __shared__ float scratch[3][32];
  Welford w{0.f, 0.f, 0.f};
  for (Walk walk(C, S, count, chunk, VEC); walk.more();) {
    i64 off[UNROLL];
    bool ok[UNROLL];
    walk.take(off, ok);
    Pack<T, VEC> p[UNROLL] = {};
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
      if (ok[u]) p[u] = load_pack<T, VEC>(x + off[u]);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      if (!ok[u]) continue;
      float v[VEC], sum = 0.f;
#pragma unroll
      for (int i = 0; i < VEC; ++i) sum += (v[i] = to_float(p[u].v[i]));
      const float m = sum * (1.f / VEC);
      float m2 = 0.f;
#pragma unroll
      for (int i = 0; i < VEC; ++i) m2 += (v[i] - m) * (v[i] - m);
      w = merge(w, Welford{static_cast<float>(VEC), m, m2});
    }
  }
  w = warp_merge(w);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    scratch[0][warp] = w.n;
    scratch[1][warp] = w.mean;
    scratch[2][warp] = w.m2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Welford r{0.f, 0.f, 0.f};
    for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i)
      r = merge(r, Welford{scratch[0][i], scratch[1][i], scratch[2][i]});
    float* p = partial + (static_cast<i64>(blockIdx.x) * gridDim.y + blockIdx.y) * 3;
    p[0] = r.n;
    p[1] = r.mean;
    p[2] = r.m2;
  }
}

// EPI 0: y = bn(x); 1: relu(bn(x)); 2: relu(bn(x) + residual).
template <class T, bool VEC16, int EPI>
__global__ void batch_norm_forward_kernel(
    const T* __restrict__ x, const T* __restrict__ residual, const float* __restrict__ weight,
    const float* __restrict__ bias, const float* __restrict__ partial,
    float* __restrict__ running_mean, float* __restrict__ running_var,
    float* __restrict__ save_mean, float* __restrict__ save_invstd, T* __restrict__ y,
    long long C, long long S, long long count, long long chunk, float factor, float eps) {
  using namespace cvk;
  using namespace cvk::bn;
  constexpr int VEC = VEC16 ? Packed128<T>::size : 1;
  float mean, invstd;
  channel_stats(partial, running_mean, running_var, save_mean, save_invstd, count, factor, eps,
                mean, invstd);
  const i64 c = blockIdx.x;
  const float scale = weight != nullptr ? invstd * weight[c] : invstd;
  const float shift = bias != nullptr ? bias[c] : 0.f;
  for (Walk walk(C, S, count, chunk, VEC); walk.more();) {
    i64 off[UNROLL];
    bool ok[UNROLL];
    walk.take(off, ok);
    Pack<T, VEC> p[UNROLL] = {}, r[UNROLL] = {};
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      if (!ok[u]) continue;
      p[u] = load_pack<T, VEC>(x + off[u]);
      if (EPI == 2) r[u] = load_pack<T, VEC>(residual + off[u]);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      if (!ok[u]) continue;
      float v[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        v[i] = fmaf(to_float(p[u].v[i]) - mean, scale, shift);
        if (EPI == 2) v[i] += to_float(r[u].v[i]);
        if (EPI >= 1) v[i] = relu(v[i]);
      }
      store_vec<T, VEC>(y + off[u], v);
    }
  }
}

// Per block: (sum dz, sum dz*(x - mean)) -> partial[(c*chunks + k)*2 + {0,1}]; dz = grad_out,
// masked by y > 0 when RELU.
template <class T, bool VEC16, bool RELU>
__global__ void batch_norm_backward_reduce_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ x, const T* __restrict__ y,
    const float* __restrict__ mean, float* __restrict__ partial, long long C, long long S,
    long long count, long long chunk) {
  using namespace cvk;
  using namespace cvk::bn;
  constexpr int VEC = VEC16 ? Packed128<T>::size : 1;
  __shared__ float scratch[2][32];
  const float m = mean[blockIdx.x];
  float sg = 0.f, sgx = 0.f;
  for (Walk walk(C, S, count, chunk, VEC); walk.more();) {
    i64 off[UNROLL_BWD];
    bool ok[UNROLL_BWD];
    walk.take(off, ok);
    Pack<T, VEC> g[UNROLL_BWD], xv[UNROLL_BWD], yv[UNROLL_BWD];
    load_bwd<T, VEC, RELU>(grad_out, x, y, true, off, ok, g, xv, yv);
#pragma unroll
    for (int u = 0; u < UNROLL_BWD; ++u) {
      if (!ok[u]) continue;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        float dz = to_float(g[u].v[i]);
        if (RELU && !(to_float(yv[u].v[i]) > 0.f)) dz = 0.f;
        sg += dz;
        sgx = fmaf(dz, to_float(xv[u].v[i]) - m, sgx);
      }
    }
  }
  sg = warp_sum(sg);
  sgx = warp_sum(sgx);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    scratch[0][warp] = sg;
    scratch[1][warp] = sgx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = 0.f, b = 0.f;
    for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) {
      a += scratch[0][i];
      b += scratch[1][i];
    }
    float* p = partial + (static_cast<i64>(blockIdx.x) * gridDim.y + blockIdx.y) * 2;
    p[0] = a;
    p[1] = b;
  }
}

// EPI 0: plain; 1: dz masked by y > 0; 2: also grad_residual = dz. partial null: no sums (eval
// without weight and bias). training != 0: the gradient flows through the batch statistics.
template <class T, bool VEC16, int EPI>
__global__ void batch_norm_backward_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ x, const T* __restrict__ y,
    const float* __restrict__ weight, const float* __restrict__ mean,
    const float* __restrict__ invstd, const float* __restrict__ partial,
    float* __restrict__ grad_weight, float* __restrict__ grad_bias, T* __restrict__ grad_input,
    T* __restrict__ grad_residual, long long C, long long S, long long count, long long chunk,
    long long rchunks, int training) {
  using namespace cvk;
  using namespace cvk::bn;
  constexpr int VEC = VEC16 ? Packed128<T>::size : 1;
  __shared__ float st[2];
  const i64 c = blockIdx.x;
  if (threadIdx.x < 32) {
    float sg = 0.f, sgx = 0.f;
    if (partial != nullptr) {  // the reduce kernel's rchunks blocks of this channel, fixed order
      for (i64 k = threadIdx.x; k < rchunks; k += 32) {
        sg += partial[(c * rchunks + k) * 2];
        sgx += partial[(c * rchunks + k) * 2 + 1];
      }
      sg = warp_sum(sg);
      sgx = warp_sum(sgx);
    }
    if (threadIdx.x == 0) {
      st[0] = sg;
      st[1] = sgx;
      if (blockIdx.y == 0) {
        if (grad_weight != nullptr) grad_weight[c] = sgx * invstd[c];
        if (grad_bias != nullptr) grad_bias[c] = sg;
      }
    }
  }
  __syncthreads();
  const float m = mean[c], is = invstd[c];
  const float k1 = (weight != nullptr ? weight[c] : 1.f) * is;
  const float inv_count = 1.f / static_cast<float>(count);
  const float k3 = training ? -k1 * st[0] * inv_count : 0.f;
  const float k2 = training ? -k1 * is * is * st[1] * inv_count : 0.f;
  for (Walk walk(C, S, count, chunk, VEC); walk.more();) {
    i64 off[UNROLL_BWD];
    bool ok[UNROLL_BWD];
    walk.take(off, ok);
    Pack<T, VEC> g[UNROLL_BWD], xv[UNROLL_BWD], yv[UNROLL_BWD];
    load_bwd<T, VEC, (EPI >= 1)>(grad_out, x, y, training != 0, off, ok, g, xv, yv);
#pragma unroll
    for (int u = 0; u < UNROLL_BWD; ++u) {
      if (!ok[u]) continue;
      float dx[VEC], dz[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        dz[i] = to_float(g[u].v[i]);
        if (EPI >= 1 && !(to_float(yv[u].v[i]) > 0.f)) dz[i] = 0.f;
        const float xc = training ? to_float(xv[u].v[i]) - m : 0.f;
        dx[i] = fmaf(k2, xc, fmaf(k1, dz[i], k3));
      }
      store_vec<T, VEC>(grad_input + off[u], dx);
      if (EPI == 2) store_vec<T, VEC>(grad_residual + off[u], dz);
    }
  }
}
