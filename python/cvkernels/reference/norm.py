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
from ..errors import ArgumentError, ArgumentTypeError, ShapeError

__all__ = [
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "batch_norm_act", "batch_norm_act_forward", "batch_norm_act_backward",
    "layer_norm", "layer_norm_forward", "layer_norm_backward",
]


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _check_grad_out(fn, grad_out, input):
    check_float(fn, "grad_out", grad_out)
    if tuple(grad_out.shape) != tuple(input.shape):
        raise ShapeError(f"{fn}: grad_out must have input's shape {tuple(input.shape)}, "
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
               num_batches_tracked, stats_given=False):
    """Validate batch_norm's arguments; returns the channel count C (0 for an empty 1-D input,
    which torch accepts and returns as is). ``stats_given``: the backward got the forward's
    saved statistics, so the running ones are not needed in eval."""
    check_float(fn, "input", input)
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            check_float(fn, name, a)
            if np.dtype(a.dtype) not in (np.dtype(input.dtype), np.dtype(np.float32)):
                raise ArgumentTypeError(f"{fn}: {name} must have input's dtype ({input.dtype}) "
                                        f"or float32, got {a.dtype}")
    if input.ndim == 1 and input.size == 0:
        return 0
    if input.ndim < 2:
        raise ShapeError(f"{fn}: input must be at least 2-D [N, C, ...], "
                         f"got shape {tuple(input.shape)}")
    c = input.shape[1]
    for name, a in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if a is None:
            continue
        if name.startswith("running"):
            check_float(fn, name, a)   # may differ from input's dtype (fp32 stats, fp16 data)
        if tuple(a.shape) != (c,):
            raise ShapeError(f"{fn}: {name} must have shape [C] = ({c},), "
                             f"got {tuple(a.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ArgumentError(f"{fn}: running_mean and running_var must both be given or both "
                            f"None")
    if running_mean is None and not training and not stats_given:
        raise ArgumentError(f"{fn}: running_mean and running_var must be defined in evaluation "
                            f"mode (training=False)")
    if training and input.size and input.size // c == 1:
        raise ArgumentError(f"{fn}: Expected more than 1 value per channel when training, "
                            f"got input size {tuple(input.shape)}")
    if num_batches_tracked is not None:
        nbt = num_batches_tracked
        if not isinstance(nbt, np.ndarray) or nbt.size != 1 or nbt.dtype.kind not in "iu":
            raise ArgumentError(f"{fn}: num_batches_tracked must be a 1-element integer "
                                f"numpy array, got {nbt!r}")
    if momentum is None and training and running_mean is not None and num_batches_tracked is None:
        raise ArgumentError(f"{fn}: momentum=None (cumulative average) needs "
                            f"num_batches_tracked")
    return c


def _bn_stats_dtype(input):
    """The dtype of the saved statistics (save_mean, save_invstd): float64 for float64 input,
    else float32 (the accumulation type, as torch)."""
    return np.dtype(np.float64) if np.dtype(input.dtype) == np.float64 else np.dtype(np.float32)


def _bn_stats(x, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)   # biased, for normalising
    return mean, var


def _channel_view(a, ndim):
    """[C] -> [1, C, 1, ...] to broadcast against an ndim-D input."""
    return None if a is None else _f64(a).reshape((1, -1) + (1,) * (ndim - 2))


def _bn_forward64(fn, input, running_mean, running_var, weight, bias, training, momentum, eps,
                  num_batches_tracked):
    """The forward in float64: (y, mean [C], invstd [C]); updates the running statistics."""
    c = _bn_params(fn, input, running_mean, running_var, weight, bias, training, momentum,
                   num_batches_tracked)
    x = _f64(input)
    if training and num_batches_tracked is not None:
        num_batches_tracked[...] += 1
    if x.size == 0:    # an empty batch leaves the running statistics alone (as torch)
        return x.copy(), np.zeros(c), np.zeros(c)
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
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
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * invstd
    if weight is not None:
        y = y * _channel_view(weight, x.ndim)
    if bias is not None:
        y = y + _channel_view(bias, x.ndim)
    return y, mean.reshape(-1), invstd.reshape(-1)


def _bn_out(input, y, mean, invstd, return_stats):
    y = np.ascontiguousarray(y, dtype=input.dtype)
    if not return_stats:
        return y
    sd = _bn_stats_dtype(input)
    return y, mean.astype(sd), invstd.astype(sd)


