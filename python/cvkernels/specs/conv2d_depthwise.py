"""conv2d_depthwise: direct depthwise 2-D convolution (groups == C_in == C_out, NCHW), forward
with the bias fused, backward-data (a gather) and a deterministic backward-weight (+ grad_bias),
on kernels/conv2d_depthwise.cuh.

The family owns no op: the ``conv2d`` op (specs/conv2d.py) hands depthwise shapes to the two
plain functions here, :func:`depthwise_conv2d_forward` and :func:`depthwise_conv2d_backward`,
with parameters already normalised. The cases test them through the reference's
``conv2d_forward``/``conv2d_backward`` with ``groups=C`` (``Case.call``).
"""
from __future__ import annotations

import numpy as np

from .._checks import check_ndim
from ..errors import ArgumentError, ShapeError
from ..spec import (ALL_DTYPES, FLOAT32, Bench, Case, Family, I32, I64, In, Kernel, Out, Param,
                    ceil_div, dtype_param)
from ._common import check_grad_out, need_dtype

U = FLOAT32.unit_roundoff
_K = Param("K", (0, 3))     # 3: a 3x3 kernel unrolled at compile time; 0: any size at run time
_GEOM = (I32("C"), I32("H"), I32("W"), I32("Ho"), I32("Wo"), I32("kh"), I32("kw"), I32("sh"),
         I32("sw"), I32("pt"), I32("pl"), I32("dh"), I32("dw"))
FORWARD = Kernel("conv2d_depthwise_forward_kernel", (dtype_param(), _K),
                 (In("x"), In("weight"), In("bias", optional=True), Out("y"), I64("planes"))
                 + _GEOM)
BACKWARD_DATA = Kernel("conv2d_depthwise_backward_data_kernel", (dtype_param(), _K),
                       (In("grad_out"), In("weight"), Out("grad_input"), I64("planes")) + _GEOM)
BACKWARD_WEIGHT = Kernel("conv2d_depthwise_backward_weight_kernel", (dtype_param(), _K),
                         (In("grad_out"), In("x"), Out("partial", elem="float32"), I64("N"))
                         + _GEOM + (I64("images_per_split"),))
BACKWARD_WEIGHT_REDUCE = Kernel(
    "conv2d_depthwise_backward_weight_reduce_kernel", (dtype_param(),),
    (In("partial", elem="float32"), Out("grad_weight"), Out("grad_bias", optional=True),
     I32("C"), I32("taps"), I32("splits")))
FAMILY = Family("conv2d_depthwise", "conv2d_depthwise.cuh",
                [FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT, BACKWARD_WEIGHT_REDUCE],
                dtypes=ALL_DTYPES,
                doc="direct depthwise conv2d (groups == C), forward and backward, NCHW")

_INT32 = 2**31 - 1
_BLOCKS_TARGET = 1024   # backward-weight stage-1 blocks wanted: ~8 a SM on 132 SMs


# ---- geometry and plans -----------------------------------------------------------------------
def _pads(fn, padding):
    """(top, bottom, left, right) from an int, a pair (symmetric) or a 4-tuple."""
    p = (padding,) if isinstance(padding, (int, np.integer)) else tuple(padding)
    if len(p) not in (1, 2, 4) or not all(isinstance(v, (int, np.integer))
                                          and not isinstance(v, bool) for v in p):
        raise ArgumentError(f"{fn}: padding must be an int, a pair (pad_h, pad_w) or (top, "
                            f"bottom, left, right), got {padding!r}")
    if len(p) < 4:
        p = (p[0], p[0], p[-1], p[-1])
    if min(p) < 0:
        raise ArgumentError(f"{fn}: padding must be non-negative, got {padding!r}")
    return tuple(int(v) for v in p)


