"""cross_entropy and multi_margin_loss references: against torch (optional oracle), finite
differences, edge cases (ignored targets, empty batch, C=1) and argument errors."""
import numpy as np
import pytest

from cvkernels.reference import loss as L
from helpers import assert_close, check_grads

F64 = dict(atol=1e-13, rtol=1e-12)       # float64 vs torch float64: a few ulps of sums over C
EPS32 = float(np.finfo(np.float32).eps)


def _torch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    return torch, F


def _class_case(shape, seed, ignore_index=-100, n_ignored=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    t_shape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
    t = rng.integers(0, shape[1] if len(shape) > 1 else shape[0], t_shape).astype(np.int64)
    if t.size and n_ignored:
        t.reshape(-1)[: n_ignored] = ignore_index
    w = rng.random(shape[1] if len(shape) > 1 else shape[0]).astype(dtype) + 0.1
    return x, t, w


def _torch_ce(x, t, w, **kw):
    torch, F = _torch()
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t, requires_grad=t.dtype.kind == "f")
    out = F.cross_entropy(xt, tt, None if w is None else torch.tensor(w), **kw)
    return out, xt, tt


CE_SHAPES = [(5, 4), (3, 4, 2, 3), (4,), (1, 1), (7, 13)]


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_cross_entropy_class_targets_vs_torch(shape, reduction, use_weight, label_smoothing):
    torch, _ = _torch()
    x, t, w = _class_case(shape, 0, n_ignored=1 if len(shape) > 1 and shape[0] > 1 else 0)
    w = w if use_weight else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    ref, xt, _ = _torch_ce(x, t, w, **kw)
    g = np.random.default_rng(1).standard_normal(ref.shape)
    ref.backward(torch.tensor(g))
    assert_close(L.cross_entropy(x, t, w, **kw), ref, **F64, name="loss")
    gi, gt, gw = L.cross_entropy_backward(g, x, t, w, **kw)
    assert_close(gi, xt.grad, **F64, name="grad_input")
    assert gt is None and gw is None


@pytest.mark.parametrize("ignore_index", [1, -1, 5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_ignore_index_vs_torch(ignore_index, reduction):
    torch, _ = _torch()
    x, t, w = _class_case((6, 4, 3), 2, ignore_index=ignore_index, n_ignored=4)
    kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=0.1)
    ref, xt, _ = _torch_ce(x, t, w, **kw)
    g = np.random.default_rng(3).standard_normal(ref.shape)
    ref.backward(torch.tensor(g))
    assert_close(L.cross_entropy(x, t, w, **kw), ref, **F64, name="loss")
    assert_close(L.cross_entropy_backward(g, x, t, w, **kw)[0], xt.grad, **F64, name="grad")


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_all_ignored_mean_is_nan_with_zero_grad(smoothing):
    torch, _ = _torch()
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = np.full(3, -100)
    ref, xt, _ = _torch_ce(x, t, None, label_smoothing=smoothing)
    ref.backward(torch.tensor(1.0))
    assert_close(L.cross_entropy(x, t, label_smoothing=smoothing), ref, **F64)
    assert np.isnan(L.cross_entropy(x, t, label_smoothing=smoothing))
    assert_close(L.cross_entropy_backward(np.array(1.0), x, t, label_smoothing=smoothing)[0],
                 np.zeros_like(x), atol=0, rtol=0)
    assert_close(xt.grad, np.zeros_like(x), atol=0, rtol=0, name="torch agrees")


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4, 2), (4,)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_prob_targets_vs_torch(shape, reduction, use_weight, label_smoothing):
    torch, _ = _torch()
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    t = rng.random(shape)
    t /= t.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
    w = rng.random(shape[1] if len(shape) > 1 else shape[0]) + 0.1 if use_weight else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    ref, xt, tt = _torch_ce(x, t, w, **kw)
    g = rng.standard_normal(ref.shape)
    ref.backward(torch.tensor(g))
    assert_close(L.cross_entropy(x, t, w, **kw), ref, **F64, name="loss")
    gi, gt, gw = L.cross_entropy_backward(g, x, t, w, **kw)
    assert_close(gi, xt.grad, **F64, name="grad_input")
    assert_close(gt, tt.grad, **F64, name="grad_target")
    assert gw is None


