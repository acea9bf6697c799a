"""matmul and linear on the tiled SIMT GEMM (kernels/matmul.cuh), forward and backward."""
from __future__ import annotations

import math

import numpy as np

from ..spec import (ALL_DTYPES, FLOAT32, Bench, Case, Family, I64, In, Kernel, Out, Param,
                    bool_param, ceil_div, dtype_param)
from ..errors import ShapeError
from ._common import check_grad_out, need_dtype

U = FLOAT32.unit_roundoff

#: (BM, BN, BK, TM, TN): 128x128 tiles with 8x8 per thread, 64x64 with 4x4.
TILES = ((128, 128, 8, 8, 8), (64, 64, 8, 4, 4))

FORWARD = Kernel(
    "matmul_forward_kernel",
    (dtype_param(), Param("TILE", TILES), bool_param("TRANS_A"), bool_param("TRANS_B"),
     bool_param("HAS_BIAS")),
    (In("A"), In("B"), In("bias", optional=True), Out("C"), I64("batch"), I64("M"), I64("N"),
     I64("K"), I64("stride_a"), I64("stride_b")))

FAMILY = Family("matmul", "matmul.cuh", [FORWARD], dtypes=ALL_DTYPES,
                doc="C = op(A) @ op(B) (+ bias), batched, any M, N, K")


