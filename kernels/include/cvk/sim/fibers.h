// cvk/sim/fibers.h: the fiber model of the simulator (see cvk/sim.h), the fast default.
// Included by cvk/sim.h only.
//
// A worker (an OS thread of the pool, or the launching thread) runs one block at a time: one
// fiber per CUDA thread, scheduled round-robin by the worker's own stack ("the scheduler").
// Fibers never move between OS threads (thread_local addresses stay valid in their frames).
// All of a block's state is touched by its worker only, so it needs no atomics or locks.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <thread>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define __shared__ CVK_SMEM_SITE static thread_local

// Under ThreadSanitizer every fiber is a TSan fiber, switched to without synchronisation
// (__tsan_switch_to_fiber_no_sync); the happens-before edges are CUDA's only: each barrier
// generation is a sync object that its arrivals release and its departures acquire (two
// objects alternate, so a fast thread's next arrival never reaches a slow thread still
// leaving). Each worker adds two more: its scheduler's set-up before a block's fibers start,
// and their ends before the next block. The simulator's own bookkeeping, touched by every fiber
// of a worker, is not instrumented (CVK_SIM_UNCHECKED), and TSan ignores the accesses of the
// library code it calls (CVK_SIM_UNCHECKED_SCOPE); kernel code and shared memory are checked.
#ifdef __SANITIZE_THREAD__
#include <sanitizer/tsan_interface.h>
#define CVK_SIM_UNCHECKED __attribute__((no_sanitize("thread")))
#define CVK_TSAN(...) __VA_ARGS__
#else
#define CVK_SIM_UNCHECKED
#define CVK_TSAN(...)
#endif

#if defined(__x86_64__)
// Save the callee-saved registers and the stack pointer in *save_sp, load those of load_sp.
// A naked inline function (one comdat copy per module, LTO-safe, unlike a top-level asm).
extern "C" __attribute__((naked, noinline)) inline void cvk_sim_switch_context(void** save_sp,
                                                                            void* load_sp) {
  __asm__(
      "pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret");
}
#endif

namespace cvk::sim {

enum class FiberState : unsigned char { READY, WAITING, DONE };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
#if !defined(__x86_64__)
  ucontext_t uc;
#endif
  unsigned char* map = nullptr;  // guard page, then the stack
  size_t map_size = 0;
  FiberState state = FiberState::DONE;
  dim3 idx;
  int lane = 0, warp = 0;
  ThreadStorage storage;
  void* tsan = nullptr;  // its TSan fiber (ThreadSanitizer builds)
  ~Fiber() {
    CVK_TSAN(if (tsan) __tsan_destroy_fiber(tsan));
    if (map) munmap(map, map_size);
  }
};

// The barrier of the lanes a mask names (those running when it was created), with the slots
// its exchanges use. Slots alternate between two generations, so one barrier per shuffle
// suffices: a lane can be at most one generation ahead of the slowest reader.
struct WarpBar {
  unsigned mask = 0, members = 0, arrived = 0, gen = 0;
  unsigned released[2] = {};  // the lanes that completed generation g, by g & 1
  unsigned long long slot[2][32] = {};
  const void* gather[2][32] = {};
  char sync[2] = {};  // TSan sync objects, by generation & 1
};

struct WarpState {
  unsigned alive = 0;
  std::vector<std::unique_ptr<WarpBar>> bars;  // the first nbars are in use in this block
  size_t nbars = 0;
};

struct Launch;

struct Worker {
  void* sched_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t sched_uc;
#endif
  Fiber* current = nullptr;
  Launch* job = nullptr;
  std::vector<std::unique_ptr<Fiber>> fibers;  // pooled across blocks and launches
  std::vector<WarpState> warps;
  std::vector<unsigned char> dyn_smem;
  size_t dyn_bytes = 0;
  unsigned nthreads = 0, bar_expected = 0, bar_arrived = 0, bar_gen = 0;
  char bar_sync[2] = {};  // TSan sync objects of __syncthreads, by generation & 1
  char block_start = 0;  // TSan: the scheduler's set-up before the block's threads
  char block_end = 0;    // TSan: the block's threads before the scheduler's next block
  void* tsan_sched = nullptr;
  std::vector<const SmemFn*> smem_fns;  // functions whose __shared__ sites ran in this launch
};