def batch_norm_forward(input, running_mean, running_var, weight=None, bias=None, training=False,
                       momentum=0.1, eps=1e-5, *, num_batches_tracked=None, return_stats=False):
    """Batch normalisation, as ``torch.nn.functional.batch_norm``, for input [N, C, *].

    ``training=True`` normalises with the batch's mean and biased variance per channel and, when
    ``running_mean``/``running_var`` [C] are given, updates them IN PLACE as torch does:
    ``running = (1 - momentum) * running + momentum * batch_stat``, with the *unbiased* batch
    variance for ``running_var``. ``momentum=None`` means a cumulative moving average, factor
    ``1 / num_batches_tracked``. ``num_batches_tracked`` (keyword only, a 1-element int64 array
    or None) plays the role of the torch module's buffer: in training it is incremented in place
    before the update (the module's order); it is required when ``momentum`` is None.
    An empty batch leaves the running statistics alone (as torch); a 1-D empty input is
    returned as is (as torch). ``training=False`` normalises with the running statistics, which
    must then be given. One value per channel in training raises, as torch. ``weight``/``bias``
    have input's dtype or float32; the running statistics any float dtype.
    Returns ``input``'s shape and dtype; with ``return_stats=True`` (keyword only) the tuple
    ``(output, save_mean, save_invstd)``: the mean and ``1/sqrt(var + eps)`` [C] the output was
    normalised with (batch statistics in training, running ones in eval; zeros for an empty
    batch), float32 (float64 for float64 input), which the backward takes instead of
    recomputing them.
    """
    y, mean, invstd = _bn_forward64("batch_norm", input, running_mean, running_var, weight,
                                    bias, training, momentum, eps, num_batches_tracked)
    return _bn_out(input, y, mean, invstd, return_stats)


def _bn_backward64(fn, g, input, running_mean, running_var, weight, bias, training, eps,
                   save_mean, save_invstd):
    """(grad_input, grad_weight, grad_bias) in float64 for a float64 ``g`` (None entries for a
    missing weight/bias)."""
    x = _f64(input)
    c = 0 if x.ndim < 2 else x.shape[1]
    if x.size == 0:
        return (np.zeros_like(x), None if weight is None else np.zeros(c),
                None if bias is None else np.zeros(c))
    axes = (0,) + tuple(range(2, x.ndim))
    w = _channel_view(weight, x.ndim)
    if save_invstd is not None:
        mean, invstd = _channel_view(save_mean, x.ndim), _channel_view(save_invstd, x.ndim)
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
    return gx, gw, gb


def _check_saved(fn, input, save_mean, save_invstd):
    if (save_mean is None) != (save_invstd is None):
        raise ArgumentError(f"{fn}: save_mean and save_invstd must both be given or both None")
    if save_mean is None or input.ndim < 2:
        return
    for name, a in (("save_mean", save_mean), ("save_invstd", save_invstd)):
        check_float(fn, name, a)
        if tuple(a.shape) != (input.shape[1],):
            raise ShapeError(f"{fn}: {name} must have shape [C] = ({input.shape[1]},), "
                             f"got {tuple(a.shape)}")


def batch_norm_backward(grad_out, input, running_mean=None, running_var=None, weight=None,
                        bias=None, training=False, momentum=0.1, eps=1e-5, *,
                        num_batches_tracked=None, save_mean=None, save_invstd=None):
    """Gradients of :func:`batch_norm_forward`.

    Signature: ``batch_norm_backward(grad_out, input, running_mean, running_var, weight=None,
    bias=None, training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None,
    save_mean=None, save_invstd=None)`` -- the forward's arguments after ``grad_out``, plus the
    forward's saved statistics (``return_stats=True``). Nothing is updated: ``momentum`` and
    ``num_batches_tracked`` are accepted and ignored. In training the gradient flows through
    the batch statistics (``save_mean``/``save_invstd`` when given, else recomputed from
    ``input``); in eval the statistics are constants (the running ones, which may then be left
    out when the saved ones are given). ``bias`` is only looked at to know whether it exists.

    Returns ``(grad_input, grad_weight, grad_bias)`` (None for a weight/bias that is None).
    """
    fn = "batch_norm_backward"
    _bn_params(fn, input, running_mean, running_var, weight, bias, training, 0.1, None,
               stats_given=save_invstd is not None)
    _check_saved(fn, input, save_mean, save_invstd)
    g = _check_grad_out(fn, grad_out, input)
    gx, gw, gb = _bn_backward64(fn, g, input, running_mean, running_var, weight, bias, training,
                                eps, save_mean, save_invstd)
    return (np.ascontiguousarray(gx, dtype=input.dtype),
            None if gw is None else gw.astype(weight.dtype),
            None if gb is None else gb.astype(bias.dtype))


