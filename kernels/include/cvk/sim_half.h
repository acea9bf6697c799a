// cvk/sim_half.h: the simulator's __half and __nv_bfloat16, standing in for cuda_fp16.h and
// cuda_bf16.h under g++ -DCVK_SIM (cvk/dtype.cuh includes it; include that instead).
//
// Bit-exact with CUDA where CUDA is exact:
//   - float -> half/bf16 (__float2half, __float2half_rn, __float2bfloat16, ..., the converting
//     constructors) round to nearest even; overflow gives inf (for half from 65520 up: the
//     midpoint above 65504 ties to the even 2^16); float subnormals are not flushed.
//   - NaN -> half/bf16 gives the canonical NaN 0x7fff, sign and payload dropped, as the GPU's
//     cvt.rn.f16.f32 / cvt.rn.bf16.f32 and cuda_fp16.hpp's host path do. numpy and ml_dtypes
//     keep the sign and payload (float32 NaN 0x7fc00000 -> 0x7e00 / 0x7fc0): tests that compare
//     with them must compare NaN-ness only, and check 0x7fff separately.
//   - half/bf16 -> float is exact. NaN: bf16 keeps its payload (a shift, as cuda_bf16.hpp);
//     half gives the canonical 0x7fffffff, as cuda_fp16.hpp's host __half2float (the device's
//     cvt.f32.f16 NaN bits are not documented; tests compare NaN-ness there).
//   - __hadd/__hsub/__hmul/__hdiv/__hfma round the exact result once, as add.f16, fma.rn.bf16
//     etc. do: computed in double, which holds the exact half sum, difference and product; for
//     div (and bf16 add/sub, whose exact sum can need more than 53 bits) double's p = 53 >= 2p+2
//     makes the double rounding innocuous (Figueroa 1995); fma uses the exact product plus
//     TwoSum and round-to-odd, so it is correct for both types. NaN results are 0x7fff.
//     GPU caveat: the device __hdiv for half is rcp.approx-based (cuda_fp16.hpp), so on rare
//     near-midpoint quotients it may differ from the correctly rounded value computed here.
//   - Comparisons follow cuda_fp16.hpp: ordered, except operator!= (unordered: true for NaN).
#pragma once
#ifndef CVK_SIM
#error "cvk/sim_half.h is the simulator's half types; include cvk/dtype.cuh instead"
#endif

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace cvk::sim::fp {

inline std::uint64_t bits_of(double x) { std::uint64_t u; std::memcpy(&u, &x, 8); return u; }
inline double double_of(std::uint64_t u) { double x; std::memcpy(&x, &u, 8); return x; }
inline float float_of(std::uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }

// Round a double to the binary format with EBITS exponent bits and MBITS stored mantissa bits,
// to nearest even, with gradual underflow and overflow to inf. NaN -> 0x7fff (canonical).
template <int EBITS, int MBITS>
inline std::uint16_t round_from_double(double x) {
  constexpr int bias = (1 << (EBITS - 1)) - 1, emin = 1 - bias;
  const std::uint64_t u = bits_of(x);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 63) << (EBITS + MBITS));
  const int dexp = static_cast<int>((u >> 52) & 0x7ff);
  std::uint64_t sig = u & ((1ull << 52) - 1);
  if (dexp == 0x7ff) {
    if (sig) return 0x7fff;
    return sign | static_cast<std::uint16_t>(((1u << EBITS) - 1) << MBITS);
  }
  if (dexp == 0 && sig == 0) return sign;
  int e;  // x = sig * 2^(e - 52), sig < 2^53
  if (dexp == 0) e = -1022;
  else { e = dexp - 1023; sig |= 1ull << 52; }
  // Unbiased exponent of the leading bit, for choosing the quantum.
  const int lead = (dexp == 0) ? -1022 - (52 - (63 - __builtin_clzll(sig))) : e;
  const int qexp = (lead > emin ? lead : emin) - MBITS;  // quantum 2^qexp
  const int shift = qexp - (e - 52);                      // > 0 unless x is tiny-exact
  std::uint64_t r;
  if (shift <= 0) {
    r = sig << -shift;  // exact (only for shift in range; sig fits by construction)
  } else if (shift >= 64) {
    r = 0;  // far below half the quantum (sig < 2^53 <= 2^(shift-1)), rounds to zero
  } else {
    r = sig >> shift;
    const std::uint64_t rem = sig & ((1ull << shift) - 1), half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
  }
  int q = qexp;
  if (r >= (2ull << MBITS)) { r >>= 1; ++q; }  // carried into the next binade
  if (r < (1ull << MBITS)) return sign | static_cast<std::uint16_t>(r);  // subnormal or zero
  const int field = q + MBITS + bias;
  if (field >= (1 << EBITS) - 1) return sign | static_cast<std::uint16_t>(((1u << EBITS) - 1) << MBITS);
  return sign | static_cast<std::uint16_t>((static_cast<unsigned>(field) << MBITS) |
                                           (r - (1ull << MBITS)));
}