def geometry(fn, input, weight, bias, stride, padding, dilation):
    """Check a depthwise convolution's arguments; returns its sizes as the kernels take them."""
    from ..reference.conv import _check_arrays, _positive_pair
    check_ndim(fn, "input", input, 4)
    _check_arrays(fn, input, weight, bias)
    n, c, h, w = (int(s) for s in input.shape)
    if c < 1 or tuple(weight.shape[:2]) != (c, 1):
        raise ShapeError(f"{fn}: depthwise weight must have shape [C, 1, kH, kW] with C = "
                         f"{c} (input {tuple(input.shape)}), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (c,):
        raise ShapeError(f"{fn}: bias must have shape ({c},), got {tuple(bias.shape)}")
    (sh, sw), (dh, dw) = _positive_pair(fn, "stride", stride), _positive_pair(fn, "dilation",
                                                                             dilation)
    pt, pb, pl, pr = _pads(fn, padding)
    kh, kw = int(weight.shape[2]), int(weight.shape[3])
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    hp, wp = h + pt + pb, w + pl + pr
    if kh < 1 or kw < 1 or hp < eff_h or wp < eff_w:
        raise ShapeError(f"{fn}: padded input ({hp} x {wp}) is smaller than the dilated kernel "
                         f"({eff_h} x {eff_w}); input {tuple(input.shape)}, weight "
                         f"{tuple(weight.shape)}, padding={padding!r}")
    ho, wo = (hp - eff_h) // sh + 1, (wp - eff_w) // sw + 1
    if max(h * w, ho * wo, hp, wp, c * kh * kw, eff_h, eff_w, sh, sw) > _INT32:
        raise ShapeError(f"{fn}: a plane or kernel of input {tuple(input.shape)}, weight "
                         f"{tuple(weight.shape)} passes 2^31 elements (32-bit pixel indices)")
    return dict(N=n, C=c, H=h, W=w, Ho=ho, Wo=wo, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl,
                dh=dh, dw=dw)


def _kval(g):
    return 3 if (g["kh"], g["kw"]) == (3, 3) else 0


def _threads(pixels):
    t = 32
    while t < pixels and t < 256:
        t *= 2
    return t


def plan_pixels(dev, kernel, dtype, g):
    """Forward / backward-data: one thread per output (input) pixel; blockIdx.y strides over
    the N*C planes."""
    pixels = g["Ho"] * g["Wo"] if kernel is FORWARD else g["H"] * g["W"]
    threads = _threads(pixels)
    planes = g["N"] * g["C"]
    return FAMILY.plan(kernel, dict(T=dtype, K=_kval(g)),
                       grid=(ceil_div(pixels, threads), min(planes, dev.max_grid[1])),
                       block=(threads,))


def plan_weight(dev, dtype, g):
    """Backward-weight: (stage 1, stage 2, splits, images_per_split). The split of the batch
    and the block size depend on the shape only (the grid cap is 65535 on every GPU), so the
    summation order, hence every bit of the result, is the same on every device."""
    splits = max(1, min(g["N"], ceil_div(_BLOCKS_TARGET, g["C"]), dev.max_grid[1]))
    ips = ceil_div(g["N"], splits)
    splits = ceil_div(g["N"], ips)
    stage1 = FAMILY.plan(BACKWARD_WEIGHT, dict(T=dtype, K=_kval(g)), grid=(g["C"], splits),
                         block=(_threads(g["Ho"] * g["Wo"]),))
    work = g["C"] * (g["kh"] * g["kw"] + 1)
    stage2 = FAMILY.plan(BACKWARD_WEIGHT_REDUCE, dict(T=dtype), grid=(ceil_div(work, 128),),
                         block=(128,))
    return stage1, stage2, splits, ips


def _geom_args(g):
    return {k: g[k] for k in ("C", "H", "W", "Ho", "Wo", "kh", "kw", "sh", "sw", "pt", "pl",
                              "dh", "dw")}


# ---- the two functions the conv2d op calls ----------------------------------------------------
def depthwise_conv2d_forward(rt, input, weight, bias, stride, padding, dilation):
    """Depthwise conv2d forward (groups == C) on runtime ``rt``, bias fused.

    input [N, C, H, W], weight [C, 1, kH, kW], bias [C] or None (arrays of ``rt.xp``, one
    dtype: fp32, fp16 or bf16; non-contiguous ones are copied); stride and dilation int pairs;
    padding an int, a symmetric pair (pad_h, pad_w) or (top, bottom, left, right) as
    ``reference.conv._conv2d_params`` returns it ('same' with an even kernel). Returns
    [N, C, Ho, Wo] in the input's dtype.
    """
    fn = "conv2d"
    dtype = need_dtype(rt, fn, FAMILY, input=input, weight=weight, bias=bias)
    g = geometry(fn, input, weight, bias, stride, padding, dilation)
    xp = rt.xp
    x, w = xp.ascontiguousarray(input), xp.ascontiguousarray(weight)
    b = None if bias is None else xp.ascontiguousarray(bias)
    y = xp.empty((g["N"], g["C"], g["Ho"], g["Wo"]), dtype=x.dtype)
    if y.size:
        rt.launch(plan_pixels(rt.device(), FORWARD, dtype, g), x=x, weight=w, bias=b, y=y,
                  planes=g["N"] * g["C"], **_geom_args(g))
    return y


def depthwise_conv2d_backward(rt, grad_out, input, weight, bias, stride, padding, dilation):
    """Gradients of :func:`depthwise_conv2d_forward` (same arguments after ``grad_out``; bias
    is only looked at for whether it exists): ``(grad_input, grad_weight, grad_bias or None)``.
    grad_weight and grad_bias are summed without atomics in an order fixed by the shape:
    bitwise repeatable."""
    fn = "conv2d_backward"
    dtype = need_dtype(rt, fn, FAMILY, grad_out=grad_out, input=input, weight=weight,
                       bias=bias)
    g = geometry(fn, input, weight, bias, stride, padding, dilation)
    check_grad_out(fn, grad_out, (g["N"], g["C"], g["Ho"], g["Wo"]))
    xp = rt.xp
    x, w, go = (xp.ascontiguousarray(a) for a in (input, weight, grad_out))
    gx = xp.empty_like(x)
    gw = xp.zeros_like(w)
    gb = None if bias is None else xp.zeros((g["C"],), dtype=x.dtype)
    if gx.size:
        rt.launch(plan_pixels(rt.device(), BACKWARD_DATA, dtype, g), grad_out=go, weight=w,
                  grad_input=gx, planes=g["N"] * g["C"], **_geom_args(g))
    if go.size:
        stage1, stage2, splits, ips = plan_weight(rt.device(), dtype, g)
        taps = g["kh"] * g["kw"]
        partial = xp.empty((g["C"], splits, taps + 1), dtype=np.float32)
        rt.launch(stage1, grad_out=go, x=x, partial=partial, N=g["N"], images_per_split=ips,
                  **_geom_args(g))
        rt.launch(stage2, partial=partial, grad_weight=gw, grad_bias=gb, C=g["C"], taps=taps,
                  splits=splits)
    return gx, gw, gb


# ---- test and check cases: through reference.conv2d_forward/_backward with groups=C ----------
def _call(fn, rt, arrays, params):
    """Normalise the user-level parameters as the conv2d op does, then call our function;
    ``fn`` is None (the family owns no op)."""
    from ..reference.conv import _conv2d_params
    a = arrays
    _, _, stride, pads, dilation, groups, _ = _conv2d_params(
        a["input"], a["weight"], a.get("bias"), params["stride"], params["padding"],
        params["dilation"], params["groups"])
    assert groups == a["input"].shape[1], "a depthwise case must have groups == C"
    sym = pads[0] == pads[1] and pads[2] == pads[3]
    padding = (pads[0], pads[2]) if sym else pads   # the pair, or (top, bottom, left, right)
    if "grad_out" in a:
        return depthwise_conv2d_backward(rt, a["grad_out"], a["input"], a["weight"],
                                         a.get("bias"), stride, padding, dilation)
    return depthwise_conv2d_forward(rt, a["input"], a["weight"], a.get("bias"), stride,
                                    padding, dilation)


def _cases(n, c, h, w, k, stride=1, padding=0, dilation=1, bias=True, check=True):
    """Forward and backward cases of one depthwise shape; bounds from fp32 rounding of sums of
    |terms|, computed by the reference on absolute values."""
    kh, kw = (k, k) if isinstance(k, int) else k
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    label = (f"{n}x{c}x{h}x{w} k{kh}x{kw} s{stride} p{padding} d{dilation}"
             + ("" if bias else " nobias"))

    def arrays(rng, grad):
        a = {"input": rng.standard_normal((n, c, h, w)),
             "weight": rng.standard_normal((c, 1, kh, kw))}
        if bias:
            a["bias"] = rng.standard_normal(c)
        if grad:
            from ..reference.conv import conv2d_forward
            out_shape = conv2d_forward(a["input"], a["weight"], **params).shape
            a = {"grad_out": rng.standard_normal(out_shape), **a}
        return a

    def absd(a):
        return {k: np.abs(v) for k, v in a.items()}

    def fwd_bound(a, ref):
        from ..reference.conv import conv2d_forward
        return (kh * kw + 2) * U * conv2d_forward(**absd(a), **params)

    def bwd_bound(a, ref):
        from ..reference.conv import conv2d_backward
        go = a["grad_out"].shape
        terms = go[0] * go[2] * go[3]   # terms of a grad_weight / grad_bias sum
        gx, gw, gb = conv2d_backward(**absd(a), **params)
        return ((kh * kw + 1) * U * gx, (terms + 1) * U * gw,
                None if gb is None else (terms + 1) * U * gb)

    return [Case("conv2d", "forward", "depthwise " + label,
                 lambda rng: (arrays(rng, False), params), fwd_bound, check=check, call=_call),
            Case("conv2d", "backward", "depthwise " + label,
                 lambda rng: (arrays(rng, True), params), bwd_bound, check=check, call=_call)]


FAMILY.case(
    *_cases(2, 3, 7, 7, 3, padding=1),                                  # the 3x3 kernel
    *_cases(1, 1, 1, 1, 1),                                             # 1x1 everything
    *_cases(2, 33, 11, 13, 3, stride=2, padding=1, check=False),        # C 33, primes, stride 2
    *_cases(1, 3, 13, 11, 5, padding=2, bias=False),                    # 5x5
    *_cases(1, 3, 11, 7, 3, padding=2, dilation=2, check=False),        # dilation with padding
    *_cases(1, 3, 7, 5, 2, stride=3, check=False),                      # stride > kernel
    *_cases(1, 3, 6, 7, (4, 3), padding="same", dilation=(1, 2), bias=False, check=False),
    *_cases(0, 3, 5, 5, 3, padding=1, check=False))                     # batch 0: empty


# ---- bench: depthwise 3x3, 128 channels, vs cuDNN -----------------------------------------------
_BENCH_PARAMS = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1))


