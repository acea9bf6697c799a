"""bias_relu: relu(input + bias) with bias over the last dimension (kernels/bias_relu.cuh), the
epilogue of linear and conv layers; forward and backward. The kernels take any activation of
cvk/activation.cuh (template parameter ACT): :func:`bias_act_forward` / :func:`bias_act_backward`
run them for any ACT (tested against the activation kernels); the op is ACT = relu."""
from __future__ import annotations

import math

import numpy as np

from ..spec import (ALL_DTYPES, FLOAT32, Bench, Case, F32, Family, I64, In, Kernel, Out,
                    ceil_div, dtype_param)
from ._common import check_grad_out, need_dtype
from .activation import ACT_PARAM, RELU

U = FLOAT32.unit_roundoff

_PARAMS = (dtype_param(), ACT_PARAM)
FORWARD = Kernel("bias_act_forward_kernel", _PARAMS,
                 (In("x"), In("bias"), Out("y"), I64("rows"), I64("cols"), F32("alpha")))
BACKWARD = Kernel("bias_act_backward_kernel", _PARAMS,
                  (In("grad_out"), In("x"), In("bias"), Out("grad_input"), Out("grad_bias"),
                   I64("rows"), I64("cols"), F32("alpha")))
FAMILY = Family("bias_relu", "bias_relu.cuh", [FORWARD, BACKWARD], dtypes=ALL_DTYPES,
                doc="f(x + bias) over [rows, cols] for any activation f, and its backward")


def plan(dev, kernel, dtype, rows, cols, act=RELU):
    """Grid-stride loops: enough blocks to fill the device (8 a SM), no more than the work."""
    threads = 256 if kernel is FORWARD else 128
    work = rows * cols if kernel is FORWARD else cols
    blocks = max(1, min(ceil_div(work, threads), 8 * dev.sm_count))
    return FAMILY.plan(kernel, dict(T=dtype, ACT=act), grid=(blocks,), block=(threads,))


def _rows(rt, fn, input, bias):
    from ..reference.activation import check_bias_relu
    check_bias_relu(fn, input, bias)
    rows, cols = math.prod(input.shape[:-1]), input.shape[-1]
    x = rt.xp.ascontiguousarray(input).reshape(rows, cols)
    return x, rt.xp.ascontiguousarray(bias), rows, cols


def bias_act_forward(rt, input, bias, act=RELU, alpha=0.0, fn="bias_relu"):
    """``f(input + bias)`` for the activation ``act`` (a cvk::ActKind, see specs/activation),
    ``alpha`` its parameter: the epilogue any op can call."""
    dtype = need_dtype(rt, fn, FAMILY, input=input, bias=bias)
    x, b, rows, cols = _rows(rt, fn, input, bias)
    y = rt.xp.empty_like(x)
    if x.size:
        rt.launch(plan(rt.device(), FORWARD, dtype, rows, cols, act), x=x, bias=b, y=y,
                  rows=rows, cols=cols, alpha=np.float32(alpha))
    return y.reshape(input.shape)


def bias_act_backward(rt, grad_out, input, bias, act=RELU, alpha=0.0, fn="bias_relu_backward"):
    """``(grad_input, grad_bias)`` of :func:`bias_act_forward`, grad_bias summed over the rows
    in fp32 (deterministic)."""
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input, bias=bias)
    check_grad_out(fn, grad_out, input.shape)
    x, b, rows, cols = _rows(rt, fn, input, bias)
    g = rt.xp.ascontiguousarray(grad_out).reshape(rows, cols)
    gx, gb = rt.xp.empty_like(x), rt.xp.zeros_like(b)
    if cols and rows:
        rt.launch(plan(rt.device(), BACKWARD, dtype, rows, cols, act), grad_out=g, x=x, bias=b,
                  grad_input=gx, grad_bias=gb, rows=rows, cols=cols, alpha=np.float32(alpha))
    return gx.reshape(input.shape), gb


@FAMILY.op("bias_relu", "forward")
def bias_relu_forward(rt, input, bias):
    """``relu(input + bias)`` on the elementwise kernel."""
    return bias_act_forward(rt, input, bias)


@FAMILY.op("bias_relu", "backward")
def bias_relu_backward(rt, grad_out, input, bias):
    """``(grad_input, grad_bias)``, grad_bias summed over the rows in fp32 (deterministic)."""
    return bias_act_backward(rt, grad_out, input, bias)


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
