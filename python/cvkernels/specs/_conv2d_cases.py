"""Test/check Cases and Bench entries of the conv2d family (specs/conv2d.py).

fp32 bounds come from rounding: every output is one fp32 sum of k products (fmaf in k order, or
split-K partials added in a fixed order; both within gamma_{k+1}), plus the bias, rounded once.
So |ours - ref| <= (k + 2) * u * (the same sum over the absolute values), computed by the
float64 reference on |inputs|; k is the number of terms of the longest sum of that output.
"""
from __future__ import annotations

import numpy as np

from ..spec import FLOAT16, FLOAT32, Bench, Case
from .conv2d import FAMILY

U = FLOAT32.unit_roundoff


def _ref(op, direction):
    """The reference, imported when a case runs (the build loads the specs without numba)."""
    from .. import reference
    return getattr(reference, f"{op}_{direction}")


def _abs(a):
    return {k: (np.abs(v) if isinstance(v, np.ndarray) else v) for k, v in a.items()}


def _fwd_case(op, label, x_shape, w_shape, bias=True, **params):
    """A forward case; the bound is (k + 2) u |x| * |w| with k = the filter's taps per output."""
    def make(rng):
        a = {"input": rng.standard_normal(x_shape), "weight": rng.standard_normal(w_shape)}
        if bias:
            c_out = w_shape[0] if op == "conv2d" else w_shape[1] * params.get("groups", 1)
            a["bias"] = rng.standard_normal(c_out)
        return a, dict(params)

    if op == "conv2d":
        k = w_shape[1] * w_shape[2] * w_shape[3]
    else:
        k = w_shape[0] // params.get("groups", 1) * w_shape[2] * w_shape[3]
    return Case(op, "forward", label, make,
                lambda a, r: (k + 2) * U * _ref(op, "forward")(**_abs(a), **params))


