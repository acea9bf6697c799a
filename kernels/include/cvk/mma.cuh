// cvk/mma.cuh: warp-level tensor-core wrappers, mma.sync and ldmatrix. Inline PTX under nvcc and
// NVRTC; under the CPU simulator (CVK_SIM) an exact warp-collective emulation of the same
// semantics. Operands are packed 32-bit registers exactly as the PTX takes them (two b16 values
// per register, element with the lower index in the low half), so nothing here depends on the
// __half / __nv_bfloat16 types. cp.async is in cvk/cp_async.cuh.
//
// Sources (PTX ISA, read for this file; section names as in the ISA):
//   "Matrix Fragments for mma.m16n8k16 with floating point type"  (Figures "MMA .m16n8k16
//       fragment layout for matrix A / B with .f16/.bf16 type", "... accumulator matrix C/D")
//   "Matrix Fragments for mma.m16n8k8"  (the .tf32 rows of the A, B tables; C/D as .f32)
//   "Multiply-and-Accumulate Instruction: mma"  ("Precision and rounding")
//   "Warp-level matrix load instruction: ldmatrix"  (Figure "ldmatrix fragment layout for one
//       8x8 Matrix with 16-bit elements")
// With groupID = lane >> 2 and tig (threadID_in_group) = lane % 4:
//   m16n8k16 A (16x16, row): reg r holds a[2r], a[2r+1]; a_i at row g (i in 0,1,4,5) else g+8,
//            col 2*tig + (i&1) (+8 for i >= 4)
//   m16n8k16 B (16x8, col):  reg r holds b[2r], b[2r+1]; b_i at row 2*tig + (i&1) (+8 for i >= 2),
//            col g
//   C/D (16x8, f32): c_i at row g (i < 2) else g+8, col 2*tig + (i&1)
//   m16n8k8 tf32 A (16x8): one element per reg; a0 (g, tig), a1 (g+8, tig), a2 (g, tig+4),
//            a3 (g+8, tig+4);  B (8x8): b0 (tig, g), b1 (tig+4, g);  C/D as above.
//   ldmatrix .m8n8 .b16: lanes 8j..8j+7 give the row addresses of matrix j (j < .num); lane t
//            gets in reg j row t/4, cols 2*(t%4), 2*(t%4)+1 of matrix j; with .trans the matrix
//            as stored is transposed first (lane t gets stored rows 2*(t%4), 2*(t%4)+1 at
//            column t/4). Each row is 16 bytes and its address must be 16-byte aligned.
//
// Simulator numerics. The ISA leaves the accumulation order, rounding and subnormal handling of
// f16/bf16/tf32 mma unspecified ("Precision and rounding"). The simulator fixes them as:
//   d[m][n] = c[m][n]; for k = 0 .. K-1 (ascending): d = fmaf(A[m][k], B[k][n], d)
// i.e. every product exact (f16/tf32 products are exact in fp32 anyway; fmaf also keeps bf16
// products exact), each accumulation step rounded to nearest fp32, subnormal inputs kept
// (f16 decoded exactly, subnormals, infinities and NaNs included; bf16 = bits << 16). tf32
// inputs ignore the low 13 mantissa bits (truncated, as the hardware does; a NaN stays a NaN).
// A GPU may sum in another order and truncate; tests of GPU results allow for that, tests of
// simulator results check this order bit for bit.
//
// Simulator misuse (an error of the launch, cvk::sim::UsageError): any of these collectives with
// a lane of the warp exited or absent (.sync.aligned needs all 32), an ldmatrix row address of a
// used lane not 16-byte aligned. Not detected: lanes of one warp calling different collectives.
#pragma once
#include "cvk/common.cuh"

#ifdef CVK_SIM
#include <cstring>
#include <limits>

#endif

