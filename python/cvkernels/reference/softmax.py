"""NumPy references for ``softmax`` and ``log_softmax`` over any dim."""
from __future__ import annotations

import numpy as np

from .._checks import check_dim, check_float

__all__ = ["softmax", "softmax_forward", "softmax_backward",
           "log_softmax", "log_softmax_forward", "log_softmax_backward"]


def _prep(fn, input, dim):
    check_float(fn, "input", input)
    d = check_dim(fn, "dim", dim, input.ndim)  # 0-d: dim in [-1, 0], as torch
    return d if input.ndim else None            # a 0-d input reduces over itself


def softmax_forward(input, dim=-1):
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``, computed in float64."""
    d = _prep("softmax", input, dim)
    x = input.astype(np.float64)
    if input.size == 0:
        return np.empty_like(input)
    e = np.exp(x - x.max(axis=d, keepdims=True))
    return (e / e.sum(axis=d, keepdims=True)).astype(input.dtype)


def softmax_backward(grad_out, output, dim=-1):
    """Gradient of softmax from its *output* ``y``: ``y * (g - sum(g * y))``.

    Signature: ``softmax_backward(grad_out, output, dim=-1) -> (grad_input,)``.
    """
    d = _prep("softmax_backward", output, dim)
    g, y = np.asarray(grad_out, np.float64), output.astype(np.float64)
    return ((y * (g - (g * y).sum(axis=d, keepdims=True))).astype(output.dtype),)


def log_softmax_forward(input, dim=-1):
    """``x - max - log(sum(exp(x - max)))`` along ``dim``, computed in float64."""
    d = _prep("log_softmax", input, dim)
    x = input.astype(np.float64)
    if input.size == 0:
        return np.empty_like(input)
    z = x - x.max(axis=d, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=d, keepdims=True))).astype(input.dtype)


def log_softmax_backward(grad_out, output, dim=-1):
    """Gradient of log_softmax from its *output* ``y``: ``g - exp(y) * sum(g)``.

    Signature: ``log_softmax_backward(grad_out, output, dim=-1) -> (grad_input,)``.
    """
    d = _prep("log_softmax_backward", output, dim)
    g, y = np.asarray(grad_out, np.float64), output.astype(np.float64)
    return ((g - np.exp(y) * g.sum(axis=d, keepdims=True)).astype(output.dtype),)


softmax = softmax_forward
log_softmax = log_softmax_forward
