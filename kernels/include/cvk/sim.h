// cvk/sim.h: a CPU simulator of the CUDA execution model, for running kernels without a GPU.
//
// Two execution models, chosen at compile time (CVK_SIM_MODEL = CVK_SIM_FIBERS or
// CVK_SIM_THREADS); the AddressSanitizer build defaults to threads, every other build (the
// ThreadSanitizer build included) to fibers. Both run the same kernel tests in CI.
//
// Fibers (cvk/sim/fibers.h, the fast default). A persistent pool of OS worker threads, one per
// core (CVK_SIM_WORKERS overrides), is reused across launches; the launching thread is one of
// them. Workers take blocks from a shared counter, so blocks run in parallel across cores. A
// block runs entirely on one worker: each CUDA thread is a user-space fiber (a pooled 256 KiB
// mmap'd stack below a guard page; a hand-written x86-64 context switch, ucontext elsewhere),
// and a worker's scheduler runs the block's ready fibers round-robin. __syncthreads and warp
// barriers are fiber switches: a fiber that must wait yields to the scheduler; the last one in
// marks the waiters ready. A block whose fibers all wait is a deadlock and an error of the launch.
// Under ThreadSanitizer each fiber is a TSan fiber switched to without synchronisation; a
// barrier's arrivals release, and its departures acquire, a sync object of its generation, so
// TSan sees CUDA's happens-before edges and no others (see fibers.h).
//
// Threads (cvk/sim/threads.h, the ASan build). One host thread per CUDA thread, created
// at each launch; blocks run one after another, every host thread playing the same threadIdx in
// each block, with a barrier over all of them between consecutive blocks. Barriers synchronise
// through atomics and sleep in raw futex calls (Linux only), so ThreadSanitizer sees the
// happens-before edges a CUDA program has and no others; the per-warp mutex that guards the warp
// barrier table is hidden from TSan (AnnotateIgnoreSync*), so lanes of one warp are ordered by
// warp barriers only and a missing __syncwarp is reported.
//
// In both models, within a block:
//   - __syncthreads() is a barrier over the block's threads that have not returned;
//   - warp intrinsics (shuffles, votes, __syncwarp, warp_gather) meet at a barrier of the lanes
//     their mask names (those still running), and exchange values through per-warp slots; lanes
//     outside the mask may be elsewhere, as on Volta and later;
//   - static __shared__ storage exists once per running block: `static thread_local` under
//     fibers (one copy per worker, which runs one block at a time), a function-local static
//     under threads (one block at a time overall); dynamic shared memory is one buffer per
//     running block (per worker under fibers; of exactly the launch's size under threads, so
//     ASan sees an overrun);
//   - atomics are std::atomic_ref with relaxed order, as CUDA's atomics are.
// Blocks: under fibers, blocks on different workers run concurrently and unordered, as on a GPU;
// consecutive blocks on one worker are ordered (the next one reuses the shared memory). Under
// threads, a barrier over all host threads orders each block before the next.
//
// Launch configuration is refused as the GPU refuses it, with CUDA's error text: more than
// 1024 threads a block or block dims above (1024, 1024, 64), grid x above 2^31-1 or y, z above
// 65535, any zero dim ("invalid configuration argument"); dynamic shared memory above the
// kernel's cudaFuncAttributeMaxDynamicSharedMemorySize, or that attribute above the device's
// opt-in maximum (227 KiB, H100) ("invalid argument"); static __shared__ storage above 48 KiB,
// which ptxas refuses ("uses too much shared data"), and static plus dynamic above 48 KiB
// without the opt-in, or static plus the opt-in attribute above 227 KiB ("invalid argument").
// Static sizes are counted as cvk/sim/static_smem.h says: from the module's symbol table, so
// not in a stripped module (e.g. pybind11's Release build).
//
// API for cvk/ helpers that emulate warp-collective instructions (mma, ldmatrix, cp.async):
//   int lane();                     the calling CUDA thread's lane (0..31)
//   unsigned alive_lanes();         lanes of the caller's warp still running the kernel
//   warp_gather(mask, mine, all)    all[l] = lane l's `mine` for l in mask, synchronising like
//                                   __syncwarp(mask); a lane of mask that has exited, or a
//                                   caller outside mask, is a UsageError
//   thread_storage<T>()             one T per CUDA thread and type, value-initialised when the
//                                   thread starts each block
//
// What it does not model fails to compile: cooperative groups, inline PTX (`asm` is poisoned),
// texture and surface objects and the intrinsics sim.h does not declare. Misuse it can detect
// at run time (a lane calling a warp intrinsic whose mask leaves it out, dynamic shared memory
// with none launched, a deadlock under fibers) raises an exception that the launch reports as
// an error. `__shared__` is supported at function scope only. Not modelled: memory ordering
// weaker than the host's, and independent forward progress under fibers (a thread spinning on
// a value another thread of its block writes, with no barrier between, never yields).
//
// sm_90a features that stay GPU-only (kernels using them say so in their specs and tests; the
// last section of this file details each, with the PTX ISA sections an emulation must follow):
//   - wgmma: a warpgroup-collective (4 warps) async MMA reading shared-memory matrix
//     descriptors; an emulation needs warpgroup barriers (four warps' lanes), a decoder of the
//     descriptor's swizzle modes, and deferred completion at wgmma.wait_group, like cp.async's.
//   - TMA (cp.async.bulk.tensor): a tensor map (cuTensorMapEncode*) decoded on the host side,
//     box copies with swizzle and out-of-bounds fill, completing on an mbarrier's transaction
//     count; needs mbarrier objects (arrive/expect_tx/try_wait) in the scheduler.
//   - thread-block clusters: co-scheduled blocks with distributed shared memory and
//     cluster-wide barriers; needs the blocks of a cluster on one worker, as fibers of one
//     scheduler, and mapa/shared::cluster address translation.
#pragma once
#ifndef CVK_SIM
#error "cvk/sim.h is the CPU simulator; include cvk/common.cuh instead"
#endif