namespace cvk {

#ifdef CVK_SIM
namespace mma_sim {

inline float f16_bits_to_float(unsigned h) {
  const unsigned e = (h >> 10) & 31u, m = h & 1023u;
  float v;
  if (e == 0) v = std::ldexp(static_cast<float>(m), -24);  // zero and subnormals
  else if (e == 31) v = m ? std::numeric_limits<float>::quiet_NaN()
                          : std::numeric_limits<float>::infinity();
  else v = std::ldexp(static_cast<float>(m | 1024u), static_cast<int>(e) - 25);
  return (h & 0x8000u) ? -v : v;
}
inline float bf16_bits_to_float(unsigned h) { return __int_as_float(static_cast<int>(h << 16)); }
inline float tf32_bits_to_float(unsigned x) {
  const float f = __int_as_float(static_cast<int>(x));
  return f != f ? f : __int_as_float(static_cast<int>(x & 0xffffe000u));
}
inline unsigned half_of(unsigned reg, int i) { return (reg >> (16 * (i & 1))) & 0xffffu; }

// All 32 lanes deposit `mine`; every lane gets everyone's. A missing lane is a usage error,
// reported with the instruction's name.
template <class T>
void gather_full_warp(const char* what, const T& mine, T* all) {
  if (sim::alive_lanes() != 0xffffffffu) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", sim::alive_lanes());
    throw sim::UsageError(std::string(what) + " needs all 32 lanes of the warp (.sync.aligned); " +
                          "running lanes are " + hex);
  }
  try {
    sim::warp_gather(0xffffffffu, mine, all);
  } catch (const sim::UsageError& e) {
    throw sim::UsageError(std::string(what) + " needs all 32 lanes of the warp: " + e.what());
  }
}

struct MmaOperands {
  unsigned a[4];
  unsigned b[2];
  float c[4];
};

// D = A (16 x K) * B (K x 8) + C for K = 16 (f16/bf16, a_i packed two per register) or K = 8
// (tf32, one per register). Every lane rebuilds the full matrices from the gathered fragments
// and computes its own four outputs.
template <int K, class Decode>
inline void mma_16x8(const char* what, float (&d)[4], const unsigned (&a)[4],
                     const unsigned (&b)[2], const float (&c)[4], Decode decode) {
  MmaOperands mine, all[32];
  for (int i = 0; i < 4; ++i) mine.a[i] = a[i], mine.c[i] = c[i];
  mine.b[0] = b[0], mine.b[1] = b[1];
  gather_full_warp(what, mine, all);
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, tig = l & 3;
    if (K == 16) {
      for (int i = 0; i < 8; ++i) {
        const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
        const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = decode(half_of(all[l].a[i / 2], i));
      }
      for (int i = 0; i < 4; ++i)
        B[tig * 2 + (i & 1) + (i >= 2 ? 8 : 0)][g] = decode(half_of(all[l].b[i / 2], i));
    } else {
      A[g][tig] = decode(all[l].a[0]);
      A[g + 8][tig] = decode(all[l].a[1]);
      A[g][tig + 4] = decode(all[l].a[2]);
      A[g + 8][tig + 4] = decode(all[l].a[3]);
      B[tig][g] = decode(all[l].b[0]);
      B[tig + 4][g] = decode(all[l].b[1]);
    }
    for (int i = 0; i < 4; ++i) C[i < 2 ? g : g + 8][tig * 2 + (i & 1)] = all[l].c[i];
  }
  const int me = sim::lane(), g = me >> 2, tig = me & 3;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? g : g + 8, col = tig * 2 + (i & 1);
    float acc = C[row][col];
    for (int k = 0; k < K; ++k) acc = std::fma(A[row][k], B[k][col], acc);
    out[i] = acc;
  }
  for (int i = 0; i < 4; ++i) d[i] = out[i];  // d may alias c
}

template <int NUM, bool TRANS>
inline void ldmatrix(unsigned* r, const void* row_addr) {
  const char* what = TRANS ? "ldmatrix.m8n8.trans" : "ldmatrix.m8n8";
  const unsigned char* rows[32];
  gather_full_warp(what, static_cast<const unsigned char*>(row_addr), rows);
  for (int l = 0; l < 8 * NUM; ++l) {
    const auto addr = reinterpret_cast<std::uintptr_t>(rows[l]);
    if (addr % 16 != 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "%s.x%d: lane %d's row address %p is not 16-byte aligned (each row is 16 "
                    "bytes, naturally aligned)", what, NUM, l, static_cast<const void*>(rows[l]));
      throw sim::UsageError(buf);
    }
  }
  const int t = sim::lane();
  for (int j = 0; j < NUM; ++j) {
    if (!TRANS) {
      std::memcpy(&r[j], rows[8 * j + t / 4] + 4 * (t % 4), 4);
    } else {
      unsigned short lo, hi;
      std::memcpy(&lo, rows[8 * j + 2 * (t % 4)] + 2 * (t / 4), 2);
      std::memcpy(&hi, rows[8 * j + 2 * (t % 4) + 1] + 2 * (t / 4), 2);
      r[j] = static_cast<unsigned>(lo) | (static_cast<unsigned>(hi) << 16);
    }
  }
  // Nobody runs ahead (and, say, overwrites a row) before every lane has read: one instruction.
  __syncwarp(0xffffffffu);
}

}  // namespace mma_sim
#endif

