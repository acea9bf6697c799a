"""bias_relu: relu(input + bias) with bias over the last dimension (kernels/bias_relu.cuh), the
epilogue of linear and conv layers; forward and backward."""
from __future__ import annotations

import math

import numpy as np

from ..spec import (ALL_DTYPES, FLOAT32, Bench, Case, Family, I64, In, Kernel, Out, ceil_div,
                    dtype_param)
from ._common import check_grad_out, need_dtype

U = FLOAT32.unit_roundoff

FORWARD = Kernel("bias_relu_forward_kernel", (dtype_param(),),
                 (In("x"), In("bias"), Out("y"), I64("rows"), I64("cols")))
BACKWARD = Kernel("bias_relu_backward_kernel", (dtype_param(),),
                  (In("grad_out"), In("x"), In("bias"), Out("grad_input"), Out("grad_bias"),
                   I64("rows"), I64("cols")))
FAMILY = Family("bias_relu", "bias_relu.cuh", [FORWARD, BACKWARD], dtypes=ALL_DTYPES,
                doc="relu(x + bias) over [rows, cols], and its backward")


def plan(dev, kernel, dtype, rows, cols):
    """Grid-stride loops: enough blocks to fill the device (8 a SM), no more than the work."""
    threads = 256 if kernel is FORWARD else 128
    work = rows * cols if kernel is FORWARD else cols
    blocks = max(1, min(ceil_div(work, threads), 8 * dev.sm_count))
    return FAMILY.plan(kernel, dict(T=dtype), grid=(blocks,), block=(threads,))


def _rows(rt, fn, input, bias):
    from ..reference.activation import check_bias_relu
    check_bias_relu(fn, input, bias)
    rows, cols = math.prod(input.shape[:-1]), input.shape[-1]
    x = rt.xp.ascontiguousarray(input).reshape(rows, cols)
    return x, rt.xp.ascontiguousarray(bias), rows, cols


@FAMILY.op("bias_relu", "forward")
def bias_relu_forward(rt, input, bias):
    """``relu(input + bias)`` on the elementwise kernel."""
    dtype = need_dtype(rt, "bias_relu", FAMILY, input=input, bias=bias)
    x, b, rows, cols = _rows(rt, "bias_relu", input, bias)
    y = rt.xp.empty_like(x)
    if x.size:
        rt.launch(plan(rt.device(), FORWARD, dtype, rows, cols), x=x, bias=b, y=y, rows=rows,
                  cols=cols)
    return y.reshape(input.shape)


@FAMILY.op("bias_relu", "backward")
def bias_relu_backward(rt, grad_out, input, bias):
    """``(grad_input, grad_bias)``, grad_bias summed over the rows in fp32 (deterministic)."""
    dtype = need_dtype(rt, "bias_relu_backward", FAMILY, grad_out=grad_out, input=input,
                       bias=bias)
    check_grad_out("bias_relu_backward", grad_out, input.shape)
    x, b, rows, cols = _rows(rt, "bias_relu_backward", input, bias)
    g = rt.xp.ascontiguousarray(grad_out).reshape(rows, cols)
    gx, gb = rt.xp.empty_like(x), rt.xp.zeros_like(b)
    if cols and rows:
        rt.launch(plan(rt.device(), BACKWARD, dtype, rows, cols), grad_out=g, x=x, bias=b,
                  grad_input=gx, grad_bias=gb, rows=rows, cols=cols)
    return gx.reshape(input.shape), gb


def _make(shape, grad=False):
    def make(rng):
        arrays = {"input": rng.standard_normal(shape), "bias": rng.standard_normal(shape[-1])}
        if grad:
            arrays = {"grad_out": rng.standard_normal(shape), **arrays}
        return arrays, {}
    return make


def _bwd_bound(a, ref):
    rows = math.prod(a["input"].shape[:-1])
    return 0.0, (rows + 1) * U * np.abs(ref[0]).reshape(-1, a["input"].shape[-1]).sum(0)


FAMILY.case(*[c for shape in [(7, 33), (3, 5, 1025), (1, 1)] for c in (
    Case("bias_relu", "forward", "x".join(map(str, shape)), _make(shape),
         lambda a, r: 2 * U * np.abs(a["input"] + a["bias"])),
    Case("bias_relu", "backward", "x".join(map(str, shape)), _make(shape, grad=True),
         _bwd_bound))])


def _bench_make(xp, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return ({"input": xp.asarray(rng.standard_normal(shape, dtype=np.float32).astype(dtype.np)),
             "bias": xp.asarray(rng.standard_normal(shape[-1:], dtype=np.float32)
                                .astype(dtype.np))}, {})


FAMILY.bench(Bench(
    "bias_relu", "forward",
    shapes={"full": [(8192, 8192)], "quick": [(4096, 4096)], "dry-run": [(33, 257)]},
    make=_bench_make,
    work=lambda shape, itemsize: {"bytes": 2 * shape[0] * shape[1] * itemsize},
    peer_name="torch.relu(x + b)",
    peer=lambda torch, t, p: torch.relu(t["input"] + t["bias"]),
    device_ref=lambda xp, a, p: xp.maximum(a["input"] + a["bias"], 0),
    dtypes=ALL_DTYPES))