batch_norm = batch_norm_forward


# ----------------------------------------------------------------------------- batch_norm_act

def _check_act(fn, input, residual, activation):
    if activation != "relu":
        raise ArgumentError(f"{fn}: activation must be 'relu', got {activation!r}")
    if residual is not None:
        check_float(fn, "residual", residual)
        check_same_dtype(fn, input=input, residual=residual)
        if tuple(residual.shape) != tuple(input.shape):
            raise ShapeError(f"{fn}: residual must have input's shape {tuple(input.shape)}, "
                             f"got {tuple(residual.shape)}")


def _relu64(z):
    return np.where(z > 0, z, np.where(np.isnan(z), z, 0.0))


def batch_norm_act_forward(input, running_mean, running_var, weight=None, bias=None,
                           training=False, momentum=0.1, eps=1e-5, *, residual=None,
                           activation="relu", num_batches_tracked=None, return_stats=False):
    """Batch norm fused with its epilogue: ``relu(batch_norm(input, ...) [+ residual])``.

    The bn part is exactly :func:`batch_norm_forward` (same arguments, same running-statistic
    updates); ``residual`` (input's shape and dtype, optional) is added before the activation,
    which is ResNet's block end ``relu(bn(conv(x)) + shortcut)``. ``activation`` must be
    ``'relu'`` (NaN stays NaN, as torch). Computed in float64, rounded once to input's dtype.
    ``return_stats=True`` also returns ``save_mean`` and ``save_invstd`` as in batch_norm.
    """
    fn = "batch_norm_act"
    _check_act(fn, input, residual, activation)
    z, mean, invstd = _bn_forward64(fn, input, running_mean, running_var, weight, bias,
                                    training, momentum, eps, num_batches_tracked)
    if residual is not None:
        z = z + _f64(residual)
    return _bn_out(input, _relu64(z), mean, invstd, return_stats)


def batch_norm_act_backward(grad_out, input, running_mean=None, running_var=None, weight=None,
                            bias=None, training=False, momentum=0.1, eps=1e-5, *, residual=None,
                            activation="relu", num_batches_tracked=None, save_mean=None,
                            save_invstd=None, output=None):
    """Gradients of :func:`batch_norm_act_forward`: ``(grad_input, grad_weight, grad_bias,
    grad_residual)`` (None for a missing weight, bias or residual).

    The activation's gradient passes where the output is > 0: ``output`` (the forward's result)
    when given, else the pre-activation recomputed in float64. Then ``grad_residual`` is that
    masked gradient and the rest is :func:`batch_norm_backward` of it (``save_mean``/
    ``save_invstd`` as there).
    """
    fn = "batch_norm_act_backward"
    _check_act(fn, input, residual, activation)
    _bn_params(fn, input, running_mean, running_var, weight, bias, training, 0.1, None,
               stats_given=save_invstd is not None)
    _check_saved(fn, input, save_mean, save_invstd)
    g = _check_grad_out(fn, grad_out, input)
    if output is not None:
        if tuple(output.shape) != tuple(input.shape):
            raise ShapeError(f"{fn}: output must have input's shape {tuple(input.shape)}, "
                             f"got {tuple(output.shape)}")
        z = _f64(output)
    else:
        z, _, _ = _bn_forward64(fn, input, None if training else running_mean,
                                None if training else running_var, weight, bias, training,
                                0.1, eps, None)
        if residual is not None:
            z = z + _f64(residual)
    gz = np.where(z > 0, g, 0.0)
    gx, gw, gb = _bn_backward64(fn, gz, input, running_mean, running_var, weight, bias,
                                training, eps, save_mean, save_invstd)
    return (np.ascontiguousarray(gx, dtype=input.dtype),
            None if gw is None else gw.astype(weight.dtype),
            None if gb is None else gb.astype(bias.dtype),
            None if residual is None else np.ascontiguousarray(gz, dtype=input.dtype))


batch_norm_act = batch_norm_act_forward


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
            raise ShapeError(f"{fn}: normalized_shape must be an int or a sequence of ints, "
                             f"got {normalized_shape!r}") from None
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ShapeError(f"{fn}: input must have shape [*, {', '.join(map(str, shape))}] "
                         f"to match normalized_shape={list(shape)}, got {tuple(input.shape)}")
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None and tuple(a.shape) != shape:
            raise ShapeError(f"{fn}: {name} must have normalized_shape {shape}, "
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
