// cvk/sim_api_shim.h: TEMPORARY stand-in, over today's thread-per-CUDA-thread sim.h, for the four
// functions the simulator rewrite (branch `sim`) provides in namespace cvk::sim:
//   lane(), alive_lanes(), warp_gather(mask, mine, all), thread_storage<T>().
// mma.cuh and cp_async.cuh use only these four (plus CUDA intrinsics). Delete this file at the
// merge; the real ones replace it with the same names and semantics.
#pragma once
#ifndef CVK_SIM
#error "cvk/sim_api_shim.h is part of the CPU simulator"
#endif
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>

#include "cvk/sim.h"

namespace cvk::sim {

// The calling CUDA thread's lane, 0..31.
inline int lane() { return tls.lane; }

// Lanes of the caller's warp that are still running the kernel.
inline unsigned alive_lanes() { return tls.warp->alive_mask.load(std::memory_order_relaxed); }

// Every lane in `mask` deposits `mine`; on return all[l] holds lane l's value for each l in
// mask. Synchronises like __syncwarp(mask). Throws UsageError if the caller is not in mask or a
// lane in mask has exited. Lanes publish a pointer to `mine` in their slot and copy from each
// other's between two barriers, so the values can be any size.
template <class T>
void warp_gather(unsigned mask, const T& mine, T* all) {
  static_assert(std::is_trivially_copyable_v<T>, "warp_gather needs a trivially copyable T");
  Barrier& bar = warp_barrier(mask);  // throws if the caller is not in mask
  Warp& w = *tls.warp;
  w.slot[tls.lane] = reinterpret_cast<std::uintptr_t>(&mine);
  bar.wait();
  const unsigned missing = mask & ~w.alive_mask.load(std::memory_order_relaxed);
  if (missing) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", missing);
    throw UsageError(std::string("warp collective over lanes whose mask names exited lanes (") +
                     hex + ")");
  }
  for (int l = 0; l < 32; ++l)
    if ((mask >> l) & 1u) all[l] = *reinterpret_cast<const T*>(w.slot[l]);
  bar.wait();  // `mine` stays alive until every lane has copied it
}

// One T per CUDA thread, value-initialised when the thread starts each block. Here: a host
// thread_local (one host thread per CUDA thread, new threads each launch) reset whenever the
// thread moves on to another block of the launch.
template <class T>
T& thread_storage() {
  struct Slot {
    bool used = false;
    unsigned bx = 0, by = 0, bz = 0;
    T value{};
  };
  static thread_local Slot s;
  if (!s.used || s.bx != blockIdx.x || s.by != blockIdx.y || s.bz != blockIdx.z) {
    s.used = true;
    s.bx = blockIdx.x;
    s.by = blockIdx.y;
    s.bz = blockIdx.z;
    s.value = T{};
  }
  return s.value;
}

}  // namespace cvk::sim
