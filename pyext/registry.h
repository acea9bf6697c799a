// registry.h: kernel instantiations by name, launched from a type-erased argument list.
//
// Each explicit instantiation is registered under the string that NVRTC and CuPy also use as
// its name expression ("softmax_forward_kernel<float, false, true, 4>"). The registration lines
// are generated from the kernel specs (python/cvkernels/specs/, pyext/gen_instantiations.py):
// the name string and the template expression come from one formatter, so they cannot differ.
// The same file compiles under nvcc (launch = cudaLaunchKernel) and under g++ -DCVK_SIM
// (launch = cvk::sim::launch).
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

#ifdef CVK_SIM
#include "cvk/common.cuh"
#else
#include <cuda_runtime.h>
#endif

namespace cvk {

struct Dim {
  unsigned x = 1, y = 1, z = 1;
};

// One launch: grid, block, dynamic shared memory, and the kernel's
// cudaFuncAttributeMaxDynamicSharedMemorySize (48 KiB unless the plan opted in to more).
struct LaunchConfig {
  Dim grid, block;
  std::size_t smem = 0;
  std::size_t max_dynamic_smem = 48 * 1024;
};

// One kernel argument with the exact C type the caller meant: CuPy would send a Python float
// as a double, so the type travels with the value and must match the kernel's parameter.
struct Arg {
  enum Kind { PTR, I32, I64, F32, F64 } kind;
  std::uintptr_t p = 0;
  long long i = 0;
  double f = 0.0;
  static Arg ptr(std::uintptr_t v) { Arg a{PTR}; a.p = v; return a; }
  static Arg i64(long long v) { Arg a{I64}; a.i = v; return a; }
  static Arg i32(int v) { Arg a{I32}; a.i = v; return a; }
  static Arg f32(float v) { Arg a{F32}; a.f = v; return a; }
  static Arg f64(double v) { Arg a{F64}; a.f = v; return a; }
};

// The short names the Python schema uses for each kind.
inline const char* kind_name(Arg::Kind k) {
  static const char* names[] = {"ptr", "i32", "i64", "f32", "f64"};
  return names[k];
}

template <class T>
constexpr Arg::Kind kind_of() {
  if constexpr (std::is_pointer_v<T>) return Arg::PTR;
  else if constexpr (std::is_same_v<T, long long>) return Arg::I64;
  else if constexpr (std::is_same_v<T, int>) return Arg::I32;
  else if constexpr (std::is_same_v<T, float>) return Arg::F32;
  else if constexpr (std::is_same_v<T, double>) return Arg::F64;
  else static_assert(!sizeof(T), "kernel parameter type without an Arg kind");
}

using Launcher = std::function<void(const LaunchConfig&, std::uintptr_t stream,
                                    const std::vector<Arg>&)>;

struct Entry {
  Launcher launch;
  std::vector<std::string> signature;  // the kind of each parameter, in order
};

inline std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}

inline const Entry& find_kernel(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end())
    throw std::invalid_argument("no kernel registered as '" + name +
                                "' (is the extension older than the kernel specs? reinstall)");
  return it->second;
}

template <class T>
T arg_as(const Arg& a, const std::string& kernel, size_t idx) {
  constexpr Arg::Kind want = kind_of<T>();
  if (a.kind != want)
    throw std::invalid_argument(kernel + ": argument " + std::to_string(idx) + " must be " +
                                kind_name(want) + ", got " + kind_name(a.kind));
  if constexpr (std::is_pointer_v<T>) return reinterpret_cast<T>(a.p);
  else if constexpr (std::is_integral_v<T>) return static_cast<T>(a.i);
  else return static_cast<T>(a.f);
}

#ifndef CVK_SIM
inline void cuda_check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so the next launch is not blamed for it
    throw std::runtime_error(what + ": " + cudaGetErrorString(err));
  }
}
#endif

template <class... Ts, size_t... I>
void launch_typed(void (*fn)(Ts...), const std::string& name, const LaunchConfig& c,
                  std::uintptr_t stream, const std::vector<Arg>& args,
                  std::index_sequence<I...>) {
  if (args.size() != sizeof...(Ts))
    throw std::invalid_argument(name + ": expected " + std::to_string(sizeof...(Ts)) +
                                " arguments, got " + std::to_string(args.size()));
  std::tuple<Ts...> vals{arg_as<Ts>(args[I], name, I)...};
#ifdef CVK_SIM
  (void)stream;
  try {
    sim::launch(dim3(c.grid.x, c.grid.y, c.grid.z), dim3(c.block.x, c.block.y, c.block.z),
                c.smem, c.max_dynamic_smem, [&] { fn(std::get<I>(vals)...); });
  } catch (const sim::LaunchError& e) {
    throw std::runtime_error(name + ": launch failed: " + e.what());
  } catch (const sim::UsageError& e) {
    throw std::runtime_error(name + ": " + e.what());
  }
#else
  const void* f = reinterpret_cast<const void*>(fn);
  if (c.max_dynamic_smem > 48 * 1024)  // the opt-in above 48 KiB, as every path does it
    cuda_check(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(c.max_dynamic_smem)),
               name + ": cudaFuncSetAttribute(MaxDynamicSharedMemorySize=" +
                   std::to_string(c.max_dynamic_smem) + ") failed");
  void* ptrs[] = {static_cast<void*>(&std::get<I>(vals))...};
  cudaError_t err = cudaLaunchKernel(f, dim3(c.grid.x, c.grid.y, c.grid.z),
                                     dim3(c.block.x, c.block.y, c.block.z), ptrs, c.smem,
                                     reinterpret_cast<cudaStream_t>(stream));
  if (err == cudaSuccess) err = cudaGetLastError();
  cuda_check(err, name + ": launch failed");
#endif
}

struct Registrar {
  template <class... Ts>
  Registrar(const char* name, void (*fn)(Ts...)) {
    std::string n(name);
    if (registry().count(n)) throw std::logic_error("kernel registered twice: " + n);
    registry()[n] = Entry{
        [fn, n](const LaunchConfig& c, std::uintptr_t stream, const std::vector<Arg>& args) {
          launch_typed(fn, n, c, stream, args, std::index_sequence_for<Ts...>{});
        },
        {kind_name(kind_of<Ts>())...}};
  }
};

}  // namespace cvk

#define CVK_CAT2(a, b) a##b
#define CVK_CAT(a, b) CVK_CAT2(a, b)
// Register (and so instantiate) one kernel under `name`, the spec formatter's spelling of the
// template expression that follows (generated code uses this).
#define CVK_REGISTER_AS(name, ...) \
  static ::cvk::Registrar CVK_CAT(cvk_registrar_, __COUNTER__)(name, &__VA_ARGS__);
// Register one kernel under its own spelling (test-only kernels, written by hand).
#define CVK_REGISTER(...) CVK_REGISTER_AS(#__VA_ARGS__, __VA_ARGS__)
