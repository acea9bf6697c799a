"""Classification losses: NumPy references, forward and backward.

Signatures follow ``torch.nn.functional`` without the deprecated ``size_average``/``reduce``
arguments (pass ``reduction`` by keyword). Arithmetic runs in float32 for float16/float32 inputs
and float64 for float64; results are cast back to the input dtype. Reduced losses are 0-d arrays.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_float, check_ndim
from ..errors import ArgumentError, ArgumentTypeError, IndexOutOfRange, ShapeError

__all__ = [
    "cross_entropy_forward", "cross_entropy_backward", "cross_entropy",
    "nll_loss_forward", "nll_loss_backward", "nll_loss",
    "multi_margin_loss_forward", "multi_margin_loss_backward", "multi_margin_loss",
]

_REDUCTIONS = ("none", "mean", "sum")


def _acc_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _log_softmax_last(x: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis as torch computes it, (x - max) - log(sum(exp(x - max))):
    a row with +inf or NaN, or a row that is all -inf, gives NaN everywhere (torch 2.13)."""
    if x.shape[-1] == 0:
        return x.copy()
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        shifted = x - m
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _check_reduction(fn: str, reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_weight(fn: str, weight, n_classes: int, dtype: np.dtype):
    if weight is None:
        return None
    if not hasattr(weight, "shape"):
        weight = np.asarray(weight)
    check_float(fn, "weight", weight)
    if dtype is not None and np.dtype(weight.dtype) != np.dtype(dtype):
        raise ArgumentTypeError(f"{fn}: arguments must share one dtype, got "
                                f"input={np.dtype(dtype)}, weight={np.dtype(weight.dtype)}")
    if tuple(weight.shape) != (n_classes,):
        raise ShapeError(f"{fn}: weight must have shape [{n_classes}] (one per class), "
                         f"got {tuple(weight.shape)}")
    return weight


def bad_target_error(fn: str, value, n_classes: int, ignore_index=None) -> IndexOutOfRange:
    """The error for a class index outside [0, C) (and not ignore_index): torch's IndexError
    ("Target 5 is out of bounds"), naming the function and ``target``. Every backend raises it;
    the kernels find the bad row on the device and the op raises after the launch."""
    return IndexOutOfRange(f"{fn}: target values must be in [0, {n_classes})"
                           + (f" or equal ignore_index={ignore_index}" if ignore_index is not None
                              else "") + f", got {value} (out of bounds)")


def _check_class_target_shape(fn: str, t, want_shape) -> None:
    if np.dtype(t.dtype).kind not in "iu":
        raise ArgumentTypeError(f"{fn}: target must hold integer class indices, got dtype "
                                f"{t.dtype}")
    if tuple(t.shape) != tuple(want_shape):
        raise ShapeError(f"{fn}: target must have shape {tuple(want_shape)}, got "
                         f"{tuple(t.shape)}")


def first_bad_target(t: np.ndarray, n_classes: int, ignore_index=None):
    """The first class index of ``t`` (numpy) outside [0, C) and not ignore_index, or None."""
    bad = (t < 0) | (t >= n_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    return t[bad].reshape(-1)[0] if bad.any() else None


def _check_class_target(fn: str, t: np.ndarray, want_shape, n_classes: int, ignore_index=None):
    _check_class_target_shape(fn, t, want_shape)
    v = first_bad_target(t, n_classes, ignore_index)
    if v is not None:
        raise bad_target_error(fn, v, n_classes, ignore_index)


# -------------------------------------------------------------------------------- cross_entropy
def check_loss_args(fn, input, target, weight, reduction, label_smoothing=0.0, prob_ok=True,
                    ignore_index=-100):
    """Check the arguments of cross_entropy / nll_loss on any array kind (numpy, CuPy): dtypes,
    shapes, reduction, label_smoothing, and that probability targets come with the default
    ignore_index (torch refuses another); not the target values (those need the data).

    Returns ``(unbatched, prob, n_classes)``: prob means class-probability targets.
    """
    check_float(fn, "input", input)
    if input.ndim < 1:
        raise ShapeError(f"{fn}: input must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
    _check_reduction(fn, reduction)
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ArgumentError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    unbatched = input.ndim == 1
    shape = tuple(input.shape)
    n_classes = shape[0] if unbatched else shape[1]
    _check_weight(fn, weight, n_classes, input.dtype)
    prob = np.dtype(target.dtype).kind == "f" or np.dtype(target.dtype).name == "bfloat16"
    if prob and not prob_ok:
        raise ArgumentTypeError(f"{fn}: target must hold integer class indices, got dtype "
                                f"{target.dtype}")
    if prob:
        if tuple(target.shape) != shape:
            raise ShapeError(f"{fn}: class-probability target must have the shape of input "
                             f"{shape}, got {tuple(target.shape)}")
        check_float(fn, "target", target)
    else:
        _check_class_target_shape(fn, target, () if unbatched else (shape[0],) + shape[2:])
    if prob and ignore_index != -100:
        raise ArgumentError(f"{fn}: ignore_index is not supported for floating point target "
                            f"(class probabilities), got ignore_index={ignore_index!r}")
    return unbatched, prob, n_classes


def _nll_rows(logp, t, wl, ignore_index):
    """Per element (class axis last in ``logp``): (-w[t] * logp[t] or 0 where ignored, w[t] or 0
    where ignored, valid mask)."""
    valid = t != ignore_index
    tc = np.where(valid, t, 0).astype(np.int64)
    if logp.shape[-1]:
        lp_t = np.take_along_axis(logp, tc[..., None], axis=-1)[..., 0]
        w_t = wl[tc]
    else:
        lp_t = w_t = np.zeros(t.shape, logp.dtype)
    with np.errstate(invalid="ignore"):
        loss = np.where(valid, -(w_t * lp_t), 0).astype(logp.dtype)
    return loss, np.where(valid, w_t, 0).astype(logp.dtype), valid


def _ce_setup(fn, input, target, weight, ignore_index, reduction, label_smoothing):
    """Validate and return (x_last, t_last, wl, q, valid, denom, unbatched, prob, dtype).

    x_last: logits with the class axis moved last, in the accumulation dtype; t_last: target
    (probabilities with the class axis last, or indices). q: per-element coefficients on
    log-probabilities of the gradient, d loss / d logp_c = -q_c. valid: bool per element (False
    where the target equals ignore_index). denom: divisor of reduction='mean'.
    """
    x, t = np.asarray(input), np.asarray(target)
    unbatched, prob, n_classes = check_loss_args(fn, x, t, weight, reduction, label_smoothing,
                                                 ignore_index=ignore_index)
    if unbatched:
        x, t = x[None], t[None]
    if not prob:
        _check_class_target(fn, t, t.shape, n_classes, ignore_index)
    eps = float(label_smoothing)
    acc = _acc_dtype(x.dtype)
    xl = np.moveaxis(x, 1, -1).astype(acc)
    wl = np.ones(n_classes, acc) if weight is None else np.asarray(weight).astype(acc)
    if prob:
        tl = np.moveaxis(t, 1, -1).astype(acc)
        if eps > 0:
            tl = tl * acc.type(1 - eps) + acc.type(eps / n_classes)
        q = tl * wl
        valid = np.ones(xl.shape[:-1], bool)
        denom = acc.type(xl.size // n_classes if n_classes else 0)
    else:
        tl = t
        valid = t != ignore_index
        tc = np.where(valid, t, 0).astype(np.int64)
        wt = np.where(valid, wl[tc] if n_classes else 0, 0).astype(acc)  # weight of each target
        onehot = np.zeros(xl.shape, acc)
        if onehot.size:
            np.put_along_axis(onehot, tc[..., None], 1, axis=-1)
        q = acc.type(1 - eps) * onehot * wt[..., None]
        if eps > 0:
            q = q + acc.type(eps / n_classes) * wl
        q = np.where(valid[..., None], q, 0).astype(acc)
        denom = np.sum(wt, dtype=acc)
    return xl, tl, wl, q, valid, denom, unbatched, prob, x.dtype


def _reduce(loss, denom, reduction, unbatched, dt):
    if reduction == "none":
        return (loss[0] if unbatched else loss).astype(dt)
    total = np.sum(loss, dtype=loss.dtype)
    if reduction == "sum":
        return np.asarray(total, dtype=dt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(total / denom, dtype=dt)


def cross_entropy_forward(input, target, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0):
    """Cross-entropy of logits ``input`` against ``target``, exactly as torch.

    input: (C,), (N, C) or (N, C, d1, ...) float logits.
    target: integer class indices of shape (), (N,) or (N, d1, ...), or class probabilities of
    input's shape (float). ``weight``: optional (C,) per-class rescaling.
    Per element, with logp = log_softmax(input, dim=1) and eps = label_smoothing:
    index targets: loss = -w[t] logp[t], and with eps > 0
    (1-eps) * -w[t] logp[t] + eps/C * -sum_c w[c] logp[c]; 0 where the target is ignore_index;
    probability targets: loss = -sum_c logp[c] (t[c] (1-eps) + eps/C) w[c].
    reduction 'mean' divides the sum by the sum of w[t] over non-ignored elements (index targets)
    or by the number of elements N*d1*... (probability targets); 0/0 gives NaN as in torch.
    Infinities as torch: a +inf or NaN logit makes its row's loss NaN, and 0 * -inf is NaN
    wherever torch multiplies (zero probabilities or zero weights against a -inf logit).
    Out-of-range class indices raise IndexOutOfRange naming ``target``.
    """
    xl, tl, wl, q, valid, denom, unbatched, prob, dt = _ce_setup(
        "cross_entropy", input, target, weight, ignore_index, reduction, label_smoothing)
    eps, n_classes = float(label_smoothing), xl.shape[-1]
    acc = xl.dtype
    logp = _log_softmax_last(xl)
    with np.errstate(invalid="ignore"):
        if prob:
            terms = logp * tl if weight is None else logp * tl * wl
            loss = -np.sum(terms, axis=-1)
        else:
            loss, _, _ = _nll_rows(logp, tl, wl, ignore_index)
            if eps > 0:
                smooth = -np.sum(logp if weight is None else logp * wl, axis=-1)
                smooth = np.where(valid, smooth, 0).astype(acc)
                loss = acc.type(1 - eps) * loss + acc.type(eps / n_classes) * smooth
    return _reduce(loss.astype(acc), denom, reduction, unbatched, dt)


def _grad_scale(fn, grad_out, shape, reduction, denom, unbatched, acc):
    """grad_out spread over the elements (class axis removed), divided by the mean's divisor."""
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    out_shape = (shape[1:] if unbatched else shape) if reduction == "none" else ()
    if g.shape != tuple(out_shape):
        raise ShapeError(f"{fn}: grad_out must have shape {tuple(out_shape)}, got {g.shape}")
    g = g.astype(acc)
    if reduction == "none":
        return g[None] if unbatched else g
    if reduction == "sum":
        return np.full(shape, g, acc)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.full(shape, g / denom, acc)


def cross_entropy_backward(grad_out, input, target, weight=None, ignore_index=-100,
                           reduction="mean", label_smoothing=0.0):
    """``cross_entropy_backward(grad_out, input, target, weight=None, ignore_index=-100,
    reduction='mean', label_smoothing=0.0) -> (grad_input, grad_target, None)``.

    grad_out has the forward output's shape (0-d for 'mean'/'sum'). grad_input has input's shape
    and dtype: g * (softmax * sum_c q_c - q) per element, with q the coefficients on logp (see
    :func:`cross_entropy_forward`); ignored elements get 0 * (...) (NaN for a NaN row, as
    torch). grad_target is None for class-index targets, and for probability targets
    -(1-eps) * g * w * logp (torch differentiates it too). The weight gets no gradient (None),
    as in torch.
    """
    fn = "cross_entropy_backward"
    xl, tl, wl, q, valid, denom, unbatched, prob, dt = _ce_setup(
        fn, input, target, weight, ignore_index, reduction, label_smoothing)
    acc = xl.dtype
    ge = _grad_scale(fn, grad_out, xl.shape[:-1], reduction, denom, unbatched, acc)
    ge = np.where(valid, ge, 0).astype(acc)
    logp = _log_softmax_last(xl)
    sm = np.exp(logp)
    with np.errstate(invalid="ignore"):
        gx = ge[..., None] * (sm * np.sum(q, axis=-1, keepdims=True) - q)
    gx = np.moveaxis(gx, -1, 1)
    grad_input = (gx[0] if unbatched else gx).astype(dt)
    grad_target = None
    if prob:
        eps = float(label_smoothing)
        with np.errstate(invalid="ignore"):
            gt = -acc.type(1 - eps) * ge[..., None] * wl * logp
        gt = np.moveaxis(gt, -1, 1)
        grad_target = (gt[0] if unbatched else gt).astype(np.asarray(target).dtype)
    return grad_input, grad_target, None


cross_entropy = cross_entropy_forward


# ------------------------------------------------------------------------------------- nll_loss
def _nll_setup(fn, input, target, weight, ignore_index, reduction):
    x, t = np.asarray(input), np.asarray(target)
    unbatched, _, n_classes = check_loss_args(fn, x, t, weight, reduction, prob_ok=False)
    if unbatched:
        x, t = x[None], t[None]
    _check_class_target(fn, t, t.shape, n_classes, ignore_index)
    acc = _acc_dtype(x.dtype)
    xl = np.moveaxis(x, 1, -1).astype(acc)
    wl = np.ones(n_classes, acc) if weight is None else np.asarray(weight).astype(acc)
    return xl, t, wl, unbatched, x.dtype


def nll_loss_forward(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` (C,), (N, C) or (N, C, d1, ...)
    against integer class indices ``target`` (), (N,) or (N, d1, ...), exactly as torch:
    loss = -w[t] * input[t] per element (0 where t == ignore_index); 'mean' divides the sum by
    the sum of w[t] over non-ignored elements (0/0 is NaN, as torch). Out-of-range class
    indices raise IndexOutOfRange naming ``target``. (torch's deprecated size_average/reduce are
    handled by ``functional.nll_loss``.)"""
    xl, t, wl, unbatched, dt = _nll_setup("nll_loss", input, target, weight, ignore_index,
                                          reduction)
    loss, wt, _ = _nll_rows(xl, t, wl, ignore_index)
    return _reduce(loss, np.sum(wt, dtype=xl.dtype), reduction, unbatched, dt)


def nll_loss_backward(grad_out, input, target, weight=None, ignore_index=-100, reduction="mean"):
    """``nll_loss_backward(grad_out, input, target, weight=None, ignore_index=-100,
    reduction='mean') -> (grad_input, None, None)``: grad_input[t] = -w[t] * g (divided by the
    mean's divisor), 0 elsewhere and on ignored elements. Target and weight get no gradient."""
    fn = "nll_loss_backward"
    xl, t, wl, unbatched, dt = _nll_setup(fn, input, target, weight, ignore_index, reduction)
    acc = xl.dtype
    _, wt, valid = _nll_rows(xl, t, wl, ignore_index)
    ge = _grad_scale(fn, grad_out, xl.shape[:-1], reduction, np.sum(wt, dtype=acc), unbatched,
                     acc)
    gx = np.zeros(xl.shape, acc)
    if gx.size:
        tc = np.where(valid, t, 0).astype(np.int64)
        np.put_along_axis(gx, tc[..., None], np.where(valid, -(wt * ge), 0)[..., None], axis=-1)
    gx = np.moveaxis(gx, -1, 1)
    return (gx[0] if unbatched else gx).astype(dt), None, None


nll_loss = nll_loss_forward


# ---------------------------------------------------------------------------- multi_margin_loss
def _mm_setup(fn, input, target, p, margin, weight, reduction):
    x = np.asarray(input)
    check_float(fn, "input", x)
    check_ndim(fn, "input", x, (0, 1, 2))
    _check_reduction(fn, reduction)
    if p not in (1, 2) or isinstance(p, bool):
        raise ArgumentError(f"{fn}: p must be 1 or 2, got {p!r}")
    unbatched = x.ndim <= 1        # (C,) scores, or a 0-D score of a single class, as torch
    t = np.asarray(target)
    if unbatched:
        if t.ndim > 1 or t.size != 1:
            raise ShapeError(f"{fn}: target must have shape () or (1,) for input of shape "
                             f"{x.shape}, got {t.shape}")
        none_shape = t.shape       # reduction='none' gives the target's shape, as torch
        x, t = x.reshape(1, -1), t.reshape(1)
    else:
        none_shape = (x.shape[0],)
    n, n_classes = x.shape
    if n_classes == 0:
        raise ShapeError(f"{fn}: input must have at least one class, got shape {x.shape}")
    w = _check_weight(fn, weight, n_classes, x.dtype)   # first, as torch (a ValueError)
    _check_class_target(fn, t, (n,) if not unbatched else (1,), n_classes)
    acc = _acc_dtype(x.dtype)
    xa = x.astype(acc)
    t = t.astype(np.int64)
    rows = np.arange(n)
    z = acc.type(margin) - xa[rows, t][:, None] + xa            # (N, C)
    active = z > 0
    active[rows, t] = False                                       # the target class is skipped
    wt = np.ones(n, acc) if w is None else w.astype(acc)[t]      # (N,)
    return xa, z, active, wt, t, none_shape, x.dtype


def multi_margin_loss_forward(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """Multi-class hinge (SVM) loss, exactly as torch.

    input: (N, C) or (C,) scores; target: int64 class indices (N,) or ().
    loss_n = w[y_n] / C * sum_{j != y_n} max(0, margin - x[n, y_n] + x[n, j])^p, p in {1, 2}.
    reduction 'mean' averages over N (unweighted), 'sum' sums, 'none' returns (N,) (or ()).
    """
    xa, z, active, wt, t, none_shape, dt = _mm_setup(
        "multi_margin_loss", input, target, p, margin, weight, reduction)
    n_classes = xa.shape[1]
    h = np.where(active, z if p == 1 else z * z, 0)
    loss = np.sum(h, axis=1) * wt / xa.dtype.type(n_classes)
    if reduction == "none":
        return loss.reshape(none_shape).astype(dt)
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
    xa, z, active, wt, t, none_shape, dt = _mm_setup(fn, input, target, p, margin, weight,
                                                     reduction)
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    n, n_classes = xa.shape
    out_shape = none_shape if reduction == "none" else ()
    if g.shape != out_shape:
        raise ShapeError(f"{fn}: grad_out must have shape {out_shape}, got {g.shape}")
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
    return gx.reshape(np.shape(input)).astype(dt), None, None


multi_margin_loss = multi_margin_loss_forward
