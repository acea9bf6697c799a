"""batch_norm and the fused batch_norm_act (kernels/batch_norm.cuh), forward and backward.

Training forward: a Welford partial per (channel, chunk), then one pass that merges them per
channel in a fixed order, updates the running statistics, saves mean/invstd and normalises
(with the relu / add+relu epilogue for batch_norm_act). Backward: partial sums per (channel,
chunk), then the elementwise pass. Statistics, weight/bias and running buffers are fp32 in the
kernels; the Python layer converts [C] vectors of other dtypes (and copies running statistics
back in place).
"""
from __future__ import annotations

import math

import numpy as np

from ..spec import (ALL_DTYPES, F32, I32, I64, Family, In, Kernel, Out, Param, bool_param,
                    ceil_div, dtype_param)
from ._common import aligned16, check_grad_out, need_dtype

UNROLL = 4   # kernels/batch_norm.cuh: cvk::bn::UNROLL
_TV = (dtype_param(), bool_param("VEC16"))
_EPI = Param("EPI", (0, 1, 2))
STATS = Kernel("batch_norm_stats_kernel", _TV,
               (In("x"), Out("partial", "float32"), I64("C"), I64("S"), I64("count"),
                I64("chunk")))
FORWARD = Kernel("batch_norm_forward_kernel", _TV + (_EPI,),
                 (In("x"), In("residual", optional=True),
                  In("weight", "float32", optional=True), In("bias", "float32", optional=True),
                  In("partial", "float32", optional=True),
                  Out("running_mean", "float32", optional=True),
                  Out("running_var", "float32", optional=True),
                  Out("save_mean", "float32"), Out("save_invstd", "float32"), Out("y"),
                  I64("C"), I64("S"), I64("count"), I64("chunk"), F32("factor"), F32("eps")))
REDUCE = Kernel("batch_norm_backward_reduce_kernel", _TV + (bool_param("RELU"),),
                (In("grad_out"), In("x"), In("y", optional=True), In("mean", "float32"),
                 Out("partial", "float32"), I64("C"), I64("S"), I64("count"), I64("chunk")))
BACKWARD = Kernel("batch_norm_backward_kernel", _TV + (_EPI,),
                  (In("grad_out"), In("x"), In("y", optional=True),
                   In("weight", "float32", optional=True), In("mean", "float32"),
                   In("invstd", "float32"), In("partial", "float32", optional=True),
                   Out("grad_weight", "float32", optional=True),
                   Out("grad_bias", "float32", optional=True), Out("grad_input"),
                   Out("grad_residual", optional=True), I64("C"), I64("S"), I64("count"),
                   I64("chunk"), I64("rchunks"), I32("training")))

FAMILY = Family("batch_norm", "batch_norm.cuh", [STATS, FORWARD, REDUCE, BACKWARD],
                dtypes=ALL_DTYPES,
                doc="batch norm over [N, C, S] (+ relu / add+relu epilogue), fwd and bwd")


def split(dev, c, count, vec):
    """(threads, chunks, chunk): about 8 blocks per SM over the grid (C, chunks), at least one
    vector per thread per chunk, chunks <= 65535 (grid.y) and chunk < 2^24 (counts stay exact
    in fp32). 64 threads for small channels (also kinder to the simulator)."""
    threads = 256 if count >= 256 * vec * UNROLL * 2 else 64
    chunks = min(ceil_div(8 * dev.sm_count, c), ceil_div(count, threads * vec), 65535)
    chunks = max(1, chunks, ceil_div(count, 1 << 24))
    chunk = ceil_div(ceil_div(count, chunks), vec) * vec
    return threads, ceil_div(count, chunk), chunk


def plan(dev, kernel, dtype, c, count, vec16, epi=0, relu=False):
    """The launch of ``kernel`` over the grid (C, chunks) that :func:`split` picks."""
    vec = 16 // dtype.np.itemsize if vec16 else 1
    threads, chunks, chunk = split(dev, c, count, vec)
    values = dict(T=dtype, VEC16=vec16)
    if kernel in (FORWARD, BACKWARD):
        values["EPI"] = epi
    if kernel is REDUCE:
        values["RELU"] = relu
    return FAMILY.plan(kernel, values, grid=(c, chunks), block=(threads,)), chunks, chunk