def test_cross_entropy_float32_error_at_most_twice_torch():
    torch, F = _torch()
    x, t, w = _class_case((64, 33), 5, dtype=np.float32)
    g = np.float32(1.0)
    outs = {}
    for dt in (np.float32, np.float64):
        ref, xt, _ = _torch_ce(x.astype(dt), t, w.astype(dt), label_smoothing=0.1)
        ref.backward(torch.tensor(g, dtype=ref.dtype))
        outs[dt] = (ref.detach().numpy(), xt.grad.numpy())
    ours = (L.cross_entropy(x, t, w, label_smoothing=0.1),
            L.cross_entropy_backward(np.array(g), x, t, w, label_smoothing=0.1)[0])
    for k, what in enumerate(("loss", "grad_input")):
        exact, theirs = outs[np.float64][k], outs[np.float32][k]
        assert ours[k].dtype == np.float32
        err = float(np.max(np.abs(theirs - exact)))
        assert_close(ours[k], exact, atol=2 * err + 4 * EPS32 * float(np.max(np.abs(exact))),
                     rtol=4 * EPS32, name=what, check_dtype=False)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_empty_batch(reduction):
    x, t = np.zeros((0, 3)), np.zeros(0, np.int64)
    out = L.cross_entropy(x, t, reduction=reduction)
    if reduction == "none":
        assert out.shape == (0,) and out.dtype == np.float64
    elif reduction == "sum":
        assert out.shape == () and out == 0
    else:
        assert out.shape == () and np.isnan(out)    # torch: mean over no targets is NaN
    g = np.zeros(0) if reduction == "none" else np.array(1.0)
    assert L.cross_entropy_backward(g, x, t, reduction=reduction)[0].shape == (0, 3)


def test_cross_entropy_large_logits_stable():
    x = np.array([[1000.0, 0.0, -1000.0], [-np.inf, 0.0, 1.0]])
    t = np.array([0, 2])
    out = L.cross_entropy(x, t, reduction="none")
    assert_close(out, np.array([0.0, np.log1p(np.exp(-1.0))]), atol=1e-15, rtol=1e-15)


def test_cross_entropy_non_contiguous():
    x, t, w = _class_case((4, 6, 5), 6)
    xv = np.swapaxes(np.swapaxes(x, 1, 2).copy(), 1, 2)       # same values, strided layout
    assert not xv.flags.c_contiguous
    assert_close(L.cross_entropy(xv, t, w), L.cross_entropy(x, t, w), atol=0, rtol=0)
    assert_close(L.cross_entropy_backward(np.array(1.0), xv, t, w)[0],
                 L.cross_entropy_backward(np.array(1.0), x, t, w)[0], atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_finite_differences(seed, reduction):
    x, t, w = _class_case((3, 4, 2), seed)
    kw = dict(reduction=reduction, label_smoothing=0.15)
    f = lambda a: L.cross_entropy(a, t, w, **kw)                  # noqa: E731
    check_grads(f, lambda g: L.cross_entropy_backward(g, x, t, w, **kw)[:1], [x], seed=seed)
    # probability targets: input and target both differentiable
    rng = np.random.default_rng(seed)
    p = rng.random((3, 4, 2))
    f2 = lambda a, b: L.cross_entropy(a, b, w, **kw)              # noqa: E731
    check_grads(f2, lambda g: L.cross_entropy_backward(g, x, p, w, **kw)[:2], [x, p], seed=seed)


def test_cross_entropy_errors():
    x = np.zeros((2, 3))
    with pytest.raises(IndexError, match="cross_entropy: target values"):
        L.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="cross_entropy: target must have shape"):
        L.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="cross_entropy: class-probability target"):
        L.cross_entropy(x, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="cross_entropy: target"):
        L.cross_entropy(x, np.array([True, False]))
    with pytest.raises(ValueError, match="cross_entropy: weight"):
        L.cross_entropy(x, np.array([0, 1]), weight=np.ones(2))
    with pytest.raises(TypeError, match="cross_entropy: input"):
        L.cross_entropy(np.zeros((2, 3), np.int32), np.array([0, 1]))
    with pytest.raises(ValueError, match="cross_entropy: reduction"):
        L.cross_entropy(x, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="cross_entropy: label_smoothing"):
        L.cross_entropy(x, np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="cross_entropy_backward: grad_out"):
        L.cross_entropy_backward(np.ones(2), x, np.array([0, 1]))