inline thread_local Worker* t_worker = nullptr;

struct Launch {
  dim3 grid, block;
  size_t smem = 0, max_smem = 0;
  const std::function<void()>* body = nullptr;
  unsigned long long nblocks = 0;
  std::atomic<unsigned long long> next{0};
  std::atomic<bool> failed{false};
  std::mutex err_m;
  std::exception_ptr err;
  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> g(err_m);
    if (!err) err = e;
    failed.store(true, std::memory_order_relaxed);
  }
};

inline std::vector<const SmemFn*>& launch_smem_fns() { return t_worker->smem_fns; }
inline DynamicSmem launch_dynamic_smem() { return {t_worker->job->smem, t_worker->job->max_smem}; }
inline Fiber& current_fiber() { return *t_worker->current; }
CVK_SIM_UNCHECKED inline int lane() {
  CVK_SIM_UNCHECKED_SCOPE;
  return t_worker->current->lane;
}
CVK_SIM_UNCHECKED inline unsigned alive_lanes() {
  CVK_SIM_UNCHECKED_SCOPE;
  return t_worker->warps[t_worker->current->warp].alive;
}
template <class T>
T& thread_storage() {
  CVK_SIM_UNCHECKED_SCOPE;
  return t_worker->current->storage.get<T>();
}

CVK_SIM_UNCHECKED inline void* dynamic_smem() {
  CVK_SIM_UNCHECKED_SCOPE;
  Worker& w = *t_worker;
  if (w.dyn_bytes == 0) throw UsageError("dynamic shared memory used but 0 bytes launched");
  return w.dyn_smem.data();
}

// ---- context switching ------------------------------------------------------------------------
constexpr size_t kFiberStack = 256 * 1024;

CVK_SIM_UNCHECKED inline void fiber_main();

#if defined(__x86_64__)
inline void switch_to(void** save, void* load) { cvk_sim_switch_context(save, load); }
CVK_SIM_UNCHECKED inline void init_fiber_stack(Fiber& f) {
  auto top = reinterpret_cast<std::uintptr_t>(f.map + f.map_size) & ~std::uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                    // fiber_main never returns
  *--sp = reinterpret_cast<void*>(&fiber_main);       // cvk_sim_switch_context's ret
  for (int i = 0; i < 6; ++i) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
  f.sp = sp;
}
CVK_SIM_UNCHECKED inline void to_fiber(Worker& w, Fiber& f) {
  CVK_TSAN(__tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync));
  switch_to(&w.sched_sp, f.sp);
}
CVK_SIM_UNCHECKED inline void to_scheduler(Worker& w, Fiber& f) {
  CVK_TSAN(__tsan_switch_to_fiber(w.tsan_sched, __tsan_switch_to_fiber_no_sync));
  switch_to(&f.sp, w.sched_sp);
}
#else
CVK_SIM_UNCHECKED inline void init_fiber_stack(Fiber& f) {
  getcontext(&f.uc);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  f.uc.uc_stack.ss_sp = f.map + page;
  f.uc.uc_stack.ss_size = f.map_size - page;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, &fiber_main, 0);
}
CVK_SIM_UNCHECKED inline void to_fiber(Worker& w, Fiber& f) {
  CVK_TSAN(__tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync));
  swapcontext(&w.sched_uc, &f.uc);
}
CVK_SIM_UNCHECKED inline void to_scheduler(Worker& w, Fiber& f) {
  CVK_TSAN(__tsan_switch_to_fiber(w.tsan_sched, __tsan_switch_to_fiber_no_sync));
  swapcontext(&f.uc, &w.sched_uc);
}
#endif

