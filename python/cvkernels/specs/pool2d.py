"""2-D pooling (kernels/pool2d.cuh): max_pool2d, avg_pool2d, adaptive_avg_pool2d (with a
global-average fast path) and adaptive_max_pool2d, forward and backward.

The ops take the references' signatures; argument checks are the reference's own
(``_pool_params``, ``_avg_params``, ``_adaptive_params``, ``_check_indices``). Every backward
is a gather kernel (deterministic, no atomics). The max backwards use the forward's
``indices`` when given (the autograd path saves them), else they run the forward kernel.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ArgumentError
from ..spec import (ALL_DTYPES, I32, I64, Family, In, Kernel, Out, bool_param, ceil_div,
                    dtype_param)
from ._common import aligned16, check_grad_out, need_dtype

_SIZES = (I64("planes"), I64("H"), I64("W"), I64("Ho"), I64("Wo"))
_WINDOW = (I32("kh"), I32("kw"), I32("sh"), I32("sw"), I32("ph"), I32("pw"))
_DILATION = (I32("dh"), I32("dw"))
_AVG = (I32("count_include_pad"), I32("divisor_override"))
_T, _TI = (dtype_param(),), (dtype_param(), bool_param("INDICES"))

MAX_FORWARD = Kernel("max_pool2d_forward_kernel", _TI,
                     (In("x"), Out("y"), Out("indices", "int64", optional=True), *_SIZES,
                      *_WINDOW, *_DILATION))
MAX_BACKWARD = Kernel("max_pool2d_backward_kernel", _T,
                      (In("grad_out"), In("indices", "int64"), Out("grad_in"), *_SIZES,
                       *_WINDOW, *_DILATION))
AVG_FORWARD = Kernel("avg_pool2d_forward_kernel", _T,
                     (In("x"), Out("y"), *_SIZES, *_WINDOW, *_AVG))
AVG_BACKWARD = Kernel("avg_pool2d_backward_kernel", _T,
                      (In("grad_out"), Out("grad_in"), *_SIZES, *_WINDOW, *_AVG))
AAVG_FORWARD = Kernel("adaptive_avg_pool2d_forward_kernel", _T, (In("x"), Out("y"), *_SIZES))
AAVG_BACKWARD = Kernel("adaptive_avg_pool2d_backward_kernel", _T,
                       (In("grad_out"), Out("grad_in"), *_SIZES))
AMAX_FORWARD = Kernel("adaptive_max_pool2d_forward_kernel", _TI,
                      (In("x"), Out("y"), Out("indices", "int64", optional=True), *_SIZES))
AMAX_BACKWARD = Kernel("adaptive_max_pool2d_backward_kernel", _T,
                       (In("grad_out"), In("indices", "int64"), Out("grad_in"), *_SIZES))
GLOBAL_AVG = Kernel("global_avg_pool2d_forward_kernel",
                    (dtype_param(), bool_param("BLOCK"), bool_param("VEC16")),
                    (In("x"), Out("y"), I64("planes"), I64("hw")))

FAMILY = Family("pool2d", "pool2d.cuh",
                [MAX_FORWARD, MAX_BACKWARD, AVG_FORWARD, AVG_BACKWARD, AAVG_FORWARD,
                 AAVG_BACKWARD, AMAX_FORWARD, AMAX_BACKWARD, GLOBAL_AVG], dtypes=ALL_DTYPES,
                doc="max / avg / adaptive pooling over NCHW planes, gathers for every backward")

_INT32_MAX = 2 ** 31 - 1


def _ref():
    """The reference module, whose parameter helpers check the ops' arguments (imported on
    first use: the build loads the specs without numba)."""
    from ..reference import pool
    return pool


# ---- plans ------------------------------------------------------------------------------------
def plan_grid(dev, kernel, values, planes, rows, cols):
    """One thread per position of [planes, rows, cols]: blockDim.x = min(cols, 128) (a 56-wide
    row fills 56 lanes, none wasted), blockDim.y fills ~256 threads; rows and planes beyond
    the grid's y/z limits are strided over in the kernel."""
    bx = min(cols, 128)
    by = max(1, min(rows, 256 // bx))
    grid = (ceil_div(cols, bx), min(ceil_div(rows, by), dev.max_grid[1]),
            min(planes, dev.max_grid[2]))
    return FAMILY.plan(kernel, values, grid=grid, block=(bx, by))


def plan_global(dev, dtype, planes, hw, aligned):
    """Global average is a row reduction of [planes, hw], split as softmax splits its rows:
    one warp per plane up to 1024 elements (4 planes a block), else one block per plane with
    ~8 loads per thread (128..1024 threads); 16-byte loads when every plane starts aligned."""
    from . import softmax
    rows = softmax.plan(dev, softmax.FORWARD, dtype, planes, hw, False, aligned)
    v = dict(zip((p.name for p in softmax.FORWARD.params), rows.values))
    return FAMILY.plan(GLOBAL_AVG, dict(T=dtype, BLOCK=v["BLOCK"], VEC16=v["VEC16"]),
                       grid=rows.grid, block=rows.block)


# ---- shared op plumbing -----------------------------------------------------------------------
def _fits_int32(fn, **values):
    for name, v in values.items():
        for x in (v if isinstance(v, tuple) else (v,)):
            if abs(int(x)) > _INT32_MAX:
                raise ArgumentError(f"{fn}: {name}={v!r} does not fit the kernels' 32-bit "
                                    f"window arguments")


def _sizes(input, out_hw):
    """The kernels' size arguments of input [..., H, W] pooled to out_hw."""
    h, w = input.shape[-2:]
    return dict(planes=math.prod(input.shape[:-2]), H=h, W=w, Ho=out_hw[0], Wo=out_hw[1])


def _window(k, s, p):
    return dict(kh=k[0], kw=k[1], sh=s[0], sw=s[1], ph=p[0], pw=p[1])


def _run_forward(rt, kernel, values, input, out_hw, with_indices, **scalars):
    """Allocate the output (and indices), launch ``kernel`` over the outputs."""
    x = rt.xp.ascontiguousarray(input)
    shape = tuple(input.shape[:-2]) + tuple(out_hw)
    y = rt.xp.empty(shape, dtype=x.dtype)
    idx = rt.xp.empty(shape, dtype=np.int64) if with_indices else None
    if y.size:
        sz = _sizes(input, out_hw)
        p = plan_grid(rt.device(), kernel, values, sz["planes"], sz["Ho"], sz["Wo"])
        args = dict(x=x, y=y, **sz, **scalars)
        if "INDICES" in values:
            args["indices"] = idx
        rt.launch(p, **args)
    return (y, idx) if with_indices else y


def _run_backward(rt, kernel, dtype, grad_out, input, out_hw, indices=None, **scalars):
    """grad_in of ``input``'s shape from a gather over the outputs (none: zeros)."""
    g = rt.xp.ascontiguousarray(grad_out)
    dx = rt.xp.empty(tuple(input.shape), dtype=g.dtype)
    if dx.size:
        sz = _sizes(input, out_hw)
        p = plan_grid(rt.device(), kernel, dict(T=dtype), sz["planes"], sz["H"], sz["W"])
        args = dict(grad_out=g, grad_in=dx, **sz, **scalars)
        if indices is not None:
            args["indices"] = rt.xp.ascontiguousarray(indices, dtype=np.int64)
        rt.launch(p, **args)
    return (dx,)


# ---- max_pool2d -------------------------------------------------------------------------------
@FAMILY.op("max_pool2d", "forward")
def max_pool2d_forward(rt, input, kernel_size, stride=None, padding=0, dilation=1,
                       ceil_mode=False, return_indices=False):
    """torch's max_pool2d on the window kernel; ``return_indices`` adds int64 flat indices."""
    fn = "max_pool2d"
    dtype = need_dtype(rt, fn, FAMILY, input=input)
    k, s, p, d, out_hw = _ref()._pool_params(fn, input, kernel_size, stride, padding, dilation,
                                      ceil_mode)
    _fits_int32(fn, kernel_size=k, stride=s, dilation=d)
    return _run_forward(rt, MAX_FORWARD, dict(T=dtype, INDICES=bool(return_indices)), input,
                        out_hw, bool(return_indices), **_window(k, s, p), dh=d[0], dw=d[1])


@FAMILY.op("max_pool2d", "backward")
def max_pool2d_backward(rt, grad_out, input, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, return_indices=False, *, indices=None):
    """``(grad_input,)``: each input gathers the gradients of the outputs whose index is it."""
    fn = "max_pool2d_backward"
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input)
    k, s, p, d, out_hw = _ref()._pool_params(fn, input, kernel_size, stride, padding, dilation,
                                      ceil_mode)
    _fits_int32(fn, kernel_size=k, stride=s, dilation=d)
    check_grad_out(fn, grad_out, tuple(input.shape[:-2]) + out_hw)
    if indices is None:
        _, indices = max_pool2d_forward(rt, input, k, s, p, d, ceil_mode, True)
    else:
        _ref()._check_indices(fn, indices, input, out_hw)
    return _run_backward(rt, MAX_BACKWARD, dtype, grad_out, input, out_hw, indices,
                         **_window(k, s, p), dh=d[0], dw=d[1])


# ---- avg_pool2d -------------------------------------------------------------------------------
def _avg_scalars(fn, k, s, p, count_include_pad, divisor_override):
    _fits_int32(fn, kernel_size=k, stride=s, divisor_override=divisor_override or 0)
    return dict(_window(k, s, p), count_include_pad=int(bool(count_include_pad)),
                divisor_override=int(divisor_override or 0))


@FAMILY.op("avg_pool2d", "forward")
def avg_pool2d_forward(rt, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """torch's avg_pool2d: window sums in fp32, torch's divisor rules."""
    fn = "avg_pool2d"
    dtype = need_dtype(rt, fn, FAMILY, input=input)
    k, s, p, out_hw = _ref()._avg_params(fn, input, kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override)
    return _run_forward(rt, AVG_FORWARD, dict(T=dtype), input, out_hw, False,
                        **_avg_scalars(fn, k, s, p, count_include_pad, divisor_override))


@FAMILY.op("avg_pool2d", "backward")
def avg_pool2d_backward(rt, grad_out, input, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """``(grad_input,)``: each input gathers grad_out / divisor over the windows holding it."""
    fn = "avg_pool2d_backward"
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input)
    k, s, p, out_hw = _ref()._avg_params(fn, input, kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override)
    check_grad_out(fn, grad_out, tuple(input.shape[:-2]) + out_hw)
    return _run_backward(rt, AVG_BACKWARD, dtype, grad_out, input, out_hw,
                         **_avg_scalars(fn, k, s, p, count_include_pad, divisor_override))


# ---- adaptive pools ---------------------------------------------------------------------------
@FAMILY.op("adaptive_avg_pool2d", "forward")
def adaptive_avg_pool2d_forward(rt, input, output_size):
    """torch's adaptive_avg_pool2d; output 1x1 takes the warp/block-per-plane global kernel."""
    fn = "adaptive_avg_pool2d"
    dtype = need_dtype(rt, fn, FAMILY, input=input)
    out_hw = _ref()._adaptive_params(fn, input, output_size)
    if out_hw != (1, 1):
        return _run_forward(rt, AAVG_FORWARD, dict(T=dtype), input, out_hw, False)
    x = rt.xp.ascontiguousarray(input)
    y = rt.xp.empty(tuple(input.shape[:-2]) + (1, 1), dtype=x.dtype)
    if y.size:
        planes, hw = y.size, input.shape[-2] * input.shape[-1]
        rt.launch(plan_global(rt.device(), dtype, planes, hw, aligned16(x)), x=x, y=y,
                  planes=planes, hw=hw)
    return y


@FAMILY.op("adaptive_avg_pool2d", "backward")
def adaptive_avg_pool2d_backward(rt, grad_out, input, output_size):
    """``(grad_input,)``: each input gathers grad_out / window size over its windows."""
    fn = "adaptive_avg_pool2d_backward"
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input)
    out_hw = _ref()._adaptive_params(fn, input, output_size)
    check_grad_out(fn, grad_out, tuple(input.shape[:-2]) + out_hw)
    return _run_backward(rt, AAVG_BACKWARD, dtype, grad_out, input, out_hw)


@FAMILY.op("adaptive_max_pool2d", "forward")
def adaptive_max_pool2d_forward(rt, input, output_size, return_indices=False):
    """torch's adaptive_max_pool2d; ``return_indices`` adds int64 flat indices."""
    fn = "adaptive_max_pool2d"
    dtype = need_dtype(rt, fn, FAMILY, input=input)
    out_hw = _ref()._adaptive_params(fn, input, output_size, nonzero=1)
    return _run_forward(rt, AMAX_FORWARD, dict(T=dtype, INDICES=bool(return_indices)), input,
                        out_hw, bool(return_indices))


@FAMILY.op("adaptive_max_pool2d", "backward")
def adaptive_max_pool2d_backward(rt, grad_out, input, output_size, return_indices=False, *,
                                 indices=None):
    """``(grad_input,)``: each input gathers the gradients of the outputs whose index is it."""
    fn = "adaptive_max_pool2d_backward"
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input)
    out_hw = _ref()._adaptive_params(fn, input, output_size, nonzero=1)
    check_grad_out(fn, grad_out, tuple(input.shape[:-2]) + out_hw)
    if indices is None:
        _, indices = adaptive_max_pool2d_forward(rt, input, out_hw, True)
    else:
        _ref()._check_indices(fn, indices, input, out_hw)
    return _run_backward(rt, AMAX_BACKWARD, dtype, grad_out, input, out_hw, indices)


from . import _pool2d_cases  # noqa: F401  (the family's test cases and benches)
