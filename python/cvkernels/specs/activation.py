"""Elementwise activations (kernels/activation.cuh over the functors of cvk/activation.cuh):
relu, leaky_relu, elu, gelu ('none', 'tanh'), sigmoid and tanh, forward and backward, any shape
(flattened; strided views made contiguous), 16-byte vectors where the pointers allow."""
from __future__ import annotations

import math

import numpy as np

from ..spec import (ALL_DTYPES, Bench, Case, F32, Family, I64, In, Kernel, Out, Param,
                    bool_param, ceil_div, dtype_param)
from . import _eltwise_bounds as EB
from ._common import aligned16, check_grad_out, need_dtype

# the values of cvk::ActKind
RELU, LEAKY_RELU, ELU, GELU, GELU_TANH, SIGMOID, TANH = range(7)
ACT_PARAM = Param("ACT", tuple(range(7)))      # every cvk::ActKind; bias_relu's kernels too
_PARAMS = (dtype_param(), ACT_PARAM, bool_param("VEC16"))
FORWARD = Kernel("activation_forward_kernel", _PARAMS,
                 (In("x"), Out("y"), I64("n"), F32("alpha")))
BACKWARD = Kernel("activation_backward_kernel", _PARAMS,
                  (In("grad_out"), In("z"), Out("grad_input"), I64("n"), F32("alpha")))
FAMILY = Family("activation", "activation.cuh", [FORWARD, BACKWARD], dtypes=ALL_DTYPES,
                doc="relu, leaky_relu, elu, gelu, sigmoid, tanh: elementwise, fwd and bwd")


def plan(dev, kernel, dtype, act, n, aligned):
    """Grid-stride: 256 threads, one 16-byte vector (or one element) a step, at most 8 blocks a
    SM and no more blocks than the work."""
    vec16 = bool(aligned) and n >= 16 // dtype.np.itemsize
    work = ceil_div(n, 16 // dtype.np.itemsize) if vec16 else n
    blocks = max(1, min(ceil_div(work, 256), 8 * dev.sm_count))
    return FAMILY.plan(kernel, dict(T=dtype, ACT=act, VEC16=vec16), grid=(blocks,), block=(256,))


def _forward(rt, fn, act, input, alpha=0.0, inplace=False):
    dtype = need_dtype(rt, fn, FAMILY, input=input)
    x = rt.xp.ascontiguousarray(input).reshape(-1)   # a view of input when it is contiguous
    in_place_here = bool(inplace) and input.flags.c_contiguous
    y = x if in_place_here else rt.xp.empty_like(x)
    if x.size:
        rt.launch(plan(rt.device(), FORWARD, dtype, act, x.size, aligned16(x, y)), x=x, y=y,
                  n=x.size, alpha=np.float32(alpha))
    y = y.reshape(input.shape)
    if inplace and not in_place_here:
        input[...] = y          # a strided view: written back through its strides, as torch
        return input
    return input if in_place_here else y


def _backward(rt, fn, act, grad_out, z, alpha=0.0, zname="input"):
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, **{zname: z})
    check_grad_out(fn, grad_out, z.shape)
    g = rt.xp.ascontiguousarray(grad_out).reshape(-1)
    zz = rt.xp.ascontiguousarray(z).reshape(-1)
    gx = rt.xp.empty_like(g)
    if g.size:
        rt.launch(plan(rt.device(), BACKWARD, dtype, act, g.size, aligned16(g, zz, gx)),
                  grad_out=g, z=zz, grad_input=gx, n=g.size, alpha=np.float32(alpha))
    return (gx.reshape(z.shape),)


@FAMILY.op("relu", "forward")
def relu_forward(rt, input, inplace=False):
    """max(x, 0); NaN stays NaN."""
    return _forward(rt, "relu", RELU, input, inplace=inplace)


@FAMILY.op("relu", "backward")
def relu_backward(rt, grad_out, input, inplace=False):
    """``(grad_out * (input > 0),)``."""
    return _backward(rt, "relu_backward", RELU, grad_out, input)


