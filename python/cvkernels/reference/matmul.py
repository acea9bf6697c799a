"""NumPy references for ``matmul`` (torch.matmul semantics) and ``linear``."""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, ShapeError
from .._checks import check_float, check_ndim, check_same_dtype
from ..numerics import unbroadcast as _unbroadcast  # noqa: F401  (kernel_ops imports it here)

__all__ = ["matmul", "matmul_forward", "matmul_backward",
           "linear", "linear_forward", "linear_backward", "matmul_tc_forward"]


def _check_matmul(fn, a, b):
    check_float(fn, "input", a)
    check_float(fn, "other", b)
    check_same_dtype(fn, input=a, other=b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"{fn}: both arguments need at least 1 dimension, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ShapeError(f"{fn}: input and other shapes cannot be multiplied "
                         f"({tuple(a.shape)} and {tuple(b.shape)}): {ka} != {kb}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"{fn}: batch dimensions of input {tuple(a.shape)} and other "
                         f"{tuple(b.shape)} do not broadcast") from None


def matmul_forward(input, other):
    """``input @ other`` with torch.matmul's rules (1-D promotion, broadcast batch dims).

    Accumulates in float64 and returns the inputs' dtype.
    """
    _check_matmul("matmul", input, other)
    out = np.matmul(input.astype(np.float64), other.astype(np.float64))
    return np.asarray(out, dtype=input.dtype)


def promote_1d(a, b, g, xp):
    """torch.matmul's 1-D promotion for the backward: a [K] -> [1, K], b [K] -> [K, 1], with
    the matching unit axes put back into the output gradient ``g`` (a 0-D ``g`` for 1-D @ 1-D
    becomes [1, 1])."""
    if a.ndim == 1 and b.ndim == 1:
        return a[None, :], b[:, None], xp.reshape(g, (1, 1))
    if a.ndim == 1:
        a, g = a[None, :], xp.expand_dims(g, -2)
    if b.ndim == 1:
        b, g = b[:, None], xp.expand_dims(g, -1)
    return a, b, g


def matmul_backward(grad_out, input, other):
    """Gradients of ``matmul_forward(input, other)``.

    Signature: ``matmul_backward(grad_out, input, other) -> (grad_input, grad_other)``.
    """
    a, b, g = promote_1d(input.astype(np.float64), other.astype(np.float64),
                         np.asarray(grad_out, dtype=np.float64), np)
    ga = np.matmul(g, np.swapaxes(b, -1, -2))
    gb = np.matmul(np.swapaxes(a, -1, -2), g)
    ga = _unbroadcast(ga, a.shape).reshape(input.shape)
    gb = _unbroadcast(gb, b.shape).reshape(other.shape)
    return ga.astype(input.dtype), gb.astype(other.dtype)


def _check_linear(fn, input, weight, bias):
    check_float(fn, "input", input)
    check_float(fn, "weight", weight)
    check_ndim(fn, "weight", weight, 2)
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ShapeError(f"{fn}: input's last dimension must equal weight.shape[1]="
                         f"{weight.shape[1]}, got input shape {tuple(input.shape)}")
    if bias is not None:
        check_float(fn, "bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ShapeError(f"{fn}: bias must have shape ({weight.shape[0]},), "
                             f"got {tuple(bias.shape)}")
    check_same_dtype(fn, input=input, weight=weight, bias=bias)


def linear_forward(input, weight, bias=None):
    """``input @ weight.T + bias``; input ``[..., in]``, weight ``[out, in]``, bias ``[out]``."""
    _check_linear("linear", input, weight, bias)
    out = input.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        out = out + bias.astype(np.float64)
    return np.asarray(out, dtype=input.dtype)


def linear_backward(grad_out, input, weight, bias=None):
    """Gradients of ``linear_forward``.

    Signature: ``linear_backward(grad_out, input, weight, bias=None)
    -> (grad_input, grad_weight, grad_bias or None)``.
    """
    g = np.asarray(grad_out, dtype=np.float64)
    x = input.astype(np.float64)
    gx = g @ weight.astype(np.float64)
    rows = int(np.prod(x.shape[:-1]))
    g2 = g.reshape(rows, g.shape[-1])
    gw = g2.T @ x.reshape(rows, x.shape[-1])
    gb = None if bias is None else g2.sum(axis=0).astype(bias.dtype)
    return gx.astype(input.dtype), gw.astype(weight.dtype), gb


matmul = matmul_forward
linear = linear_forward


def matmul_tc_forward(input, other):
    """The tensor-core product's contract: 2-D ``input @ other`` of fp16/bf16 matrices with an
    fp32 result (float64 in, float64 out, for the oracle). Not differentiable: it is the
    correctness vehicle of the mma.sync primitives (kernels/matmul_tc.cuh)."""
    _check_matmul("matmul_tc", input, other)
    if input.ndim != 2 or other.ndim != 2:
        raise ShapeError(f"matmul_tc: input and other must be 2-D, got shapes "
                         f"{tuple(input.shape)} and {tuple(other.shape)}")
    out = np.matmul(np.asarray(input, np.float64), np.asarray(other, np.float64))
    return out if np.asarray(input).dtype == np.float64 else out.astype(np.float32)
