// cvk/sim/threads.h: the thread-per-CUDA-thread model of the simulator (see cvk/sim.h), used
// by the AddressSanitizer build (CVK_SIM_MODEL=CVK_SIM_THREADS selects it anywhere). Included
// by cvk/sim.h only.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <map>
#include <thread>

#define __shared__ CVK_SMEM_SITE static


namespace cvk::sim {

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
// intrinsics, and at exit only once some lane has used one. TSan is told to ignore it (and the
// table accesses it guards): otherwise it would order lanes of one warp that CUDA leaves
// unordered, and a missing __syncwarp between them could go unreported.
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
  const void* gather[32] = {};
};

// The warp's mutex, invisible to ThreadSanitizer (see Warp).
class HiddenLock {
 public:
  explicit HiddenLock(std::mutex& m) : m_(m) {
#ifdef __SANITIZE_THREAD__
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
    m_.lock();
  }
  ~HiddenLock() {
    m_.unlock();
#ifdef __SANITIZE_THREAD__
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
#endif
  }

 private:
  std::mutex& m_;
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
  ThreadStorage* storage = nullptr;
  std::vector<const SmemFn*> smem_fns;  // functions whose __shared__ sites ran in this launch
};
inline thread_local ThreadState tls;

inline std::vector<const SmemFn*>& launch_smem_fns() { return tls.smem_fns; }
inline int lane() { return tls.lane; }
inline unsigned alive_lanes() { return tls.warp->alive_mask.load(std::memory_order_relaxed); }
template <class T>
T& thread_storage() {
  return tls.storage->get<T>();
}

inline void* dynamic_smem() {
  if (!tls.block || !tls.block->dyn_smem)
    throw UsageError("dynamic shared memory used but 0 bytes launched");
  return tls.block->dyn_smem;
}

inline std::string mask_misuse(int lane) {
  return "lane " + std::to_string(lane) + " called a warp intrinsic whose mask does not include it";
}

// The barrier of the lanes `mask` names that are still running; created by the first of them
// to arrive. Lanes that return later retire from it (see run_launch), as exited lanes do in CUDA.
inline Barrier& warp_barrier(unsigned mask) {
  Warp& w = *tls.warp;
  if (!((mask >> tls.lane) & 1u)) throw UsageError(mask_misuse(tls.lane));
  WarpBarrier* wb;
  {
    HiddenLock g(w.m);
    auto& slot = w.bars[mask];
    if (!slot) {
      // Relaxed operations with seq_cst fences, here and at lane exit (see run_launch): the
      // fences give the store-buffering guarantee, and relaxed accesses add no happens-before
      // edges that could hide a race from ThreadSanitizer.
      w.used.store(true, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      slot.reset(new WarpBarrier);
      slot->members = mask & w.alive_mask.load(std::memory_order_relaxed);
      slot->bar.reset(std::popcount(slot->members));
    }
    wb = slot.get();
  }
  return wb->bar;
}

inline void syncthreads() { tls.block->bar.wait(); }
inline void syncwarp(unsigned mask) { warp_barrier(mask).wait(); }

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

template <class T>
void warp_gather(unsigned mask, const T& mine, T* all) {
  static_assert(std::is_trivially_copyable_v<T>, "warp_gather: T must be trivially copyable");
  Barrier& bar = warp_barrier(mask);
  Warp& w = *tls.warp;
  w.gather[tls.lane] = &mine;
  bar.wait();
  // A lane of mask that never arrived has exited (it retired from the barrier).
  const unsigned missing = mask & ~w.alive_mask.load(std::memory_order_relaxed);
  if (missing) throw UsageError(gather_exited(missing));
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) std::memcpy(static_cast<void*>(all + l), w.gather[l], sizeof(T));
  bar.wait();  // `mine` outlives every lane's read
}

inline DynamicSmem& running_dynamic_smem() {
  static DynamicSmem d;  // written under the launch mutex before the launch's threads start
  return d;
}
inline DynamicSmem launch_dynamic_smem() { return running_dynamic_smem(); }

inline void run_launch(dim3 grid, dim3 block, size_t smem_bytes, size_t max_smem_bytes,
                       const std::function<void()>& body) {
  static std::mutex launch_mutex;  // static __shared__ storage is per kernel: one launch at a time
  const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
  const unsigned long long nblocks = 1ull * grid.x * grid.y * grid.z;
  std::lock_guard<std::mutex> serial(launch_mutex);
  running_dynamic_smem() = {smem_bytes, max_smem_bytes};
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
  // Ctrl-C: the caller polls while it waits and sets `stop`; thread 0 copies it into `halt`
  // before the barrier that starts a block, so every thread leaves at the same block.
  std::atomic<bool> stop{false};
  bool halt = false;
  std::mutex done_m;
  std::condition_variable done_cv;
  unsigned long long done = 0;

  auto worker = [&](unsigned tid) {
    ThreadStorage storage;
    threadIdx = dim3(tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y));
    blockDim = block;
    gridDim = grid;
    tls.block = &blk;
    tls.warp = blk.warps[tid / 32].get();
    tls.lane = static_cast<int>(tid % 32);
    tls.storage = &storage;
    for (unsigned long long b = 0; b < nblocks; ++b) {
      if (tid == 0) {
        reset_block();
        halt = stop.load(std::memory_order_relaxed);
      }
      between.wait();
      if (halt) break;
      storage.new_block();
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
        std::vector<Barrier*> mine;
        {
          HiddenLock g(w.m);
          for (auto& [mask, wb] : w.bars)
            if (wb->members & bit) mine.push_back(&wb->bar);
        }
        // Outside the hidden lock: a retire that completes a barrier must be seen by TSan.
        for (Barrier* bar : mine) bar->retire();
      }
      blk.bar.retire();
      between.wait();
    }
    tls = ThreadState{};
    std::lock_guard<std::mutex> g(done_m);
    if (++done == nthreads) done_cv.notify_all();
  };

  std::vector<std::thread> threads;
  threads.reserve(nthreads);
  for (unsigned t = 0; t < nthreads; ++t) threads.emplace_back(worker, t);
  if (const PollFn poll = t_launch_poll) {
    std::unique_lock<std::mutex> g(done_m);
    while (!done_cv.wait_for(g, kPollInterval, [&] { return done == nthreads; })) {
      g.unlock();
      if (!stop.load(std::memory_order_relaxed) && poll()) stop.store(true, std::memory_order_relaxed);
      g.lock();
    }
  }
  for (auto& t : threads) t.join();
  if (err) std::rethrow_exception(err);
  if (stop.load(std::memory_order_relaxed)) throw Interrupted();
}

}  // namespace cvk::sim
