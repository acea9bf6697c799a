"""softmax and log_softmax over one dimension (kernels/softmax.cuh), forward and backward."""
from __future__ import annotations

import numpy as np

from .._checks import check_dim
from ..spec import (ALL_DTYPES, FLOAT32, Bench, Case, Family, I64, In, Kernel, Out, bool_param,
                    ceil_div, dtype_param)
from ._common import aligned16, need_dtype

U = FLOAT32.unit_roundoff
_PARAMS = (dtype_param(), bool_param("LOG"), bool_param("BLOCK"), bool_param("VEC16"))
FORWARD = Kernel("softmax_forward_kernel", _PARAMS,
                 (In("x"), Out("y"), I64("rows"), I64("cols")))
BACKWARD = Kernel("softmax_backward_kernel", _PARAMS,
                  (In("grad_out"), In("y"), Out("grad_in"), I64("rows"), I64("cols")))

FAMILY = Family("softmax", "softmax.cuh", [FORWARD, BACKWARD], dtypes=ALL_DTYPES,
                doc="softmax / log_softmax over the last dimension of [rows, cols]")


def plan(dev, kernel, dtype, rows, cols, log, aligned):
    """One warp per row up to 1024 columns, else one block per row with about 8 vector loads
    per thread per pass (128..1024 threads); 16-byte loads when the rows allow them."""
    if rows < 1 or cols < 1:
        raise ValueError("softmax: plan needs rows, cols >= 1")
    vec = 16 // dtype.np.itemsize
    vec16 = aligned and cols % vec == 0
    block = cols > 1024
    if block:
        want = ceil_div(ceil_div(cols, vec if vec16 else 1), 8)
        threads = 128
        while threads < want and threads < 1024:
            threads *= 2
        blocks = rows
    else:
        threads = 128   # 4 rows per block
        blocks = ceil_div(rows, threads // 32)
    return FAMILY.plan(kernel, dict(T=dtype, LOG=log, BLOCK=block, VEC16=vec16),
                       grid=(min(blocks, dev.max_grid[0]),), block=(threads,))


def _rows_view(rt, x, dim, fn):
    """(x with `dim` moved last, contiguous, as [rows, cols]; the normalised dim)."""
    d = check_dim(fn, "dim", dim, x.ndim)  # 0-d: dim in [-1, 0], as torch
    xm = rt.xp.moveaxis(x, d, -1) if x.ndim else x.reshape(1)
    xm = rt.xp.ascontiguousarray(xm)
    cols = xm.shape[-1] if xm.ndim else 1
    return xm, d, cols


def _from_rows(rt, ym, d, like):
    if like.ndim == 0:
        return ym.reshape(())
    return rt.xp.ascontiguousarray(rt.xp.moveaxis(ym, -1, d))


def _forward(rt, input, dim, log):
    fn = "log_softmax" if log else "softmax"
    dtype = need_dtype(rt, fn, FAMILY, input=input)
    xm, d, cols = _rows_view(rt, input, dim, fn)
    ym = rt.xp.empty_like(xm)
    if xm.size:
        rows = xm.size // cols
        p = plan(rt.device(), FORWARD, dtype, rows, cols, log, aligned16(xm, ym))
        rt.launch(p, x=xm, y=ym, rows=rows, cols=cols)
    return _from_rows(rt, ym, d, input)


def _backward(rt, grad_out, output, dim, log):
    fn = "log_softmax_backward" if log else "softmax_backward"
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, output=output)
    if tuple(grad_out.shape) != tuple(output.shape):
        raise ValueError(f"{fn}: grad_out shape {tuple(grad_out.shape)} != output shape "
                         f"{tuple(output.shape)}")
    gm, d, cols = _rows_view(rt, grad_out, dim, fn)
    ym, _, _ = _rows_view(rt, output, dim, fn)
    dx = rt.xp.empty_like(gm)
    if gm.size:
        rows = gm.size // cols
        p = plan(rt.device(), BACKWARD, dtype, rows, cols, log, aligned16(gm, ym, dx))
        rt.launch(p, grad_out=gm, y=ym, grad_in=dx, rows=rows, cols=cols)
    return (_from_rows(rt, dx, d, output),)


