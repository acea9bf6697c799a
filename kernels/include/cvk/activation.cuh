// cvk/activation.cuh: elementwise activation functors, shared by the activation kernels
// (kernels/activation.cuh) and by bias + activation epilogues (kernels/bias_relu.cuh; linear
// and conv epilogues can use them the same way). All math in fp32, whatever the storage type.
//
//   Act<A>::fwd(x, alpha)            y = f(x)        (alpha: leaky_relu's negative_slope,
//                                                     elu's alpha; unused otherwise)
//   Act<A>::bwd(g, z, alpha)         grad_input = g * f'(x), where z is x, or y = f(x) when
//                                    Act<A>::FROM_OUTPUT (sigmoid, tanh: torch saves the output)
//   Act<A>::grad(g, x, alpha)        g * f'(x) from the input x for every A (epilogues, which keep
//                                    the pre-activation, use this one)
//
// Semantics are torch's, NaN included: relu/leaky_relu/elu gradients at exactly 0 take the
// x <= 0 branch; relu(NaN) = NaN and relu(-0) = -0 (clamp_min); in the backward a NaN input
// passes g for relu and elu (torch tests x <= 0) and g * slope for leaky_relu (torch tests
// x > 0); gelu 'none' is x * Phi(x) with Phi through
// erfcf (no cancellation for x < 0), gelu 'tanh' is 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))),
// sigmoid is 1/(1+e^-|x|) or e^-|x|/(1+e^-|x|) so it never overflows.
// Accuracy: expf 2, expm1f 1, erfcf 4, tanhf 2 ulp (CUDA C Programming Guide, "Mathematical
// Functions", single precision, max ulp error; no fast-math intrinsics here); the bounds in
// python/cvkernels/specs/activation.py are derived from these figures.
#pragma once
#include "cvk/common.cuh"

namespace cvk {

enum ActKind : int {
  ACT_RELU = 0,
  ACT_LEAKY_RELU = 1,
  ACT_ELU = 2,
  ACT_GELU = 3,       // approximate='none'
  ACT_GELU_TANH = 4,  // approximate='tanh'
  ACT_SIGMOID = 5,
  ACT_TANH = 6,
};

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kGeluC = 0.044715f;

template <int A>
struct Act;

template <>
struct Act<ACT_RELU> {
  static constexpr bool FROM_OUTPUT = false;
  // torch's clamp_min: NaN and -0 pass through; the backward tests x <= 0 (a NaN input passes g)
  __device__ __forceinline__ static float fwd(float x, float) { return x < 0.f ? 0.f : x; }
  __device__ __forceinline__ static float bwd(float g, float x, float) {
    return x <= 0.f ? 0.f : g;
  }
  __device__ __forceinline__ static float grad(float g, float x, float a) { return bwd(g, x, a); }
};

template <>
struct Act<ACT_LEAKY_RELU> {
  static constexpr bool FROM_OUTPUT = false;
  __device__ __forceinline__ static float fwd(float x, float a) { return x > 0.f ? x : x * a; }
  __device__ __forceinline__ static float bwd(float g, float x, float a) {
    return x > 0.f ? g : g * a;
  }
  __device__ __forceinline__ static float grad(float g, float x, float a) { return bwd(g, x, a); }
};

template <>
struct Act<ACT_ELU> {
  static constexpr bool FROM_OUTPUT = false;
  __device__ __forceinline__ static float fwd(float x, float a) {
    return x > 0.f ? x : a * expm1f(x);  // NaN takes this branch and stays NaN
  }
  __device__ __forceinline__ static float bwd(float g, float x, float a) {
    return x <= 0.f ? g * (a * expf(x)) : g;  // torch's test: a NaN input passes g
  }
  __device__ __forceinline__ static float grad(float g, float x, float a) { return bwd(g, x, a); }
};

template <>
struct Act<ACT_GELU> {
  static constexpr bool FROM_OUTPUT = false;
  __device__ __forceinline__ static float fwd(float x, float) {
    return 0.5f * x * erfcf(-x * kInvSqrt2);
  }
  __device__ __forceinline__ static float bwd(float g, float x, float) {
    const float cdf = 0.5f * erfcf(-x * kInvSqrt2);
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
    return g * (cdf + x * pdf);
  }
  __device__ __forceinline__ static float grad(float g, float x, float a) { return bwd(g, x, a); }
};

template <>
struct Act<ACT_GELU_TANH> {
  static constexpr bool FROM_OUTPUT = false;
  __device__ __forceinline__ static float fwd(float x, float) {
    const float inner = kSqrt2OverPi * (x + kGeluC * x * x * x);
    return 0.5f * x * (1.f + tanhf(inner));
  }
  __device__ __forceinline__ static float bwd(float g, float x, float) {
    const float x2 = x * x;
    const float th = tanhf(kSqrt2OverPi * (x + kGeluC * x2 * x));
    const float dinner = kSqrt2OverPi * (1.f + 3.f * kGeluC * x2);
    return g * (0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * dinner);
  }
  __device__ __forceinline__ static float grad(float g, float x, float a) { return bwd(g, x, a); }
};

template <>
struct Act<ACT_SIGMOID> {
  static constexpr bool FROM_OUTPUT = true;
  __device__ __forceinline__ static float fwd(float x, float) {
    const float e = expf(-fabsf(x));  // in (0, 1]: no overflow for any x
    return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);  // NaN: e = NaN, result NaN
  }
  __device__ __forceinline__ static float bwd(float g, float y, float) { return g * y * (1.f - y); }
  __device__ __forceinline__ static float grad(float g, float x, float a) {
    return bwd(g, fwd(x, a), a);
  }
};

template <>
struct Act<ACT_TANH> {
  static constexpr bool FROM_OUTPUT = true;
  __device__ __forceinline__ static float fwd(float x, float) { return tanhf(x); }
  __device__ __forceinline__ static float bwd(float g, float y, float) { return g * (1.f - y * y); }
  __device__ __forceinline__ static float grad(float g, float x, float a) {
    return bwd(g, fwd(x, a), a);
  }
};

}  // namespace cvk
