"""Reference batch and layer normalisation, forward and backward.

Both normalise ``x`` over a set of axes to ``xhat = (x - mean) / sqrt(var + eps)`` (biased
variance), then scale and shift per feature: ``y = xhat * weight + bias``. They differ only in
the axes: batch norm reduces over everything but the channel axis 1, layer norm over the
trailing ``normalized_shape`` axes. With statistics from the same ``x``, the backward is

    grad_x = invstd * (gy - mean(gy) - xhat * mean(gy * xhat)),   gy = grad_out * weight

(means over the reduced axes); with fixed statistics (batch norm in eval) it is gy * invstd.
Everything is computed in float64 and cast back to the input dtype.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_float, check_same_dtype

__all__ = [
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
]


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _check_grad_out(fn, grad_out, input):
    check_float(fn, "grad_out", grad_out)
    if tuple(grad_out.shape) != tuple(input.shape):
        raise ValueError(f"{fn}: grad_out must have input's shape {tuple(input.shape)}, "
                         f"got {tuple(grad_out.shape)}")
    return _f64(grad_out)


def _normalize_backward(g, xhat, invstd, weight, axes):
    """grad of sum(g * (xhat*w + b)) w.r.t. x when xhat uses the mean/var of x over ``axes``."""
    gy = g if weight is None else g * weight
    mean_gy = gy.mean(axis=axes, keepdims=True)
    mean_gy_xhat = (gy * xhat).mean(axis=axes, keepdims=True)
    return invstd * (gy - mean_gy - xhat * mean_gy_xhat)


# ----------------------------------------------------------------------------- batch_norm

def _bn_params(fn, input, running_mean, running_var, weight, bias, training, momentum,
               num_batches_tracked):
    """Validate batch_norm's arguments; returns the channel count C."""
    check_float(fn, "input", input)
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            check_float(fn, name, a)
    check_same_dtype(fn, input=input, weight=weight, bias=bias)
    if input.ndim < 2:
        raise ValueError(f"{fn}: input must be at least 2-D [N, C, ...], "
                         f"got shape {tuple(input.shape)}")
    c = input.shape[1]
    for name, a in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if a is None:
            continue
        if name.startswith("running"):
            check_float(fn, name, a)   # may differ from input's dtype (fp32 stats, fp16 data)
        if tuple(a.shape) != (c,):
            raise ValueError(f"{fn}: {name} must have shape [C] = ({c},), "
                             f"got {tuple(a.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must both be given or both None")
    if running_mean is None and not training:
        raise ValueError(f"{fn}: running_mean and running_var must be defined in evaluation "
                         f"mode (training=False)")
    if training and input.size and input.size // c == 1:
        raise ValueError(f"{fn}: Expected more than 1 value per channel when training, "
                         f"got input size {tuple(input.shape)}")
    if num_batches_tracked is not None:
        nbt = num_batches_tracked
        if not isinstance(nbt, np.ndarray) or nbt.size != 1 or nbt.dtype.kind not in "iu":
            raise ValueError(f"{fn}: num_batches_tracked must be a 1-element integer numpy "
                             f"array, got {nbt!r}")
    if momentum is None and training and running_mean is not None and num_batches_tracked is None:
        raise ValueError(f"{fn}: momentum=None (cumulative average) needs num_batches_tracked")
    return c


def _bn_stats(x, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)   # biased, for normalising
    return mean, var


def _channel_view(a, ndim):
    """[C] -> [1, C, 1, ...] to broadcast against an ndim-D input."""
    return None if a is None else _f64(a).reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(input, running_mean, running_var, weight=None, bias=None, training=False,
                       momentum=0.1, eps=1e-5, *, num_batches_tracked=None):
    """Batch normalisation, as ``torch.nn.functional.batch_norm``, for input [N, C, *].

    ``training=True`` normalises with the batch's mean and biased variance per channel and, when
    ``running_mean``/``running_var`` [C] are given, updates them IN PLACE as torch does:
    ``running = (1 - momentum) * running + momentum * batch_stat``, with the *unbiased* batch
    variance for ``running_var``. ``momentum=None`` means a cumulative moving average, factor
    ``1 / num_batches_tracked``. ``num_batches_tracked`` (keyword only, a 1-element int64 array
    or None) plays the role of the torch module's buffer: in training it is incremented in place
    before the update (the module's order); it is required when ``momentum`` is None.
    An empty batch leaves the running statistics alone (as torch). ``training=False`` normalises
    with the running statistics, which must then be given. One value per channel in training
    raises ValueError, as torch.
    Returns ``input``'s shape and dtype.
    """
    fn = "batch_norm"
    _bn_params(fn, input, running_mean, running_var, weight, bias, training, momentum,
               num_batches_tracked)
    x = _f64(input)
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        if num_batches_tracked is not None:
            num_batches_tracked[...] += 1
        if x.size == 0:
            return np.empty(input.shape, input.dtype)
        mean, var = _bn_stats(x, axes)
        if running_mean is not None:
            n = x.size // x.shape[1]
            factor = 1.0 / float(num_batches_tracked.reshape(-1)[0]) if momentum is None \
                else momentum
            unbiased = var.reshape(-1) * n / (n - 1)
            running_mean[...] = (1 - factor) * _f64(running_mean) + factor * mean.reshape(-1)
            running_var[...] = (1 - factor) * _f64(running_var) + factor * unbiased
    else:
        mean, var = _channel_view(running_mean, x.ndim), _channel_view(running_var, x.ndim)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * _channel_view(weight, x.ndim)
    if bias is not None:
        y = y + _channel_view(bias, x.ndim)
    return np.ascontiguousarray(y, dtype=input.dtype)