CVK_SIM_UNCHECKED inline std::unique_ptr<Fiber> new_fiber() {
  auto f = std::make_unique<Fiber>();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  f->map_size = kFiberStack + page;
  void* m = mmap(nullptr, f->map_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  f->map = static_cast<unsigned char*>(m);
  mprotect(f->map, page, PROT_NONE);  // stacks grow down into the guard page
  init_fiber_stack(*f);
  CVK_TSAN(f->tsan = __tsan_create_fiber(0));
  return f;
}

// The running fiber waits until another marks it ready.
CVK_SIM_UNCHECKED inline void block_current() {
  Worker& w = *t_worker;
  Fiber& f = *w.current;
  f.state = FiberState::WAITING;
  to_scheduler(w, f);
}

// ---- barriers ---------------------------------------------------------------------------------
CVK_SIM_UNCHECKED inline void release_block_barrier(Worker& w) {
  w.bar_arrived = 0;
  ++w.bar_gen;
  for (unsigned t = 0; t < w.nthreads; ++t) {
    Fiber& f = *w.fibers[t];
    if (f.state == FiberState::WAITING) f.state = FiberState::READY;
  }
}

CVK_SIM_UNCHECKED inline void syncthreads() {
  CVK_SIM_UNCHECKED_SCOPE;
  Worker& w = *t_worker;
  CVK_TSAN(char* sync = &w.bar_sync[w.bar_gen & 1]; __tsan_release(sync));
  if (++w.bar_arrived == w.bar_expected)
    release_block_barrier(w);
  else
    block_current();
  CVK_TSAN(__tsan_acquire(sync));
}

CVK_SIM_UNCHECKED inline void release_warp_barrier(Worker& w, int warp, WarpBar& b) {
  b.released[b.gen & 1] = b.arrived;
  const unsigned waiting = b.arrived;
  b.arrived = 0;
  ++b.gen;
  for (int l = 0; l < 32; ++l)
    if (waiting >> l & 1u) {
      Fiber& f = *w.fibers[static_cast<unsigned>(warp) * 32 + l];
      if (&f != w.current) f.state = FiberState::READY;
    }
}

inline std::string mask_misuse(int lane) {
  return "lane " + std::to_string(lane) + " called a warp intrinsic whose mask does not include it";
}

CVK_SIM_UNCHECKED inline WarpBar& warp_bar(unsigned mask) {
  Worker& w = *t_worker;
  Fiber& f = *w.current;
  if (!((mask >> f.lane) & 1u)) throw UsageError(mask_misuse(f.lane));
  WarpState& ws = w.warps[f.warp];
  for (size_t i = 0; i < ws.nbars; ++i)
    if (ws.bars[i]->mask == mask) return *ws.bars[i];
  if (ws.nbars == ws.bars.size()) ws.bars.push_back(std::make_unique<WarpBar>());
  WarpBar& b = *ws.bars[ws.nbars++];
  b = WarpBar{};
  b.mask = mask;
  b.members = mask & ws.alive;
  return b;
}

// Arrive at b and wait for its generation to complete; returns that generation's parity.
CVK_SIM_UNCHECKED inline int warp_wait(WarpBar& b) {
  Worker& w = *t_worker;
  Fiber& f = *w.current;
  const int parity = static_cast<int>(b.gen & 1);
  CVK_TSAN(__tsan_release(&b.sync[parity]));
  b.arrived |= 1u << f.lane;
  if (b.arrived == b.members) {
    release_warp_barrier(w, f.warp, b);
  } else {
    f.state = FiberState::WAITING;
    to_scheduler(w, f);
  }
  CVK_TSAN(__tsan_acquire(&b.sync[parity]));
  return parity;
}



CVK_SIM_UNCHECKED inline void syncwarp(unsigned mask) {
  CVK_SIM_UNCHECKED_SCOPE;
  warp_wait(warp_bar(mask));
}

template <class T>
CVK_SIM_UNCHECKED T warp_exchange(unsigned mask, T v, int src_lane) {
  CVK_SIM_UNCHECKED_SCOPE;
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of >8-byte type");
  WarpBar& b = warp_bar(mask);
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  b.slot[b.gen & 1][current_fiber().lane] = bits;
  const int p = warp_wait(b);
  const unsigned long long got = b.slot[p][src_lane];  // a lane outside the mask: stale
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

CVK_SIM_UNCHECKED inline unsigned warp_vote(unsigned mask, int pred) {
  CVK_SIM_UNCHECKED_SCOPE;
  WarpBar& b = warp_bar(mask);
  b.slot[b.gen & 1][current_fiber().lane] = pred != 0;
  const int p = warp_wait(b);
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((b.released[p] >> l & 1u) && b.slot[p][l]) ballot |= 1u << l;
  return ballot;
}

template <class T>
CVK_SIM_UNCHECKED void warp_gather(unsigned mask, const T& mine, T* all) {
  CVK_SIM_UNCHECKED_SCOPE;
  static_assert(std::is_trivially_copyable_v<T>, "warp_gather: T must be trivially copyable");
  WarpBar& b = warp_bar(mask);
  b.gather[b.gen & 1][current_fiber().lane] = &mine;
  const int p = warp_wait(b);
  const unsigned missing = mask & ~b.released[p];
  if (missing) throw UsageError(gather_exited(missing));
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) std::memcpy(static_cast<void*>(all + l), b.gather[p][l], sizeof(T));
  warp_wait(b);  // `mine` outlives every lane's read
}

// The running fiber returns from the kernel: it stops counting towards the barriers.
CVK_SIM_UNCHECKED inline void exit_current(Worker& w) {
  Fiber& f = *w.current;
  --w.bar_expected;
  if (w.bar_arrived > 0 && w.bar_arrived == w.bar_expected) release_block_barrier(w);
  WarpState& ws = w.warps[f.warp];
  const unsigned bit = 1u << f.lane;
  ws.alive &= ~bit;
  for (size_t i = 0; i < ws.nbars; ++i) {
    WarpBar& b = *ws.bars[i];
    if (!(b.members & bit)) continue;
    b.members &= ~bit;
    if (b.arrived != 0 && b.arrived == b.members) release_warp_barrier(w, f.warp, b);
  }
  f.state = FiberState::DONE;
}

CVK_SIM_UNCHECKED inline void fiber_main() {
  for (;;) {
    Worker& w = *t_worker;
    CVK_TSAN(__tsan_acquire(&w.block_start));
    try {
      (*w.job->body)();
    } catch (...) {
      CVK_SIM_UNCHECKED_SCOPE;
      w.job->fail(std::current_exception());
    }
    CVK_TSAN(__tsan_release(&w.block_end));
    {
      CVK_SIM_UNCHECKED_SCOPE;
      exit_current(w);
    }
    to_scheduler(w, *w.current);  // resumed for the next block
  }
}

// ---- blocks and the worker pool ---------------------------------------------------------------
CVK_SIM_UNCHECKED inline void run_block(Worker& w, Launch& L, unsigned long long b) {
  const dim3 grid = L.grid, block = L.block;
  blockIdx = dim3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                  static_cast<unsigned>(b / (1ull * grid.x * grid.y)));
  blockDim = block;
  gridDim = grid;
  const unsigned n = block.x * block.y * block.z;
  w.nthreads = n;
  w.bar_expected = n;
  w.bar_arrived = 0;
  const unsigned nwarps = (n + 31) / 32;
  if (w.warps.size() < nwarps) w.warps.resize(nwarps);
  for (unsigned i = 0; i < nwarps; ++i) {
    const unsigned lanes = std::min(32u, n - 32 * i);
    w.warps[i].alive = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    w.warps[i].nbars = 0;
  }
  while (w.fibers.size() < n) w.fibers.push_back(new_fiber());
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = *w.fibers[t];
    f.state = FiberState::READY;
    f.idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
    f.lane = static_cast<int>(t % 32);
    f.warp = static_cast<int>(t / 32);
    f.storage.new_block();
  }
  w.bar_gen = 0;
  CVK_TSAN(__tsan_release(&w.block_start));
  unsigned live = n;
  while (live > 0) {
    bool ran = false;
    for (unsigned t = 0; t < n; ++t) {
      Fiber& f = *w.fibers[t];
      if (f.state != FiberState::READY) continue;
      ran = true;
      w.current = &f;
      threadIdx = f.idx;
      to_fiber(w, f);
      if (f.state == FiberState::DONE) --live;
    }
    if (!ran) {
      L.fail(std::make_exception_ptr(UsageError(
          "deadlock: every running thread of block " + std::to_string(b) +
          " waits at a barrier that the others never reach")));
      for (unsigned t = 0; t < n; ++t) {  // abandon the waiting fibers' frames
        Fiber& f = *w.fibers[t];
        if (f.state != FiberState::DONE) init_fiber_stack(f);
        f.state = FiberState::DONE;
      }
      break;
    }
  }
  CVK_TSAN(__tsan_acquire(&w.block_end));
  w.current = nullptr;
}