def _bwd_case(op, label, x_shape, w_shape, bias=True, **params):
    """A backward case: grad_out is drawn in the forward output's shape; the bounds are the
    reference backward on absolute values, times (k + 2) u for each gradient's own k."""
    groups = params.get("groups", 1)

    def make(rng):
        a = {"input": rng.standard_normal(x_shape), "weight": rng.standard_normal(w_shape)}
        if bias:
            c_out = w_shape[0] if op == "conv2d" else w_shape[1] * groups
            a["bias"] = rng.standard_normal(c_out)
        out = _ref(op, "forward")(**a, **params)
        return {"grad_out": rng.standard_normal(out.shape), **a}, dict(params)

    def bound(a, r):
        g = a["grad_out"]
        gx, gw, gb = _ref(op, "backward")(**_abs(a), **params)
        taps = w_shape[2] * w_shape[3]
        k_x = (w_shape[0] // groups if op == "conv2d" else w_shape[1]) * taps
        pixels = g.size // g.shape[-3]                     # N * H_out * W_out
        k_w = pixels if op == "conv2d" else int(np.prod(x_shape)) // x_shape[-3]
        return ((k_x + 2) * U * gx, (k_w + 2) * U * gw,
                None if gb is None else (pixels + 2) * U * gb)
    return Case(op, "backward", label, make, bound)


FAMILY.case(
    _fwd_case("conv2d", "1x1 image, 1x1 filter, C 1 -> K 1", (1, 1, 1, 1), (1, 1, 1, 1)),
    _fwd_case("conv2d", "prime 7x11, C 3 -> K 33, 3x3 pad 1", (2, 3, 7, 11), (33, 3, 3, 3),
              padding=1),
    _fwd_case("conv2d", "C 33 -> K 3, 7x7 filter, stride 2, pad 3", (1, 33, 13, 9), (3, 33, 7, 7),
              stride=2, padding=3),
    _fwd_case("conv2d", "stride 3 > 2x2 filter, no bias", (2, 5, 11, 8), (4, 5, 2, 2),
              bias=False, stride=3),
    _fwd_case("conv2d", "dilation 2 with pad (2, 1)", (1, 3, 9, 10), (5, 3, 3, 3),
              dilation=2, padding=(2, 1)),
    _fwd_case("conv2d", "'same' with a 4x2 filter", (2, 3, 6, 7), (3, 3, 4, 2), padding="same"),
    _fwd_case("conv2d", "groups 3, 'valid', unbatched", (6, 8, 7), (9, 2, 3, 3), groups=3,
              padding="valid"),
    _fwd_case("conv2d", "depthwise 5 channels, 3x3 pad 1", (2, 5, 6, 5), (5, 1, 3, 3), groups=5,
              padding=1),
    _fwd_case("conv2d", "batch 0: empty", (0, 3, 5, 5), (4, 3, 3, 3)),
    _bwd_case("conv2d", "C 3 -> K 33, 3x3 pad 1, 7x5", (2, 3, 7, 5), (33, 3, 3, 3), padding=1),
    _bwd_case("conv2d", "stride 2 dilation 2 pad 1, groups 2, no bias", (2, 4, 9, 8),
              (6, 2, 3, 3), bias=False, stride=2, dilation=2, padding=1, groups=2),
    _bwd_case("conv2d", "1x1 filter, stride 3 > filter, 'valid'", (3, 5, 7, 7), (2, 5, 1, 1),
              stride=3),
    _bwd_case("conv2d", "'same' 2x4 filter, unbatched", (3, 5, 6), (4, 3, 2, 4), padding="same"),
    _bwd_case("conv2d", "depthwise 3 channels, 3x3 pad 1", (2, 3, 5, 4), (3, 1, 3, 3), groups=3,
              padding=1),
    _bwd_case("conv2d", "batch 0: zero weight/bias gradients", (0, 2, 4, 4), (3, 2, 3, 3)),
    _fwd_case("conv_transpose2d", "C 3 -> 5, 3x3 stride 2 pad 1 output_padding 1",
              (2, 3, 5, 4), (3, 5, 3, 3), stride=2, padding=1, output_padding=1),
    _fwd_case("conv_transpose2d", "groups 2, dilation 2, output_padding (1, 0), no bias",
              (1, 4, 4, 5), (4, 3, 2, 3), bias=False, stride=(1, 2), dilation=2,
              output_padding=(1, 0), groups=2),
    _fwd_case("conv_transpose2d", "1x1 image, C 1 -> 33", (1, 1, 1, 1), (1, 33, 2, 2)),
    _bwd_case("conv_transpose2d", "stride 2 pad 1 output_padding 1, bias", (2, 3, 4, 5),
              (3, 4, 3, 3), stride=2, padding=1, output_padding=1),
    _bwd_case("conv_transpose2d", "groups 3, dilation 2, output_padding 1 (< dilation)",
              (1, 6, 5, 4), (6, 1, 2, 2), bias=False, dilation=2, output_padding=1, groups=3),
)


# ---- bench ------------------------------------------------------------------------------------
# shape = (N, C, H, W, C*9): C -> C channels, 3x3 filter, pad 1, stride 1; the last entry is the
# length of each output's sum (what bench_ops' fp32 tolerance reads).

def _bench_make(xp, shape, dtype, seed):
    n, c, h, w, _ = shape
    rs = np.random.default_rng(seed)
    x = xp.asarray(rs.standard_normal((n, c, h, w), dtype=np.float32).astype(dtype.np))
    wt = xp.asarray((rs.standard_normal((c, c, 3, 3), dtype=np.float32) / 24).astype(dtype.np))
    return {"input": x, "weight": wt}, {"padding": 1}


def _bench_make_bwd(xp, shape, dtype, seed):
    a, p = _bench_make(xp, shape, dtype, seed)
    rs = np.random.default_rng(seed + 1)
    g = rs.standard_normal(a["input"].shape, dtype=np.float32).astype(dtype.np)
    return {"grad_out": xp.asarray(g), **a}, p


def _conv3x3(xp, a, wt, grad_input):
    """float64 3x3 pad-1 convolution on the device as nine channel contractions; with
    grad_input, the input gradient (taps mirrored, weight's channel roles swapped)."""
    h, w = a.shape[2:]
    ap = xp.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = 0
    for i in range(3):
        for j in range(3):
            ii, jj = (2 - i, 2 - j) if grad_input else (i, j)
            out = out + xp.einsum("nchw,ck->nkhw" if grad_input else "nchw,kc->nkhw",
                                  ap[:, :, ii:ii + h, jj:jj + w], wt[:, :, i, j])
    return out


def _device_ref_fwd(xp, a, p):
    return _conv3x3(xp, a["input"], a["weight"], False)


def _device_ref_bwd(xp, a, p):
    """grad_input (the op's first output)."""
    return _conv3x3(xp, a["grad_out"], a["weight"], True)


def _peer_fwd(torch, t, p):
    torch.backends.cudnn.allow_tf32 = False   # fp32 is fp32: the bar compares like with like
    return torch.nn.functional.conv2d(t["input"], t["weight"], padding=1)


def _peer_bwd(torch, t, p):
    torch.backends.cudnn.allow_tf32 = False
    x = t["input"].detach().requires_grad_(True)
    w = t["weight"].detach().requires_grad_(True)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    gx, _ = torch.autograd.grad(y, (x, w), t["grad_out"])
    return gx


_SHAPES = {"full": [(32, 64, 56, 56, 576)], "quick": [(8, 64, 28, 28, 576)],
           "dry-run": [(2, 3, 5, 7, 27)]}


def _flop(shape, itemsize, passes=1):
    n, c, h, w, _ = shape
    return {"flop": passes * 2 * n * c * c * 9 * h * w}


FAMILY.bench(
    Bench("conv2d", "forward", shapes=_SHAPES, make=_bench_make, work=_flop,
          peer_name="cudnn (torch conv2d, TF32 off)", peer=_peer_fwd,
          device_ref=_device_ref_fwd, dtypes=(FLOAT32, FLOAT16),
          bars=(("float32", _SHAPES["full"][0], "ratio_vs_peer", 0.6, 1.0,
                 "conv2d fp32 3x3 64->64 56x56 N32 fwd vs cuDNN (TF32 off)"),
                ("float16", _SHAPES["full"][0], "ratio_vs_peer", 0.5, 1.2,
                 "conv2d fp16 same shape fwd vs cuDNN (mma.sync, synchronous staging)"))),
    Bench("conv2d", "backward", shapes=_SHAPES, make=_bench_make_bwd,
          work=lambda s, i: _flop(s, i, passes=2),
          peer_name="cudnn (torch conv2d backward, TF32 off)", peer=_peer_bwd,
          device_ref=_device_ref_bwd, dtypes=(FLOAT32, FLOAT16),
          bars=(("float32", _SHAPES["full"][0], "ratio_vs_peer", 0.6, 1.0,
                 "conv2d fp32 3x3 64->64 56x56 N32 backward (data + weight) vs cuDNN (TF32 off)"),
                ("float16", _SHAPES["full"][0], "ratio_vs_peer", 0.5, 1.2,
                 "conv2d fp16 same shape backward vs cuDNN (SIMT: no tensor cores here)"))),
)