#define CVK_SIM_FIBERS 1
#define CVK_SIM_THREADS 2
#ifndef CVK_SIM_MODEL
#if defined(__SANITIZE_ADDRESS__)
#define CVK_SIM_MODEL CVK_SIM_THREADS
#else
#define CVK_SIM_MODEL CVK_SIM_FIBERS
#endif
#endif

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// ---- keywords -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // as CUDA's host_defines.h: placed like nvcc's
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

// threadIdx is per host thread; under fibers the scheduler sets it at every switch.
inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ThreadSanitizer must see kernel code and CUDA's happens-before edges only: the simulator's
// own bookkeeping, which lanes and fibers share without CUDA synchronisation, runs inside
// CVK_SIM_UNCHECKED_SCOPE (ignored memory accesses; its sync annotations still count).
#ifdef __SANITIZE_THREAD__
extern "C" {
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
}
namespace cvk::sim {
struct UncheckedScope {
  UncheckedScope() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~UncheckedScope() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
  UncheckedScope(const UncheckedScope&) = delete;
  UncheckedScope& operator=(const UncheckedScope&) = delete;
};
}  // namespace cvk::sim
#define CVK_SIM_UNCHECKED_SCOPE const ::cvk::sim::UncheckedScope cvk_sim_unchecked_scope_
#else
#define CVK_SIM_UNCHECKED_SCOPE (void)0
#endif

namespace cvk::sim {

struct UsageError : std::logic_error {
  explicit UsageError(const std::string& what) : std::logic_error("cvk sim: " + what) {}
};

// A launch the GPU would refuse; the text is cudaGetErrorString's.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr size_t kDefaultMaxDynamicSmem = 48 * 1024;  // without the opt-in attribute
constexpr size_t kOptInMaxSmem = 227 * 1024;          // H100: sharedMemPerBlockOptin

inline void check_launch_config(dim3 grid, dim3 block, size_t dynamic_smem,
                                size_t max_dynamic_smem) {
  const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
      grid.z > 65535)
    throw LaunchError("invalid configuration argument");
  if (max_dynamic_smem > kOptInMaxSmem || dynamic_smem > max_dynamic_smem)
    throw LaunchError("invalid argument");
}

// One T per CUDA thread and type, value-initialised at the thread's first access in each block.
inline std::atomic<int>& storage_slot_counter() {
  static std::atomic<int> n{0};
  return n;
}
template <class T>
inline const int storage_slot = storage_slot_counter().fetch_add(1, std::memory_order_relaxed);