template <int EBITS, int MBITS>
inline double to_double(std::uint16_t h) {
  constexpr int bias = (1 << (EBITS - 1)) - 1;
  const bool neg = h >> (EBITS + MBITS);
  const unsigned field = (h >> MBITS) & ((1u << EBITS) - 1), man = h & ((1u << MBITS) - 1);
  double v;
  if (field == (1u << EBITS) - 1) {
    if (man == 0) v = HUGE_VAL;
    else return double_of((neg ? 1ull << 63 : 0) | 0x7ff0000000000000ull |
                          (static_cast<std::uint64_t>(man) << (52 - MBITS)));  // payload kept
  } else if (field == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - bias - MBITS);
  } else {
    v = std::ldexp(static_cast<double>(man | (1u << MBITS)), static_cast<int>(field) - bias - MBITS);
  }
  return neg ? -v : v;
}

// a*b + c with one rounding to the target format. The product of two half or bf16 values is
// exact in double; TwoSum gives the exact error of the sum, and round-to-odd (p = 53 >= target
// p + 2) makes the final rounding to the target correct.
template <int EBITS, int MBITS>
inline std::uint16_t fma_round(double a, double b, double c) {
  const double p = a * b;
  const double s = p + c;
  if (!std::isfinite(s) || !std::isfinite(p)) return round_from_double<EBITS, MBITS>(s);
  const double bb = s - p, err = (p - (s - bb)) + (c - bb);
  double odd = s;
  if (err != 0 && !(bits_of(s) & 1)) odd = std::nextafter(s, err > 0 ? HUGE_VAL : -HUGE_VAL);
  return round_from_double<EBITS, MBITS>(odd);
}

}  // namespace cvk::sim::fp

// ---- __half -----------------------------------------------------------------------------------
struct __half_raw {
  unsigned short x;
};

struct alignas(2) __half {
  __half() = default;
  __half(const __half_raw& r) : __x(r.x) {}
  __half(float f) : __x(::cvk::sim::fp::round_from_double<5, 10>(f)) {}
  __half(double d) : __x(::cvk::sim::fp::round_from_double<5, 10>(d)) {}  // once, as __double2half
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
  __half(I v) : __x(::cvk::sim::fp::round_from_double<5, 10>(static_cast<double>(v))) {}
  __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
  operator __half_raw() const { return __half_raw{__x}; }
  operator float() const {  // NaN -> canonical 0x7fffffff, as cuda_fp16.hpp's __half2float
    if ((__x & 0x7fffu) > 0x7c00u) return ::cvk::sim::fp::float_of(0x7fffffffu);
    return static_cast<float>(::cvk::sim::fp::to_double<5, 10>(__x));
  }

 protected:
  unsigned short __x;  // protected, as in cuda_fp16.h: use __half_as_ushort
};
typedef __half half;

inline unsigned short __half_as_ushort(__half h) { return static_cast<__half_raw>(h).x; }
inline __half __ushort_as_half(unsigned short u) { return __half(__half_raw{u}); }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __double2half(double d) { return __half(d); }
inline float __half2float(__half h) { return static_cast<float>(h); }

// ---- __nv_bfloat16 ------------------------------------------------------------------------------
struct __nv_bfloat16_raw {
  unsigned short x;
};

struct alignas(2) __nv_bfloat16 {
  __nv_bfloat16() = default;
  __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16(float f) : __x(::cvk::sim::fp::round_from_double<8, 7>(f)) {}
  __nv_bfloat16(double d) : __x(::cvk::sim::fp::round_from_double<8, 7>(d)) {}
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
  __nv_bfloat16(I v) : __x(::cvk::sim::fp::round_from_double<8, 7>(static_cast<double>(v))) {}
  __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) { __x = r.x; return *this; }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
  operator float() const {  // the top half of a float32, NaN payloads included
    return ::cvk::sim::fp::float_of(static_cast<std::uint32_t>(__x) << 16);
  }

 protected:
  unsigned short __x;
};
typedef __nv_bfloat16 nv_bfloat16;

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return static_cast<__nv_bfloat16_raw>(h).x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16(__nv_bfloat16_raw{u}); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16(d); }
inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }

