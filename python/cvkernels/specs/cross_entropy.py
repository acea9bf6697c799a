"""cross_entropy (fused log_softmax + nll) and nll_loss (kernels/cross_entropy.cuh), forward and
backward, with torch's semantics (see ``cvkernels.reference.loss``).

The ops check their arguments with the reference's ``check_loss_args``, move the class axis
last for cross_entropy (the nll kernels read [N, C, inner] in place), launch the row kernel,
reduce the per-row losses with the deterministic two-stage ``cross_entropy_reduce_kernel``, and
read the kernel's bad-target flag after the launch: an out-of-range class index raises
IndexOutOfRange naming ``target`` (never a silent wrong loss, never a sticky CUDA error).

ptxas -v (sm_90, nvcc 13.0) of every instantiation: no spills, no stack frame; registers in
the header of kernels/cross_entropy.cuh (32 for the fp32 class-target row kernels, at most 63).
"""
from __future__ import annotations

import math

import numpy as np

from ..spec import (ALL_DTYPES, F32, I32, I64, Family, In, Kernel, Out, Param, bool_param,
                    ceil_div, dtype_param)
from ._common import aligned16, check_grad_out, need_dtype

def _loss_ref():
    from ..reference import loss   # lazily: the build loads the specs without the package
    return loss
NO_BAD_ROW = 0xFFFFFFFF
_ROW = (dtype_param(), Param("MODE", (0, 1, 2)), bool_param("BLOCK"), bool_param("VEC16"))
FORWARD = Kernel("cross_entropy_forward_kernel", _ROW, (
    In("x"), In("target", "int64", optional=True), In("target_prob", optional=True),
    In("weight", optional=True), Out("row_loss", "float32", optional=True),
    Out("row_w", "float32", optional=True), Out("out", optional=True),
    Out("bad", "uint32", optional=True), I64("rows"), I64("cols"), I64("ignore_index"),
    F32("keep"), F32("smooth")))
BACKWARD = Kernel("cross_entropy_backward_kernel", _ROW, (
    In("grad_out"), In("denom", "float32", optional=True), In("x"),
    In("target", "int64", optional=True), In("target_prob", optional=True),
    In("weight", optional=True), Out("grad_in"), Out("grad_target", optional=True),
    Out("bad", "uint32", optional=True), I64("rows"), I64("cols"), I64("gstride"),
    I64("ignore_index"), F32("keep"), F32("smooth")))
REDUCE = Kernel("cross_entropy_reduce_kernel", (dtype_param(),), (
    In("loss", "float32", optional=True), In("w", "float32", optional=True),
    Out("part_loss", "float32", optional=True), Out("part_w", "float32", optional=True),
    Out("result", "float32", optional=True), Out("out", optional=True), I64("n"), I64("chunk"),
    F32("count"), I32("mean")))
NLL_FORWARD = Kernel("nll_loss_forward_kernel", (dtype_param(),), (
    In("x", optional=True), In("target", "int64"), In("weight", optional=True),
    Out("row_loss", "float32", optional=True), Out("row_w", "float32", optional=True),
    Out("out", optional=True), Out("bad", "uint32", optional=True), I64("rows"), I64("cols"),
    I64("inner"), I64("ignore_index")))
NLL_BACKWARD = Kernel("nll_loss_backward_kernel", (dtype_param(),), (
    In("grad_out"), In("denom", "float32", optional=True), In("target", "int64"),
    In("weight", optional=True), Out("grad_in"), Out("bad", "uint32", optional=True),
    I64("rows"), I64("cols"), I64("inner"), I64("gstride"), I64("ignore_index")))

FAMILY = Family("cross_entropy", "cross_entropy.cuh",
                [FORWARD, BACKWARD, REDUCE, NLL_FORWARD, NLL_BACKWARD], dtypes=ALL_DTYPES,
                doc="cross_entropy (log_softmax + nll fused) and nll_loss, as torch")

REDUCE_CHUNK = 8192      # rows per block of the first reduction stage (device-independent)
REDUCE_THREADS = 256


# ---- plans ------------------------------------------------------------------------------------
def row_plan(dev, kernel, dtype, rows, cols, mode, aligned):
    """Warp per row up to 1024 classes (4 rows a block of 128), else a block per row whose
    threads each take about 8 vector loads a pass (128..1024 threads)."""
    vec = 16 // dtype.np.itemsize
    vec16 = aligned and cols % vec == 0
    block = cols > 1024
    if block:
        loads = ceil_div(cols, vec if vec16 else 1)
        threads = min(1024, max(128, 1 << max(0, math.ceil(math.log2(ceil_div(loads, 8))))))
        blocks = rows
    else:
        threads, blocks = 128, ceil_div(rows, 4)
    return FAMILY.plan(kernel, dict(T=dtype, MODE=mode, BLOCK=block, VEC16=vec16),
                       grid=(min(blocks, dev.max_grid[0]),), block=(threads,))