def batch_norm_backward(grad_out, input, running_mean, running_var, weight=None, bias=None,
                        training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None):
    """Gradients of :func:`batch_norm_forward`.

    Signature: ``batch_norm_backward(grad_out, input, running_mean, running_var, weight=None,
    bias=None, training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None)`` -- the
    forward's arguments after ``grad_out``. Nothing is updated: ``momentum`` and
    ``num_batches_tracked`` are accepted and ignored. In training the gradient flows through
    the batch statistics (recomputed from ``input``); in eval the running statistics are
    constants. ``bias`` is only looked at to know whether it exists.

    Returns ``(grad_input, grad_weight, grad_bias)`` (None for a weight/bias that is None).
    """
    fn = "batch_norm_backward"
    _bn_params(fn, input, running_mean, running_var, weight, bias, training, 0.1, None)
    g = _check_grad_out(fn, grad_out, input)
    x = _f64(input)
    axes = (0,) + tuple(range(2, x.ndim))
    w = _channel_view(weight, x.ndim)
    if x.size == 0:
        gx = np.zeros_like(x)
        gw = None if weight is None else np.zeros(input.shape[1])
        gb = None if bias is None else np.zeros(input.shape[1])
    else:
        if training:
            mean, var = _bn_stats(x, axes)
        else:
            mean, var = _channel_view(running_mean, x.ndim), _channel_view(running_var, x.ndim)
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean) * invstd
        if training:
            gx = _normalize_backward(g, xhat, invstd, w, axes)
        else:
            gx = (g if w is None else g * w) * invstd
        gw = None if weight is None else (g * xhat).sum(axis=axes)
        gb = None if bias is None else g.sum(axis=axes)
    return (np.ascontiguousarray(gx, dtype=input.dtype),
            None if gw is None else gw.astype(weight.dtype),
            None if gb is None else gb.astype(bias.dtype))


batch_norm = batch_norm_forward


# ----------------------------------------------------------------------------- layer_norm

def _ln_params(fn, input, normalized_shape, weight, bias):
    """Validate layer_norm's arguments; returns (normalized_shape tuple, reduced axes)."""
    check_float(fn, "input", input)
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            check_float(fn, name, a)
    check_same_dtype(fn, input=input, weight=weight, bias=bias)
    if isinstance(normalized_shape, (int, np.integer)):
        shape = (int(normalized_shape),)
    else:
        try:
            shape = tuple(int(s) for s in normalized_shape)
        except (TypeError, ValueError):
            raise ValueError(f"{fn}: normalized_shape must be an int or a sequence of ints, "
                             f"got {normalized_shape!r}") from None
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ValueError(f"{fn}: input must have shape [*, {', '.join(map(str, shape))}] "
                         f"to match normalized_shape={list(shape)}, got {tuple(input.shape)}")
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None and tuple(a.shape) != shape:
            raise ValueError(f"{fn}: {name} must have normalized_shape {shape}, "
                             f"got {tuple(a.shape)}")
    return shape, tuple(range(input.ndim - k, input.ndim))


def layer_norm_forward(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation, as ``torch.nn.functional.layer_norm``.

    Normalises ``input`` [*, *normalized_shape] over its trailing ``normalized_shape`` axes
    (biased variance), then applies the elementwise ``weight``/``bias`` [*normalized_shape].
    Returns ``input``'s shape and dtype.
    """
    _, axes = _ln_params("layer_norm", input, normalized_shape, weight, bias)
    if input.size == 0:
        return np.empty(input.shape, input.dtype)
    x = _f64(input)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return np.ascontiguousarray(y, dtype=input.dtype)


def layer_norm_backward(grad_out, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Gradients of :func:`layer_norm_forward`.

    Signature: ``layer_norm_backward(grad_out, input, normalized_shape, weight=None, bias=None,
    eps=1e-5)`` -- the forward's arguments after ``grad_out``; ``bias`` is only looked at to
    know whether it exists. The statistics are recomputed from ``input``.

    Returns ``(grad_input, grad_weight, grad_bias)`` (None for a weight/bias that is None).
    """
    fn = "layer_norm_backward"
    shape, axes = _ln_params(fn, input, normalized_shape, weight, bias)
    g = _check_grad_out(fn, grad_out, input)
    lead = tuple(range(input.ndim - len(shape)))
    if input.size == 0:
        gx = np.zeros(input.shape)
        gw = None if weight is None else np.zeros(shape)
        gb = None if bias is None else np.zeros(shape)
    else:
        x = _f64(input)
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean) * invstd
        gx = _normalize_backward(g, xhat, invstd, _f64(weight), axes)
        gw = None if weight is None else (g * xhat).sum(axis=lead)
        gb = None if bias is None else g.sum(axis=lead)
    return (np.ascontiguousarray(gx, dtype=input.dtype),
            None if gw is None else gw.astype(weight.dtype),
            None if gb is None else gb.astype(bias.dtype))


layer_norm = layer_norm_forward