@FAMILY.op("leaky_relu", "forward")
def leaky_relu_forward(rt, input, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope * x."""
    return _forward(rt, "leaky_relu", LEAKY_RELU, input, negative_slope, inplace)


@FAMILY.op("leaky_relu", "backward")
def leaky_relu_backward(rt, grad_out, input, negative_slope=0.01, inplace=False):
    """``(grad_out if input > 0 else negative_slope * grad_out,)``."""
    return _backward(rt, "leaky_relu_backward", LEAKY_RELU, grad_out, input, negative_slope)


@FAMILY.op("elu", "forward")
def elu_forward(rt, input, alpha=1.0, inplace=False):
    """x if x > 0 else alpha * expm1(x)."""
    return _forward(rt, "elu", ELU, input, alpha, inplace)


@FAMILY.op("elu", "backward")
def elu_backward(rt, grad_out, input, alpha=1.0, inplace=False):
    """``(grad_out if input > 0 else grad_out * alpha * exp(input),)``."""
    return _backward(rt, "elu_backward", ELU, grad_out, input, alpha)


def _gelu_act(fn, approximate):
    from ..reference.activation import _check_approx
    _check_approx(fn, approximate)
    return GELU if approximate == "none" else GELU_TANH


@FAMILY.op("gelu", "forward")
def gelu_forward(rt, input, approximate="none"):
    """x * Phi(x) ('none', Phi through erfcf) or the tanh approximation ('tanh')."""
    return _forward(rt, "gelu", _gelu_act("gelu", approximate), input)


@FAMILY.op("gelu", "backward")
def gelu_backward(rt, grad_out, input, approximate="none"):
    """``(grad_out * gelu'(input),)``."""
    act = _gelu_act("gelu_backward", approximate)
    return _backward(rt, "gelu_backward", act, grad_out, input)


@FAMILY.op("sigmoid", "forward")
def sigmoid_forward(rt, input):
    """1 / (1 + exp(-x)), without overflow."""
    return _forward(rt, "sigmoid", SIGMOID, input)


@FAMILY.op("sigmoid", "backward")
def sigmoid_backward(rt, grad_out, output):
    """``(grad_out * y * (1 - y),)`` from the forward's output y."""
    return _backward(rt, "sigmoid_backward", SIGMOID, grad_out, output, zname="output")


@FAMILY.op("tanh", "forward")
def tanh_forward(rt, input):
    """tanh(x)."""
    return _forward(rt, "tanh", TANH, input)


@FAMILY.op("tanh", "backward")
def tanh_backward(rt, grad_out, output):
    """``(grad_out * (1 - y^2),)`` from the forward's output y."""
    return _backward(rt, "tanh_backward", TANH, grad_out, output, zname="output")


# ---- fp32 bounds: each functor's expression in its evaluation order (see _eltwise_bounds) ------
def _err(e):
    """A branch-selected error bound (the value itself is not needed)."""
    return EB.E(np.zeros_like(e), e)


def _fwd_expr(op, x, alpha):
    X, half = EB.E(x), EB.E.const(0.5)
    if op in ("relu",):
        return EB.E(np.zeros_like(x))
    if op == "leaky_relu":
        return _err(np.where(x > 0, 0.0, (X * alpha).e))
    if op == "elu":
        return _err(np.where(x > 0, 0.0, (EB.E.const(alpha) * EB.expm1(X)).e))
    if op == "gelu":
        return (half * X) * EB.erfc(-X * math.sqrt(0.5))
    if op == "gelu_tanh":
        inner = EB.E.const(math.sqrt(2 / math.pi)) * (X + EB.E.const(0.044715) * X * X * X)
        return (half * X) * (1.0 + EB.tanh(inner))
    if op == "sigmoid":
        e = EB.exp(EB.E(-np.abs(x)))
        return _err(np.where(x >= 0, (1.0 / (1.0 + e)).e, (e / (1.0 + e)).e))
    if op == "tanh":
        return EB.tanh(X)
    raise KeyError(op)


def _bwd_expr(op, g, z, alpha):
    G, X, half = EB.E(g), EB.E(z), EB.E.const(0.5)
    if op == "relu":
        return EB.E(np.zeros_like(g))
    if op == "leaky_relu":
        return _err(np.where(z > 0, 0.0, (G * alpha).e))
    if op == "elu":
        return _err(np.where(z > 0, 0.0, (G * (EB.E.const(alpha) * EB.exp(X))).e))
    if op == "gelu":
        cdf = half * EB.erfc(-X * math.sqrt(0.5))
        pdf = EB.E.const(1 / math.sqrt(2 * math.pi)) * EB.exp(EB.E.const(-0.5) * X * X)
        return G * (cdf + X * pdf)
    if op == "gelu_tanh":
        x2 = X * X
        th = EB.tanh(EB.E.const(math.sqrt(2 / math.pi)) * (X + EB.E.const(0.044715) * x2 * X))
        c3 = EB.E(3 * 0.044715, 2 * EB.U * 3 * 0.044715)   # 3.f * kGeluC: f32(c), then rounded
        dinner = EB.E.const(math.sqrt(2 / math.pi)) * (1.0 + c3 * x2)
        return G * (half * (1.0 + th) + half * X * (1.0 - th * th) * dinner)
    if op == "sigmoid":
        return G * X * (1.0 - X)
    if op == "tanh":
        return G * (1.0 - X * X)
    raise KeyError(op)


# op label -> (reference op, params, forward alpha, backward takes the output)
_OPS = {
    "relu": ("relu", {}, 0.0, False),
    "leaky_relu": ("leaky_relu", {"negative_slope": 0.2}, 0.2, False),
    "elu": ("elu", {"alpha": 1.3}, 1.3, False),
    "gelu": ("gelu", {"approximate": "none"}, 0.0, False),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, 0.0, False),
    "sigmoid": ("sigmoid", {}, 0.0, True),
    "tanh": ("tanh", {}, 0.0, True),
}


def _cases(label, shape, check=True):
    op, params, alpha, from_output = _OPS[label]
    name = "x".join(map(str, shape)) + ("" if label == op else f", {label}")

    def fwd(rng):
        return {"input": 3 * rng.standard_normal(shape)}, dict(params)

    def bwd(rng):
        x = 3 * rng.standard_normal(shape)
        z = {"sigmoid": lambda: 1 / (1 + np.exp(-x)), "tanh": lambda: np.tanh(x)}[op]() \
            if from_output else x
        return {"grad_out": rng.standard_normal(shape),
                ("output" if from_output else "input"): z}, dict(params)

    def fwd_bound(a, r):
        return _fwd_expr(label, a["input"], alpha).bound()

    def bwd_bound(a, r):
        z = a["output"] if from_output else a["input"]
        return _bwd_expr(label, a["grad_out"], z, alpha).bound()
    return [Case(op, "forward", name, fwd, fwd_bound, check=check),
            Case(op, "backward", name, bwd, bwd_bound, check=check)]


# 7x33 = 231 elements: 16-byte vectors plus a 3 (fp32) or 7 (fp16/bf16) element tail; 1 and 0
# elements; a 3-D shape for the two gelus (the matrix adds strided layouts to each)
FAMILY.case(*[c for label in _OPS for shape, check in (((7, 33), True), ((1,), False))
              for c in _cases(label, shape, check)],
            *_cases("relu", (0,), False), *_cases("gelu", (3, 5, 67), False),
            *_cases("gelu_tanh", (3, 5, 67), False))


# ---- bench: bytes-bound, beside torch ----------------------------------------------------------
def _bench_make(xp, shape, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * 2
    return {"input": xp.asarray(x.astype(dtype.np))}, {}


def _bench(op, peer_name, peer, device_ref):
    return Bench(op, "forward",
                 shapes={"full": [(16384, 16384)], "quick": [(4096, 4096)],
                         "dry-run": [(33, 257)]},
                 make=_bench_make,
                 work=lambda shape, itemsize: {"bytes": 2 * math.prod(shape) * itemsize},
                 peer_name=peer_name, peer=peer, device_ref=device_ref, dtypes=ALL_DTYPES)


def _gelu_ref(xp, a, p):
    x = a["input"]
    try:
        from cupyx.scipy.special import erfc   # on a GPU
    except ImportError:
        from ..reference.activation import _erfc as erfc
    return 0.5 * x * erfc(-x / math.sqrt(2))


FAMILY.bench(
    _bench("relu", "torch.relu", lambda torch, t, p: torch.relu(t["input"]),
           lambda xp, a, p: xp.maximum(a["input"], 0)),
    _bench("gelu", "torch.nn.functional.gelu",
           lambda torch, t, p: torch.nn.functional.gelu(t["input"]), _gelu_ref))
