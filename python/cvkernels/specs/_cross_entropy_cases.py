"""Test/check cases (with their fp32 rounding bounds) and the bench of the cross_entropy family
(specs/cross_entropy.py), kept apart so that each file stays short."""
from __future__ import annotations

import numpy as np

from ..spec import ALL_DTYPES, FLOAT32, Bench, Case

U = FLOAT32.unit_roundoff


# ---- test and check cases ---------------------------------------------------------------------
# Error model (fp32, elementwise; u = 2^-24). A lane folds at most K = ceil(C/32) logits into its
# running (m, s): per logit one expf (<= 2 ulp = 4u) and one add, and on a new maximum a rescale
# of s (an expf and a multiply); the warp merges 5 pairs and the block up to 31 more, 5u each.
# So s carries a relative error <= D = (5K + 190) u, and log s an absolute one <= D. Sums of
# w x or q x over a row take <= K + 40 additions. Per row then
#   |err loss| <= sum_c |q_c| (D + (K + 40) u (|x_c| + |lse| + 1)),
# the reductions add gamma_rows of the sum of |row losses| and the mean's divisor another
# gamma_rows, relative. Backward: softmax = expf(x - m) / s is off by D + 8u + u|x - m|,
# relative; Q by (K + 40) u; the divisor by rows u.
def _budget(C):
    K = -(-C // 32)
    return (5 * K + 190) * U, (K + 40) * U


def _terms(a, p, log_softmax=True):
    """float64 per-row pieces: x [rows, C], loss coefficients q [rows, C], lse [rows, 1],
    per-row grad scale ge, the mean's divisor, keep, w."""
    x, t, w = a["input"], a["target"], a.get("weight")
    if x.ndim == 1:
        x, t = x[None], t[None]
    C = x.shape[1]
    xl = np.moveaxis(x, 1, -1).reshape(-1, C)
    wl = np.ones(C) if w is None else w
    eps = float(p.get("label_smoothing", 0.0))
    keep, smooth = 1 - eps, eps / C
    if t.dtype.kind == "f" or t.dtype.name == "bfloat16":
        q = (np.moveaxis(t.astype(np.float64), 1, -1).reshape(-1, C) * keep + smooth) * wl
        denom = float(len(xl))
    else:
        tf = t.reshape(-1)
        valid = tf != p.get("ignore_index", -100)
        tc = np.where(valid, tf, 0)
        q = np.zeros_like(xl)
        q[np.arange(len(tf)), tc] = keep * wl[tc]
        if eps:
            q += smooth * wl
        q[~valid] = 0
        denom = float(np.sum(np.where(valid, wl[tc], 0)))
    if log_softmax:
        m = xl.max(1, keepdims=True)
        lse = m + np.log(np.exp(xl - m).sum(1, keepdims=True))
    else:
        lse = np.zeros((len(xl), 1))
    red = p.get("reduction", "mean")
    ge = np.ones(len(xl))
    if "grad_out" in a:
        g = a["grad_out"].reshape(-1)
        ge = np.abs(g) if red == "none" else np.full(len(xl), abs(float(g[0])))
        if red == "mean":
            ge = ge / denom
    return xl, q, lse, ge, denom, keep, wl


def _reduced(a, p, per_row, row_loss, ref):
    """Bound of the reduced loss from per-row bounds and |row losses|."""
    red, n = p.get("reduction", "mean"), len(per_row)
    if red == "none":
        return per_row.reshape(np.shape(ref))
    total = per_row.sum() + (n + 2) * U * np.abs(row_loss).sum()
    if red == "sum":
        return total
    _, _, _, _, denom, _, _ = _terms(a, p, False)
    return total / denom + (n + 4) * U * abs(float(ref))


def _ce_fwd_bound(a, r, p):
    xl, q, lse, _, _, _, _ = _terms(a, p)
    D, S = _budget(xl.shape[1])
    per_row = (np.abs(q) * (D + S * (np.abs(xl) + np.abs(lse) + 1))).sum(1)
    rows = (q * (lse - xl)).sum(1)
    return _reduced(a, p, per_row, rows, r)


def _ce_bwd_bound(a, r, p):
    xl, q, lse, ge, _, keep, wl = _terms(a, p)
    D, S = _budget(xl.shape[1])
    L = D + S + (len(xl) + 8) * U + U * np.abs(xl - xl.max(1, keepdims=True))
    sm = np.exp(xl - lse)
    gi = ge[:, None] * L * (sm * np.abs(q.sum(1, keepdims=True)) + np.abs(q))
    x = a["input"]

    def back(b):   # [rows, C] -> input's layout
        if x.ndim == 1:
            return b.reshape(x.shape)
        return np.moveaxis(b.reshape(x.shape[:1] + x.shape[2:] + (x.shape[1],)), -1, 1)
    out = [back(gi), None, None]
    if r[1] is not None:
        gt = ge[:, None] * keep * np.abs(wl) * (D + (len(xl) + 8) * U * (
            np.abs(xl - lse) + np.abs(xl) + np.abs(lse) + 1))
        out[1] = back(gt)
    return tuple(out)


def _nll_fwd_bound(a, r, p):
    xl, q, _, _, _, _, _ = _terms(a, p, False)
    rows = -(q * xl).sum(1)
    return _reduced(a, p, 2 * U * np.abs(rows), rows, r)


def _nll_bwd_bound(a, r, p):
    return ((len(a["target"].reshape(-1)) + 8) * U * np.abs(r[0]), None, None)


def _class_make(shape, prob=False, weight=False, ignore=None, smoothing=0.0, reduction="mean",
                backward=False, log_probs=False):
    def make(rng):
        x = 3 * rng.standard_normal(shape)
        C = shape[0] if len(shape) == 1 else shape[1]
        tshape = () if len(shape) == 1 else shape[:1] + shape[2:]
        if log_probs:
            x = x - np.log(np.exp(x).sum(0 if len(shape) == 1 else 1, keepdims=True))
        if prob:
            e = rng.random(shape) ** 2
            t = e / e.sum(0 if len(shape) == 1 else 1, keepdims=True)
        else:
            t = rng.integers(0, C, tshape).astype(np.int64)
            if ignore is not None and t.size:
                t.reshape(-1)[::3] = ignore
        arrays = {"input": x, "target": t}
        if weight:
            arrays["weight"] = 0.1 + rng.random(C)
        params = {"reduction": reduction}
        if not log_probs:
            params["label_smoothing"] = smoothing
        if ignore is not None:
            params["ignore_index"] = ignore
        if backward:
            out = tshape if reduction == "none" else ()
            arrays = {"grad_out": np.asarray(rng.standard_normal(out)), **arrays}
        return arrays, params
    return make


def _ce_cases(label, shape, check=True, **kw):
    p = {"reduction": kw.get("reduction", "mean"), "label_smoothing": kw.get("smoothing", 0.0),
         "ignore_index": kw.get("ignore", -100)}
    return [Case("cross_entropy", "forward", label, _class_make(shape, **kw),
                 lambda a, r: _ce_fwd_bound(a, r, p), check=check),
            Case("cross_entropy", "backward", label, _class_make(shape, backward=True, **kw),
                 lambda a, r: _ce_bwd_bound(a, r, p), check=check)]


def _nll_cases(label, shape, check=True, **kw):
    p = {"reduction": kw.get("reduction", "mean"), "ignore_index": kw.get("ignore", -100)}
    return [Case("nll_loss", "forward", label, _class_make(shape, log_probs=True, **kw),
                 lambda a, r: _nll_fwd_bound(a, r, p), check=check),
            Case("nll_loss", "backward", label,
                 _class_make(shape, backward=True, log_probs=True, **kw),
                 lambda a, r: _nll_bwd_bound(a, r, p), check=check)]


# ---- bench: forward + backward, as a training step computes them -------------------------------
def _bench_make(xp, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 2).astype(dtype.np)
    t = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    return {"input": xp.asarray(x), "target": xp.asarray(t)}, {}


def _bench_call(fn, rt, a, p):
    """Our forward then backward (grad_out = 1 of the mean): the step's loss and grad_input."""
    from .cross_entropy import cross_entropy_forward
    loss = cross_entropy_forward(rt, a["input"], a["target"])
    one = rt.xp.ones((), dtype=a["input"].dtype)
    return fn(rt, one, a["input"], a["target"])[0], loss


def _bench_peer(torch, t, p):
    x = t["input"].detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x, t["target"])
    loss.backward()
    return x.grad