def flat_plan(dev, kernel, dtype, n):
    """Grid-stride elementwise launch over n items (nll kernels)."""
    return FAMILY.plan(kernel, dict(T=dtype), grid=(max(1, min(ceil_div(n, 256),
                                                              8 * dev.sm_count)),),
                       block=(256,))


# ---- shared pieces of the ops -----------------------------------------------------------------
def _flag(xp):
    return xp.full((1,), NO_BAD_ROW, dtype=np.uint32)


def _raise_bad(fn, bad, t_flat, n_classes, ignore_index):
    """Raise IndexOutOfRange if the kernel flagged a bad target (reads the flag: a sync)."""
    row = int(bad[0])
    if row == NO_BAD_ROW:
        return
    if row < NO_BAD_ROW - 1:
        value = int(t_flat[row])
    else:   # a row past 2^32 - 2: find the value on the host
        host = t_flat.get() if hasattr(t_flat, "get") else np.asarray(t_flat)
        value = _loss_ref().first_bad_target(host, n_classes, ignore_index)
    raise _loss_ref().bad_target_error(fn, value, n_classes, ignore_index)


def _reduce(rt, dtype, loss, w, n, mean, count, want_out=True):
    """Deterministic two-stage sum of per-row losses (and weights): (out 0-d T or None,
    result float32[2] = {sum of losses, denominator})."""
    xp = rt.xp
    result = xp.empty(2, dtype=np.float32)
    out = xp.empty((), dtype=dtype.np) if want_out else None
    blocks = min(ceil_div(n, REDUCE_CHUNK), 1024)
    common = dict(count=np.float32(count), mean=int(mean))
    if blocks > 1:
        chunk = ceil_div(n, blocks)
        pl = xp.empty(blocks, np.float32) if loss is not None else None
        pw = xp.empty(blocks, np.float32) if w is not None else None
        rt.launch(FAMILY.plan(REDUCE, dict(T=dtype), grid=(blocks,), block=(REDUCE_THREADS,)),
                  loss=loss, w=w, part_loss=pl, part_w=pw, result=None, out=None, n=n,
                  chunk=chunk, **common)
        loss, w, n = pl, pw, blocks
    rt.launch(FAMILY.plan(REDUCE, dict(T=dtype), grid=(1,), block=(REDUCE_THREADS,)),
              loss=loss, w=w, part_loss=None, part_w=None, result=result, out=out, n=n,
              chunk=n, **common)
    return out, result


def _empty_loss(xp, dtype, reduction, out_shape):
    if reduction == "none":
        return xp.zeros(out_shape, dtype=dtype.np)
    return xp.full((), np.nan if reduction == "mean" else 0.0, dtype=dtype.np)


class _Args:
    """The checked and normalised arguments of one cross_entropy / nll_loss call."""

    def __init__(self, rt, fn, input, target, weight, reduction, label_smoothing, prob_ok,
                 grad_out=None, ignore_index=-100):
        self.unbatched, self.prob, self.C = _loss_ref().check_loss_args(
            fn, input, target, weight, reduction, label_smoothing, prob_ok, ignore_index)
        arrays = dict(input=input, weight=weight, grad_out=grad_out)
        if self.prob:
            arrays["target"] = target
        self.dtype = need_dtype(rt, fn, FAMILY, **arrays)
        xp = rt.xp
        self.x = input[None] if self.unbatched else input
        t = target[None] if self.unbatched else target
        self.shape = tuple(self.x.shape)
        self.out_shape = self.shape[:1] + self.shape[2:]
        self.rows = math.prod(self.out_shape)
        self.inner = math.prod(self.shape[2:])
        self.weight = None if weight is None else xp.ascontiguousarray(weight)
        self.t = t if self.prob else xp.ascontiguousarray(t).astype(np.int64, copy=False) \
            .reshape(-1)
        if grad_out is not None:
            want = (self.out_shape[1:] if self.unbatched else self.out_shape) \
                if reduction == "none" else ()
            check_grad_out(fn, grad_out, want)
            self.g = xp.ascontiguousarray(grad_out).reshape(-1)
        self.reduction = reduction

    def user_shape(self, shape):
        return shape[1:] if self.unbatched else shape

    def class_last(self, xp, a):
        """[rows, C] contiguous with the class axis last."""
        return xp.ascontiguousarray(xp.moveaxis(a, 1, -1)).reshape(self.rows, self.C)

    def from_class_last(self, xp, a):
        shape = self.shape[:1] + self.shape[2:] + (self.C,)
        full = xp.ascontiguousarray(xp.moveaxis(a.reshape(shape), -1, 1))
        return full[0] if self.unbatched else full

    def host_bad_check(self, fn, ignore_index):
        """C == 0 or no rows: no kernel runs; check the (empty or all-bad) targets here."""
        if self.prob or not self.t.size:
            return
        host = self.t.get() if hasattr(self.t, "get") else self.t
        v = _loss_ref().first_bad_target(host, self.C, ignore_index)
        if v is not None:
            raise _loss_ref().bad_target_error(fn, v, self.C, ignore_index)