// ---- arithmetic and comparisons, the same for both types -----------------------------------------
#define CVK_SIM_HALF_OPS(T, E, M, AS_U, FROM_U)                                                   \
  inline double __cvk_d(T a) { return ::cvk::sim::fp::to_double<E, M>(AS_U(a)); }               \
  inline T __cvk_r##E(double x) { return FROM_U(::cvk::sim::fp::round_from_double<E, M>(x)); }       \
  inline T __hadd(T a, T b) { return __cvk_r##E(__cvk_d(a) + __cvk_d(b)); }                          \
  inline T __hsub(T a, T b) { return __cvk_r##E(__cvk_d(a) - __cvk_d(b)); }                          \
  inline T __hmul(T a, T b) { return __cvk_r##E(__cvk_d(a) * __cvk_d(b)); }                          \
  inline T __hdiv(T a, T b) { return __cvk_r##E(__cvk_d(a) / __cvk_d(b)); }                          \
  inline T __hfma(T a, T b, T c) {                                                                \
    return FROM_U(::cvk::sim::fp::fma_round<E, M>(__cvk_d(a), __cvk_d(b), __cvk_d(c)));           \
  }                                                                                               \
  inline T __hneg(T a) { return FROM_U(static_cast<unsigned short>(AS_U(a) ^ 0x8000u)); }         \
  inline T __habs(T a) { return FROM_U(static_cast<unsigned short>(AS_U(a) & 0x7fffu)); }         \
  inline bool __hisnan(T a) { return std::isnan(__cvk_d(a)); }                                    \
  inline int __hisinf(T a) { double d = __cvk_d(a); return std::isinf(d) ? (d > 0 ? 1 : -1) : 0; } \
  inline bool __heq(T a, T b) { return __cvk_d(a) == __cvk_d(b); }                                \
  inline bool __hne(T a, T b) { return __cvk_d(a) < __cvk_d(b) || __cvk_d(a) > __cvk_d(b); }      \
  inline bool __hneu(T a, T b) { return !(__cvk_d(a) == __cvk_d(b)); }                            \
  inline bool __hlt(T a, T b) { return __cvk_d(a) < __cvk_d(b); }                                 \
  inline bool __hle(T a, T b) { return __cvk_d(a) <= __cvk_d(b); }                                \
  inline bool __hgt(T a, T b) { return __cvk_d(a) > __cvk_d(b); }                                 \
  inline bool __hge(T a, T b) { return __cvk_d(a) >= __cvk_d(b); }                                \
  inline T operator+(const T& a, const T& b) { return __hadd(a, b); }                             \
  inline T operator-(const T& a, const T& b) { return __hsub(a, b); }                             \
  inline T operator*(const T& a, const T& b) { return __hmul(a, b); }                             \
  inline T operator/(const T& a, const T& b) { return __hdiv(a, b); }                             \
  inline T& operator+=(T& a, const T& b) { return a = __hadd(a, b); }                             \
  inline T& operator-=(T& a, const T& b) { return a = __hsub(a, b); }                             \
  inline T& operator*=(T& a, const T& b) { return a = __hmul(a, b); }                             \
  inline T& operator/=(T& a, const T& b) { return a = __hdiv(a, b); }                             \
  inline T operator+(const T& a) { return a; }                                                    \
  inline T operator-(const T& a) { return __hneg(a); }                                            \
  inline bool operator==(const T& a, const T& b) { return __heq(a, b); }                          \
  inline bool operator!=(const T& a, const T& b) { return __hneu(a, b); }                         \
  inline bool operator<(const T& a, const T& b) { return __hlt(a, b); }                           \
  inline bool operator<=(const T& a, const T& b) { return __hle(a, b); }                          \
  inline bool operator>(const T& a, const T& b) { return __hgt(a, b); }                           \
  inline bool operator>=(const T& a, const T& b) { return __hge(a, b); }                          \
  /* atomicAdd as red.add.f16/.bf16: the correctly rounded sum, by CAS on the 16 bits */         \
  inline T atomicAdd(T* p, T v) {                                                                 \
    std::atomic_ref<unsigned short> a(*reinterpret_cast<unsigned short*>(p));                    \
    unsigned short old = a.load(std::memory_order_relaxed);                                      \
    while (!a.compare_exchange_weak(old, AS_U(__hadd(FROM_U(old), v)),                            \
                                    std::memory_order_relaxed)) {                                 \
    }                                                                                             \
    return FROM_U(old);                                                                           \
  }

CVK_SIM_HALF_OPS(__half, 5, 10, __half_as_ushort, __ushort_as_half)
CVK_SIM_HALF_OPS(__nv_bfloat16, 8, 7, __bfloat16_as_ushort, __ushort_as_bfloat16)
#undef CVK_SIM_HALF_OPS

// ---- pairs (minimal) --------------------------------------------------------------------------
struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;
inline __half2 make_half2(__half x, __half y) { return __half2{x, y}; }
inline __half2 __halves2half2(__half x, __half y) { return __half2{x, y}; }
inline __half2 __floats2half2_rn(float x, float y) { return __half2{__half(x), __half(y)}; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return __nv_bfloat162{x, y}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return __nv_bfloat162{x, y}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float x, float y) {
  return __nv_bfloat162{__nv_bfloat16(x), __nv_bfloat16(y)};
}
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