def _bench_make(grad):
    def make(xp, shape, dtype, seed):
        n, c, h, w = shape
        rng = np.random.default_rng(seed)

        def arr(*s):
            return xp.asarray(rng.standard_normal(s, dtype=np.float32).astype(dtype.np))
        a = {"input": arr(n, c, h, w), "weight": arr(c, 1, 3, 3), "bias": arr(c)}
        if grad:
            a = {"grad_out": arr(n, c, h, w), **a}
        return a, dict(_BENCH_PARAMS)
    return make


def _bench_call(fn, rt, a, p):
    if "grad_out" in a:
        return depthwise_conv2d_backward(rt, a["grad_out"], a["input"], a["weight"], a["bias"],
                                         **p)
    return depthwise_conv2d_forward(rt, a["input"], a["weight"], a["bias"], **p)


def _taps(xp, a, p):
    """(tap (i, j), window slice of the padded plane) of a stride-1 depthwise conv."""
    kh, kw = a["weight"].shape[2:]
    ho, wo = a["input"].shape[2:]   # stride 1, 'same'-sized padding in the bench
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(None), slice(i, i + ho), slice(j, j + wo))


def _bench_ref_forward(xp, a, p):
    (ph, pw) = p["padding"]
    xpad = xp.pad(a["input"], ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    w = a["weight"][:, 0]
    out = xp.zeros_like(a["input"]) + a["bias"][:, None, None]
    for i, j, win in _taps(xp, a, p):
        out += xpad[win] * w[:, i, j][:, None, None]
    return out


def _bench_ref_grad_input(xp, a, p):
    (ph, pw) = p["padding"]
    h, w_ = a["input"].shape[2:]
    gpad = xp.zeros((a["input"].shape[0], a["input"].shape[1], h + 2 * ph, w_ + 2 * pw))
    w = a["weight"][:, 0]
    for i, j, win in _taps(xp, a, p):
        gpad[win] += a["grad_out"] * w[:, i, j][:, None, None]
    return gpad[:, :, ph:ph + h, pw:pw + w_]


def _peer_forward(torch, t, p):
    return torch.nn.functional.conv2d(t["input"], t["weight"], t["bias"], groups=t["input"]
                                      .shape[1], **p)


def _peer_backward(torch, t, p):
    """cuDNN's depthwise backward (data, weight and bias), as autograd calls it."""
    c = t["input"].shape[1]
    return torch.ops.aten.convolution_backward(
        t["grad_out"], t["input"], t["weight"], [c], list(p["stride"]), list(p["padding"]),
        list(p["dilation"]), False, [0, 0], c, [True, True, True])[0]


_BENCH_SHAPES = {"full": [(32, 128, 56, 56)], "quick": [(8, 128, 56, 56)],
                 "dry-run": [(2, 4, 9, 9)]}
FAMILY.bench(
    Bench("conv2d_depthwise", "forward", shapes=_BENCH_SHAPES, make=_bench_make(False),
          work=lambda s, isz: {"bytes": 2 * s[0] * s[1] * s[2] * s[3] * isz},
          peer_name="cudnn (torch conv2d, groups=C)", peer=_peer_forward,
          device_ref=_bench_ref_forward, dtypes=ALL_DTYPES, call=_bench_call,
          bars=(("float32", (32, 128, 56, 56), "ratio_vs_peer", 1.0, 2.0,
                 "depthwise 3x3 128ch 56x56 N32 fp32 forward vs cuDNN"),)),
    Bench("conv2d_depthwise", "backward", shapes=_BENCH_SHAPES, make=_bench_make(True),
          work=lambda s, isz: {"bytes": 3 * s[0] * s[1] * s[2] * s[3] * isz},
          peer_name="cudnn (aten.convolution_backward, groups=C)", peer=_peer_backward,
          device_ref=_bench_ref_grad_input, dtypes=(FLOAT32,), call=_bench_call,
          bars=(("float32", (32, 128, 56, 56), "ratio_vs_peer", 1.0, 2.0,
                 "depthwise 3x3 128ch 56x56 N32 fp32 backward (data+weight+bias) vs cuDNN"),)))
