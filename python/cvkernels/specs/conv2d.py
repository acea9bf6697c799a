"""conv2d and conv_transpose2d on the implicit-GEMM kernels (kernels/conv2d.cuh), forward and
backward, with the arguments and semantics of ``cvkernels.reference.conv2d_*`` /
``conv_transpose2d_*`` (whose parameter checks are reused, so the errors are identical).

The four ops run on three GEMM kernels (see the kernel header):
  conv2d forward            conv2d_forward_kernel (bias in the epilogue); fp16/bf16 on tensor
                            cores: conv2d_tc_forward_kernel (kernels/conv2d_tc.cuh)
  conv2d backward           grad_input: conv2d_backward_data_kernel; grad_weight:
                            conv2d_backward_weight_kernel (split-K partials in a workspace) +
                            conv2d_backward_weight_reduce_kernel (fixed-order sum); grad_bias:
                            conv2d_backward_bias_kernel. All deterministic.
  conv_transpose2d forward  conv2d_backward_data_kernel (+ bias)
  conv_transpose2d backward grad_input: conv2d_forward_kernel; grad_weight: the backward-weight
                            pair with image and gradient swapped; grad_bias as conv2d's.

Registers and spills per kernel (ptxas -v, sm_90) are in the kernel header.
"""
from __future__ import annotations

from ..errors import ArgumentError
from ..spec import (ALL_DTYPES, BFLOAT16, FLOAT16, Family, I32, I64, In, Kernel, Out, Param,
                    bool_param, ceil_div, dtype_param)
from ._common import check_grad_out, need_dtype

#: (BM, BN, BK, TM, TN), the matmul tiles: 128x128 with 8x8 a thread, 64x64 with 4x4.
TILES = ((128, 128, 8, 8, 8), (64, 64, 8, 4, 4))
_GEOMETRY = (I64("batch"), I64("C_in"), I64("H"), I64("W"), I64("C_out"), I64("H_out"),
             I64("W_out"), I32("groups"), I32("kH"), I32("kW"), I32("stride_h"),
             I32("stride_w"), I32("pad_h"), I32("pad_w"), I32("dilation_h"), I32("dilation_w"))
_GEMM_PARAMS = (dtype_param(), Param("TILE", TILES), bool_param("HAS_BIAS"))

FORWARD = Kernel("conv2d_forward_kernel", _GEMM_PARAMS,
                 (In("input"), In("weight"), In("bias", optional=True), Out("output"))
                 + _GEOMETRY)
BACKWARD_DATA = Kernel("conv2d_backward_data_kernel", _GEMM_PARAMS,
                       (In("grad_out"), In("weight"), In("bias", optional=True),
                        Out("grad_input")) + _GEOMETRY)
BACKWARD_WEIGHT = Kernel("conv2d_backward_weight_kernel", (dtype_param(), Param("TILE", TILES)),
                         (In("grad_out"), In("input"), Out("workspace", elem=None))
                         + _GEOMETRY + (I64("splits"), I64("k_chunk")))
WEIGHT_REDUCE = Kernel("conv2d_backward_weight_reduce_kernel", (dtype_param(),),
                       (In("partials", elem="float32"), Out("grad_weight"), I64("count"),
                        I64("splits")))
BACKWARD_BIAS = Kernel("conv2d_backward_bias_kernel", (dtype_param(),),
                       (In("grad_out"), Out("grad_bias"), I64("batch"), I64("channels"),
                        I64("pixels")))

#: fp16/bf16 forward on tensor cores (kernels/conv2d_tc.cuh, mma.sync; 64x64 tiles, 4 warps).
TC_FORWARD = Kernel("conv2d_tc_forward_kernel",
                    (Param("T", (FLOAT16, BFLOAT16)), bool_param("HAS_BIAS")), FORWARD.args)

FAMILY = Family("conv2d", "conv2d.cuh",
                [FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT, WEIGHT_REDUCE, BACKWARD_BIAS,
                 TC_FORWARD],
                dtypes=ALL_DTYPES,
                doc="conv2d / conv_transpose2d, NCHW, implicit GEMM on the SIMT mainloop")

