// cvk/cp_async.cuh: asynchronous global -> shared copies (sm_80+), cp.async with its async-group
// completion. Inline PTX under nvcc and NVRTC; a deferred emulation under the CPU simulator.
//
// Sources (PTX ISA): "Data Movement and Conversion Instructions: cp.async",
//   "... cp.async.commit_group", "... cp.async.wait_group / cp.async.wait_all".
//   - cp.async.ca copies 4, 8 or 16 bytes; cp.async.cg only 16 (cp-size is an immediate, so an
//     unsupported size is a compile-time error here, on every compiler);
//   - src-size (here `src_bytes`, 0..cp-size) bytes come from global memory and the rest of the
//     destination is zero-filled: src_bytes = 0 is the zero-fill of an out-of-range chunk;
//   - src and dst are aligned to cp-size ("Addresses as Operands");
//   - commit_group closes the thread's uncommitted copies into a new group (possibly empty);
//     wait_group N returns once at most the N most recent groups are pending; wait_all commits
//     and waits for everything. Copies are per thread: other threads see the data only after the
//     issuing thread's wait and a barrier (__syncthreads) between them.
//
// Simulator semantics (deferred, so early reads are visible as errors):
//   - at issue, the source bytes are read (an out-of-bounds source is reported by ASan there)
//     and the destination is filled with 0xFF bytes, a NaN for floats and halves;
//   - in the ASan build the destination is also poisoned (ASAN_POISON_MEMORY_REGION) until the
//     copy lands, so a read (or write) before the covering wait is reported as use-after-poison
//     (ASan tracks 8-byte granules, so only 8- and 16-byte copies to 8-byte-aligned
//     destinations are ASan-poisoned; a 4-byte copy relies on the NaN pattern alone);
//   - the copy lands in shared memory at the wait_group / wait_all that covers it;
//   - misuse is a launch error (cvk::sim::UsageError): misaligned src/dst, src_bytes outside
//     0..cp-size, more than CVK_SIM_CP_ASYNC_MAX copies in flight per thread.
//   A thread must wait for all of its copies before it exits (the simulator cannot see the
//   exit; a copy left pending never lands and, under ASan, leaves its destination poisoned).
#pragma once
#include "cvk/common.cuh"

#ifdef CVK_SIM
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
// ASan's shadow describes 8-byte granules by how many leading bytes are addressable, so only a
// copy that covers whole granules can be poisoned and unpoisoned without disturbing a neighbour:
// two 4-byte copies into one granule, by different threads, left the shadow saying "first 4
// bytes only" and the second copy's landing was reported as a wild write. Copies smaller than a
// granule keep the NaN poison only.
#define CVK_SIM_ASAN_WHOLE(p, n) \
  (reinterpret_cast<std::uintptr_t>(p) % 8 == 0 && (n) % 8 == 0)
#define CVK_SIM_ASAN_POISON(p, n) \
  do { if (CVK_SIM_ASAN_WHOLE(p, n)) ASAN_POISON_MEMORY_REGION(p, n); } while (0)
#define CVK_SIM_ASAN_UNPOISON(p, n) \
  do { if (CVK_SIM_ASAN_WHOLE(p, n)) ASAN_UNPOISON_MEMORY_REGION(p, n); } while (0)
#else
#define CVK_SIM_ASAN_POISON(p, n) ((void)(p), (void)(n))
#define CVK_SIM_ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#ifndef CVK_SIM_CP_ASYNC_MAX
#define CVK_SIM_CP_ASYNC_MAX 64
#endif
#endif

