// cvk/philox.cuh: the counter-based generator Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC'11; the Random123 library), as curand and torch's CUDA
// generator use it. philox4x32_10(counter, key) is a pure function: 4 words of 32 random bits
// per 128-bit counter, no state, so any thread can draw any part of a stream, and a backward
// pass regenerates a forward's dropout mask from (seed, offset) instead of storing it.
// Checked against Random123's published known-answer vectors (kat_vectors) through its NumPy
// twin, cvkernels.reference.philox, which tests/test_kernels_dropout.py also compares with
// this header bit for bit.
//
// The cvkernels stream: key = (seed low word, seed high word); draw number d (a 64-bit count of
// 32-bit draws) is word d % 4 of philox4x32_10({lo(d / 4), hi(d / 4), 0, 0}, key).
// Cost: 10 rounds of 2 32x32->64 multiplies (IMAD.WIDE.U32 / IMAD.HI) and a few XORs/adds:
// ~40 integer instructions per 4 draws, far below what a bytes-bound kernel can hide.
#pragma once
#include "cvk/common.cuh"

namespace cvk {

struct u32x4 {
  unsigned int x, y, z, w;
};

// One round: two 32x32->64 products; the 64-bit product is portable (nvcc makes it one
// IMAD.WIDE.U32, g++ one MUL), so the simulator needs no __umulhi wrapper.
__device__ __forceinline__ u32x4 philox_round(u32x4 c, unsigned int k0, unsigned int k1) {
  const unsigned long long p0 = 0xD2511F53ull * c.x, p1 = 0xCD9E8D57ull * c.z;
  const unsigned int hi0 = static_cast<unsigned int>(p0 >> 32), lo0 = static_cast<unsigned int>(p0);
  const unsigned int hi1 = static_cast<unsigned int>(p1 >> 32), lo1 = static_cast<unsigned int>(p1);
  return u32x4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
}

// Philox4x32 with 10 rounds: the round keys advance by the Weyl constants between rounds.
__device__ __forceinline__ u32x4 philox4x32_10(u32x4 c, unsigned int k0, unsigned int k1) {
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    c = philox_round(c, k0, k1);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// The four draws 4*block .. 4*block+3 of the stream of `seed` (see the header comment).
__device__ __forceinline__ u32x4 philox_block(unsigned long long seed, unsigned long long block) {
  return philox4x32_10(u32x4{static_cast<unsigned int>(block),
                             static_cast<unsigned int>(block >> 32), 0u, 0u},
                       static_cast<unsigned int>(seed), static_cast<unsigned int>(seed >> 32));
}

}  // namespace cvk