# ---------------------------------------------------------------------------- multi_margin_loss
MM_SHAPES = [(5, 4), (4,), (1, 1), (9, 17)]


@pytest.mark.parametrize("shape", MM_SHAPES)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_multi_margin_vs_torch(shape, p, margin, use_weight, reduction):
    torch, F = _torch()
    x, t, w = _class_case(shape, 7, n_ignored=0)
    x = x * 0.5                                  # a mix of active and inactive hinges
    w = w if use_weight else None
    kw = dict(p=p, margin=margin, weight=w, reduction=reduction)
    xt = torch.tensor(x, requires_grad=True)
    ref = F.multi_margin_loss(xt, torch.tensor(t), p=p, margin=margin,
                              weight=None if w is None else torch.tensor(w), reduction=reduction)
    g = np.random.default_rng(8).standard_normal(ref.shape)
    ref.backward(torch.tensor(g))
    assert_close(L.multi_margin_loss(x, t, **kw), ref, **F64, name="loss")
    gi, gt, gw = L.multi_margin_loss_backward(g, x, t, **kw)
    assert_close(gi, xt.grad, **F64, name="grad_input")
    assert gt is None and gw is None


def test_multi_margin_hand_computed():
    x = np.array([[0.1, 0.2, 0.4, 0.8]])
    t = np.array([3])
    # hinges: 1 - 0.8 + {0.1, 0.2, 0.4} = {0.3, 0.4, 0.6}; / C = 4
    assert_close(L.multi_margin_loss(x, t), np.array(1.3 / 4), atol=1e-16, rtol=1e-15)
    assert_close(L.multi_margin_loss(x, t, p=2), np.array((0.09 + 0.16 + 0.36) / 4), atol=1e-16,
                 rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_finite_differences(seed, p):
    x, t, w = _class_case((4, 5), seed, n_ignored=0)
    kw = dict(p=p, margin=0.9, weight=w, reduction="none")
    f = lambda a: L.multi_margin_loss(a, t, **kw)                  # noqa: E731
    check_grads(f, lambda g: L.multi_margin_loss_backward(g, x, t, **kw)[:1], [x], seed=seed)


def test_multi_margin_empty_and_float32():
    assert L.multi_margin_loss(np.zeros((0, 3)), np.zeros(0, np.int64),
                               reduction="none").shape == (0,)
    assert L.multi_margin_loss(np.zeros((0, 3)), np.zeros(0, np.int64), reduction="sum") == 0
    x = np.ones((2, 3), np.float32)
    assert L.multi_margin_loss(x, np.array([0, 1])).dtype == np.float32
    assert L.multi_margin_loss_backward(np.array(1.0, np.float32), x,
                                        np.array([0, 1]))[0].dtype == np.float32


def test_multi_margin_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="multi_margin_loss: p"):
        L.multi_margin_loss(x, np.array([0, 1]), p=3)
    with pytest.raises(IndexError, match="multi_margin_loss: target values"):
        L.multi_margin_loss(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="multi_margin_loss: target must have shape"):
        L.multi_margin_loss(x, np.array([0]))
    with pytest.raises(ValueError, match="multi_margin_loss: input"):
        L.multi_margin_loss(np.zeros((2, 3, 4)), np.array([0, 1]))
    with pytest.raises(TypeError, match="multi_margin_loss: input"):
        L.multi_margin_loss(np.zeros((2, 3), np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match="multi_margin_loss: weight"):
        L.multi_margin_loss(x, np.array([0, 1]), weight=np.ones(4))


def test_all_names_exported():
    import cvkernels.reference as R
    for op in ("cross_entropy", "multi_margin_loss"):
        for suffix in ("", "_forward", "_backward"):
            assert f"{op}{suffix}" in L.__all__ and hasattr(R, f"{op}{suffix}")
            assert getattr(L, f"{op}{suffix}").__doc__
