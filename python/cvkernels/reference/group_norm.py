"""``group_norm`` (torch.nn.functional.group_norm): NumPy reference, forward and backward.

input (N, C, *) is split into ``num_groups`` groups of C / num_groups channels; each (sample,
group) is normalised by its own mean and biased variance over its channels and positions,
then scaled and shifted per channel:

    y[n, c, ...] = (x[n, c, ...] - mean[n, g(c)]) / sqrt(var[n, g(c)] + eps) * weight[c] + bias[c]

Computed in float64 and cast back to the input's dtype.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_float, check_same_dtype
from ..errors import ArgumentError, ArgumentTypeError, ShapeError

__all__ = ["group_norm", "group_norm_forward", "group_norm_backward"]


def _params(fn, input, num_groups, weight, bias, eps):
    x = np.asarray(input)
    check_float(fn, "input", x)
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            check_float(fn, name, np.asarray(a))
    check_same_dtype(fn, input=x, weight=weight, bias=bias)
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise ArgumentTypeError(f"{fn}: num_groups must be an int, got {num_groups!r}")
    if x.ndim < 2:
        raise ShapeError(f"{fn}: input must be (N, C, *) with at least 2 dims, got shape "
                         f"{x.shape}")
    c = x.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise ArgumentError(f"{fn}: expected number of channels in input ({c}) to be divisible "
                            f"by num_groups ({num_groups}), with num_groups > 0")
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None and np.shape(a) != (c,):
            raise ShapeError(f"{fn}: {name} must have shape ({c},), got {np.shape(a)}")
    n = x.shape[0]
    xg = x.astype(np.float64).reshape(n, int(num_groups), x.size // max(n * num_groups, 1))
    return x, xg


def _stats(xg, eps):
    mean = xg.mean(axis=-1, keepdims=True) if xg.shape[-1] else np.zeros(xg.shape[:2] + (1,))
    var = ((xg - mean) ** 2).mean(axis=-1, keepdims=True) if xg.shape[-1] else mean
    return mean, 1.0 / np.sqrt(var + eps)


def _channel(a, x):
    """A per-channel vector as an array broadcasting against x (N, C, *)."""
    return np.asarray(a, dtype=np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def group_norm_forward(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation of ``input`` (N, C, *); ``weight``/``bias`` (C,) or None."""
    x, xg = _params("group_norm", input, num_groups, weight, bias, eps)
    mean, rstd = _stats(xg, eps)
    y = ((xg - mean) * rstd).reshape(x.shape)
    if weight is not None:
        y = y * _channel(weight, x)
    if bias is not None:
        y = y + _channel(bias, x)
    return y.astype(x.dtype)


def group_norm_backward(grad_out, input, num_groups, weight=None, bias=None, eps=1e-5):
    """``group_norm_backward(grad_out, input, num_groups, weight, bias, eps)
    -> (grad_input, None, grad_weight, grad_bias)``.

    With xhat the normalised input and gh = grad_out * weight, per (sample, group) of m
    elements: grad_input = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)).
    """
    fn = "group_norm_backward"
    x, xg = _params(fn, input, num_groups, weight, bias, eps)
    g = np.asarray(grad_out)
    if g.shape != x.shape:
        raise ShapeError(f"{fn}: grad_out must have shape {x.shape}, got {g.shape}")
    g = g.astype(np.float64)
    mean, rstd = _stats(xg, eps)
    xhat = ((xg - mean) * rstd).reshape(x.shape)
    red = (0,) + tuple(range(2, x.ndim))
    gw = None if weight is None else (g * xhat).sum(axis=red).astype(np.asarray(weight).dtype)
    gb = None if bias is None else g.sum(axis=red).astype(np.asarray(bias).dtype)
    gh = g * _channel(weight, x) if weight is not None else g
    ghg, xhg = gh.reshape(xg.shape), xhat.reshape(xg.shape)
    if xg.shape[-1]:
        gx = rstd * (ghg - ghg.mean(axis=-1, keepdims=True)
                     - xhg * (ghg * xhg).mean(axis=-1, keepdims=True))
    else:
        gx = ghg
    return gx.reshape(x.shape).astype(x.dtype), None, gw, gb


group_norm = group_norm_forward
