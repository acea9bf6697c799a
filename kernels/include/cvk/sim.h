// cvk/sim.h: a CPU simulator of the CUDA execution model, for running kernels without a GPU.
//
// Model. A launch of grid G and block B starts prod(B) host threads, one per CUDA thread.
// They run the blocks of G one after another: every host thread plays the same threadIdx in
// each block, and a barrier over all of them separates consecutive blocks. Within a block:
//   - __syncthreads() is a barrier over the block's threads that have not returned;
//   - warp intrinsics (shuffles, votes, __syncwarp) meet at a barrier of the lanes their mask
//     names (those still running), and exchange values through per-warp slots; lanes outside
//     the mask may be elsewhere, as on Volta and later;
//   - static __shared__ variables are function-local statics (one copy, reused by each block in
//     turn), and dynamic shared memory is one heap buffer of exactly the launch's size;
//   - atomics are std::atomic_ref with relaxed order, as CUDA's atomics are.
// Barriers synchronise through atomics and sleep in raw futex calls, so ThreadSanitizer sees
// the happens-before edges a CUDA program has and no others: a missing __syncthreads is
// reported as a data race, and with AddressSanitizer an out-of-bounds store is reported as a
// buffer overflow. (Linux only: the simulator uses futex.)
//
// What it does not model fails to compile: cooperative groups, inline PTX (`asm` is poisoned),
// texture and surface objects and the intrinsics sim.h does not declare. Misuse it can detect
// at run time (a lane calling a warp intrinsic whose mask leaves it out, dynamic shared memory
// with none launched) raises an exception that the launch reports as an error.
#pragma once
#ifndef CVK_SIM
#error "cvk/sim.h is the CPU simulator; include cvk/common.cuh instead"
#endif

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <bit>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// ---- keywords -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
#define __constant__ static const
#define CVK_EXTERN_SHARED(T, name) T* name = reinterpret_cast<T*>(::cvk::sim::dynamic_smem())

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