CVK_SIM_UNCHECKED inline void work(Worker& w, Launch& L) {
  t_worker = &w;
  CVK_TSAN(w.tsan_sched = __tsan_get_current_fiber());
  w.job = &L;
  w.smem_fns.clear();
  w.dyn_bytes = L.smem;
  if (w.dyn_smem.size() < L.smem) w.dyn_smem.resize(L.smem);
  PollClock poll(t_launch_poll);  // set on the launching thread only
  for (;;) {
    if (L.failed.load(std::memory_order_relaxed)) break;  // stop at the first error
    if (poll.interrupted()) {
      L.fail(std::make_exception_ptr(Interrupted()));
      break;
    }
    const unsigned long long b = L.next.fetch_add(1, std::memory_order_relaxed);
    if (b >= L.nblocks) break;
    run_block(w, L, b);
  }
  w.job = nullptr;
}

class Pool {
 public:
  explicit Pool(unsigned nthreads) : pid_(getpid()) {
    for (unsigned i = 0; i < nthreads; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      std::thread([this, w = workers_.back().get()] { loop(*w); }).detach();
    }
  }
  pid_t pid() const { return pid_; }
  size_t size() const { return workers_.size(); }
  // Runs L on the calling thread's worker `self` and on the pool threads that join in time.
  // The caller never waits for a pool thread that has not joined: once the caller runs out of
  // blocks it closes the launch to newcomers and waits only for those running blocks, so a
  // small launch does not pay for waking a thread on a busy machine.
  void run(Launch& L, Worker& self) {
    const bool share = L.nblocks > 1 && !workers_.empty();
    if (share) {
      std::lock_guard<std::mutex> g(m_);
      job_ = &L;
      ++job_id_;
      start_.notify_all();
    }
    work(self, L);
    if (share) {
      std::unique_lock<std::mutex> g(m_);
      job_ = nullptr;
      done_.wait(g, [&] { return active_ == 0; });
    }
  }