def _rows_then_reduce(rt, a, fn, ignore_index, reduction, launch):
    """Allocate the per-row outputs, run ``launch(row_loss=, row_w=, out=, bad=)``, raise on a
    target the kernel flagged, and return the loss: per row in T ('none'), else the
    deterministic reduction of the fp32 row losses."""
    xp = rt.xp
    none = reduction == "none"
    bufs = dict(row_loss=None if none else xp.empty(a.rows, np.float32),
                row_w=xp.empty(a.rows, np.float32) if reduction == "mean" and not a.prob
                else None,
                out=xp.empty(a.rows, a.dtype.np) if none else None,
                bad=None if a.prob else _flag(xp))
    launch(**bufs)
    if bufs["bad"] is not None:
        _raise_bad(fn, bufs["bad"], a.t, a.C, ignore_index)
    if none:
        return bufs["out"].reshape(a.user_shape(a.out_shape))
    return _reduce(rt, a.dtype, bufs["row_loss"], bufs["row_w"], a.rows, reduction == "mean",
                   a.rows)[0]


def _denominator(rt, a, ignore_index, bad):
    """The mean's divisor on the device (float32[1]): sum of w[t] over non-ignored rows, or the
    row count for probability targets. Bad targets set ``bad``; the caller raises after its
    own launch (one flag read per op)."""
    xp = rt.xp
    if a.prob:
        return xp.full((1,), a.rows, dtype=np.float32)
    row_w = xp.empty(a.rows, np.float32)
    rt.launch(flat_plan(rt.device(), NLL_FORWARD, a.dtype, a.rows), x=None, target=a.t,
              weight=a.weight, row_loss=None, row_w=row_w, out=None, bad=bad, rows=a.rows,
              cols=a.C, inner=1, ignore_index=ignore_index)
    _, result = _reduce(rt, a.dtype, None, row_w, a.rows, False, 0, want_out=False)
    return result[1:]


def _keep_smooth(label_smoothing, n_classes):
    eps = float(label_smoothing)
    return np.float32(1 - eps), np.float32(eps / n_classes if n_classes else 0.0)


# ---- cross_entropy ----------------------------------------------------------------------------
@FAMILY.op("cross_entropy", "forward")
def cross_entropy_forward(rt, input, target, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0):
    """Fused log_softmax + nll (see ``reference.cross_entropy_forward``): one read of the
    logits, per-row fp32 losses, a deterministic reduction."""
    fn = "cross_entropy"
    xp = rt.xp
    a = _Args(rt, fn, input, target, weight, reduction, label_smoothing, True,
              ignore_index=ignore_index)
    if a.rows == 0 or a.C == 0:
        a.host_bad_check(fn, ignore_index)
        return _empty_loss(xp, a.dtype, reduction, a.user_shape(a.out_shape))
    xl = a.class_last(xp, a.x)
    tp = a.class_last(xp, a.t) if a.prob else None
    keep, smooth = _keep_smooth(label_smoothing, a.C)
    mode = 2 if a.prob else (1 if float(label_smoothing) > 0 else 0)
    p = row_plan(rt.device(), FORWARD, a.dtype, a.rows, a.C, mode, aligned16(xl, tp, a.weight))
    return _rows_then_reduce(rt, a, fn, ignore_index, reduction, lambda **bufs: rt.launch(
        p, x=xl, target=None if a.prob else a.t, target_prob=tp, weight=a.weight, rows=a.rows,
        cols=a.C, ignore_index=ignore_index, keep=keep, smooth=smooth, **bufs))


