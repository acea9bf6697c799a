"""Classification losses: NumPy references, forward and backward.

Signatures follow ``torch.nn.functional`` without the deprecated ``size_average``/``reduce``
arguments (pass ``reduction`` by keyword). Arithmetic runs in float32 for float16/float32 inputs
and float64 for float64; results are cast back to the input dtype. Reduced losses are 0-d arrays.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_float, check_ndim

__all__ = [
    "cross_entropy_forward", "cross_entropy_backward", "cross_entropy",
    "multi_margin_loss_forward", "multi_margin_loss_backward", "multi_margin_loss",
]

_REDUCTIONS = ("none", "mean", "sum")


def _acc_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _log_softmax_last(x: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis; a row that is all -inf gives -inf, not NaN."""
    m = np.max(x, axis=-1, keepdims=True) if x.shape[-1] else np.zeros(x.shape[:-1] + (1,), x.dtype)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    shifted = x - m
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _check_reduction(fn: str, reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_weight(fn: str, weight, n_classes: int, dtype: np.dtype):
    if weight is None:
        return None
    w = np.asarray(weight)
    check_float(fn, "weight", w)
    if w.shape != (n_classes,):
        raise ValueError(f"{fn}: weight must have shape [{n_classes}] (one per class), "
                         f"got {tuple(w.shape)}")
    return w


def _check_class_target(fn: str, t: np.ndarray, want_shape, n_classes: int, ignore_index=None):
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != tuple(want_shape):
        raise ValueError(f"{fn}: target must have shape {tuple(want_shape)}, got {t.shape}")
    bad = (t < 0) | (t >= n_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    if bad.any():
        v = t[bad].reshape(-1)[0]
        raise ValueError(f"{fn}: target values must be in [0, {n_classes})"
                         + (f" or equal ignore_index={ignore_index}" if ignore_index is not None
                            else "") + f", got {v}")


# -------------------------------------------------------------------------------- cross_entropy
def _ce_setup(fn, input, target, weight, ignore_index, reduction, label_smoothing):
    """Validate and return (x_last, q, valid, denom, unbatched, prob, dtype).

    x_last: logits with the class axis moved last, in the accumulation dtype.
    q: per-element coefficients on log-probabilities, loss_elem = -sum_c q_c * logp_c.
    valid: bool per element (False where the target equals ignore_index).
    denom: divisor of reduction='mean'.
    """
    x = np.asarray(input)
    check_float(fn, "input", x)
    if x.ndim < 1:
        raise ValueError(f"{fn}: input must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
    _check_reduction(fn, reduction)
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    eps = float(label_smoothing)
    t = np.asarray(target)
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None]
        t = t[None]
    n_classes = x.shape[1]
    w = _check_weight(fn, weight, n_classes, x.dtype)
    acc = _acc_dtype(x.dtype)
    xl = np.moveaxis(x, 1, -1).astype(acc)
    wl = np.ones(n_classes, acc) if w is None else w.astype(acc)
    prob = t.dtype.kind == "f"
    if prob:
        if t.shape != x.shape:
            raise ValueError(f"{fn}: class-probability target must have the shape of input "
                             f"{tuple(x.shape[1:] if unbatched else x.shape)}, "
                             f"got {tuple(t.shape[1:] if unbatched else t.shape)}")
        check_float(fn, "target", t)
        tl = np.moveaxis(t, 1, -1).astype(acc)
        if eps > 0:
            tl = tl * acc.type(1 - eps) + acc.type(eps / n_classes)
        q = tl * wl
        valid = np.ones(xl.shape[:-1], bool)
        denom = acc.type(xl.size // n_classes if n_classes else 0)
    else:
        want = (x.shape[0],) + x.shape[2:]
        tt = t
        if tt.shape != want:
            raise ValueError(f"{fn}: target must have shape "
                             f"{want[1:] if unbatched else want}, "
                             f"got {tt.shape[1:] if unbatched else tt.shape}")
        _check_class_target(fn, tt, want, n_classes, ignore_index)
        valid = tt != ignore_index
        tc = np.where(valid, tt, 0).astype(np.int64)
        wt = np.where(valid, wl[tc] if n_classes else 0, 0).astype(acc)  # weight of each target
        onehot = np.zeros(xl.shape, acc)
        if onehot.size:
            np.put_along_axis(onehot, tc[..., None], 1, axis=-1)
        q = acc.type(1 - eps) * onehot * wt[..., None]
        if eps > 0:
            q = q + acc.type(eps / n_classes) * wl
        q = np.where(valid[..., None], q, 0).astype(acc)
        denom = np.sum(wt, dtype=acc)
    return xl, q, valid, denom, unbatched, prob, x.dtype


def cross_entropy_forward(input, target, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0):
    """Cross-entropy of logits ``input`` against ``target``, exactly as torch.

    input: (C,), (N, C) or (N, C, d1, ...) float logits.
    target: integer class indices of shape (), (N,) or (N, d1, ...), or class probabilities of
    input's shape (float). ``weight``: optional (C,) per-class rescaling.
    Per element, with logp = log_softmax(input, dim=1) and eps = label_smoothing:
    index targets: loss = (1-eps) * -w[t] logp[t] + eps/C * -sum_c w[c] logp[c] (0 if ignored);
    probability targets: loss = -sum_c w[c] (t[c] (1-eps) + eps/C) logp[c].
    reduction 'mean' divides the sum by the sum of w[t] over non-ignored elements (index targets)
    or by the number of elements N*d1*... (probability targets); 0/0 gives NaN as in torch.
    """
    xl, q, valid, denom, unbatched, prob, dt = _ce_setup(
        "cross_entropy", input, target, weight, ignore_index, reduction, label_smoothing)
    logp = _log_softmax_last(xl)
    with np.errstate(invalid="ignore"):
        terms = np.where(q == 0, 0, q * logp)       # 0 * -inf counts as 0
    loss = -np.sum(terms, axis=-1)
    if reduction == "none":
        return (loss[0] if unbatched else loss).astype(dt)
    total = np.sum(loss, dtype=loss.dtype)
    if reduction == "sum":
        return np.asarray(total, dtype=dt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(total / denom, dtype=dt)


def cross_entropy_backward(grad_out, input, target, weight=None, ignore_index=-100,
                           reduction="mean", label_smoothing=0.0):
    """``cross_entropy_backward(grad_out, input, target, weight=None, ignore_index=-100,
    reduction='mean', label_smoothing=0.0) -> (grad_input, grad_target, None)``.

    grad_out has the forward output's shape (0-d for 'mean'/'sum'). grad_input has input's shape
    and dtype: g * (softmax * sum_c q_c - q) per element, with q the coefficients on logp (see
    :func:`cross_entropy_forward`); ignored elements get 0. grad_target is None for class-index
    targets, and for probability targets -(1-eps) * g * w * logp (torch differentiates it too).
    The weight gets no gradient (None), as in torch.
    """
    fn = "cross_entropy_backward"
    xl, q, valid, denom, unbatched, prob, dt = _ce_setup(
        fn, input, target, weight, ignore_index, reduction, label_smoothing)
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    out_shape = (xl.shape[1:-1] if unbatched else xl.shape[:-1]) if reduction == "none" else ()
    if g.shape != out_shape:
        raise ValueError(f"{fn}: grad_out must have shape {out_shape}, got {g.shape}")
    acc = xl.dtype
    g = g.astype(acc)
    if reduction == "none":
        ge = g[None] if unbatched else g
    elif reduction == "sum":
        ge = np.full(xl.shape[:-1], g, acc)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ge = np.full(xl.shape[:-1], g / denom, acc)
    ge = np.where(valid, ge, 0).astype(acc)
    logp = _log_softmax_last(xl)
    sm = np.exp(logp)
    gx = ge[..., None] * (sm * np.sum(q, axis=-1, keepdims=True) - q)
    gx = np.moveaxis(gx, -1, 1)
    grad_input = (gx[0] if unbatched else gx).astype(dt)
    grad_target = None
    if prob:
        eps = float(label_smoothing)
        n_classes = xl.shape[-1]
        wl = np.ones(n_classes, acc) if weight is None else np.asarray(weight).astype(acc)
        gt = -acc.type(1 - eps) * ge[..., None] * wl * logp
        gt = np.moveaxis(gt, -1, 1)
        grad_target = (gt[0] if unbatched else gt).astype(np.asarray(target).dtype)
    return grad_input, grad_target, None


cross_entropy = cross_entropy_forward


# ---------------------------------------------------------------------------- multi_margin_loss
def _mm_setup(fn, input, target, p, margin, weight, reduction):
    x = np.asarray(input)
    check_float(fn, "input", x)
    check_ndim(fn, "input", x, (1, 2))
    _check_reduction(fn, reduction)
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"{fn}: p must be 1 or 2, got {p!r}")
    unbatched = x.ndim == 1
    t = np.asarray(target)
    if unbatched:
        x, t = x[None], t[None]
    n, n_classes = x.shape
    if n_classes == 0:
        raise ValueError(f"{fn}: input must have at least one class, got shape {x.shape}")
    _check_class_target(fn, t, (n,) if not unbatched else (1,), n_classes)
    w = _check_weight(fn, weight, n_classes, x.dtype)
    acc = _acc_dtype(x.dtype)
    xa = x.astype(acc)
    t = t.astype(np.int64)
    rows = np.arange(n)
    z = acc.type(margin) - xa[rows, t][:, None] + xa            # (N, C)
    active = z > 0
    active[rows, t] = False                                       # the target class is skipped
    wt = np.ones(n, acc) if w is None else w.astype(acc)[t]      # (N,)
    return xa, z, active, wt, t, unbatched, x.dtype


def multi_margin_loss_forward(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """Multi-class hinge (SVM) loss, exactly as torch.

    input: (N, C) or (C,) scores; target: int64 class indices (N,) or ().
    loss_n = w[y_n] / C * sum_{j != y_n} max(0, margin - x[n, y_n] + x[n, j])^p, p in {1, 2}.
    reduction 'mean' averages over N (unweighted), 'sum' sums, 'none' returns (N,) (or ()).
    """
    xa, z, active, wt, t, unbatched, dt = _mm_setup(
        "multi_margin_loss", input, target, p, margin, weight, reduction)
    n_classes = xa.shape[1]
    h = np.where(active, z if p == 1 else z * z, 0)
    loss = np.sum(h, axis=1) * wt / xa.dtype.type(n_classes)
    if reduction == "none":
        return (loss[0] if unbatched else loss).astype(dt)
    if reduction == "sum":
        return np.asarray(np.sum(loss), dtype=dt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.sum(loss) / xa.dtype.type(loss.shape[0]), dtype=dt)


def multi_margin_loss_backward(grad_out, input, target, p=1, margin=1.0, weight=None,
                               reduction="mean"):
    """``multi_margin_loss_backward(grad_out, input, target, p=1, margin=1.0, weight=None,
    reduction='mean') -> (grad_input, None, None)``.

    For each active margin term (z = margin - x[y] + x[j] > 0, j != y):
    d/dx[j] = g * w[y] / C * (1 if p == 1 else 2 z) and d/dx[y] is minus the row's sum.
    Target and weight get no gradient.
    """
    fn = "multi_margin_loss_backward"
    xa, z, active, wt, t, unbatched, dt = _mm_setup(fn, input, target, p, margin, weight,
                                                    reduction)
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    n, n_classes = xa.shape
    out_shape = (() if unbatched else (n,)) if reduction == "none" else ()
    if g.shape != out_shape:
        raise ValueError(f"{fn}: grad_out must have shape {out_shape}, got {g.shape}")
    acc = xa.dtype
    g = g.astype(acc)
    if reduction == "none":
        gn = g.reshape(n)
    elif reduction == "sum":
        gn = np.full(n, g, acc)
    else:
        gn = np.full(n, g / acc.type(n) if n else 0, acc)
    d = np.where(active, acc.type(1) if p == 1 else acc.type(2) * z, 0)
    coef = d * (gn * wt / acc.type(n_classes))[:, None]
    gx = coef.copy()
    gx[np.arange(n), t] = -np.sum(coef, axis=1)
    return (gx[0] if unbatched else gx).astype(dt), None, None


multi_margin_loss = multi_margin_loss_forward
