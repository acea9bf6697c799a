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

from ..spec import (ALL_DTYPES, FLOAT32, Bench, Case, Family, F32, I32, I64, In, Kernel, Out,
                    Param, bool_param, ceil_div, dtype_param)
from ._common import aligned16, check_grad_out, need_dtype

U = FLOAT32.unit_roundoff


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
                 grad_out=None):
        self.unbatched, self.prob, self.C = _loss_ref().check_loss_args(
            fn, input, target, weight, reduction, label_smoothing, prob_ok)
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
    a = _Args(rt, fn, input, target, weight, reduction, label_smoothing, True)
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
    a = _Args(rt, fn, input, target, weight, reduction, label_smoothing, True, grad_out)
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



# ---- test and check cases ---------------------------------------------------------------------
# Error model (fp32, elementwise; u = 2^-24). A lane folds at most K = ceil(C/32) logits into its
# running (m, s): per logit one expf (<= 2 ulp = 4u) and one add, and on a new maximum a rescale
# of s (an expf and a multiply); the warp merges 5 pairs and the block up to 31 more, 5u each.
# So s carries a relative error <= D = (5K + 190) u, and log s an absolute one <= D. Sums of
# w x or q x over a row take <= K + 40 additions. Per row then
#   |err loss| <= sum_c |q_c| (D + (K + 40) u (|x_c| + |lse| + 1)),
# the reductions add gamma_rows of the sum of |row losses| and the mean's divisor another
# gamma_rows, relative. Backward: softmax = expf(x - m) / s is off by D + 8u + u|x - m|,
# relative; Q by (K + 40) u; the divisor by rows u.
def _budget(C):
    K = -(-C // 32)
    return (5 * K + 190) * U, (K + 40) * U


def _terms(a, p, log_softmax=True):
    """float64 per-row pieces: x [rows, C], loss coefficients q [rows, C], lse [rows, 1],
    per-row grad scale ge, the mean's divisor, keep, w."""
    x, t, w = a["input"], a["target"], a.get("weight")
    if x.ndim == 1:
        x, t = x[None], t[None]
    C = x.shape[1]
    xl = np.moveaxis(x, 1, -1).reshape(-1, C)
    wl = np.ones(C) if w is None else w
    eps = float(p.get("label_smoothing", 0.0))
    keep, smooth = 1 - eps, eps / C
    if t.dtype.kind == "f" or t.dtype.name == "bfloat16":
        q = (np.moveaxis(t.astype(np.float64), 1, -1).reshape(-1, C) * keep + smooth) * wl
        denom = float(len(xl))
    else:
        tf = t.reshape(-1)
        valid = tf != p.get("ignore_index", -100)
        tc = np.where(valid, tf, 0)
        q = np.zeros_like(xl)
        q[np.arange(len(tf)), tc] = keep * wl[tc]
        if eps:
            q += smooth * wl
        q[~valid] = 0
        denom = float(np.sum(np.where(valid, wl[tc], 0)))
    if log_softmax:
        m = xl.max(1, keepdims=True)
        lse = m + np.log(np.exp(xl - m).sum(1, keepdims=True))
    else:
        lse = np.zeros((len(xl), 1))
    red = p.get("reduction", "mean")
    ge = np.ones(len(xl))
    if "grad_out" in a:
        g = a["grad_out"].reshape(-1)
        ge = np.abs(g) if red == "none" else np.full(len(xl), abs(float(g[0])))
        if red == "mean":
            ge = ge / denom
    return xl, q, lse, ge, denom, keep, wl


def _reduced(a, p, per_row, row_loss, ref):
    """Bound of the reduced loss from per-row bounds and |row losses|."""
    red, n = p.get("reduction", "mean"), len(per_row)
    if red == "none":
        return per_row.reshape(np.shape(ref))
    total = per_row.sum() + (n + 2) * U * np.abs(row_loss).sum()
    if red == "sum":
        return total
    _, _, _, _, denom, _, _ = _terms(a, p, False)
    return total / denom + (n + 4) * U * abs(float(ref))


def _ce_fwd_bound(a, r, p):
    xl, q, lse, _, _, _, _ = _terms(a, p)
    D, S = _budget(xl.shape[1])
    per_row = (np.abs(q) * (D + S * (np.abs(xl) + np.abs(lse) + 1))).sum(1)
    rows = (q * (lse - xl)).sum(1)
    return _reduced(a, p, per_row, rows, r)


def _ce_bwd_bound(a, r, p):
    xl, q, lse, ge, _, keep, wl = _terms(a, p)
    D, S = _budget(xl.shape[1])
    L = D + S + (len(xl) + 8) * U + U * np.abs(xl - xl.max(1, keepdims=True))
    sm = np.exp(xl - lse)
    gi = ge[:, None] * L * (sm * np.abs(q.sum(1, keepdims=True)) + np.abs(q))
    x = a["input"]
    back = lambda b: np.moveaxis(b.reshape(x.shape[:1] + x.shape[2:] + (x.shape[1],)) if  # noqa
                                 x.ndim > 1 else b.reshape(x.shape), -1, 1) if x.ndim > 1 \
        else b.reshape(x.shape)
    out = [back(gi), None, None]
    if r[1] is not None:
        gt = ge[:, None] * keep * np.abs(wl) * (D + (len(xl) + 8) * U * (
            np.abs(xl - lse) + np.abs(xl) + np.abs(lse) + 1))
        out[1] = back(gt)
    return tuple(out)


def _nll_fwd_bound(a, r, p):
    xl, q, _, _, _, _, _ = _terms(a, p, False)
    rows = -(q * xl).sum(1)
    return _reduced(a, p, 2 * U * np.abs(rows), rows, r)


def _nll_bwd_bound(a, r, p):
    return ((len(a["target"].reshape(-1)) + 8) * U * np.abs(r[0]), None, None)


def _class_make(shape, prob=False, weight=False, ignore=None, smoothing=0.0, reduction="mean",
                backward=False, log_probs=False):
    def make(rng):
        x = 3 * rng.standard_normal(shape)
        C = shape[0] if len(shape) == 1 else shape[1]
        tshape = () if len(shape) == 1 else shape[:1] + shape[2:]
        if log_probs:
            x = x - np.log(np.exp(x).sum(0 if len(shape) == 1 else 1, keepdims=True))
        if prob:
            e = rng.random(shape) ** 2
            t = e / e.sum(0 if len(shape) == 1 else 1, keepdims=True)
        else:
            t = rng.integers(0, C, tshape).astype(np.int64)
            if ignore is not None and t.size:
                t.reshape(-1)[::3] = ignore
        arrays = {"input": x, "target": t}
        if weight:
            arrays["weight"] = 0.1 + rng.random(C)
        params = {"reduction": reduction}
        if not log_probs:
            params["label_smoothing"] = smoothing
        if ignore is not None:
            params["ignore_index"] = ignore
        if backward:
            out = tshape if reduction == "none" else ()
            arrays = {"grad_out": np.asarray(rng.standard_normal(out)), **arrays}
        return arrays, params
    return make


def _ce_cases(label, shape, check=True, **kw):
    p = {"reduction": kw.get("reduction", "mean"), "label_smoothing": kw.get("smoothing", 0.0),
         "ignore_index": kw.get("ignore", -100)}
    return [Case("cross_entropy", "forward", label, _class_make(shape, **kw),
                 lambda a, r: _ce_fwd_bound(a, r, p), check=check),
            Case("cross_entropy", "backward", label, _class_make(shape, backward=True, **kw),
                 lambda a, r: _ce_bwd_bound(a, r, p), check=check)]


def _nll_cases(label, shape, check=True, **kw):
    p = {"reduction": kw.get("reduction", "mean"), "ignore_index": kw.get("ignore", -100)}
    return [Case("nll_loss", "forward", label, _class_make(shape, log_probs=True, **kw),
                 lambda a, r: _nll_fwd_bound(a, r, p), check=check),
            Case("nll_loss", "backward", label,
                 _class_make(shape, backward=True, log_probs=True, **kw),
                 lambda a, r: _nll_bwd_bound(a, r, p), check=check)]


FAMILY.case(
    *_ce_cases("7x33 weight ignore none", (7, 33), weight=True, ignore=2, reduction="none"),
    *_ce_cases("5x1025 smoothing weight mean", (5, 1025), weight=True, smoothing=0.1),
    *_ce_cases("3x4x5 prob smoothing sum", (3, 4, 5), prob=True, smoothing=0.2,
               reduction="sum", check=False),
    *_ce_cases("2x3x2x2 ignore mean", (2, 3, 2, 2), ignore=1, check=False),
    *_ce_cases("2x4104 prob weight mean", (2, 4104), prob=True, weight=True, check=False),
    *_ce_cases("33 unbatched smoothing", (33,), smoothing=0.3, reduction="sum", check=False),
    *_nll_cases("7x33 weight ignore mean", (7, 33), weight=True, ignore=4),
    *_nll_cases("2x5x3 none", (2, 5, 3), reduction="none", check=False),
    *_nll_cases("4x6 sum", (4, 6), reduction="sum", check=False))


# ---- bench: forward + backward, as a training step computes them -------------------------------
def _bench_make(xp, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 2).astype(dtype.np)
    t = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    return {"input": xp.asarray(x), "target": xp.asarray(t)}, {}


def _bench_call(fn, rt, a, p):
    """Our forward then backward (grad_out = 1 of the mean): the step's loss and grad_input."""
    loss = FAMILY.ops[("cross_entropy", "forward")](rt, a["input"], a["target"])
    one = rt.xp.ones((), dtype=a["input"].dtype)
    return fn(rt, one, a["input"], a["target"])[0], loss


def _bench_peer(torch, t, p):
    x = t["input"].detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x, t["target"])
    loss.backward()
    return x.grad


def _bench_ref(xp, a, p):
    x = a["input"]
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    sm = e / e.sum(axis=1, keepdims=True)
    rows = xp.arange(x.shape[0])
    sm[rows, a["target"].astype(xp.int64)] -= 1
    return sm / x.shape[0]


FAMILY.bench(Bench(
    "cross_entropy", "backward",
    shapes={"full": [(8192, 8192), (65536, 1000)], "quick": [(2048, 2048), (8192, 1000)],
            "dry-run": [(16, 256), (9, 1001)]},
    make=_bench_make,
    work=lambda shape, itemsize: {"bytes": 3 * shape[0] * shape[1] * itemsize},
    peer_name="torch cross_entropy forward + backward",
    peer=_bench_peer,
    device_ref=_bench_ref,
    dtypes=ALL_DTYPES,
    call=_bench_call,
    bars=(("float32", (8192, 8192), "ratio_vs_peer", 1.5, 2.0,
           "cross_entropy fp32 8192x8192 forward + backward vs torch"),)))