 private:
  void loop(Worker& w) {
    unsigned long long seen = 0;
    for (;;) {
      Launch* L;
      {
        std::unique_lock<std::mutex> g(m_);
        start_.wait(g, [&] { return job_id_ != seen; });
        seen = job_id_;
        L = job_;
        if (!L) continue;  // that launch has closed already
        ++active_;
      }
      work(w, *L);
      std::lock_guard<std::mutex> g(m_);
      if (--active_ == 0) done_.notify_all();
    }
  }
  pid_t pid_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex m_;
  std::condition_variable start_, done_;
  Launch* job_ = nullptr;
  unsigned long long job_id_ = 0;
  int active_ = 0;  // pool threads working on the open launch
};

inline unsigned pool_threads() {
  if (const char* s = std::getenv("CVK_SIM_WORKERS")) {
    const int n = std::atoi(s);
    if (n >= 1) return static_cast<unsigned>(n - 1);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 1 ? hw - 1 : 0;
}

inline void run_launch(dim3 grid, dim3 block, size_t smem_bytes, size_t max_smem_bytes,
                       const std::function<void()>& body) {
  static std::mutex launch_mutex;  // one launch at a time: the pool runs one job
  static Pool* pool = nullptr;     // leaked on purpose: detached threads wait on it at exit
  static thread_local std::unique_ptr<Worker> caller;
  std::lock_guard<std::mutex> serial(launch_mutex);
  if (!pool || pool->pid() != getpid()) pool = new Pool(pool_threads());  // new after fork()
  if (!caller) caller = std::make_unique<Worker>();
  Launch L;
  L.grid = grid;
  L.block = block;
  L.smem = smem_bytes;
  L.max_smem = max_smem_bytes;
  L.body = &body;
  L.nblocks = 1ull * grid.x * grid.y * grid.z;
  pool->run(L, *caller);
  t_worker = nullptr;
  if (L.err) std::rethrow_exception(L.err);
}

}  // namespace cvk::sim