_I32_MAX = 2 ** 31 - 1
#: fp16/bf16 forwards run on tensor cores (TC_FORWARD); False sends them to the SIMT kernel.
USE_TENSOR_CORES = True


# ---- plans (functions of the device descriptor) ---------------------------------------------

def _tile(dev, groups, M, N):
    """128x128 tiles when M is wider than 64 and they alone fill the SMs, else 64x64."""
    big = M > 64 and groups * ceil_div(M, 128) * ceil_div(N, 128) >= dev.sm_count
    return TILES[0] if big else TILES[1]


def _check_geometry(fn, geom, M, N, K):
    """The kernels' tap arithmetic is 32-bit (element offsets are 64-bit): refuse what it
    cannot hold rather than compute garbage."""
    extent = max(g * s + h + p + d * k for g, s, h, p, d, k in (
        (geom["H_out"], geom["stride_h"], geom["H"], geom["pad_h"], geom["dilation_h"],
         geom["kH"]),
        (geom["W_out"], geom["stride_w"], geom["W"], geom["pad_w"], geom["dilation_w"],
         geom["kW"])))
    for what, v in (("the GEMM's K", K), ("the GEMM's N", N), ("the image extent", extent)):
        if v > _I32_MAX:
            raise ArgumentError(f"{fn}: {what} = {v} does not fit the kernel's 32-bit tap math")
    if M < 1 or N < 1:
        raise ArgumentError(f"{fn}: plan needs a non-empty GEMM, got M={M}, N={N}")