def _ref():
    # imported when called: the build loads the specs without the package's dependencies
    from ..reference import norm
    return norm


def _f32(rt, a):
    """A [C] vector as a contiguous fp32 array on the device (None stays None)."""
    return None if a is None else rt.xp.ascontiguousarray(rt.xp.asarray(a, dtype=np.float32))


def _layout(rt, input):
    x = rt.xp.ascontiguousarray(input)
    c, s = input.shape[1], math.prod(input.shape[2:])
    return x, c, s, input.shape[0] * s


def _vec16(dtype, s, *arrays):
    return s % (16 // dtype.np.itemsize) == 0 and aligned16(*arrays)


def _forward(rt, fn, input, running_mean, running_var, weight, bias, training, momentum, eps,
             num_batches_tracked, return_stats, residual=None, epi=0):
    c = _ref()._bn_params(fn, input, running_mean, running_var, weight, bias, training, momentum,
                   num_batches_tracked)
    dtype = need_dtype(rt, fn, FAMILY, input=input, residual=residual)
    if training and num_batches_tracked is not None:
        num_batches_tracked[...] += 1
    xp = rt.xp
    if input.size == 0:   # nothing launched; running statistics untouched (as torch)
        y = xp.empty(input.shape, dtype=input.dtype)
        z = xp.zeros(c, dtype=np.float32)
        return (y, z, z.copy()) if return_stats else y
    x, c, s, count = _layout(rt, input)
    res = None if residual is None else xp.ascontiguousarray(residual)
    y = xp.empty_like(x)
    rm, rv = _f32(rt, running_mean), _f32(rt, running_var)
    factor = 0.0
    if training and running_mean is not None:
        factor = 1.0 / float(num_batches_tracked.reshape(-1)[0]) if momentum is None \
            else float(momentum)
    save_mean, save_invstd = xp.empty(c, np.float32), xp.empty(c, np.float32)
    vec16 = _vec16(dtype, s, x, y, res)
    dev = rt.device()
    p_fwd, chunks, chunk = plan(dev, FORWARD, dtype, c, count, vec16, epi=epi)
    partial = None
    if training:
        partial = xp.empty(c * chunks * 3, np.float32)
        p_stats, _, _ = plan(dev, STATS, dtype, c, count, vec16)
        rt.launch(p_stats, x=x, partial=partial, C=c, S=s, count=count, chunk=chunk)
    rt.launch(p_fwd, x=x, residual=res, weight=_f32(rt, weight), bias=_f32(rt, bias),
              partial=partial, running_mean=rm, running_var=rv, save_mean=save_mean,
              save_invstd=save_invstd, y=y, C=c, S=s, count=count, chunk=chunk,
              factor=np.float32(factor), eps=np.float32(eps))
    if training and running_mean is not None:   # a no-op when rm already was the caller's array
        if rm is not running_mean:
            running_mean[...] = rm
        if rv is not running_var:
            running_var[...] = rv
    y = y.reshape(input.shape)
    return (y, save_mean, save_invstd) if return_stats else y


def _backward(rt, fn, grad_out, input, running_mean, running_var, weight, bias, training, eps,
              save_mean, save_invstd, residual=None, output=None, epi=0):
    _ref()._bn_params(fn, input, running_mean, running_var, weight, bias, training, 0.1, None,
               stats_given=save_invstd is not None)
    _ref()._check_saved(fn, input, save_mean, save_invstd)
    check_grad_out(fn, grad_out, input.shape)
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input, residual=residual,
                       output=output)
    xp = rt.xp
    c = input.shape[1] if input.ndim >= 2 else 0
    if input.size == 0:
        return (xp.zeros(input.shape, input.dtype),
                None if weight is None else xp.zeros(c, weight.dtype),
                None if bias is None else xp.zeros(c, bias.dtype)) + \
            ((None if residual is None else xp.zeros(input.shape, input.dtype),) if epi else ())
    if save_invstd is None or (epi and output is None):
        # not given: recompute them with the forward kernels (no running-statistic update)
        fwd_name = "batch_norm_act" if epi else "batch_norm"
        output, save_mean, save_invstd = _forward(
            rt, fwd_name, input, None if training else running_mean,
            None if training else running_var, weight, bias, training, 0.1, eps, None, True,
            residual, epi)
    x, c, s, count = _layout(rt, input)
    g = xp.ascontiguousarray(grad_out)
    y = None if epi == 0 else xp.ascontiguousarray(output)
    mean, invstd = _f32(rt, save_mean), _f32(rt, save_invstd)
    gx = xp.empty_like(x)
    gres = xp.empty_like(x) if epi == 2 else None
    gw = None if weight is None else xp.empty(c, np.float32)
    gb = None if bias is None else xp.empty(c, np.float32)
    vec16 = _vec16(dtype, s, x, g, y, gx, gres)
    dev = rt.device()
    p_bwd, chunks, chunk = plan(dev, BACKWARD, dtype, c, count, vec16, epi=epi)
    partial = None
    if training or weight is not None or bias is not None:
        partial = xp.empty(c * chunks * 2, np.float32)
        p_red, _, _ = plan(dev, REDUCE, dtype, c, count, vec16, relu=epi > 0)
        rt.launch(p_red, grad_out=g, x=x, y=y, mean=mean, partial=partial, C=c, S=s,
                  count=count, chunk=chunk)
    rt.launch(p_bwd, grad_out=g, x=x, y=y, weight=_f32(rt, weight), mean=mean, invstd=invstd,
              partial=partial, grad_weight=gw, grad_bias=gb, grad_input=gx,
              grad_residual=gres, C=c, S=s, count=count, chunk=chunk, rchunks=chunks,
              training=np.int32(bool(training)))
    out = (gx.reshape(input.shape), None if gw is None else gw.astype(weight.dtype),
           None if gb is None else gb.astype(bias.dtype))
    if epi:
        out += (None if gres is None else gres.reshape(input.shape),)
    return out