class ThreadStorage {
 public:
  ThreadStorage() = default;
  ThreadStorage(const ThreadStorage&) = delete;
  ThreadStorage& operator=(const ThreadStorage&) = delete;
  ~ThreadStorage() {
    for (auto& e : entries_)
      if (e.p) ::operator delete(e.p, std::align_val_t(e.align));
  }
  void new_block() { ++epoch_; }
  template <class T>
  T& get() {
    static_assert(std::is_trivially_copyable_v<T>, "thread_storage<T>: T must be trivially copyable");
    const size_t slot = static_cast<size_t>(storage_slot<T>);
    if (slot >= entries_.size()) entries_.resize(slot + 1);
    Entry& e = entries_[slot];
    if (!e.p) {
      e.align = std::max(alignof(T), alignof(std::max_align_t));
      e.p = ::operator new(sizeof(T), std::align_val_t(e.align));
    }
    if (e.epoch != epoch_) {
      e.epoch = epoch_;
      return *new (e.p) T();
    }
    return *std::launder(static_cast<T*>(e.p));
  }

 private:
  struct Entry {
    void* p = nullptr;
    size_t align = 0;
    unsigned long long epoch = 0;
  };
  std::vector<Entry> entries_;
  unsigned long long epoch_ = 1;
};

}  // namespace cvk::sim

namespace cvk::sim {
struct SmemFn;
struct DynamicSmem {  // of the running launch: its size and the kernel's attribute
  size_t bytes = 0, max_bytes = 0;
};

// Ctrl-C during a launch. The host (pyext/module.cpp) installs a poll function on the launching
// thread; the simulator calls it there between blocks, at most once per kPollInterval. When it
// returns true, no further block starts, the running ones finish, and the launch throws
// Interrupted. Worker threads have no poll function: only the launching thread asks.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("cvk sim: launch interrupted") {}
};
using PollFn = bool (*)();
inline thread_local PollFn t_launch_poll = nullptr;
constexpr std::chrono::milliseconds kPollInterval{20};

class PollClock {  // calls `fn` when kPollInterval has passed since the last call
 public:
  explicit PollClock(PollFn fn) : fn_(fn), next_(std::chrono::steady_clock::now() + kPollInterval) {}
  bool interrupted() {
    if (!fn_) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ = now + kPollInterval;
    return fn_();
  }

 private:
  PollFn fn_;
  std::chrono::steady_clock::time_point next_;
};

// warp_gather's error when lanes of its mask have exited (both models).
inline std::string gather_exited(unsigned missing) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", missing);
  return std::string("warp_gather: lanes ") + buf + " of its mask have exited";
}
}

#if CVK_SIM_MODEL == CVK_SIM_FIBERS
#include "cvk/sim/fibers.h"
#elif CVK_SIM_MODEL == CVK_SIM_THREADS
#include "cvk/sim/threads.h"
#else
#error "CVK_SIM_MODEL must be CVK_SIM_FIBERS or CVK_SIM_THREADS"
#endif
#include "cvk/sim/static_smem.h"

namespace cvk::sim {
inline int lane_in_width(int width) { return lane() & ~(width - 1); }

// Run `body()` as the kernel of a launch <<<grid, block, dynamic_smem>>> of a kernel whose
// cudaFuncAttributeMaxDynamicSharedMemorySize is max_dynamic_smem (48 KiB unless opted in).
inline void launch(dim3 grid, dim3 block, size_t dynamic_smem, size_t max_dynamic_smem,
                   const std::function<void()>& body) {
  check_launch_config(grid, block, dynamic_smem, max_dynamic_smem);
  run_launch(grid, block, dynamic_smem, max_dynamic_smem, body);
}
}  // namespace cvk::sim

// ---- synchronisation and warp intrinsics ------------------------------------------------------
inline void __syncthreads() { ::cvk::sim::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cvk::sim::syncwarp(mask); }
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::cvk::sim::warp_exchange(mask, v, ::cvk::sim::lane_in_width(width) + (src & (width - 1)));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  int lane = ::cvk::sim::lane(), src = lane ^ lane_mask;
  if (src >= ::cvk::sim::lane_in_width(width) + width) src = lane;
  return ::cvk::sim::warp_exchange(mask, v, src);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = ::cvk::sim::lane(), src = lane + static_cast<int>(delta);
  if (src >= ::cvk::sim::lane_in_width(width) + width) src = lane;
  return ::cvk::sim::warp_exchange(mask, v, src);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = ::cvk::sim::lane(), src = lane - static_cast<int>(delta);
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
