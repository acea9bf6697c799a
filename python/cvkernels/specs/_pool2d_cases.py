"""pool2d's test/check cases (with their fp32 rounding bounds) and bench cases.

Bounds: max pooling is exact (a max of stored values, rounded back to their own dtype), and so
is its backward up to the fp32 sum of the m <= kh*kw gradients that land on one input. A window
sum of n terms in fp32 errs by at most gamma_n * sum|x| (any order), the division adds one
rounding and the store to fp32 none: |err| <= (n + 2) u * (sum|x| / |div|), which is the
reference pool of |x| times (n + 2) u. The backward gathers m terms g/div, each rounded once:
(m + 2) u times the reference backward of |g|.
"""
from __future__ import annotations

import math

import numpy as np

from ..spec import ALL_DTYPES, FLOAT32, Bench, Case
from .pool2d import FAMILY

U = FLOAT32.unit_roundoff


def _ref():
    from .. import reference
    return reference


def _pairs(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _input(rng, shape, kind):
    """kind 'int': small integers (exact in every dtype, many ties); 'nan': normals with a
    few NaNs; else normals."""
    if kind == "int":
        return rng.integers(-3, 4, shape).astype(np.float64)
    x = rng.standard_normal(shape)
    if kind == "nan" and x.size:
        x.reshape(-1)[rng.choice(x.size, max(1, x.size // 9), replace=False)] = np.nan
    return x


def _out_shape(op, x, params):
    return getattr(_ref(), f"{op}_forward")(x, **params).shape


def _sizes(output_size, shape):
    return [s if v is None else v for v, s in zip(_pairs(output_size), shape[-2:])]


def _label(shape, params):
    return "x".join(map(str, shape)) + "".join(f" {k}={v}" for k, v in params.items())


def max_cases(op, shape, params, kind="int", with_indices=False, check=True):
    """Forward (exact) and backward (m-term gradient sums) cases of max_pool2d or
    adaptive_max_pool2d; ``with_indices`` passes the forward's indices to the backward."""
    label = _label(shape, params) + (f" {kind}" if kind != "int" else "")
    if op == "max_pool2d":
        k = _pairs(params["kernel_size"])
        m = k[0] * k[1]
    else:
        o = _sizes(params["output_size"], shape)
        m = math.prod(math.ceil(o_ / s) + 1 for o_, s in zip(o, shape[-2:]))

    def fwd(rng):
        return {"input": _input(rng, shape, kind)}, dict(params)

    def bwd(rng):
        x = _input(rng, shape, kind)
        a = {"grad_out": rng.standard_normal(_out_shape(op, x, params)), "input": x}
        if with_indices:
            a["indices"] = getattr(_ref(), f"{op}_forward")(x, **params, return_indices=True)[1]
        return a, dict(params)

    def bwd_bound(a, r):
        extra = {"indices": a["indices"]} if with_indices else {}
        g = getattr(_ref(), f"{op}_backward")(np.abs(a["grad_out"]), a["input"], **params,
                                              **extra)[0]
        return (m + 1) * U * g
    blabel = label + (" indices" if with_indices else "")
    return [Case(op, "forward", label, fwd, lambda a, r: 0.0, check=check),
            Case(op, "backward", blabel, bwd, bwd_bound, check=check)]


def avg_cases(op, shape, params, check=True):
    """Forward and backward cases of avg_pool2d or adaptive_avg_pool2d (bounds: module doc)."""
    label = _label(shape, params)
    if op == "avg_pool2d":
        k = _pairs(params["kernel_size"])
        n = m = k[0] * k[1]
    else:
        o = _sizes(params["output_size"], shape)
        n = math.prod(math.ceil(s / max(v, 1)) + 1 for v, s in zip(o, shape[-2:]))
        m = math.prod(math.ceil(v / s) + 1 for v, s in zip(o, shape[-2:]))

    def fwd(rng):
        return {"input": rng.standard_normal(shape)}, dict(params)

    def bwd(rng):
        x = rng.standard_normal(shape)
        return {"grad_out": rng.standard_normal(_out_shape(op, x, params)), "input": x}, \
            dict(params)

    def fwd_bound(a, r):
        return (n + 2) * U * np.abs(getattr(_ref(), f"{op}_forward")(np.abs(a["input"]),
                                                                      **params))

    def bwd_bound(a, r):
        g = getattr(_ref(), f"{op}_backward")(np.abs(a["grad_out"]), a["input"], **params)[0]
        return (m + 2) * U * np.abs(g)
    return [Case(op, "forward", label, fwd, fwd_bound, check=check),
            Case(op, "backward", label, bwd, bwd_bound, check=check)]


FAMILY.case(
    # max_pool2d: ties (small integers), NaN, windows starting in the padding, dilation,
    # stride > kernel, 1x1, unbatched, batch 0
    *max_cases("max_pool2d", (2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1)),
    *max_cases("max_pool2d", (2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1), "nan",
               with_indices=True),
    *max_cases("max_pool2d", (1, 2, 13, 11), dict(kernel_size=(3, 2), stride=(2, 3),
                                                   padding=1, dilation=(2, 1), ceil_mode=True)),
    *max_cases("max_pool2d", (1, 1, 5, 6), dict(kernel_size=2, stride=2, padding=1,
                                                 ceil_mode=True), "normal", check=False),
    *max_cases("max_pool2d", (2, 1, 7, 7), dict(kernel_size=2, stride=3), check=False),
    *max_cases("max_pool2d", (1, 1, 1, 1), dict(kernel_size=1), check=False),
    *max_cases("max_pool2d", (3, 11, 7), dict(kernel_size=3, stride=1, padding=1),
               check=False),
    *max_cases("max_pool2d", (0, 3, 5, 5), dict(kernel_size=2), check=False),
    # avg_pool2d: both padding counts, ceil_mode, divisor_override (also negative)
    *avg_cases("avg_pool2d", (2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1)),
    *avg_cases("avg_pool2d", (2, 2, 9, 10), dict(kernel_size=(3, 2), stride=(2, 3), padding=1,
                                                  ceil_mode=True, count_include_pad=False)),
    *avg_cases("avg_pool2d", (1, 1, 5, 6), dict(kernel_size=2, stride=2, padding=1,
                                                 ceil_mode=True), check=False),
    *avg_cases("avg_pool2d", (2, 3, 6, 7), dict(kernel_size=(2, 3), padding=1, ceil_mode=True,
                                                 divisor_override=-2), check=False),
    *avg_cases("avg_pool2d", (1, 2, 11, 13), dict(kernel_size=2, stride=3), check=False),
    *avg_cases("avg_pool2d", (1, 1, 1, 1), dict(kernel_size=1), check=False),
    *avg_cases("avg_pool2d", (0, 2, 4, 4), dict(kernel_size=2), check=False),
    *avg_cases("avg_pool2d", (3, 7, 6), dict(kernel_size=2, stride=1, padding=1,
                                              count_include_pad=False), check=False),
    # adaptive: non-divisible sizes, more outputs than inputs, global (warp and block per
    # plane), unbatched, empty batch and channels, output size 0
    *avg_cases("adaptive_avg_pool2d", (2, 3, 7, 5), dict(output_size=(3, 2))),
    *avg_cases("adaptive_avg_pool2d", (1, 2, 4, 5), dict(output_size=(6, 7)), check=False),
    *avg_cases("adaptive_avg_pool2d", (2, 3, 13, 11), dict(output_size=1)),
    *avg_cases("adaptive_avg_pool2d", (1, 2, 37, 41), dict(output_size=1), check=False),
    *avg_cases("adaptive_avg_pool2d", (3, 11, 5), dict(output_size=(None, 2)), check=False),
    *avg_cases("adaptive_avg_pool2d", (2, 0, 5, 5), dict(output_size=2), check=False),
    *avg_cases("adaptive_avg_pool2d", (1, 2, 5, 7), dict(output_size=0), check=False),
    *max_cases("adaptive_max_pool2d", (2, 3, 7, 5), dict(output_size=(3, 2))),
    *max_cases("adaptive_max_pool2d", (1, 2, 4, 5), dict(output_size=(6, 7)), "nan",
               with_indices=True, check=False),
    *max_cases("adaptive_max_pool2d", (1, 1, 13, 11), dict(output_size=1), check=False),
    *max_cases("adaptive_max_pool2d", (3, 5, 5), dict(output_size=(2, None)), check=False),
    *max_cases("adaptive_max_pool2d", (0, 2, 5, 5), dict(output_size=3), check=False),
)


# ---- benches ----------------------------------------------------------------------------------
def _bench_make(params):
    def make(xp, shape, dtype, seed):
        x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        return {"input": xp.asarray(x.astype(dtype.np))}, dict(params)
    return make


def _bytes(out_hw):
    """Input read once, output written once (no indices: the op without return_indices)."""
    def work(shape, itemsize):
        o = out_hw(shape)
        return {"bytes": (math.prod(shape) + math.prod(shape[:-2]) * o[0] * o[1]) * itemsize}
    return work


def _max_ref(xp, a, p):
    """max_pool2d 3x3 s2 p1 in float64 on the device: the max of 9 strided views."""
    x = a["input"]
    k, s, pad = p["kernel_size"], p["stride"], p["padding"]
    h, w = x.shape[-2:]
    ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    xp_ = xp.full(x.shape[:-2] + (h + 2 * pad, w + 2 * pad), -xp.inf)
    xp_[..., pad:pad + h, pad:pad + w] = x
    out = None
    for i in range(k):
        for j in range(k):
            v = xp_[..., i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
            out = v if out is None else xp.maximum(out, v)
    return out


def _adaptive_avg_ref(xp, a, p):
    x = a["input"]
    h, w = x.shape[-2:]
    ho, wo = _pairs(p["output_size"])
    rows = [(i * h // ho, -(-(i + 1) * h // ho)) for i in range(ho)]
    cols = [(j * w // wo, -(-(j + 1) * w // wo)) for j in range(wo)]
    return xp.stack([xp.stack([x[..., r0:r1, c0:c1].mean(axis=(-2, -1)) for c0, c1 in cols],
                              axis=-1) for r0, r1 in rows], axis=-2)


_MAXP = dict(kernel_size=3, stride=2, padding=1)
_STEM = (32, 64, 112, 112)
FAMILY.bench(
    Bench("max_pool2d", "forward",
          shapes={"full": [_STEM], "quick": [(8, 64, 112, 112)], "dry-run": [(2, 3, 9, 11)]},
          make=_bench_make(_MAXP),
          work=_bytes(lambda s: ((s[-2] - 1) // 2 + 1, (s[-1] - 1) // 2 + 1)),
          peer_name="torch.nn.functional.max_pool2d",
          peer=lambda torch, t, p: torch.nn.functional.max_pool2d(t["input"], **p),
          device_ref=_max_ref, dtypes=ALL_DTYPES,
          bars=(("float32", _STEM, "ratio_vs_peer", 1.0, 2.5,
                 "max_pool 3x3 s2 p1 fp32 32x64x112x112 vs torch"),
                ("float32", _STEM, "frac_copy_bw", 0.7, 0.85,
                 "max_pool 3x3 s2 p1 fp32 32x64x112x112, time of a copy of the input / ours"))),
    Bench("adaptive_avg_pool2d", "forward",
          shapes={"full": [(32, 2048, 7, 7), (32, 256, 56, 56)], "quick": [(32, 2048, 7, 7)],
                  "dry-run": [(2, 5, 7, 7), (1, 3, 33, 35)]},
          make=_bench_make(dict(output_size=1)), work=_bytes(lambda s: (1, 1)),
          peer_name="torch.nn.functional.adaptive_avg_pool2d",
          peer=lambda torch, t, p: torch.nn.functional.adaptive_avg_pool2d(t["input"], **p),
          device_ref=lambda xp, a, p: a["input"].mean(axis=(-2, -1), keepdims=True),
          dtypes=ALL_DTYPES,
          bars=(("float32", (32, 2048, 7, 7), "ratio_vs_peer", 1.0, 1.5,
                 "global average pool fp32 32x2048x7x7 vs torch"),)),
    Bench("adaptive_avg_pool2d", "forward",
          shapes={"full": [(32, 512, 28, 28)], "quick": [(8, 512, 28, 28)],
                  "dry-run": [(2, 3, 13, 11)]},
          make=_bench_make(dict(output_size=(6, 6))), work=_bytes(lambda s: (6, 6)),
          peer_name="torch.nn.functional.adaptive_avg_pool2d",
          peer=lambda torch, t, p: torch.nn.functional.adaptive_avg_pool2d(t["input"], **p),
          device_ref=_adaptive_avg_ref, dtypes=(FLOAT32,)),
)
