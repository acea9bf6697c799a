"""Test/check cases and the bench of the batch_norm family (specs/batch_norm.py).

Bounds (fp32, elementwise) come from rounding: every sum of the kernels (Welford per thread,
Chan merges across lanes, warps and chunks; plain fp32 sums in the backward) is bounded by the
worst case of linear error growth, K = (M + 16) u over a channel's M elements, times the sum of
the magnitudes involved; the few elementwise operations after it add a few u each.
"""
from __future__ import annotations

import numpy as np

from ..spec import ALL_DTYPES, FLOAT32, Bench, Case
from .batch_norm import FAMILY

U = FLOAT32.unit_roundoff


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _cv(v, ndim):
    return np.asarray(v, np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _stats(a, training, eps):
    """(mean, invstd) as [1, C, 1..] views: what the kernel normalises with."""
    x = a["input"]
    if a.get("save_invstd") is not None:
        return _cv(a["save_mean"], x.ndim), _cv(a["save_invstd"], x.ndim)
    if training:
        m = x.mean(axis=_axes(x), keepdims=True)
        return m, 1 / np.sqrt(((x - m) ** 2).mean(axis=_axes(x), keepdims=True) + eps)
    return _cv(a["running_mean"], x.ndim), 1 / np.sqrt(_cv(a["running_var"], x.ndim) + eps)


def _fwd_bound(training, eps):
    def bound(a, ref):
        x = a["input"]
        if x.size == 0:
            return 0.0
        m = x.size // x.shape[1]
        mean, invstd = _stats(a, training, eps)
        xc = np.abs(x - mean)
        absw = 1.0 if a.get("weight") is None else np.abs(_cv(a["weight"], x.ndim))
        absb = 0.0 if a.get("bias") is None else np.abs(_cv(a["bias"], x.ndim))
        k = (m + 16) * U
        if training:   # error of the mean and of the variance (relative, through invstd)
            dmean = k * np.abs(x).max(axis=_axes(x), keepdims=True)
            var = 1 / invstd ** 2
            dvar = k * ((xc ** 2).mean(axis=_axes(x), keepdims=True)
                        + np.abs(x).max(axis=_axes(x), keepdims=True) * xc.max(axis=_axes(x),
                                                                               keepdims=True))
            rel = dvar / var + 4 * U
        else:
            dmean, rel = 0.0, 4 * U
        b = absw * invstd * (dmean + xc * rel + 4 * U * xc) + 4 * U * absb
        if a.get("residual") is not None:
            b = b + 4 * U * (absw * invstd * xc + absb + np.abs(a["residual"]))
        return b
    return bound


def _bwd_bound(training, eps, act):
    def bound(a, ref):
        x, g = a["input"], a["grad_out"]
        if x.size == 0:
            return (0.0,) * (4 if act else 3)
        m = x.size // x.shape[1]
        mean, invstd = _stats(a, training, eps)
        if act:
            g = np.where(a["output"] > 0, g, 0.0)
        absw = 1.0 if a.get("weight") is None else np.abs(_cv(a["weight"], x.ndim))
        xh = np.abs(x - mean) * invstd
        k = (m + 16) * U
        s1 = np.abs(g).sum(axis=_axes(x), keepdims=True)
        s2 = (np.abs(g) * xh).sum(axis=_axes(x), keepdims=True)
        if training:
            gx = absw * invstd * (k * (s1 / m + xh * s2 / m)
                                  + 6 * U * (np.abs(g) + s1 / m + xh * s2 / m))
        else:
            gx = absw * invstd * 4 * U * np.abs(g)
        out = [gx, None if a.get("weight") is None else (k + 4 * U) * s2.reshape(-1),
               None if a.get("bias") is None else k * s1.reshape(-1)]
        if act:
            out.append(None if a.get("residual") is None else 0.0)
        return tuple(0.0 if o is None else o for o in out)
    return bound


def _make(shape, training, affine=True, running=True, direction="forward", act=False,
          residual=False, eps=1e-5, mean=0.0):
    c = shape[1]

    def make(rng):
        x = mean + rng.standard_normal(shape)
        a = {"input": x}
        if running:
            a["running_mean"] = 0.5 * rng.standard_normal(c)
            a["running_var"] = 0.5 + rng.random(c)
        else:
            a["running_mean"] = a["running_var"] = None
        if affine:
            a["weight"], a["bias"] = rng.standard_normal(c), rng.standard_normal(c)
        if residual:
            a["residual"] = rng.standard_normal(shape)
        p = {"training": training, "eps": eps}
        if direction == "backward":
            from ..reference import norm
            fwd = norm.batch_norm_act_forward if act else norm.batch_norm_forward
            kw = {"residual": a.get("residual")} if act else {}
            rm = None if a["running_mean"] is None else a["running_mean"].copy()
            rv = None if a["running_var"] is None else a["running_var"].copy()
            y, sm, si = fwd(x, rm, rv, a.get("weight"), a.get("bias"), training, 0.1, eps,
                            return_stats=True, **kw)
            a = {"grad_out": rng.standard_normal(shape), **a, "save_mean": sm,
                 "save_invstd": si}
            if act:
                a["output"] = y
        p.update({k: None for k, v in a.items() if v is None})
        return {k: v for k, v in a.items() if v is not None}, p
    return make


def _label(shape, training, extra=""):
    return "x".join(map(str, shape)) + (" train" if training else " eval") + extra


def _cases(shape, training, check=True, **kw):
    eps = kw.get("eps", 1e-5)
    out = []
    for act in ((False, True) if kw.pop("with_act", True) else (False,)):
        op = "batch_norm_act" if act else "batch_norm"
        res = kw.get("residual", False) and act
        extra = " +residual" if res else ""
        kwa = dict(kw, residual=res)
        out += [Case(op, "forward", _label(shape, training, extra),
                     _make(shape, training, act=act, **kwa), _fwd_bound(training, eps),
                     check=check),
                Case(op, "backward", _label(shape, training, extra),
                     _make(shape, training, direction="backward", act=act, **kwa),
                     _bwd_bound(training, eps, act), check=check)]
    return out


FAMILY.case(
    *_cases((4, 3, 5, 7), True, residual=True),              # C=3, several chunks
    *_cases((2, 33, 4, 4), True, check=False),               # C=33, 16-byte vectors
    *_cases((7, 33), True, affine=False, running=False, check=False, with_act=False),  # 2-D
    *_cases((6, 1, 2, 8), True, residual=True, check=False),  # C=1
    *_cases((1, 3, 1, 1), False, with_act=False),             # eval, N*H*W = 1
    *_cases((2, 5, 3, 3), False, residual=True),              # eval, fused
    *_cases((3, 5, 2, 4), False, affine=False, check=False, with_act=False),
    *_cases((0, 3, 2, 2), True, check=False, with_act=False),  # batch 0
)


# ---- bench: training forward + backward -------------------------------------------------------
# The backward op without the saved statistics recomputes them with the forward kernels (stats
# + normalise), then reduces and writes grad_input: the four launches of a training step, timed
# against torch's F.batch_norm forward + autograd backward.

def _bench_make(xp, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    arr = {"grad_out": rng.standard_normal(shape, dtype=np.float32),
           "input": 3 + 2 * rng.standard_normal(shape, dtype=np.float32),
           "weight": rng.standard_normal(c, dtype=np.float32),
           "bias": rng.standard_normal(c, dtype=np.float32)}
    return {k: xp.asarray(v.astype(dtype.np)) for k, v in arr.items()}, \
        {"running_mean": None, "running_var": None, "training": True}


def _bench_peer(torch, t, p):
    x = t["input"].detach().requires_grad_()
    w = t["weight"].detach().requires_grad_()
    b = t["bias"].detach().requires_grad_()
    y = torch.nn.functional.batch_norm(x, None, None, w, b, True)
    return torch.autograd.grad(y, (x, w, b), t["grad_out"])[0]


def _bench_ref(xp, a, p):
    x, g, w = a["input"], a["grad_out"], a["weight"].reshape(1, -1, 1, 1)
    axes = (0, 2, 3)
    m = x.mean(axis=axes, keepdims=True)
    invstd = 1 / xp.sqrt(((x - m) ** 2).mean(axis=axes, keepdims=True) + 1e-5)
    xhat = (x - m) * invstd
    gy = g * w
    return invstd * (gy - gy.mean(axis=axes, keepdims=True)
                     - xhat * (gy * xhat).mean(axis=axes, keepdims=True))


FAMILY.bench(Bench(
    "batch_norm", "backward",
    shapes={"full": [(32, 256, 56, 56)], "quick": [(32, 64, 56, 56)],
            "dry-run": [(4, 8, 6, 6)]},
    make=_bench_make,
    # x read 3x, y written, grad_out read 2x, y... : stats (x), fwd (x, y), reduce (g, x),
    # bwd (g, x, grad_input) = 8 tensor passes
    work=lambda shape, itemsize: {"bytes": 8 * int(np.prod(shape)) * itemsize},
    peer_name="torch F.batch_norm train fwd + autograd bwd",
    peer=_bench_peer,
    device_ref=_bench_ref,
    dtypes=ALL_DTYPES,
    bars=(("float32", (32, 256, 56, 56), "ratio_vs_peer", 1.0, 1.5,
           "batch_norm train fwd+bwd fp32 32x256x56x56 vs torch"),)))