namespace cvk {

#ifdef CVK_SIM
namespace cp_async_sim {

// One CUDA thread's copies in flight; trivially copyable (value-initialised per block).
struct State {
  struct Copy {
    unsigned char* dst;
    int bytes;
    int group;  // 0: not committed yet; else the 1-based index of its group
    unsigned char data[16];
  };
  Copy copies[CVK_SIM_CP_ASYNC_MAX];
  int n;
  int committed;  // groups committed so far
};

inline State& state() { return sim::thread_storage<State>(); }

inline void issue(const char* what, int bytes, void* dst, const void* src, int src_bytes) {
  const auto d = reinterpret_cast<std::uintptr_t>(dst), s = reinterpret_cast<std::uintptr_t>(src);
  char buf[200];
  if (d % bytes || s % bytes) {
    std::snprintf(buf, sizeof buf, "%s of %d bytes: %s address %p is not %d-byte aligned", what,
                  bytes, d % bytes ? "shared (dst)" : "global (src)", d % bytes ? dst : src,
                  bytes);
    throw sim::UsageError(buf);
  }
  if (src_bytes < 0 || src_bytes > bytes) {
    std::snprintf(buf, sizeof buf, "%s of %d bytes: src-size %d outside 0..%d", what, bytes,
                  src_bytes, bytes);
    throw sim::UsageError(buf);
  }
  State& st = state();
  if (st.n == CVK_SIM_CP_ASYNC_MAX) {
    std::snprintf(buf, sizeof buf, "%s: more than %d copies in flight in one thread (wait for "
                  "some, or build with a larger CVK_SIM_CP_ASYNC_MAX)", what, CVK_SIM_CP_ASYNC_MAX);
    throw sim::UsageError(buf);
  }
  State::Copy& c = st.copies[st.n++];
  c.dst = static_cast<unsigned char*>(dst);
  c.bytes = bytes;
  c.group = 0;
  std::memset(c.data, 0, sizeof c.data);
  if (src_bytes) std::memcpy(c.data, src, src_bytes);
  CVK_SIM_ASAN_UNPOISON(c.dst, bytes);  // a stale poison from an abandoned copy
  std::memset(c.dst, 0xff, bytes);
  CVK_SIM_ASAN_POISON(c.dst, bytes);
}

inline void commit() {
  State& st = state();
  ++st.committed;
  for (int i = 0; i < st.n; ++i)
    if (st.copies[i].group == 0) st.copies[i].group = st.committed;
}

// Land every copy of the groups older than the `pending` most recent ones.
inline void wait(int pending) {
  State& st = state();
  const int last = st.committed - pending;
  int kept = 0;
  for (int i = 0; i < st.n; ++i) {
    State::Copy& c = st.copies[i];
    if (c.group != 0 && c.group <= last) {
      CVK_SIM_ASAN_UNPOISON(c.dst, c.bytes);
      std::memcpy(c.dst, c.data, c.bytes);
    } else {
      st.copies[kept++] = c;
    }
  }
  st.n = kept;
}

}  // namespace cp_async_sim
#endif

// cp.async.ca.shared.global [dst], [src], BYTES, src_bytes;  BYTES in {4, 8, 16}
template <int BYTES>
__device__ __forceinline__ void cp_async_ca(void* smem_dst, const void* gmem_src,
                                            int src_bytes = BYTES) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16,
                "cp.async.ca copies 4, 8 or 16 bytes (PTX cp-size)");
#ifdef CVK_SIM
  cp_async_sim::issue("cp.async.ca", BYTES, smem_dst, gmem_src, src_bytes);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem_src),
               "n"(BYTES), "r"(src_bytes)
               : "memory");
#endif
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes;  (.cg: L2 only; 16 bytes only)
template <int BYTES = 16>
__device__ __forceinline__ void cp_async_cg(void* smem_dst, const void* gmem_src,
                                            int src_bytes = BYTES) {
  static_assert(BYTES == 16, "cp.async.cg copies 16 bytes only (PTX cp-size); use cp_async_ca");
#ifdef CVK_SIM
  cp_async_sim::issue("cp.async.cg", BYTES, smem_dst, gmem_src, src_bytes);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src),
               "r"(src_bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit_group() {
#ifdef CVK_SIM
  cp_async_sim::commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most N of this thread's most recent groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  static_assert(N >= 0, "cp.async.wait_group N needs N >= 0");
#ifdef CVK_SIM
  cp_async_sim::wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Commit whatever is uncommitted and wait for all of this thread's copies.
__device__ __forceinline__ void cp_async_wait_all() {
#ifdef CVK_SIM
  cp_async_sim::commit();
  cp_async_sim::wait(0);
#else
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace cvk