// ---- mma.sync ---------------------------------------------------------------------------------
// d = a * b + c, m16n8k16, A row-major f16 (4 regs of f16x2), B col-major f16 (2 regs), fp32 C/D.
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const unsigned (&a)[4],
                                                 const unsigned (&b)[2], const float (&c)[4]) {
#ifdef CVK_SIM
  mma_sim::mma_16x8<16>("mma.sync.m16n8k16.f16", d, a, b, c, mma_sim::f16_bits_to_float);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

// The same with bf16 inputs (bf16x2 registers).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4],
                                                  const unsigned (&b)[2], const float (&c)[4]) {
#ifdef CVK_SIM
  mma_sim::mma_16x8<16>("mma.sync.m16n8k16.bf16", d, a, b, c, mma_sim::bf16_bits_to_float);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

// d = a * b + c, m16n8k8, tf32 inputs: each register holds one fp32 bit pattern whose low 13
// mantissa bits the tensor core ignores (A 4 regs, B 2 regs), fp32 C/D.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4],
                                                 const unsigned (&b)[2], const float (&c)[4]) {
#ifdef CVK_SIM
  mma_sim::mma_16x8<8>("mma.sync.m16n8k8.tf32", d, a, b, c, mma_sim::tf32_bits_to_float);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

// ---- ldmatrix ---------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.x{NUM}{.trans}.shared.b16: r[j] gets this lane's fragment of 8x8
// matrix j. `row_addr` is this lane's row address in shared memory (used from lanes < 8*NUM).
template <int NUM, bool TRANS = false>
__device__ __forceinline__ void ldmatrix(unsigned (&r)[NUM], const void* row_addr) {
  static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef CVK_SIM
  mma_sim::ldmatrix<NUM, TRANS>(r, row_addr);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row_addr));
  if constexpr (NUM == 1) {
    if constexpr (TRANS)
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                   : "=r"(r[0]) : "r"(s) : "memory");
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                   : "=r"(r[0]) : "r"(s) : "memory");
  } else if constexpr (NUM == 2) {
    if constexpr (TRANS)
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1]) : "r"(s) : "memory");
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1]) : "r"(s) : "memory");
  } else {
    if constexpr (TRANS)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
  }
#endif
}

// Whether T is bf16 (picks the mma flavour at compile time; no <type_traits> under NVRTC).
template <class T>
struct is_bf16 {
  static constexpr bool value = false;
};
template <>
struct is_bf16<__nv_bfloat16> {
  static constexpr bool value = true;
};

// One 16-wide k step of a warp's 32 x 32 tile of m16n8k16 mmas, fp32 accumulators acc[mi][ni]
// (rows wm + 16 mi, columns wn + 8 ni). A is row-major in shared memory (row stride AS
// elements: rows wm .. wm+31, k kk .. kk+15), B k-major (row stride BS: k kk .. kk+15, columns
// wn .. wn+31), both 16-bit (fp16 or bf16 bits). 2 ldmatrix.x4 for A, 2 ldmatrix.x4.trans for
// B (the mma wants B "col"), 8 mma.sync. Shared by matmul_tc and conv2d_tc.
template <bool BF16, int AS, int BS>
__device__ __forceinline__ void warp_mma_32x32_k16(float (&acc)[2][4][4],
                                                   const unsigned short* as,
                                                   const unsigned short* bs, int wm, int wn,
                                                   int kk, int lane) {
  unsigned af[2][4], bf[4][2];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)  // matrices: rows 0-7 / 8-15 x k 0-7 / 8-15 = a0..a3 regs
    ldmatrix<4>(af[mi], as + (wm + mi * 16 + lane % 16) * AS + kk + (lane / 16) * 8);
#pragma unroll
  for (int nj = 0; nj < 2; ++nj) {  // matrices: k 0-7 / 8-15 x n 0-7, then n 8-15
    unsigned r[4];
    ldmatrix<4, true>(
        r, bs + (kk + lane % 8 + ((lane / 8) & 1) * 8) * BS + wn + nj * 16 + (lane / 16) * 8);
    bf[2 * nj][0] = r[0], bf[2 * nj][1] = r[1];
    bf[2 * nj + 1][0] = r[2], bf[2 * nj + 1][1] = r[3];
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      if constexpr (BF16) mma_m16n8k16_bf16(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
      else mma_m16n8k16_f16(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
    }
}

}  // namespace cvk
