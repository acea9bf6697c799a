// cvk/vec.cuh: 16-byte vector loads and stores for any element type (llm.c's Packed128):
// Packed128<T> holds 16 / sizeof(T) elements (4 float, 8 half or bf16), moved by one LDG.128 /
// STG.128. load128cs/store128cs are the streaming variants (__ldcs/__stcs: evict-first, for data
// touched once). The pointer must be 16-byte aligned: on a GPU a misaligned vector access is a
// sticky "misaligned address" error; the simulator raises a UsageError, reported by the launch.
#pragma once
#include "cvk/common.cuh"

namespace cvk {

template <class T>
struct alignas(16) Packed128 {
  static constexpr int size = 16 / sizeof(T);
  static_assert(sizeof(T) * size == 16, "Packed128: sizeof(T) must divide 16");
  T payload[size];

  __device__ __forceinline__ T& operator[](int i) { return payload[i]; }
  __device__ __forceinline__ const T& operator[](int i) const { return payload[i]; }
  __device__ __forceinline__ static Packed128 constant(T v) {
    Packed128 r;
#pragma unroll
    for (int k = 0; k < size; ++k) r.payload[k] = v;
    return r;
  }
  __device__ __forceinline__ static Packed128 zeros() { return constant(T{}); }  // +0 bits
};

#ifdef CVK_SIM
__device__ __forceinline__ void check_aligned16(const void* p, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
    throw ::cvk::sim::UsageError(std::string(what) + ": misaligned address " +
                                 std::to_string(reinterpret_cast<std::uintptr_t>(p)) +
                                 " (16-byte vector access needs 16-byte alignment)");
}
// The streaming variants are plain accesses here: cache hints have no meaning on the CPU.
template <class T>
__device__ __forceinline__ Packed128<T> load128_checked(const T* p, const char* what) {
  check_aligned16(p, what);
  Packed128<T> r;
  std::memcpy(&r, p, 16);
  return r;
}
template <class T>
__device__ __forceinline__ void store128_checked(T* p, Packed128<T> v, const char* what) {
  check_aligned16(p, what);
  std::memcpy(static_cast<void*>(p), &v, 16);  // void*: T is trivially copyable
}
template <class T>
__device__ __forceinline__ Packed128<T> load128(const T* p) { return load128_checked(p, "load128"); }
template <class T>
__device__ __forceinline__ Packed128<T> load128cs(const T* p) {
  return load128_checked(p, "load128cs");
}
template <class T>
__device__ __forceinline__ void store128(T* p, Packed128<T> v) { store128_checked(p, v, "store128"); }
template <class T>
__device__ __forceinline__ void store128cs(T* p, Packed128<T> v) {
  store128_checked(p, v, "store128cs");
}
#else
// Through int4, which has the LDG.128 and __ldcs/__stcs overloads.
template <class T>
__device__ __forceinline__ Packed128<T> packed_from_bits(int4 bits) {
  Packed128<T> r;
  memcpy(&r, &bits, 16);
  return r;
}
template <class T>
__device__ __forceinline__ int4 packed_bits(const Packed128<T>& v) {
  int4 bits;
  memcpy(&bits, &v, 16);
  return bits;
}
template <class T>
__device__ __forceinline__ Packed128<T> load128(const T* p) {
  return packed_from_bits<T>(*reinterpret_cast<const int4*>(p));
}
template <class T>
__device__ __forceinline__ Packed128<T> load128cs(const T* p) {
  return packed_from_bits<T>(__ldcs(reinterpret_cast<const int4*>(p)));
}
template <class T>
__device__ __forceinline__ void store128(T* p, Packed128<T> v) {
  *reinterpret_cast<int4*>(p) = packed_bits(v);
}
template <class T>
__device__ __forceinline__ void store128cs(T* p, Packed128<T> v) {
  __stcs(reinterpret_cast<int4*>(p), packed_bits(v));
}
#endif

// VEC consecutive elements of T, as fp32: one 16-byte access when VEC == Packed128<T>::size.
template <class T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[VEC]) {
  if constexpr (VEC == Packed128<T>::size) {
    const Packed128<T> q = load128(p);
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = to_float(q[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = to_float(p[i]);
  }
}

template <class T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[VEC]) {
  if constexpr (VEC == Packed128<T>::size) {
    Packed128<T> q;
#pragma unroll
    for (int i = 0; i < VEC; ++i) q[i] = from_float<T>(v[i]);
    store128(p, q);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) p[i] = from_float<T>(v[i]);
  }
}

}  // namespace cvk