struct cudaDeviceProp;  // declared only: host code must not query a device under the simulator

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace cvk::sim {

struct UsageError : std::logic_error {
  explicit UsageError(const std::string& what) : std::logic_error("cvk sim: " + what) {}
};

// A barrier whose participant count shrinks as threads return from the kernel, the way exited
// CUDA threads stop counting towards __syncthreads.
//
// It synchronises through atomics only (acquire/release on one state word and one generation
// counter) and sleeps in raw futex calls, which ThreadSanitizer does not see. A mutex would add
// happens-before edges CUDA does not have: a thread woken late from barrier k re-locks the
// mutex after a faster thread locked it on its way into barrier k+1, which orders the fast
// thread's writes before the slow thread's reads and hides exactly the races we look for.
class Barrier {
 public:
  void reset(int n) {  // only while no thread is inside the barrier
    state_.store(pack(n, 0), std::memory_order_relaxed);
  }
  void wait() {
    const unsigned gen = gen_.load(std::memory_order_acquire);
    unsigned long long s = state_.load(std::memory_order_relaxed);
    for (;;) {
      const unsigned e = expected(s), a = arrived(s) + 1;
      if (a == e) {
        if (state_.compare_exchange_weak(s, pack(e, 0), std::memory_order_acq_rel)) {
          release();
          return;
        }
      } else if (state_.compare_exchange_weak(s, pack(e, a), std::memory_order_acq_rel)) {
        break;
      }
    }
    while (gen_.load(std::memory_order_acquire) == gen) futex_wait(gen);
  }
  void retire() {
    unsigned long long s = state_.load(std::memory_order_relaxed);
    for (;;) {
      const unsigned e = expected(s) - 1, a = arrived(s);
      const bool completes = a > 0 && a == e;
      if (state_.compare_exchange_weak(s, pack(e, completes ? 0 : a),
                                       std::memory_order_acq_rel)) {
        if (completes) release();
        return;
      }
    }
  }

 private:
  static unsigned long long pack(unsigned e, unsigned a) {
    return (static_cast<unsigned long long>(e) << 32) | a;
  }
  static unsigned expected(unsigned long long s) { return static_cast<unsigned>(s >> 32); }
  static unsigned arrived(unsigned long long s) { return static_cast<unsigned>(s); }
  void release() {
    gen_.fetch_add(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<unsigned*>(&gen_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
  }
  void futex_wait(unsigned gen) {
    syscall(SYS_futex, reinterpret_cast<unsigned*>(&gen_), FUTEX_WAIT_PRIVATE, gen, nullptr,
            nullptr, 0);
  }
  std::atomic<unsigned long long> state_{0};  // expected << 32 | arrived
  std::atomic<unsigned> gen_{0};
  static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned), "futex needs a plain word");
};

// Per-warp state. The mutex guards the barrier table; lanes take it only inside warp
// intrinsics, and at exit only once some lane has used one. (So lanes of one warp that call
// intrinsics are ordered by that mutex as well: a missing __syncwarp between them can go
// unreported. Barriers between warps and blocks add no such edges.)
struct WarpBarrier {
  unsigned members;  // the lanes counted in: the mask's lanes running when it was created
  Barrier bar;
};
struct Warp {
  std::mutex m;
  std::atomic<unsigned> alive_mask{0};  // lanes still running the kernel
  std::atomic<bool> used{false};        // some lane has created a warp barrier
  std::map<unsigned, std::unique_ptr<WarpBarrier>> bars;  // by participant mask; guarded by m
  unsigned long long slot[32] = {};
  int pred[32] = {};
};

struct Block {
  Barrier bar;
  std::vector<std::unique_ptr<Warp>> warps;
  unsigned char* dyn_smem = nullptr;
};

struct ThreadState {
  Block* block = nullptr;
  Warp* warp = nullptr;
  int lane = 0;
};
inline thread_local ThreadState tls;

inline void* dynamic_smem() {
  if (!tls.block || !tls.block->dyn_smem)
    throw UsageError("dynamic shared memory used but 0 bytes launched");
  return tls.block->dyn_smem;
}

// The barrier of the lanes `mask` names that are still running; created by the first of them
// to arrive. Lanes that return later retire from it (see launch), as exited lanes do in CUDA.
inline Barrier& warp_barrier(unsigned mask) {
  Warp& w = *tls.warp;
  std::lock_guard<std::mutex> g(w.m);
  if (!((mask >> tls.lane) & 1u))
    throw UsageError("lane " + std::to_string(tls.lane) + " called a warp intrinsic whose mask " +
                     "does not include it");
  auto& wb = w.bars[mask];
  if (!wb) {
    // Relaxed operations with seq_cst fences, here and at lane exit (see launch): the fences
    // give the store-buffering guarantee, and relaxed accesses add no happens-before edges
    // that could hide a race from ThreadSanitizer.
    w.used.store(true, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    wb.reset(new WarpBarrier);
    wb->members = mask & w.alive_mask.load(std::memory_order_relaxed);
    wb->bar.reset(std::popcount(wb->members));
  }
  return wb->bar;
}

template <class T>
T warp_exchange(unsigned mask, T v, int src_lane) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of >8-byte type");
  Barrier& bar = warp_barrier(mask);
  Warp& w = *tls.warp;
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  w.slot[tls.lane] = bits;
  bar.wait();
  unsigned long long got = w.slot[src_lane];  // a lane outside the mask: its last value
  bar.wait();  // nobody overwrites a slot before every lane has read
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

inline unsigned warp_vote(unsigned mask, int pred) {
  Barrier& bar = warp_barrier(mask);
  Warp& w = *tls.warp;
  w.pred[tls.lane] = pred != 0;
  bar.wait();
  const unsigned alive = w.alive_mask.load(std::memory_order_relaxed);
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (((mask & alive) >> l & 1u) && w.pred[l]) ballot |= 1u << l;
  bar.wait();
  return ballot;
}

inline int lane_in_width(int width) { return tls.lane & ~(width - 1); }

// Launch configuration errors are reported like cudaErrorInvalidConfiguration.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::mutex& launch_mutex() {
  static std::mutex m;  // static __shared__ storage is per kernel, so launches are serialised
  return m;
}

// Run `body()` as the kernel of a launch <<<grid, block, smem_bytes>>>.
inline void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
  const unsigned long long nblocks = 1ull * grid.x * grid.y * grid.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64)
    throw LaunchError("invalid block dimensions (1..1024 threads, z <= 64)");
  if (grid.y > 65535 || grid.z > 65535 || nblocks == 0)
    throw LaunchError("invalid grid dimensions");
  if (smem_bytes > 227 * 1024) throw LaunchError("dynamic shared memory above 227 KiB");

  std::lock_guard<std::mutex> serial(launch_mutex());
  Block blk;
  const int nwarps = static_cast<int>((nthreads + 31) / 32);
  for (int w = 0; w < nwarps; ++w) blk.warps.emplace_back(new Warp);
  std::unique_ptr<unsigned char[]> smem(smem_bytes ? new unsigned char[smem_bytes] : nullptr);
  blk.dyn_smem = smem.get();

  auto reset_block = [&] {
    blk.bar.reset(static_cast<int>(nthreads));
    for (int w = 0; w < nwarps; ++w) {
      int lanes = static_cast<int>(std::min<unsigned long long>(32, nthreads - 32ull * w));
      blk.warps[w]->bars.clear();
      blk.warps[w]->used.store(false, std::memory_order_relaxed);
      blk.warps[w]->alive_mask.store(lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1),
                                     std::memory_order_relaxed);
    }
  };
  Barrier between;  // separates consecutive blocks; never shrinks
  between.reset(static_cast<int>(nthreads));
  std::mutex err_m;
  std::exception_ptr err;

  auto worker = [&](unsigned tid) {
    threadIdx = dim3(tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y));
    blockDim = block;
    gridDim = grid;
    tls.block = &blk;
    tls.warp = blk.warps[tid / 32].get();
    tls.lane = static_cast<int>(tid % 32);
    for (unsigned long long b = 0; b < nblocks; ++b) {
      if (tid == 0) reset_block();
      between.wait();
      blockIdx = dim3(static_cast<unsigned>(b % grid.x),
                      static_cast<unsigned>((b / grid.x) % grid.y),
                      static_cast<unsigned>(b / (1ull * grid.x * grid.y)));
      try {
        body();
      } catch (...) {
        std::lock_guard<std::mutex> g(err_m);
        if (!err) err = std::current_exception();
      }
      // Leave the warp. The fences pair with warp_barrier's: either a barrier's creator saw
      // this lane gone, or this lane sees `used` and retires from the barriers it counts in.
      Warp& w = *tls.warp;
      const unsigned bit = 1u << tls.lane;
      w.alive_mask.fetch_and(~bit, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (w.used.load(std::memory_order_relaxed)) {
        std::lock_guard<std::mutex> g(w.m);
        for (auto& [mask, wb] : w.bars)
          if (wb->members & bit) wb->bar.retire();
      }
      blk.bar.retire();
      between.wait();
    }
    tls = ThreadState{};
  };

  std::vector<std::thread> threads;
  threads.reserve(nthreads);
  for (unsigned t = 0; t < nthreads; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace cvk::sim

// ---- synchronisation and warp intrinsics ------------------------------------------------------
inline void __syncthreads() { ::cvk::sim::tls.block->bar.wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cvk::sim::warp_barrier(mask).wait(); }
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::cvk::sim::warp_exchange(mask, v, ::cvk::sim::lane_in_width(width) + (src & (width - 1)));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  int lane = ::cvk::sim::tls.lane, src = lane ^ lane_mask;
  if (src >= ::cvk::sim::lane_in_width(width) + width) src = lane;
  return ::cvk::sim::warp_exchange(mask, v, src);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = ::cvk::sim::tls.lane, src = lane + static_cast<int>(delta);
  if (src >= ::cvk::sim::lane_in_width(width) + width) src = lane;
  return ::cvk::sim::warp_exchange(mask, v, src);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = ::cvk::sim::tls.lane, src = lane - static_cast<int>(delta);
  if (src < ::cvk::sim::lane_in_width(width)) src = lane;
  return ::cvk::sim::warp_exchange(mask, v, src);
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::cvk::sim::warp_vote(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return ::cvk::sim::warp_vote(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return ::cvk::sim::warp_vote(mask, !pred) == 0; }
// Inline PTX cannot run here: wrap it in a cvk/ helper with a simulator implementation.
#define asm CVK_SIM_CANNOT_RUN_INLINE_PTX

// ---- atomics (relaxed, as on the GPU); the float max/min/CAS overloads are in common.cuh --------------------------------------------------------
template <class T>
inline T __cvk_atomic_add(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed);
}
inline float atomicAdd(float* p, float v) { return __cvk_atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return __cvk_atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return __cvk_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __cvk_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __cvk_atomic_add(p, v);
}
template <class T, class F>
inline T __cvk_atomic_update(T* p, F f) {
  std::atomic_ref<T> a(*p);
  T old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
  }
  return old;
}
template <class T>
inline T __cvk_max(T a, T b) { return a < b ? b : a; }
template <class T>
inline T __cvk_min(T a, T b) { return b < a ? b : a; }
inline int atomicMax(int* p, int v) { return __cvk_atomic_update(p, [v](int o) { return __cvk_max(o, v); }); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return __cvk_atomic_update(p, [v](unsigned o) { return __cvk_max(o, v); }); }
inline int atomicMin(int* p, int v) { return __cvk_atomic_update(p, [v](int o) { return __cvk_min(o, v); }); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return __cvk_atomic_update(p, [v](unsigned o) { return __cvk_min(o, v); }); }
template <class T>
inline T __cvk_atomic_cas(T* p, T compare, T val) {
  std::atomic_ref<T>(*p).compare_exchange_strong(compare, val, std::memory_order_relaxed);
  return compare;  // holds the old value either way
}
inline int atomicCAS(int* p, int c, int v) { return __cvk_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned* p, unsigned c, unsigned v) { return __cvk_atomic_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long c, unsigned long long v) {
  return __cvk_atomic_cas(p, c, v);
}
inline int atomicExch(int* p, int v) { return std::atomic_ref<int>(*p).exchange(v, std::memory_order_relaxed); }
inline float atomicExch(float* p, float v) { return std::atomic_ref<float>(*p).exchange(v, std::memory_order_relaxed); }

