// registry.h: kernels by name, launched from a type-erased argument list.
//
// Each explicit instantiation is registered under the string NVRTC and CuPy also use as its
// name expression ("softmax_forward_kernel<false, true, 4>"), so the pybind11 launchers, the
// rawkernel path and the simulator stand-in for CuPy's RawModule all find the same kernel. The
// same file compiles under nvcc (launch = cudaLaunchKernel) and under g++ -DCVK_SIM (launch =
// cvk::sim::launch).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "plans.h"

#ifdef CVK_SIM
#include "cvk/common.cuh"
#else
#include <cuda_runtime.h>
#endif

namespace cvk {

// One kernel argument with the exact C type the caller meant: CuPy would send a Python float
// as a double, so the type travels with the value and must match the kernel's parameter.
struct Arg {
  enum Kind { PTR, I32, I64, F32, F64 } kind;
  std::uintptr_t p = 0;
  long long i = 0;
  double f = 0.0;
  static Arg ptr(const void* v) { Arg a{PTR}; a.p = reinterpret_cast<std::uintptr_t>(v); return a; }
  static Arg ptr(std::uintptr_t v) { Arg a{PTR}; a.p = v; return a; }
  static Arg i64(long long v) { Arg a{I64}; a.i = v; return a; }
  static Arg i32(int v) { Arg a{I32}; a.i = v; return a; }
  static Arg f32(float v) { Arg a{F32}; a.f = v; return a; }
  static Arg f64(double v) { Arg a{F64}; a.f = v; return a; }
};

inline const char* kind_name(Arg::Kind k) {
  static const char* names[] = {"pointer", "int32", "int64", "float32", "float64"};
  return names[k];
}

using Launcher = std::function<void(const Plan&, std::uintptr_t stream, const std::vector<Arg>&)>;

inline std::map<std::string, Launcher>& registry() {
  static std::map<std::string, Launcher> r;
  return r;
}

inline const Launcher& find_kernel(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end()) throw std::invalid_argument("no kernel registered as '" + name + "'");
  return it->second;
}

template <class T>
T arg_as(const Arg& a, const std::string& kernel, size_t idx) {
  Arg::Kind want;
  if constexpr (std::is_pointer_v<T>) want = Arg::PTR;
  else if constexpr (std::is_same_v<T, long long>) want = Arg::I64;
  else if constexpr (std::is_same_v<T, int>) want = Arg::I32;
  else if constexpr (std::is_same_v<T, float>) want = Arg::F32;
  else if constexpr (std::is_same_v<T, double>) want = Arg::F64;
  else static_assert(!sizeof(T), "kernel parameter type without an Arg kind");
  if (a.kind != want)
    throw std::invalid_argument(kernel + ": argument " + std::to_string(idx) + " must be " +
                                kind_name(want) + ", got " + kind_name(a.kind));
  if constexpr (std::is_pointer_v<T>) return reinterpret_cast<T>(a.p);
  else if constexpr (std::is_integral_v<T>) return static_cast<T>(a.i);
  else return static_cast<T>(a.f);
}

template <class... Ts, size_t... I>
void launch_typed(void (*fn)(Ts...), const std::string& name, const Plan& p, std::uintptr_t stream,
                  const std::vector<Arg>& args, std::index_sequence<I...>) {
  if (args.size() != sizeof...(Ts))
    throw std::invalid_argument(name + ": expected " + std::to_string(sizeof...(Ts)) +
                                " arguments, got " + std::to_string(args.size()));
  std::tuple<Ts...> vals{arg_as<Ts>(args[I], name, I)...};
#ifdef CVK_SIM
  (void)stream;
  try {
    sim::launch(dim3(p.grid.x, p.grid.y, p.grid.z), dim3(p.block.x, p.block.y, p.block.z), p.smem,
                48 * 1024,
                [&] { fn(std::get<I>(vals)...); });
  } catch (const sim::LaunchError& e) {
    throw std::runtime_error(name + ": launch failed: " + e.what());
  } catch (const sim::UsageError& e) {
    throw std::runtime_error(name + ": " + e.what());
  }
#else
  void* ptrs[] = {static_cast<void*>(&std::get<I>(vals))...};
  cudaError_t err = cudaLaunchKernel(reinterpret_cast<const void*>(fn),
                                     dim3(p.grid.x, p.grid.y, p.grid.z),
                                     dim3(p.block.x, p.block.y, p.block.z), ptrs, p.smem,
                                     reinterpret_cast<cudaStream_t>(stream));
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(name + ": launch failed: " + cudaGetErrorString(err));
#endif
}

struct Registrar {
  template <class... Ts>
  Registrar(const char* name, void (*fn)(Ts...)) {
    std::string n(name);
    registry()[n] = [fn, n](const Plan& p, std::uintptr_t stream, const std::vector<Arg>& args) {
      launch_typed(fn, n, p, stream, args, std::index_sequence_for<Ts...>{});
    };
  }
};

}  // namespace cvk

#define CVK_CAT2(a, b) a##b
#define CVK_CAT(a, b) CVK_CAT2(a, b)
// Register (and so instantiate) one kernel under its own spelling.
#define CVK_REGISTER(...) \
  static ::cvk::Registrar CVK_CAT(cvk_registrar_, __COUNTER__)(#__VA_ARGS__, &__VA_ARGS__);
