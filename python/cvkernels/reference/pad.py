"""``pad`` (torch.nn.functional.pad): constant, reflect, replicate and circular padding.

Every mode is one gather per padded dim: output position ``i`` of a dim of size ``n`` padded by
``(left, right)`` reads input position ``src(i - left)``, where ``src`` is the identity inside
``[0, n)`` and, outside it, the fill value (constant), the mirror image without repeating the
edge (reflect), the nearest edge (replicate) or ``j mod n`` (circular). The backward is the
matching scatter-add, dim by dim in reverse order. Negative pads crop, as torch.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_float
from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["pad", "pad_forward", "pad_backward"]

MODES = ("constant", "reflect", "replicate", "circular")


def _params(fn, input, pad, mode, value):
    """Validate; returns [(axis, left, right), ...] for the padded axes."""
    x = np.asarray(input)
    if mode not in MODES:
        raise ArgumentError(f"{fn}: mode must be one of {MODES}, got {mode!r}")
    if isinstance(pad, (int, np.integer)) or not all(
            isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pad):
        raise ArgumentTypeError(f"{fn}: pad must be a sequence of ints, got {pad!r}")
    pad = [int(p) for p in pad]
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ArgumentError(f"{fn}: pad must have an even length of at most 2 * input.ndim = "
                            f"{2 * x.ndim}, got {len(pad)}")
    if mode != "constant":
        check_float(fn, "input", x)
        if value not in (None, 0, 0.0):
            raise ArgumentError(f"{fn}: value is only used by mode='constant', got {value!r}")
        k = len(pad) // 2
        if not 1 <= k <= 3 or x.ndim not in (k + 1, k + 2):
            # torch's rule (and exception type): k trailing dims of a (k+1)- or (k+2)-D input
            raise NotImplementedError(f"{fn}: mode={mode!r} pads the last k = 1, 2 or 3 dims "
                                      f"of a (k+1)- or (k+2)-D input; got pad {pad} for shape "
                                      f"{x.shape}")
    dims = []
    for k in range(len(pad) // 2):
        axis = x.ndim - 1 - k
        left, right, n = pad[2 * k], pad[2 * k + 1], x.shape[axis]
        if n + left + right < 0:
            raise ArgumentError(f"{fn}: pad {pad} gives a negative size for dim {axis} "
                                f"of size {n}")
        if mode == "reflect" and max(left, right) >= max(n, 1):
            raise ArgumentError(f"{fn}: reflect padding ({left}, {right}) must be smaller than "
                                f"dim {axis} of size {n}")
        if mode == "circular" and max(left, right) > n:
            raise ArgumentError(f"{fn}: circular padding ({left}, {right}) must be at most "
                                f"dim {axis} of size {n}")
        if mode == "replicate" and n == 0 and left + right > 0:
            raise ArgumentError(f"{fn}: replicate padding needs a non-empty dim {axis}")
        dims.append((axis, left, right))
    return x, dims


def _source(mode, n, left, right):
    """Input index read by each output position (-1: the constant fill)."""
    j = np.arange(-left, n + right)
    if mode == "constant":
        return np.where((j >= 0) & (j < n), j, -1)
    if mode == "replicate":
        return np.clip(j, 0, n - 1)
    if mode == "circular":                         # as torch: crop first, then wrap around
        lo, hi = max(-left, 0), n - max(-right, 0)
        j = np.arange(n + left + right) - max(left, 0)
        return lo + np.mod(j, hi - lo) if hi > lo else j
    j = np.abs(j)                                   # reflect: -1 -> 1, n -> n - 2
    return np.where(j >= n, 2 * (n - 1) - j, j)


def pad_forward(input, pad, mode="constant", value=None):
    """Pad ``input``; ``pad = (left_last, right_last, left_2nd_last, right_2nd_last, ...)`` as
    ``torch.nn.functional.pad``. ``value`` (default 0) fills in mode 'constant'."""
    x, dims = _params("pad", input, pad, mode, value)
    fill = 0 if value is None else value
    out = x
    for axis, left, right in dims:
        src = _source(mode, x.shape[axis], left, right)
        taken = np.take(out, np.maximum(src, 0), axis=axis) if out.shape[axis] else \
            np.zeros(out.shape[:axis] + (len(src),) + out.shape[axis + 1:], out.dtype)
        shape = [1] * out.ndim
        shape[axis] = len(src)
        out = np.where((src < 0).reshape(shape), np.asarray(fill).astype(x.dtype), taken)
    return np.ascontiguousarray(out, dtype=x.dtype)


def pad_backward(grad_out, input, pad, mode="constant", value=None):
    """``pad_backward(grad_out, input, pad, mode, value) -> (grad_input,)``: each output
    position's gradient is added to the input position it was read from (fill positions drop
    theirs)."""
    x, dims = _params("pad_backward", input, pad, mode, value)
    g = np.asarray(grad_out, dtype=np.float64)
    for axis, left, right in reversed(dims):
        n = x.shape[axis]
        src = _source(mode, n, left, right)
        gm = np.moveaxis(g, axis, 0)
        acc = np.zeros((n,) + gm.shape[1:])
        keep = src >= 0
        np.add.at(acc, src[keep], gm[keep])
        g = np.moveaxis(acc, 0, axis)
    return (g.astype(x.dtype),)


pad = pad_forward