def plan_forward(dev, dtype, batch, M, N, K, trans_a, trans_b, has_bias, fn="matmul"):
    """128x128 tiles once there are enough of them to fill the device's SMs, else 64x64, so
    small problems still spread over the SMs; the batch strides over grid z.

    Limit of one launch: M tiles go on grid y (at most ``dev.max_grid[1]`` = 65535 tiles, so
    M <= 65535 * 64 = 4,194,240 rows with 64-row tiles, twice that with 128-row ones) and N
    tiles on grid x (2^31 - 1 tiles); beyond that ``fn`` (the op called, matmul or linear)
    raises ShapeError with the limit."""
    if min(batch, M, N, K) < 1:
        raise ValueError("matmul: plan needs batch, M, N, K >= 1")
    big = batch * ceil_div(M, 128) * ceil_div(N, 128) >= dev.sm_count
    tile = TILES[0] if big else TILES[1]
    BM, BN, _, TM, TN = tile
    if ceil_div(M, BM) > dev.max_grid[1] or ceil_div(N, BN) > dev.max_grid[0]:
        raise ShapeError(f"{fn}: M={M} or N={N} too large for one launch (limits with "
                         f"{BM}x{BN} tiles: M <= {dev.max_grid[1] * BM}, "
                         f"N <= {dev.max_grid[0] * BN}); split the rows")
    return FAMILY.plan(
        FORWARD, dict(T=dtype, TILE=tile, TRANS_A=trans_a, TRANS_B=trans_b, HAS_BIAS=has_bias),
        grid=(ceil_div(N, BN), ceil_div(M, BM), min(batch, dev.max_grid[2])),
        block=((BM // TM) * (BN // TN),))


def _operand(rt, x, batch_shape):
    """(array, batch stride, transposed) for a [..., R, C] operand of a batched product.

    Reads a matrix-transposed view in place (the kernel's TRANS flag) and broadcasts a single
    matrix with stride 0; anything else is made contiguous first.
    """
    xp = rt.xp
    R, C = x.shape[-2:]
    single = math.prod(x.shape[:-2]) == 1
    if single:
        x = x.reshape(R, C)
    elif tuple(x.shape[:-2]) != tuple(batch_shape):
        x = xp.broadcast_to(x, tuple(batch_shape) + (R, C))
    if x.flags.c_contiguous:
        return x, (0 if single else R * C), False
    xt = xp.swapaxes(x, -1, -2)
    if xt.flags.c_contiguous:
        return x, (0 if single else R * C), True
    return xp.ascontiguousarray(x), (0 if single else R * C), False


def _gemm(rt, dtype, a, b, bias, out, batch, M, N, K, batch_shape, fn="matmul"):
    a3, sa, ta = _operand(rt, a, batch_shape)
    b3, sb, tb = _operand(rt, b, batch_shape)
    plan = plan_forward(rt.device(), dtype, batch, M, N, K, ta, tb, bias is not None, fn)
    rt.launch(plan, A=a3, B=b3, bias=bias, C=out, batch=batch, M=M, N=N, K=K, stride_a=sa,
              stride_b=sb)


@FAMILY.op("matmul", "forward")
def matmul_forward(rt, input, other):
    """``torch.matmul`` on the tiled GEMM kernel (see ``reference.matmul_forward``)."""
    from ..reference.matmul import _check_matmul
    _check_matmul("matmul", input, other)
    dtype = need_dtype(rt, "matmul", FAMILY, input=input, other=other)
    xp = rt.xp
    a = input[None, :] if input.ndim == 1 else input
    b = other[:, None] if other.ndim == 1 else other
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    batch = math.prod(batch_shape)
    if batch * M * N == 0 or K == 0:
        out = xp.zeros(batch_shape + (M, N), dtype=dtype.np)
    else:
        out = xp.empty(batch_shape + (M, N), dtype=dtype.np)
        _gemm(rt, dtype, a, b, None, out, batch, M, N, K, batch_shape)
    if input.ndim == 1:
        out = out[..., 0, :]
    if other.ndim == 1:
        out = out[..., 0]
    return out


@FAMILY.op("matmul", "backward")
def matmul_backward(rt, grad_out, input, other):
    """``(grad_input, grad_other)`` via two more products; broadcast batch dims are summed."""
    from ..reference.matmul import _unbroadcast, promote_1d
    xp = rt.xp
    out_shape = (np.broadcast_shapes(input.shape[:-2], other.shape[:-2])
                 + tuple(input.shape[-2:-1])                     # M, absent for 1-D input
                 + (tuple(other.shape[-1:]) if other.ndim > 1 else ()))  # N, absent for 1-D
    check_grad_out("matmul_backward", grad_out, out_shape)
    a, b, g = promote_1d(input, other, grad_out, xp)
    ga = matmul_forward(rt, g, xp.swapaxes(b, -1, -2))
    gb = matmul_forward(rt, xp.swapaxes(a, -1, -2), g)
    ga = _unbroadcast(ga, a.shape).reshape(input.shape)
    gb = _unbroadcast(gb, b.shape).reshape(other.shape)
    return xp.ascontiguousarray(ga), xp.ascontiguousarray(gb)


@FAMILY.op("linear", "forward")
def linear_forward(rt, input, weight, bias=None):
    """``input @ weight.T + bias`` with the bias fused into the GEMM's epilogue."""
    from ..reference.matmul import _check_linear
    _check_linear("linear", input, weight, bias)
    dtype = need_dtype(rt, "linear", FAMILY, input=input, weight=weight, bias=bias)
    xp = rt.xp
    out_f, in_f = weight.shape
    rows = math.prod(input.shape[:-1])
    if rows * out_f == 0 or in_f == 0:
        out = xp.zeros((rows, out_f), dtype=dtype.np)
        if bias is not None:
            out += bias
        return out.reshape(input.shape[:-1] + (out_f,))
    x2 = input.reshape(rows, in_f)
    out = xp.empty((rows, out_f), dtype=dtype.np)
    bias_c = None if bias is None else xp.ascontiguousarray(bias)
    _gemm(rt, dtype, x2, weight.T, bias_c, out, 1, rows, out_f, in_f, (), "linear")
    return out.reshape(input.shape[:-1] + (out_f,))


@FAMILY.op("linear", "backward")
def linear_backward(rt, grad_out, input, weight, bias=None):
    """``(grad_input, grad_weight, grad_bias)``: g @ W, g^T @ x and 1^T @ g, all on the GEMM
    (so every sum accumulates in fp32 and is rounded once)."""
    out_f, in_f = weight.shape
    check_grad_out("linear_backward", grad_out, tuple(input.shape[:-1]) + (out_f,))
    rows = math.prod(input.shape[:-1])
    g2 = grad_out.reshape(rows, out_f)
    gx = matmul_forward(rt, g2, weight).reshape(input.shape)
    gw = matmul_forward(rt, g2.T, input.reshape(rows, in_f))
    gb = None
    if bias is not None:
        gb = matmul_forward(rt, rt.xp.ones(rows, dtype=grad_out.dtype), g2)
    return gx, gw, gb


# ---- test and check cases (fp32 bounds: gamma_k = k * 2^-24 times the sum of magnitudes) ----
def _gemm_bound(k, a, b):
    return (k + 2) * U * (np.abs(a) @ np.abs(b))


FAMILY.case(
    Case("matmul", "forward", "1x1 @ 1x1",
         lambda rng: ({"input": rng.standard_normal((1, 1)),
                       "other": rng.standard_normal((1, 1))}, {}),
         lambda a, r: _gemm_bound(1, a["input"], a["other"])),
    *[Case("matmul", "forward", f"{M}x{K} @ {K}x{N}",
           (lambda M, N, K: lambda rng: ({"input": rng.standard_normal((M, K)),
                                          "other": rng.standard_normal((K, N))}, {}))(M, N, K),
           lambda a, r: _gemm_bound(a["input"].shape[-1], a["input"], a["other"]))
      for M, N, K in [(33, 17, 1), (129, 127, 31), (64, 96, 128)]],
    Case("matmul", "forward", "33 x (129x9 @ 9x130): 128x128 tiles",
         lambda rng: ({"input": rng.standard_normal((33, 129, 9)),
                       "other": rng.standard_normal((33, 9, 130))}, {}),
         lambda a, r: _gemm_bound(9, a["input"], a["other"])),
    Case("matmul", "forward", "2x3x5x7 @ 7 (broadcast, 1-D)",
         lambda rng: ({"input": rng.standard_normal((2, 3, 5, 7)),
                       "other": rng.standard_normal(7)}, {}),
         lambda a, r: _gemm_bound(7, a["input"], a["other"]), check=False),
    Case("matmul", "backward", "3x17x9 @ 9x11",
         lambda rng: ({"grad_out": rng.standard_normal((3, 17, 11)),
                       "input": rng.standard_normal((3, 17, 9)),
                       "other": rng.standard_normal((9, 11))}, {}),
         lambda a, r: (_gemm_bound(11, a["grad_out"], np.abs(a["other"]).T),
                       (3 * 17 + 2) * U * np.einsum("bmk,bmn->kn", np.abs(a["input"]),
                                                    np.abs(a["grad_out"])))),
    Case("linear", "forward", "3x37x45, W 29x45, bias",
         lambda rng: ({"input": rng.standard_normal((3, 37, 45)),
                       "weight": rng.standard_normal((29, 45)),
                       "bias": rng.standard_normal(29)}, {}),
         lambda a, r: 48 * U * (np.abs(a["input"]) @ np.abs(a["weight"]).T
                                + np.abs(a["bias"]))),
    Case("linear", "backward", "3x37x45, W 29x45, bias",
         lambda rng: ({"grad_out": rng.standard_normal((3, 37, 29)),
                       "input": rng.standard_normal((3, 37, 45)),
                       "weight": rng.standard_normal((29, 45)),
                       "bias": rng.standard_normal(29)}, {}),
         lambda a, r: (_gemm_bound(29, a["grad_out"], np.abs(a["weight"])),
                       (111 + 2) * U * (np.abs(a["grad_out"]).reshape(-1, 29).T
                                        @ np.abs(a["input"]).reshape(-1, 45)),
                       (111 + 2) * U * np.abs(a["grad_out"]).reshape(-1, 29).sum(0))),
)


# ---- bench ------------------------------------------------------------------------------------
def _bench_make(xp, shape, dtype, seed):
    M, N, K = shape
    rs = np.random.default_rng(seed)
    a = xp.asarray(rs.standard_normal((M, K), dtype=np.float32).astype(dtype.np))
    b = xp.asarray(rs.standard_normal((K, N), dtype=np.float32).astype(dtype.np))
    return {"input": a, "other": b}, {}


FAMILY.bench(Bench(
    "matmul", "forward",
    shapes={"full": [(4096, 4096, 4096), (1024, 1024, 1024)],
            "quick": [(2048, 2048, 512), (512, 512, 512)],   # 2048^2: the 128x128 tiles
            "dry-run": [(64, 64, 64), (33, 47, 29)]},
    make=_bench_make,
    work=lambda shape, itemsize: {"flop": 2 * shape[0] * shape[1] * shape[2]},
    peer_name="cublas (torch.matmul)",
    peer=lambda torch, t, p: torch.matmul(t["input"], t["other"]),
    device_ref=lambda xp, a, p: xp.matmul(a["input"], a["other"]),
    dtypes=ALL_DTYPES,
    bars=(("float32", (4096, 4096, 4096), "ratio_vs_peer", 0.6, 0.95,
           "matmul fp32 4096^3 vs cuBLAS (TF32 off)"),
          ("float16", (4096, 4096, 4096), "ratio_vs_peer", 0.5, 0.9,
           "matmul fp16 4096^3 vs cuBLAS (SIMT here: tensor cores are matmul_tc)"))))
