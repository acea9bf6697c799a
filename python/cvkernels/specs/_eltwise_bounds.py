"""Rounding-derived fp32 error bounds of the activation functors (kernels/include/cvk/
activation.cuh), by running each functor's expression, in its exact evaluation order, in a
first-order error-tracking arithmetic over float64 arrays.

Each value carries ``(v, e)``: ``v`` the exact value of the expression on the (rounded) inputs,
``e`` a bound on |computed - v|. Rules (U = 2^-24, fp32's unit roundoff; an fp32 ulp at y is at
most 2U|y| for normal y):

* a constant c is f32(c): e = U|c| unless c is exactly representable;
* a +- b, a * b, a / b: the propagated errors plus U|result| + ETA for the rounding (ETA =
  2^-126: results below the normal range flush to zero on the GPU) (a product by a power
  of two is exact);
* a library function f(a): |f'(a)| e_a plus its documented maximum error, k ulp <= 2kU|f(a)|.
  CUDA 13 (CUDA C++ Programming Guide, "Mathematical Functions", single precision, max ulp over
  the full range; NVIDIA's figures come from extensive, not exhaustive, tests): expf 2,
  expm1f 1, erfcf 4, tanhf 2. The simulator runs glibc's expf, expm1f,
  erfcf and tanhf, whose documented errors (glibc manual, "Errors in Math Functions", x86_64)
  are no larger; nvcc may contract a*b+c into an FMA, which only removes a rounding.

Second-order terms (products of two errors, each ~1e-7 relative) are covered by a factor 1.01
on the final bound; the float64 reference's own error (~1e-16 relative) by the same factor.
"""
from __future__ import annotations

import math

import numpy as np

from ..numerics import U32 as U

ULPS = {"expf": 2, "expm1f": 1, "erfcf": 4, "tanhf": 2}
# Underflow: the GPU builds flush subnormal results to zero (-ftz=true, as CuPy's NVRTC), so a
# rounding or a function value may lose up to 2^-126 absolutely besides its relative error.
ETA = 2.0 ** -126
SECOND_ORDER = 1.01


class E:
    """A value ``v`` with its error bound ``e`` (arrays of float64)."""

    def __init__(self, v, e=0.0):
        self.v = np.asarray(v, np.float64)
        self.e = np.asarray(e, np.float64) + np.zeros_like(self.v)

    @staticmethod
    def const(c):
        exact = float(np.float32(c)) == c
        return E(c, 0.0 if exact else U * abs(c))

    def __add__(self, o):
        o = _e(o)
        v = self.v + o.v
        return E(v, self.e + o.e + U * np.abs(v) + ETA)

    def __radd__(self, o):
        return _e(o) + self

    def __sub__(self, o):
        o = _e(o)
        v = self.v - o.v
        return E(v, self.e + o.e + U * np.abs(v) + ETA)

    def __rsub__(self, o):
        return _e(o) - self

    def __neg__(self):
        return E(-self.v, self.e)

    def __mul__(self, o):
        o = _e(o)
        v = self.v * o.v
        exact = _exact_pow2(self) or _exact_pow2(o)
        rounding = 0.0 if exact else U * np.abs(v) + ETA
        return E(v, np.abs(self.v) * o.e + np.abs(o.v) * self.e + rounding)

    def __rmul__(self, o):
        return _e(o) * self

    def __truediv__(self, o):
        o = _e(o)
        v = self.v / o.v
        return E(v, (self.e + np.abs(v) * o.e) / np.abs(o.v) + U * np.abs(v) + ETA)

    def __rtruediv__(self, o):
        return _e(o) / self

    def fn(self, name, f, df):
        """``f(self)`` through the CUDA function ``name`` (derivative ``df``)."""
        v = f(self.v)
        return E(v, np.abs(df(self.v)) * self.e + 2 * ULPS[name] * U * np.abs(v) + ETA)

    def bound(self):
        return SECOND_ORDER * self.e


def _exact_pow2(a) -> bool:
    """An exact scalar constant +-2^k: a product by it is exact (no subnormals here)."""
    return a.v.size == 1 and a.v.ndim == 0 and float(a.e) == 0.0 and float(a.v) != 0 \
        and math.frexp(abs(float(a.v)))[0] == 0.5


def _e(x):
    return x if isinstance(x, E) else E.const(float(x))


def exp(a):
    return a.fn("expf", np.exp, np.exp)


def expm1(a):
    return a.fn("expm1f", np.expm1, np.exp)


def tanh(a):
    return a.fn("tanhf", np.tanh, lambda t: 1 - np.tanh(t) ** 2)


def erfc(a):
    from ..reference.activation import _erfc
    return a.fn("erfcf", _erfc, lambda t: -2 / math.sqrt(math.pi) * np.exp(-t * t))