def plan_gemm(dev, kernel, dtype, geom, has_bias):
    """Forward (M = C_out/groups over output pixels) or backward-data (M = C_in/groups over input
    pixels): one block per tile, groups strided over grid z."""
    g = geom["groups"]
    kk = geom["kH"] * geom["kW"]
    if kernel is FORWARD:
        M, N, K = geom["C_out"] // g, geom["batch"] * geom["H_out"] * geom["W_out"], \
            geom["C_in"] // g * kk
    else:
        M, N, K = geom["C_in"] // g, geom["batch"] * geom["H"] * geom["W"], geom["C_out"] // g * kk
    _check_geometry(kernel.name, geom, M, N, K)
    tile = _tile(dev, g, M, N)
    BM, BN, _, TM, TN = tile
    if ceil_div(M, BM) > dev.max_grid[1] or ceil_div(N, BN) > dev.max_grid[0]:
        raise ArgumentError(f"{kernel.name}: too many channels or pixels for one launch")
    return FAMILY.plan(kernel, dict(T=dtype, TILE=tile, HAS_BIAS=has_bias),
                       grid=(ceil_div(N, BN), ceil_div(M, BM), min(g, dev.max_grid[2])),
                       block=((BM // TM) * (BN // TN),))


def plan_tc_forward(dev, dtype, geom, has_bias):
    """The tensor-core forward: one 128-thread block per 64 x 64 tile, groups over grid z."""
    g = geom["groups"]
    M, N = geom["C_out"] // g, geom["batch"] * geom["H_out"] * geom["W_out"]
    _check_geometry(TC_FORWARD.name, geom, M, N, geom["C_in"] // g * geom["kH"] * geom["kW"])
    if ceil_div(M, 64) > dev.max_grid[1] or ceil_div(N, 64) > dev.max_grid[0]:
        raise ArgumentError(f"{TC_FORWARD.name}: too many channels or pixels for one launch")
    return FAMILY.plan(TC_FORWARD, dict(T=dtype, HAS_BIAS=has_bias),
                       grid=(ceil_div(N, 64), ceil_div(M, 64), min(g, dev.max_grid[2])),
                       block=(128,))


def plan_backward_weight(dev, dtype, geom):
    """Split-K over the N*H_out*W_out sum: about two blocks per SM in all, each split at least
    4 k-slices long, at most 64 splits. Returns (plan, splits, k_chunk); the plan's workspace
    holds the fp32 partials [splits, C_out, C_in/groups*kH*kW]."""
    g = geom["groups"]
    M, N = geom["C_out"] // g, geom["C_in"] // g * geom["kH"] * geom["kW"]
    K = geom["batch"] * geom["H_out"] * geom["W_out"]
    _check_geometry(BACKWARD_WEIGHT.name, geom, M, N, K)
    tile = _tile(dev, g, M, N)
    BM, BN, BK, TM, TN = tile
    tiles = g * ceil_div(M, BM) * ceil_div(N, BN)
    splits = max(1, min(ceil_div(2 * dev.sm_count, tiles), ceil_div(K, 4 * BK), 64))
    k_chunk = ceil_div(ceil_div(K, splits), BK) * BK
    splits = ceil_div(K, k_chunk)                   # no empty split
    if ceil_div(M, BM) > dev.max_grid[1] or ceil_div(N, BN) > dev.max_grid[0]:
        raise ArgumentError(f"{BACKWARD_WEIGHT.name}: too many channels for one launch")
    plan = FAMILY.plan(BACKWARD_WEIGHT, dict(T=dtype, TILE=tile),
                       grid=(ceil_div(N, BN), ceil_div(M, BM), min(g * splits, dev.max_grid[2])),
                       block=((BM // TM) * (BN // TN),),
                       workspace_bytes=4 * splits * geom["C_out"] * N)
    return plan, splits, k_chunk


def plan_elementwise(dev, kernel, dtype, work, threads=256):
    blocks = max(1, min(ceil_div(work, threads), 8 * dev.sm_count))
    return FAMILY.plan(kernel, dict(T=dtype), grid=(blocks,), block=(threads,))


def plan_bias(dev, dtype, channels):
    return FAMILY.plan(BACKWARD_BIAS, dict(T=dtype), grid=(min(channels, dev.max_grid[0]),),
                       block=(256,))


# ---- launches ---------------------------------------------------------------------------------

def _geometry(batch, c_in, hw, c_out, out_hw, groups, k, stride, pad_tl, dilation):
    return dict(batch=batch, C_in=c_in, H=hw[0], W=hw[1], C_out=c_out, H_out=out_hw[0],
                W_out=out_hw[1], groups=groups, kH=k[0], kW=k[1], stride_h=stride[0],
                stride_w=stride[1], pad_h=pad_tl[0], pad_w=pad_tl[1], dilation_h=dilation[0],
                dilation_w=dilation[1])


def _c(rt, a):
    return None if a is None else rt.xp.ascontiguousarray(a)


def _run_forward(rt, dtype, x, w, bias, geom):
    """output [N, C_out, H_out, W_out] = conv2d(x, w) + bias, on conv2d_forward_kernel."""
    xp = rt.xp
    out = xp.empty((geom["batch"], geom["C_out"], geom["H_out"], geom["W_out"]), dtype=dtype.np)
    if out.size == 0:
        return out
    if x.size == 0 or w.size == 0:                 # a sum over nothing: the bias alone
        out[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return out
    if USE_TENSOR_CORES and dtype in (FLOAT16, BFLOAT16):
        plan = plan_tc_forward(rt.device(), dtype, geom, bias is not None)
    else:
        plan = plan_gemm(rt.device(), FORWARD, dtype, geom, bias is not None)
    rt.launch(plan, input=_c(rt, x), weight=_c(rt, w), bias=_c(rt, bias), output=out, **geom)
    return out


def _run_backward_data(rt, dtype, gy, w, bias, geom):
    """grad_input [N, C_in, H, W] of conv2d (conv_transpose2d's output when bias is given)."""
    xp = rt.xp
    out = xp.empty((geom["batch"], geom["C_in"], geom["H"], geom["W"]), dtype=dtype.np)
    if out.size == 0:
        return out
    if gy.size == 0 or w.size == 0:
        out[...] = 0 if bias is None else bias.reshape(-1, 1, 1)
        return out
    plan = plan_gemm(rt.device(), BACKWARD_DATA, dtype, geom, bias is not None)
    rt.launch(plan, grad_out=_c(rt, gy), weight=_c(rt, w), bias=_c(rt, bias), grad_input=out,
              **geom)
    return out


def _run_backward_weight(rt, dtype, gy, x, w_shape, geom):
    """grad_weight of conv2d(x, w) for grad_out gy: split-K partials, then the fixed-order sum."""
    xp = rt.xp
    if gy.size == 0 or x.size == 0 or 0 in w_shape:
        return xp.zeros(w_shape, dtype=dtype.np)
    dev = rt.device()
    plan, splits, k_chunk = plan_backward_weight(dev, dtype, geom)
    partials = xp.empty(plan.workspace_bytes // 4, dtype="float32")
    rt.launch(plan, grad_out=_c(rt, gy), input=_c(rt, x), workspace=partials, splits=splits,
              k_chunk=k_chunk, **geom)
    gw = xp.empty(w_shape, dtype=dtype.np)
    rt.launch(plan_elementwise(dev, WEIGHT_REDUCE, dtype, gw.size), partials=partials,
              grad_weight=gw, count=gw.size, splits=splits)
    return gw


def _run_backward_bias(rt, dtype, gy):
    """grad_bias [C] = sum of grad_out [N, C, H, W] over N, H, W (fixed order)."""
    n, c = gy.shape[:2]
    gb = rt.xp.zeros(c, dtype=dtype.np)
    if gy.size:
        rt.launch(plan_bias(rt.device(), dtype, c), grad_out=_c(rt, gy), grad_bias=gb, batch=n,
                  channels=c, pixels=gy.shape[2] * gy.shape[3])
    return gb


def _grad_out4(rt, fn, grad_out, shape4, unbatched):
    from .._checks import check_float
    check_float(fn, "grad_out", grad_out)
    check_grad_out(fn, grad_out, shape4[1:] if unbatched else shape4)
    return grad_out[None] if unbatched else grad_out


def _squeeze(a, unbatched):
    return a[0] if unbatched else a


# ---- depthwise: the single dispatch point ------------------------------------------------------

def _depthwise(rt, direction, x, weight, groups, **args):
    """Depthwise conv2d (groups == C_in == C_out, one filter per channel) runs on its direct
    kernel, ``specs/conv2d_depthwise.py``: an implicit GEMM with a K of kH*kW wastes the tile.
    ``x`` is the 4-D input and ``args`` the normalised stride, padding (the four ``pads``),
    dilation, bias and, for the backward, the 4-D grad_out. Returns None for other shapes."""
    if not (groups > 1 and x.shape[1] == groups and weight.shape[0] == groups):
        return None
    from . import conv2d_depthwise as dw
    if direction == "forward":
        return dw.depthwise_conv2d_forward(rt, x, weight, **args)
    return dw.depthwise_conv2d_backward(rt, args.pop("grad_out"), x, weight, **args)


# ---- ops ---------------------------------------------------------------------------------------

@FAMILY.op("conv2d", "forward")
def conv2d_forward(rt, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``reference.conv2d_forward`` on the implicit-GEMM kernel (bias fused)."""
    from ..reference.conv import _conv2d_params
    x, unbatched, stride, pads, dilation, groups, out_hw = _conv2d_params(
        input, weight, bias, stride, padding, dilation, groups)
    dtype = need_dtype(rt, "conv2d", FAMILY, input=input, weight=weight, bias=bias)
    dw = _depthwise(rt, "forward", x, weight, groups, bias=bias, stride=stride, padding=pads,
                    dilation=dilation)
    if dw is not None:
        return _squeeze(dw, unbatched)
    geom = _geometry(x.shape[0], x.shape[1], x.shape[2:], weight.shape[0], out_hw, groups,
                     weight.shape[2:], stride, (pads[0], pads[2]), dilation)
    return _squeeze(_run_forward(rt, dtype, x, weight, bias, geom), unbatched)


@FAMILY.op("conv2d", "backward")
def conv2d_backward(rt, grad_out, input, weight, bias=None, stride=1, padding=0, dilation=1,
                    groups=1):
    """``(grad_input, grad_weight, grad_bias)`` as ``reference.conv2d_backward``: backward-data
    and split-K backward-weight GEMMs, and the per-channel sum for the bias."""
    from ..reference.conv import _conv2d_params
    fn = "conv2d_backward"
    x, unbatched, stride, pads, dilation, groups, out_hw = _conv2d_params(
        input, weight, bias, stride, padding, dilation, groups, fn=fn)
    gy = _grad_out4(rt, fn, grad_out, (x.shape[0], weight.shape[0]) + out_hw, unbatched)
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input, weight=weight, bias=bias)
    dw = _depthwise(rt, "backward", x, weight, groups, grad_out=gy, bias=bias, stride=stride,
                    padding=pads, dilation=dilation)
    if dw is not None:
        return (_squeeze(dw[0], unbatched),) + tuple(dw[1:])
    geom = _geometry(x.shape[0], x.shape[1], x.shape[2:], weight.shape[0], out_hw, groups,
                     weight.shape[2:], stride, (pads[0], pads[2]), dilation)
    gx = _run_backward_data(rt, dtype, gy, weight, None, geom)
    gw = _run_backward_weight(rt, dtype, gy, x, tuple(weight.shape), geom)
    gb = None if bias is None else _run_backward_bias(rt, dtype, gy)
    return _squeeze(gx, unbatched), gw, gb


def _transpose_geometry(x, weight, groups, out_hw, stride, padding, dilation):
    """conv_transpose2d(x) as conv2d's backward-data: conv2d's grad_out is x (C_out = C_in of
    the transposed conv), conv2d's input is the transposed conv's output."""
    return _geometry(x.shape[0], weight.shape[1] * groups, out_hw, x.shape[1], x.shape[2:],
                     groups, weight.shape[2:], stride, padding, dilation)


@FAMILY.op("conv_transpose2d", "forward")
def conv_transpose2d_forward(rt, input, weight, bias=None, stride=1, padding=0,
                             output_padding=0, groups=1, dilation=1):
    """``reference.conv_transpose2d_forward``: conv2d's backward-data kernel, bias fused."""
    from ..reference.conv import _conv_transpose2d_params
    x, unbatched, stride, padding, _, dilation, groups, out_hw = _conv_transpose2d_params(
        input, weight, bias, stride, padding, output_padding, groups, dilation)
    dtype = need_dtype(rt, "conv_transpose2d", FAMILY, input=input, weight=weight, bias=bias)
    geom = _transpose_geometry(x, weight, groups, out_hw, stride, padding, dilation)
    return _squeeze(_run_backward_data(rt, dtype, x, weight, bias, geom), unbatched)


@FAMILY.op("conv_transpose2d", "backward")
def conv_transpose2d_backward(rt, grad_out, input, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1):
    """``(grad_input, grad_weight, grad_bias)``: grad_input is conv2d(grad_out, weight) on the
    forward kernel; grad_weight is the backward-weight pair with x as the gradient and grad_out
    as the image."""
    from ..reference.conv import _conv_transpose2d_params
    fn = "conv_transpose2d_backward"
    x, unbatched, stride, padding, _, dilation, groups, out_hw = _conv_transpose2d_params(
        input, weight, bias, stride, padding, output_padding, groups, dilation, fn=fn)
    c_out = weight.shape[1] * groups
    gy = _grad_out4(rt, fn, grad_out, (x.shape[0], c_out) + out_hw, unbatched)
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input, weight=weight, bias=bias)
    geom = _transpose_geometry(x, weight, groups, out_hw, stride, padding, dilation)
    gx = _run_forward(rt, dtype, gy, weight, None, geom)
    gw = _run_backward_weight(rt, dtype, x, gy, tuple(weight.shape), geom)
    gb = None if bias is None else _run_backward_bias(rt, dtype, gy)
    return _squeeze(gx, unbatched), gw, gb


from . import _conv2d_cases  # noqa: F401  (the Cases and Bench entries of this family)