@FAMILY.op("cross_entropy", "backward")
def cross_entropy_backward(rt, grad_out, input, target, weight=None, ignore_index=-100,
                           reduction="mean", label_smoothing=0.0):
    """``(grad_input, grad_target or None, None)``: softmax * Q - q, scaled by grad_out (and
    the mean's divisor), recomputing the row statistics from the logits."""
    fn = "cross_entropy_backward"
    xp = rt.xp
    a = _Args(rt, fn, input, target, weight, reduction, label_smoothing, True, grad_out,
              ignore_index)
    if a.rows == 0 or a.C == 0:
        a.host_bad_check(fn, ignore_index)
        gi = xp.zeros(input.shape, dtype=a.dtype.np)
        return gi, (xp.zeros(target.shape, dtype=a.dtype.np) if a.prob else None), None
    xl = a.class_last(xp, a.x)
    tp = a.class_last(xp, a.t) if a.prob else None
    bad = None if a.prob else _flag(xp)
    denom = _denominator(rt, a, ignore_index, bad) if reduction == "mean" else None
    keep, smooth = _keep_smooth(label_smoothing, a.C)
    mode = 2 if a.prob else (1 if float(label_smoothing) > 0 else 0)
    gi = xp.empty_like(xl)
    gt = xp.empty_like(tp) if a.prob else None
    p = row_plan(rt.device(), BACKWARD, a.dtype, a.rows, a.C, mode,
                 aligned16(xl, tp, a.weight, gi, gt))
    rt.launch(p, grad_out=a.g, denom=denom, x=xl, target=None if a.prob else a.t,
              target_prob=tp, weight=a.weight, grad_in=gi, grad_target=gt, bad=bad,
              rows=a.rows, cols=a.C, gstride=1 if reduction == "none" else 0,
              ignore_index=ignore_index, keep=keep, smooth=smooth)
    if bad is not None:
        _raise_bad(fn, bad, a.t, a.C, ignore_index)
    return (a.from_class_last(xp, gi), None if gt is None else a.from_class_last(xp, gt), None)


# ---- nll_loss ---------------------------------------------------------------------------------
@FAMILY.op("nll_loss", "forward")
def nll_loss_forward(rt, input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-w[t] * input[t] per element on [N, C, inner] in place, then the shared reduction."""
    fn = "nll_loss"
    xp = rt.xp
    a = _Args(rt, fn, input, target, weight, reduction, 0.0, False)
    if a.rows == 0 or a.C == 0:
        a.host_bad_check(fn, ignore_index)
        return _empty_loss(xp, a.dtype, reduction, a.user_shape(a.out_shape))
    x = xp.ascontiguousarray(a.x)
    p = flat_plan(rt.device(), NLL_FORWARD, a.dtype, a.rows)
    return _rows_then_reduce(rt, a, fn, ignore_index, reduction, lambda **bufs: rt.launch(
        p, x=x, target=a.t, weight=a.weight, rows=a.rows, cols=a.C, inner=a.inner,
        ignore_index=ignore_index, **bufs))


@FAMILY.op("nll_loss", "backward")
def nll_loss_backward(rt, grad_out, input, target, weight=None, ignore_index=-100,
                      reduction="mean"):
    """``(grad_input, None, None)``: -w[t] * g at the target class, 0 elsewhere."""
    fn = "nll_loss_backward"
    xp = rt.xp
    a = _Args(rt, fn, input, target, weight, reduction, 0.0, False, grad_out)
    if a.rows == 0 or a.C == 0:
        a.host_bad_check(fn, ignore_index)
        return xp.zeros(input.shape, dtype=a.dtype.np), None, None
    bad = _flag(xp)
    denom = _denominator(rt, a, ignore_index, bad) if reduction == "mean" else None
    gi = xp.empty(a.shape, dtype=a.dtype.np)
    rt.launch(flat_plan(rt.device(), NLL_BACKWARD, a.dtype, a.rows * a.C), grad_out=a.g,
              denom=denom, target=a.t, weight=a.weight, grad_in=gi, bad=bad, rows=a.rows,
              cols=a.C, inner=a.inner, gstride=1 if reduction == "none" else 0,
              ignore_index=ignore_index)
    _raise_bad(fn, bad, a.t, a.C, ignore_index)
    return (gi[0] if a.unbatched else gi), None, None


from ._cross_entropy_cases import _budget, declare  # noqa: F401  (_budget: for the tests)

declare(FAMILY)