// ---- loads and math intrinsics ---------------------------------------------------------------
template <class T>
inline T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
using std::isnan;
using std::isinf;

// ---- GPU-only features: what emulating them would need (wgmma, TMA, clusters) ------------------
// (Issue 7, part 4.) Kernels using these are declared GPU-only in their spec and tests until the
// simulator learns them. What mma.sync/ldmatrix/cp.async needed (cvk/mma.cuh, cvk/cp_async.cuh:
// warp_gather, thread_storage, deferred copies with poison + ASan poisoning) is the template.
//
// wgmma.mma_async (sm_90a; PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate
// Instructions"):
//   - a warpgroup collective (4 consecutive warps, 128 threads): needs a gather over 128 threads
//     of one block, i.e. a group barrier + exchange like warp_gather but spanning warps (a named
//     barrier over the warpgroup), with the same "every member alive" check;
//   - shared-memory operands through 64-bit matrix descriptors: decode start address, leading-
//     and stride-byte offsets, base offset and the swizzle mode (none, 32B, 64B, 128B: XOR of
//     address bits [4:6] with [7:9] at 128B), for K-major and MN-major layouts of 8x8 "core
//     matrices" ("Shared Memory Matrix Layout"); a model of those tables in tests/ like
//     tests/mma_layouts.py, and checks that descriptors stay inside the block's shared memory;
//   - the m64nNk16 (N = 8..256) register fragment layouts for A-from-registers and for D;
//   - asynchrony: wgmma.fence / commit_group / wait_group N. Defer the accumulator update to the
//     wait that covers it (per-thread pending list, as cp.async does), write NaN into the
//     accumulator registers meanwhile (they are memory in the simulator, so the ASan build can
//     poison them too), and report a read of A/B shared memory that was written without the
//     required fence.proxy.async / wgmma.fence as a usage error (needs per-block write tracking);
//   - numerics as mma.sync: exact products, fp32 accumulation in a documented order; tf32
//     truncates the low 13 bits (stated for wgmma in the ISA).
//
// TMA, cp.async.bulk.tensor (sm_90; "Tensor Memory Accelerator", "cp.async.bulk.tensor"):
//   - a host-side encoder with the fields of cuTensorMapEncodeTiled (global address, rank <= 5,
//     dims, byte strides, box dims, element strides, interleave, swizzle, OOB fill zero/NaN)
//     producing a simulator descriptor, and a 128-byte by-value (__grid_constant__) kernel
//     argument kind in the registry / generic launch to pass it;
//   - mbarrier emulation in shared memory: init(count), arrive, arrive.expect_tx(bytes),
//     complete_tx, try_wait.parity with phase flipping; waiting lanes block like a barrier (a
//     fiber switch), with TSan acquire/release edges exactly at phase completion;
//   - the copy: gather the box with out-of-bounds fill and the swizzle into shared memory,
//     deferred until it completes the mbarrier's transaction count (poison + ASan poisoning of
//     the destination until then, as for cp.async); bulk stores (shared -> global) and
//     cp.async.bulk.commit_group / wait_group[.read] for them; fence.proxy.async ordering of
//     generic-proxy shared-memory writes before a TMA store reads them (checked, not assumed);
//   - multicast (.multicast::cluster) needs clusters.
//
// Thread-block clusters and distributed shared memory (sm_90; "Cluster of Cooperative Thread
// Arrays", mapa, barrier.cluster):
//   - launch: cluster dims (launch attribute or __cluster_dims__), validation (grid divisible by
//     the cluster, at most 8 blocks portable / 16 non-portable) as the driver refuses;
//   - co-scheduling: all blocks of a cluster alive at once (their fibers interleaved), with
//     %cluster_ctarank / %clusterid / %cluster_nctaid and cooperative_groups::this_cluster()
//     (the simulator has no cooperative groups today);
//   - barrier.cluster.arrive / wait (.relaxed variants without ordering) across the blocks;
//   - DSMEM: mapa / map_shared_rank(ptr, rank) translating an address in this block's shared
//     memory to the same offset in another block's, with bounds checks; accesses after that block
//     exited are errors (the GPU requires a cluster barrier before exit);
//   - TSan sees cluster barriers as the only edges between the blocks' shared-memory accesses.
