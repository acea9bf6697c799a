"""Elementwise activations and dropout: NumPy references, forward and backward.

Signatures follow ``torch.nn.functional``. Arithmetic runs in float32 for float16/float32 inputs
and in float64 for float64 inputs; the result is cast back to the input dtype.
Each ``<op>_backward`` returns a 1-tuple ``(grad_input,)``.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .._checks import check_float
from ..errors import ArgumentError, ArgumentTypeError, ShapeError
from .philox import philox_draws

__all__ = [
    "relu_forward", "relu_backward", "relu",
    "leaky_relu_forward", "leaky_relu_backward", "leaky_relu",
    "elu_forward", "elu_backward", "elu",
    "gelu_forward", "gelu_backward", "gelu",
    "sigmoid_forward", "sigmoid_backward", "sigmoid",
    "tanh_forward", "tanh_backward", "tanh",
    "dropout_forward", "dropout_backward", "dropout", "dropout_mask", "dropout_threshold",
    "check_dropout",
    "bias_relu_forward", "bias_relu_backward", "bias_relu", "check_bias_relu",
]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erfc(x):
    return math.erfc(x)


def _as_float(fn: str, name: str, x) -> np.ndarray:
    x = np.asarray(x)
    check_float(fn, name, x)
    return x


def _acc(x: np.ndarray) -> np.ndarray:
    """Upcast float16/bfloat16 to float32 for the arithmetic; float32/float64 stay as they are."""
    return x.astype(np.float32) if x.dtype.itemsize == 2 else x


def _grad_pair(fn: str, grad_out, x, xname: str = "input"):
    g = _as_float(fn, "grad_out", grad_out)
    x = _as_float(fn, xname, x)
    if g.shape != x.shape:
        raise ShapeError(f"{fn}: grad_out must have the shape of {xname} {x.shape}, got {g.shape}")
    return g, x


def _finish(out, like: np.ndarray, inplace: bool) -> np.ndarray:
    if inplace:
        like[...] = out
        return like
    return np.asarray(out, dtype=like.dtype)


# ----------------------------------------------------------------------------------------- relu
def relu_forward(input, inplace=False):
    """relu(x) = max(x, 0). Same dtype and shape as ``input`` (written into it when ``inplace``)."""
    x = _as_float("relu", "input", input)
    return _finish(np.maximum(x, np.zeros((), x.dtype)), x, inplace)  # NaN propagates


def relu_backward(grad_out, input, inplace=False):
    """``relu_backward(grad_out, input, inplace=False) -> (grad_input,)``.

    grad_input = 0 where input <= 0, else grad_out (torch's choice at 0; a NaN input passes
    grad_out, as torch's threshold_backward).
    """
    g, x = _grad_pair("relu_backward", grad_out, input)
    return (np.where(x <= 0, np.zeros((), g.dtype), g).astype(g.dtype),)


relu = relu_forward


# ----------------------------------------------------------------------------------- leaky_relu
def leaky_relu_forward(input, negative_slope=0.01, inplace=False):
    """leaky_relu(x) = x if x > 0 else negative_slope * x."""
    x = _as_float("leaky_relu", "input", input)
    a = _acc(x)
    return _finish(np.where(a > 0, a, a * a.dtype.type(negative_slope)), x, inplace)


def leaky_relu_backward(grad_out, input, negative_slope=0.01, inplace=False):
    """``leaky_relu_backward(grad_out, input, negative_slope=0.01, inplace=False)
    -> (grad_input,)``.

    grad_input = grad_out if input > 0 else negative_slope * grad_out (slope at 0, as torch).
    """
    g, x = _grad_pair("leaky_relu_backward", grad_out, input)
    ga = _acc(g)
    return (np.where(x > 0, ga, ga * ga.dtype.type(negative_slope)).astype(g.dtype),)


leaky_relu = leaky_relu_forward


# ------------------------------------------------------------------------------------------ elu
def elu_forward(input, alpha=1.0, inplace=False):
    """elu(x) = x if x > 0 else alpha * (exp(x) - 1)."""
    x = _as_float("elu", "input", input)
    a = _acc(x)
    neg = a.dtype.type(alpha) * np.expm1(np.minimum(a, 0))
    return _finish(np.where(a > 0, a, neg), x, inplace)


def elu_backward(grad_out, input, alpha=1.0, inplace=False):
    """``elu_backward(grad_out, input, alpha=1.0, inplace=False) -> (grad_input,)``.

    grad_input = grad_out * alpha * exp(input) if input <= 0 else grad_out (alpha at 0, and a
    NaN input passes grad_out, as torch).
    """
    g, x = _grad_pair("elu_backward", grad_out, input)
    ga, a = _acc(g), _acc(x).astype(_acc(g).dtype, copy=False)
    neg = ga * ga.dtype.type(alpha) * np.exp(np.minimum(a, 0))
    return (np.where(a <= 0, neg, ga).astype(g.dtype),)


elu = elu_forward


# ----------------------------------------------------------------------------------------- gelu
def _check_approx(fn: str, approximate: str) -> None:
    if approximate not in ("none", "tanh"):
        raise ArgumentError(f"{fn}: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_forward(input, approximate="none"):
    """gelu(x) = x * Phi(x) (``approximate='none'``, Phi via erfc) or the tanh approximation
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) (``approximate='tanh'``)."""
    _check_approx("gelu", approximate)
    x = _as_float("gelu", "input", input)
    a = _acc(x)
    t = a.dtype.type
    if approximate == "none":
        out = t(0.5) * a * _erfc(-a * t(_INV_SQRT_2))   # erfc: no cancellation for x < 0
    else:
        inner = t(_SQRT_2_OVER_PI) * (a + t(0.044715) * a * a * a)
        out = t(0.5) * a * (t(1) + np.tanh(inner))
    return np.asarray(out, dtype=x.dtype)


def gelu_backward(grad_out, input, approximate="none"):
    """``gelu_backward(grad_out, input, approximate='none') -> (grad_input,)``.

    'none': grad_out * (Phi(x) + x * phi(x)); 'tanh': derivative of the tanh formula.
    """
    _check_approx("gelu_backward", approximate)
    g, x = _grad_pair("gelu_backward", grad_out, input)
    ga = _acc(g)
    a = _acc(x).astype(ga.dtype, copy=False)
    t = a.dtype.type
    if approximate == "none":
        cdf = t(0.5) * _erfc(-a * t(_INV_SQRT_2))
        pdf = t(_INV_SQRT_2PI) * np.exp(t(-0.5) * a * a)
        d = cdf + a * pdf
    else:
        inner = t(_SQRT_2_OVER_PI) * (a + t(0.044715) * a * a * a)
        th = np.tanh(inner)
        dinner = t(_SQRT_2_OVER_PI) * (t(1) + t(3 * 0.044715) * a * a)
        d = t(0.5) * (t(1) + th) + t(0.5) * a * (t(1) - th * th) * dinner
    return ((ga * d).astype(g.dtype),)


gelu = gelu_forward


# -------------------------------------------------------------------------------------- sigmoid
def sigmoid_forward(input):
    """sigmoid(x) = 1 / (1 + exp(-x)), computed without overflow for large |x|."""
    x = _as_float("sigmoid", "input", input)
    a = _acc(x)
    t = a.dtype.type
    e = np.exp(-np.abs(a))            # in (0, 1]: never overflows
    out = np.where(a >= 0, t(1) / (t(1) + e), e / (t(1) + e))
    return np.asarray(out, dtype=x.dtype)


def sigmoid_backward(grad_out, output):
    """``sigmoid_backward(grad_out, output) -> (grad_input,)``.

    Takes the forward's *output* y (as torch does): grad_input = grad_out * y * (1 - y).
    """
    g, y = _grad_pair("sigmoid_backward", grad_out, output, "output")
    ga = _acc(g)
    ya = _acc(y).astype(ga.dtype, copy=False)
    return ((ga * ya * (ga.dtype.type(1) - ya)).astype(g.dtype),)


sigmoid = sigmoid_forward


# ----------------------------------------------------------------------------------------- tanh
def tanh_forward(input):
    """tanh(x), elementwise."""
    x = _as_float("tanh", "input", input)
    return np.asarray(np.tanh(_acc(x)), dtype=x.dtype)


def tanh_backward(grad_out, output):
    """``tanh_backward(grad_out, output) -> (grad_input,)``.

    Takes the forward's *output* y (as torch does): grad_input = grad_out * (1 - y^2).
    """
    g, y = _grad_pair("tanh_backward", grad_out, output, "output")
    ga = _acc(g)
    ya = _acc(y).astype(ga.dtype, copy=False)
    return ((ga * (ga.dtype.type(1) - ya * ya)).astype(g.dtype),)


tanh = tanh_forward


# -------------------------------------------------------------------------------------- dropout
def _check_p(fn: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(p) <= 1.0:
        raise ArgumentError(f"{fn}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


def dropout_threshold(p: float) -> int:
    """The keep test of element i is ``draw_i >= dropout_threshold(p)`` (draw_i a uint32):
    floor(p * 2^32), in [0, 2^32], so P(keep) = 1 - threshold / 2^32 (p = 1 keeps nothing)."""
    return int(math.floor(p * 4294967296.0))


def check_dropout(fn: str, p, training, seed, offset):
    """Validated ``(p, draws_needed, seed, offset)``; seed and offset are required (keyword
    arguments, ints; offset >= 0 and a multiple of 4) when a mask is drawn."""
    p = _check_p(fn, p)
    if not isinstance(training, (bool, np.bool_)):
        raise ArgumentTypeError(f"{fn}: training must be a bool, got {type(training).__name__}")
    draws = bool(training) and p > 0.0
    if draws:
        for name, v in (("seed", seed), ("offset", offset)):
            if v is None:
                raise ArgumentError(f"{fn}: {name} is required when training with p > 0 (the "
                                    f"Philox stream is explicit; cvkernels.functional.dropout "
                                    f"takes it from a generator)")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ArgumentTypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
        if not 0 <= int(offset) < 2 ** 63 or int(offset) % 4:
            raise ArgumentError(f"{fn}: offset must be a non-negative multiple of 4 below 2^63, "
                                f"got {offset}")
    return p, draws, seed, offset


def dropout_mask(shape, p: float, seed, offset, xp=np):
    """The keep-mask (bool, ``shape``) of the element stream ``offset ..`` of ``seed``: element
    i (C order) is kept where its Philox4x32-10 draw is >= :func:`dropout_threshold` (p).
    ``xp``: numpy, or CuPy to draw it on a GPU (the bench's device reference)."""
    n = math.prod(shape)
    return (philox_draws(seed, int(offset), n, xp).astype(np.int64)
            >= dropout_threshold(p)).reshape(shape)


def _apply_mask(x: np.ndarray, mask: np.ndarray, p: float) -> np.ndarray:
    a = _acc(x)
    scale = a.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
    with np.errstate(invalid="ignore"):     # NaN/inf stay NaN where dropped, as torch
        return a * np.where(mask, scale, a.dtype.type(0))


def dropout_forward(input, p=0.5, training=True, inplace=False, *, seed=None, offset=None):
    """Inverted dropout: zero each element with probability ``p``, scale survivors by 1/(1-p).

    torch's signature plus the Philox stream, explicit: element i (C order) is kept where draw
    ``offset + i`` of the Philox4x32-10 stream of ``seed`` (:mod:`cvkernels.reference.philox`)
    is ``>= floor(p * 2^32)``, the rule the kernels use, so 'cpu' and 'sim' draw bit-identical
    masks. ``seed`` (int, taken mod 2^64) and ``offset`` (int, a multiple of 4) are required when
    ``training`` and ``p > 0``; a call consumes ``4 * ceil(n / 4)`` draws. ``y = x * m`` with
    ``m = 1/(1-p)`` or 0, in float32 for 16/32-bit inputs (so NaN stays NaN, as torch). When not
    training or ``p == 0`` the output equals ``input``; ``inplace`` writes into ``input``.
    """
    p, draws, seed, offset = check_dropout("dropout", p, training, seed, offset)
    x = _as_float("dropout", "input", input)
    if not draws:
        return x if inplace else x.copy()
    return _finish(_apply_mask(x, dropout_mask(x.shape, p, seed, offset), p), x, inplace)


def dropout_backward(grad_out, p=0.5, training=True, *, seed=None, offset=None):
    """``dropout_backward(grad_out, p=0.5, training=True, *, seed, offset) -> (grad_input,)``.

    Regenerates the forward's mask from the same ``(seed, offset, p)``; grad_input = grad_out *
    mask / (1 - p) (zeros when p == 1; grad_out itself when not training or p == 0).
    """
    p, draws, seed, offset = check_dropout("dropout_backward", p, training, seed, offset)
    g = _as_float("dropout_backward", "grad_out", grad_out)
    if not draws:
        return (g.copy(),)
    return (_apply_mask(g, dropout_mask(g.shape, p, seed, offset), p).astype(g.dtype),)


dropout = dropout_forward


# ------------------------------------------------------------------------------------ bias_relu
def check_bias_relu(fn: str, input, bias) -> None:
    """``bias`` must be 1-D with ``input``'s last dimension (the one it is added along)."""
    if input.ndim < 1:
        raise ShapeError(f"{fn}: input must have at least 1 dimension, got shape "
                         f"{tuple(input.shape)}")
    if tuple(bias.shape) != (input.shape[-1],):
        raise ShapeError(f"{fn}: bias must have shape ({input.shape[-1]},), input's last "
                         f"dimension, got {tuple(bias.shape)}")


def bias_relu_forward(input, bias):
    """relu(input + bias), bias broadcast over the last dimension: the epilogue of a linear or
    conv layer (cvkernels' own op; torch writes it as two). Same dtype and shape as ``input``."""
    x, b = _as_float("bias_relu", "input", input), _as_float("bias_relu", "bias", bias)
    check_bias_relu("bias_relu", x, b)
    pre = _acc(x) + _acc(b)
    return np.maximum(pre, np.zeros((), pre.dtype)).astype(x.dtype)  # NaN propagates


def bias_relu_backward(grad_out, input, bias):
    """``bias_relu_backward(grad_out, input, bias) -> (grad_input, grad_bias)``.

    grad_input = 0 where input + bias <= 0, else grad_out (a NaN passes grad_out, as torch's
    relu backward); grad_bias sums it over all but the last dimension.
    """
    g, x = _grad_pair("bias_relu_backward", grad_out, input)
    b = _as_float("bias_relu_backward", "bias", bias)
    check_bias_relu("bias_relu_backward", x, b)
    gi = np.where(_acc(x) + _acc(b) <= 0, 0, _acc(g))   # NaN passes grad_out, as torch
    gb = gi.reshape(-1, x.shape[-1]).sum(axis=0)
    return gi.astype(g.dtype), gb.astype(g.dtype)


bias_relu = bias_relu_forward