def _bench_ref(xp, a, p):
    x = a["input"]
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    sm = e / e.sum(axis=1, keepdims=True)
    rows = xp.arange(x.shape[0])
    sm[rows, a["target"].astype(xp.int64)] -= 1
    return sm / x.shape[0]



def declare(FAMILY):  # noqa: N803
    """Declare the cases and the bench on ``FAMILY``."""
    FAMILY.case(
        *_ce_cases("7x33 weight ignore none", (7, 33), weight=True, ignore=2, reduction="none"),
        *_ce_cases("5x1025 smoothing weight mean", (5, 1025), weight=True, smoothing=0.1),
        *_ce_cases("3x4x5 prob smoothing sum", (3, 4, 5), prob=True, smoothing=0.2,
                   reduction="sum", check=False),
        *_ce_cases("2x3x2x2 ignore mean", (2, 3, 2, 2), ignore=1, check=False),
        *_ce_cases("2x4104 prob weight mean", (2, 4104), prob=True, weight=True, check=False),
        *_ce_cases("33 unbatched smoothing", (33,), smoothing=0.3, reduction="sum", check=False),
        *_nll_cases("7x33 weight ignore mean", (7, 33), weight=True, ignore=4),
        *_nll_cases("2x5x3 none", (2, 5, 3), reduction="none", check=False),
        *_nll_cases("4x6 sum", (4, 6), reduction="sum", check=False))
    FAMILY.bench(Bench(
        "cross_entropy", "backward",
        shapes={"full": [(8192, 8192), (65536, 1000)], "quick": [(2048, 2048), (8192, 1000)],
                "dry-run": [(16, 256), (9, 1001)]},
        make=_bench_make,
        work=lambda shape, itemsize: {"bytes": 3 * shape[0] * shape[1] * itemsize},
        peer_name="torch cross_entropy forward + backward",
        peer=_bench_peer,
        device_ref=_bench_ref,
        dtypes=ALL_DTYPES,
        call=_bench_call,
        bars=(("float32", (8192, 8192), "ratio_vs_peer", 1.5, 2.0,
               "cross_entropy fp32 8192x8192 forward + backward vs torch"),)))