@FAMILY.op("batch_norm", "forward")
def batch_norm_forward(rt, input, running_mean, running_var, weight=None, bias=None,
                       training=False, momentum=0.1, eps=1e-5, *, num_batches_tracked=None,
                       return_stats=False):
    """``reference.batch_norm_forward`` on the kernels (stats + normalise, or eval)."""
    return _forward(rt, "batch_norm", input, running_mean, running_var, weight, bias, training,
                    momentum, eps, num_batches_tracked, return_stats)


@FAMILY.op("batch_norm", "backward")
def batch_norm_backward(rt, grad_out, input, running_mean=None, running_var=None, weight=None,
                        bias=None, training=False, momentum=0.1, eps=1e-5, *,
                        num_batches_tracked=None, save_mean=None, save_invstd=None):
    """``(grad_input, grad_weight, grad_bias)`` in two passes (reduce, elementwise)."""
    return _backward(rt, "batch_norm_backward", grad_out, input, running_mean, running_var,
                     weight, bias, training, eps, save_mean, save_invstd)


@FAMILY.op("batch_norm_act", "forward")
def batch_norm_act_forward(rt, input, running_mean, running_var, weight=None, bias=None,
                           training=False, momentum=0.1, eps=1e-5, *, residual=None,
                           activation="relu", num_batches_tracked=None, return_stats=False):
    """``relu(bn(input) [+ residual])`` with the epilogue fused into the normalising pass."""
    _ref()._check_act("batch_norm_act", input, residual, activation)
    return _forward(rt, "batch_norm_act", input, running_mean, running_var, weight, bias,
                    training, momentum, eps, num_batches_tracked, return_stats, residual,
                    2 if residual is not None else 1)


@FAMILY.op("batch_norm_act", "backward")
def batch_norm_act_backward(rt, grad_out, input, running_mean=None, running_var=None,
                            weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
                            residual=None, activation="relu", num_batches_tracked=None,
                            save_mean=None, save_invstd=None, output=None):
    """``(grad_input, grad_weight, grad_bias, grad_residual)``; the relu mask from ``output``."""
    _ref()._check_act("batch_norm_act_backward", input, residual, activation)
    if output is not None and tuple(output.shape) != tuple(input.shape):
        from ..errors import ShapeError
        raise ShapeError(f"batch_norm_act_backward: output must have input's shape "
                         f"{tuple(input.shape)}, got {tuple(output.shape)}")
    return _backward(rt, "batch_norm_act_backward", grad_out, input, running_mean,
                     running_var, weight, bias, training, eps, save_mean, save_invstd,
                     residual, output, 2 if residual is not None else 1)


from . import _batch_norm_cases  # noqa: F401  (declares the cases and the bench on FAMILY)