@FAMILY.op("softmax", "forward")
def softmax_forward(rt, input, dim=-1):
    """Softmax over ``dim`` on the warp-/block-per-row kernel."""
    return _forward(rt, input, dim, False)


@FAMILY.op("log_softmax", "forward")
def log_softmax_forward(rt, input, dim=-1):
    """Log-softmax over ``dim`` on the warp-/block-per-row kernel."""
    return _forward(rt, input, dim, True)


@FAMILY.op("softmax", "backward")
def softmax_backward(rt, grad_out, output, dim=-1):
    """``(grad_input,)`` of softmax from its output."""
    return _backward(rt, grad_out, output, dim, False)


@FAMILY.op("log_softmax", "backward")
def log_softmax_backward(rt, grad_out, output, dim=-1):
    """``(grad_input,)`` of log_softmax from its output."""
    return _backward(rt, grad_out, output, dim, True)


# ---- test and check cases ---------------------------------------------------------------------
def _softmax64(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _cases(rows, cols, dim=-1, check=True):
    shape = (rows, cols) if dim in (-1, 1) else (cols, rows)
    axis = dim
    label = f"{shape[0]}x{shape[1]}" + ("" if dim in (-1, 1) else f", dim={dim}")
    n = cols

    def budget():
        return (n + 8) * U

    def fwd(rng):
        return {"input": 3 * rng.standard_normal(shape)}, {"dim": dim}

    def bwd(log):
        def make(rng):
            y = _softmax64(3 * rng.standard_normal(shape), axis)
            return {"grad_out": rng.standard_normal(shape),
                    "output": np.log(y) if log else y}, {"dim": dim}
        return make

    def bwd_bound(log):
        def bound(a, r):
            g, y = np.abs(a["grad_out"]), a["output"]
            p = np.exp(y) if log else y
            return budget() * (g.sum(axis, keepdims=True) * p + g)
        return bound
    return [
        Case("softmax", "forward", label, fwd, lambda a, r: budget() * r, check=check),
        Case("log_softmax", "forward", label, fwd,
             lambda a, r: budget() + 4 * U * np.abs(r), check=check),
        Case("softmax", "backward", label, bwd(False), bwd_bound(False), check=check),
        Case("log_softmax", "backward", label, bwd(True), bwd_bound(True), check=check),
    ]


FAMILY.case(*_cases(7, 33), *_cases(5, 1025), *_cases(3, 4104), *_cases(1, 1, check=False),
            *_cases(6, 40, dim=0, check=False))


# ---- bench ------------------------------------------------------------------------------------
def _bench_make(xp, shape, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * 2
    return {"input": xp.asarray(x.astype(dtype.np))}, {"dim": -1}


def _bench_ref(xp, a, p):
    x = a["input"]
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


FAMILY.bench(Bench(
    "softmax", "forward",
    shapes={"full": [(8192, 8192), (65536, 1000)], "quick": [(2048, 2048), (8192, 1000)],
            "dry-run": [(16, 256), (9, 1001)]},
    make=_bench_make,
    work=lambda shape, itemsize: {"bytes": 2 * shape[0] * shape[1] * itemsize},
    peer_name="torch.softmax",
    peer=lambda torch, t, p: torch.softmax(t["input"], dim=-1),
    device_ref=_bench_ref,
    dtypes=ALL_DTYPES,
    bars=(("float32", (8192, 8192), "ratio_vs_peer", 1.0, 1.9,
           "softmax fp32 8192x8192 vs torch.softmax"),
          ("float32", (8192, 8192), "frac_copy_bw", 0.7, 0.85,
           "softmax fp32 8192x8192, fraction of copy bandwidth"))))
