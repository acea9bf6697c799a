"""cross_entropy / nll_loss kernels beyond the spec's cases (which tests/test_kernel_specs.py runs
on every runtime, dtype and layout): torch 2.13 (CPU) as the oracle for every target kind and
option, tiny and awkward class counts, infinities and NaN, empty batches, bad targets found by
the kernel (IndexOutOfRange naming `target`, on 'cpu' and on the simulator), bitwise
determinism of the two-stage reduction, and the autograd path on backend 'sim'."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
import cvkernels.nn as nn
from cvkernels import reference as ref
from cvkernels.errors import IndexOutOfRange
from cvkernels.numerics import U32
from cvkernels.specs import cross_entropy as K
from helpers import assert_close
from runtimes import put, rt  # noqa: F401  (fixture)

torch = pytest.importorskip("torch")
TF = torch.nn.functional
inf, nan = np.inf, np.nan


def close(actual, expected, **kw):
    """assert_close against a float64 oracle (our outputs keep the input's dtype)."""
    return assert_close(actual, expected, check_dtype=False, **kw)


def host(a):
    return None if a is None else (a.get() if hasattr(a, "get") else np.asarray(a))


def torch_ce(x, t, w=None, grad=None, nll=False, **kw):
    """torch's loss and gradients in float64 (the oracle)."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    prob = t.dtype.kind == "f"
    tt = torch.tensor(t, dtype=torch.float64 if prob else torch.int64, requires_grad=prob)
    wt = None if w is None else torch.tensor(w, dtype=torch.float64)
    out = (TF.nll_loss if nll else TF.cross_entropy)(xt, tt, wt, **kw)
    g = np.ones(out.shape) if grad is None else grad
    out.backward(torch.tensor(g, dtype=torch.float64))
    return (out.detach().numpy(), xt.grad.numpy(),
            tt.grad.numpy() if prob else None)


def budget(C, rows):
    """Per-unit-of-magnitude fp32 budget of the loss and gradients, the spec's error model
    (specs/cross_entropy.py): D + S for the row statistics and sums, rows u for the reduction
    and the mean's divisor."""
    D, S = K._budget(C)
    return D + S + (rows + 8) * U32


def run_ours(rt, x, t, w, g, nll=False, **kw):
    fwd = K.nll_loss_forward if nll else K.cross_entropy_forward
    bwd = K.nll_loss_backward if nll else K.cross_entropy_backward
    args = [put(rt, x), put(rt, t), None if w is None else put(rt, w)]
    loss = fwd(rt, *args, **kw)
    grads = bwd(rt, put(rt, np.asarray(g, x.dtype)), *args, **kw)
    assert len(grads) == 3 and grads[2] is None
    return host(loss), host(grads[0]), host(grads[1])


def check_against_torch(rt, x, t, w=None, nll=False, seed=0, **kw):
    x32 = x.astype(np.float32)
    t = t.astype(np.float32) if t.dtype.kind == "f" else t
    w32 = None if w is None else w.astype(np.float32)
    loss64, _, _ = torch_ce(x32, t, w32, nll=nll, **kw)
    g = np.random.default_rng(seed).standard_normal(loss64.shape)
    g32 = g.astype(np.float32)
    loss64, gx64, gt64 = torch_ce(x32, t, w32, g32.astype(np.float64), nll=nll, **kw)
    loss, gx, gt = run_ours(rt, x32, t, w32, g32, nll=nll, **kw)
    C = x.shape[0] if x.ndim == 1 else x.shape[1]
    b = budget(C, max(1, x.size // max(C, 1)))
    scale = np.abs(x32).max(initial=0) + np.log(max(C, 1)) + 1
    wmax = 1.0 if w is None else float(np.abs(w32).max())
    assert loss.dtype == np.float32 and loss.shape == loss64.shape
    close(loss, loss64, atol=b * scale * wmax * max(1.0, float(np.abs(loss64).max(
        initial=0))), rtol=b, name="loss")
    gscale = float(np.abs(g32).max(initial=0)) * wmax
    close(gx, gx64, atol=b * max(gscale, 1e-30), rtol=b, name="grad_input")
    if gt64 is not None:
        close(gt, gt64, atol=b * scale * gscale, rtol=b, name="grad_target")
    else:
        assert gt is None


OPTIONS = [dict(reduction="none"),
           dict(reduction="mean", ignore_index=1, use_weight=True),
           dict(reduction="sum", label_smoothing=0.2),
           dict(reduction="mean", label_smoothing=0.1, use_weight=True, ignore_index=0)]


@pytest.mark.parametrize("shape", [(5, 1), (4, 3), (3, 33), (2, 1500), (2, 3, 2, 2)])
@pytest.mark.parametrize("opt", range(len(OPTIONS)))
def test_class_targets_match_torch(rt, shape, opt):
    kw = dict(OPTIONS[opt])
    rng = np.random.default_rng(opt)
    C = shape[1]
    x = 3 * rng.standard_normal(shape)
    t = rng.integers(0, C, shape[:1] + shape[2:])
    w = 0.1 + rng.random(C) if kw.pop("use_weight", False) else None
    if "ignore_index" in kw:
        t.reshape(-1)[::2] = kw["ignore_index"]
    check_against_torch(rt, x, t, w, **kw)
    if "label_smoothing" not in kw:       # nll_loss on log-probabilities, same targets
        lp = x - np.log(np.exp(x).sum(1, keepdims=True))
        check_against_torch(rt, lp, t, w, nll=True, **kw)


@pytest.mark.parametrize("shape,smoothing,use_weight,reduction",
                         [((4, 3), 0.0, False, "mean"), ((2, 3, 2), 0.3, True, "none"),
                          ((3, 33), 0.1, True, "sum"), ((2, 1030), 0.0, True, "mean"),
                          ((5,), 0.2, False, "none")])
def test_probability_targets_match_torch(rt, shape, smoothing, use_weight, reduction):
    rng = np.random.default_rng(len(shape))
    axis = 0 if len(shape) == 1 else 1
    x = 3 * rng.standard_normal(shape)
    p = rng.random(shape)
    p /= p.sum(axis, keepdims=True)
    w = 0.1 + rng.random(shape[axis]) if use_weight else None
    check_against_torch(rt, x, p, w, reduction=reduction, label_smoothing=smoothing)


def test_unbatched_class_target(rt):
    x = np.random.default_rng(3).standard_normal(7)
    for kw in (dict(reduction="none"), dict(label_smoothing=0.25)):
        check_against_torch(rt, x, np.array(4), **kw)
        check_against_torch(rt, x, np.array(4), nll=True, reduction=kw.get("reduction", "mean"))


# Rows with +inf, -inf and NaN in target and non-target positions (issue 9); torch 2.13 CPU:
# +inf or NaN anywhere gives NaN loss and a NaN gradient row; -inf in the target gives +inf,
# elsewhere it is just a zero probability; all -inf is NaN; 0 * -inf (a zero weight or
# probability against -inf) is NaN in the loss.
INF_ROWS = np.array([[inf, 1, 2], [1, inf, 2], [-inf, 1, 2], [1, -inf, 2], [nan, 1, 2],
                     [1, 2, nan], [-inf, -inf, -inf], [inf, inf, 2], [-inf, 0, 0]])


@pytest.mark.parametrize("kw", [dict(), dict(label_smoothing=0.1),
                                dict(use_weight=True), dict(use_weight=True, label_smoothing=0.2),
                                dict(ignore_index=1)])
def test_infinities_and_nan_match_torch(rt, kw):
    kw = dict(kw)
    w = np.array([0.0, 1.0, 0.5]) if kw.pop("use_weight", False) else None
    t = np.tile([0, 1], 5)[:len(INF_ROWS)]
    x = INF_ROWS.astype(np.float32)
    loss64, gx64, _ = torch_ce(x, t, w, reduction="none", **kw)
    loss, gx, _ = run_ours(rt, x, t, None if w is None else w.astype(np.float32),
                           np.ones(len(x)), reduction="none", **kw)
    b = budget(3, 1) * 10
    close(loss, loss64, atol=b, rtol=b, name="loss")    # NaN and inf positions exactly
    close(gx, gx64, atol=b, rtol=b, name="grad_input")
    # the reference agrees with torch too
    close(ref.cross_entropy_forward(x.astype(np.float64), t, w, reduction="none", **kw),
                 loss64, atol=1e-12, rtol=1e-12)


def test_probability_targets_with_infinities_match_torch(rt):
    x = np.array([[-inf, 1, 2], [-inf, 1, 2], [inf, 1, 2], [nan, 1, 2]], np.float32)
    p = np.array([[0, .5, .5], [.2, .4, .4], [1, 0, 0], [0, .5, .5]], np.float32)
    loss64, gx64, gt64 = torch_ce(x, p, reduction="none")
    loss, gx, gt = run_ours(rt, x, p, None, np.ones(4), reduction="none")
    b = budget(3, 1) * 10
    assert np.isnan(loss[0]) and loss[1] == inf                # 0 * -inf is NaN, as torch
    close(loss, loss64, atol=b, rtol=b, name="loss")
    close(gx, gx64, atol=b, rtol=b, name="grad_input")
    close(gt, gt64, atol=b, rtol=b, name="grad_target")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("kind", ["class", "prob", "smoothing", "nll"])
def test_empty_batch_matches_torch(rt, reduction, kind):
    x = np.zeros((0, 5), np.float32)
    t = np.zeros((0, 5), np.float32) if kind == "prob" else np.zeros(0, np.int64)
    kw = dict(reduction=reduction, label_smoothing=0.1 if kind == "smoothing" else 0.0)
    if kind == "nll":
        kw.pop("label_smoothing")
    expect = (TF.nll_loss if kind == "nll" else TF.cross_entropy)(
        torch.tensor(x), torch.tensor(t), **kw).numpy()
    fwd, bwd = (K.nll_loss_forward, K.nll_loss_backward) if kind == "nll" else \
        (K.cross_entropy_forward, K.cross_entropy_backward)
    out = host(fwd(rt, put(rt, x), put(rt, t), **kw))
    assert out.shape == expect.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, expect)                  # [], nan, 0
    g = np.zeros(0, np.float32) if reduction == "none" else np.ones((), np.float32)
    gi, gt, _ = bwd(rt, put(rt, g), put(rt, x), put(rt, t), **kw)
    assert host(gi).shape == (0, 5)
    assert (gt is None) == (kind != "prob")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_zero_classes_match_torch(rt, reduction):
    x, p = np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32)
    expect = TF.cross_entropy(torch.tensor(x), torch.tensor(p), reduction=reduction).numpy()
    out = host(K.cross_entropy_forward(rt, put(rt, x), put(rt, p), reduction=reduction))
    close(out, expect, atol=0, rtol=0)                          # [0, 0] / nan / 0
    with pytest.raises(IndexOutOfRange, match="target values must be in"):   # torch: IndexError
        K.cross_entropy_forward(rt, put(rt, x), put(rt, np.array([0, -100])))
    ignored = host(K.nll_loss_forward(rt, put(rt, x), put(rt, np.array([-100, -100])),
                                      reduction=reduction))
    assert ignored.shape == expect.shape


@pytest.mark.parametrize("backend", ["cpu", "sim"])
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("bad", [5, -1, 7])
def test_bad_target_raises_naming_target(backend, op, bad):
    """The kernel flags the row, the op raises after the launch; the next call works (no sticky
    error). On 'cpu' the reference raises the same error."""
    x = np.zeros((6, 5), np.float32)
    t = np.array([0, 1, 2, bad, 4, bad])
    fn = getattr(F, op)
    with cvk.backend(backend):
        with pytest.raises(IndexOutOfRange, match=rf"{op}: target values must be in \[0, 5\) "
                                                  rf"or equal ignore_index=-100, got {bad}"):
            fn(x, t)
        with pytest.raises(IndexError, match="target"):          # torch's exception type
            fn(x, t, reduction="none", ignore_index=3)
        tx = cvk.Tensor(x, requires_grad=True)
        ok = fn(tx, np.array([0, 1, 2, 3, 4, 0]))                 # a good call still works
        ok.backward()
        assert np.isfinite(tx.grad.numpy()).all()
        t[t == bad] = 2
        fn(x, t, ignore_index=bad)                                # ignored: no error


def test_bad_target_on_every_runtime_and_direction(rt):
    x = put(rt, np.zeros((3, 4, 2), np.float32))
    t = put(rt, np.array([[0, 1], [9, 2], [3, 9]]))
    g = put(rt, np.ones((), np.float32))
    for call in (lambda: K.cross_entropy_forward(rt, x, t),
                 lambda: K.cross_entropy_backward(rt, g, x, t),
                 lambda: K.cross_entropy_forward(rt, x, t, label_smoothing=0.1),
                 lambda: K.nll_loss_forward(rt, x, t, reduction="sum"),
                 lambda: K.nll_loss_backward(rt, g, x, t, reduction="sum"),
                 lambda: K.nll_loss_backward(rt, g, x, t)):
        with pytest.raises(IndexOutOfRange, match="target values .* got 9"):
            call()


def test_reductions_are_bitwise_deterministic(rt, monkeypatch):
    """Rows past one reduction chunk (two stages: the chunk is shrunk to keep the simulator
    quick); the same bits twice, and the right sum."""
    monkeypatch.setattr(K, "REDUCE_CHUNK", 64)
    rng = np.random.default_rng(7)
    rows = 64 * 9 + 37
    x = rng.standard_normal((rows, 2)).astype(np.float32)
    t = rng.integers(0, 2, rows)
    t[::5] = -100
    w = np.array([0.3, 1.7], np.float32)
    a = [put(rt, x), put(rt, t), put(rt, w)]
    first = [host(K.cross_entropy_forward(rt, *a, reduction=r)) for r in ("mean", "sum")]
    again = [host(K.cross_entropy_forward(rt, *a, reduction=r)) for r in ("mean", "sum")]
    for u, v in zip(first, again):
        assert u.tobytes() == v.tobytes()
    g = put(rt, np.ones((), np.float32))
    gi = [host(K.cross_entropy_backward(rt, g, *a)[0]) for _ in range(2)]
    assert gi[0].tobytes() == gi[1].tobytes()
    for r, ours in zip(("mean", "sum"), first):
        exact = ref.cross_entropy_forward(x.astype(np.float64), t, w.astype(np.float64),
                                          reduction=r)
        b = budget(2, rows) * (np.abs(x).max() + 2)
        close(ours, exact, atol=0, rtol=b, name=r)
    exact_g = ref.cross_entropy_backward(np.array(1.0), x.astype(np.float64), t,
                                         w.astype(np.float64))[0]
    close(gi[0], exact_g, atol=budget(2, rows) * np.abs(exact_g).max(), rtol=0)


@pytest.mark.sim
def test_autograd_and_modules_on_the_simulator():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    t = rng.integers(0, 5, (6, 3))
    t[0, 0] = -100
    w = (0.5 + rng.random(5)).astype(np.float32)
    with cvk.backend("sim"):
        tx = cvk.Tensor(x, requires_grad=True)
        loss = F.cross_entropy(tx, t, cvk.Tensor(w), label_smoothing=0.1)
        loss.backward()
        tl = cvk.Tensor(x, requires_grad=True)
        nn.NLLLoss(weight=cvk.Tensor(w), reduction="sum")(F.log_softmax(tl, dim=1), t).backward()
        tm = cvk.Tensor(x, requires_grad=True)
        nn.CrossEntropyLoss(reduction="sum")(tm, t).backward()
    loss64, gx64, _ = torch_ce(x, t, w, label_smoothing=0.1)
    b = budget(5, 18)
    close(loss.numpy(), loss64, atol=b * 4, rtol=b, name="loss")
    close(tx.grad.numpy(), gx64, atol=b, rtol=b, name="grad")
    _, gl64, _ = torch_ce(x, t, w, reduction="sum")              # nll(log_softmax) == ce
    close(tl.grad.numpy(), gl64, atol=b * 2, rtol=b, name="nll grad")
    _, gm64, _ = torch_ce(x, t, reduction="sum")
    close(tm.grad.numpy(), gm64, atol=b, rtol=b, name="module grad")


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2, 3), (4,), (1, 1)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_nll_reference_matches_torch(shape, reduction, use_weight):
    rng = np.random.default_rng(len(shape))
    C = shape[0] if len(shape) == 1 else shape[1]
    x = rng.standard_normal(shape)
    t = rng.integers(0, C, () if len(shape) == 1 else shape[:1] + shape[2:])
    if t.ndim and t.size > 1:
        t.reshape(-1)[0] = -100
    w = 0.1 + rng.random(C) if use_weight else None
    g = rng.standard_normal(ref.nll_loss_forward(x, t, w, reduction=reduction).shape)
    loss64, gx64, _ = torch_ce(x, t, w, g, nll=True, reduction=reduction)
    close(ref.nll_loss_forward(x, t, w, reduction=reduction), loss64, atol=1e-13,
                 rtol=1e-12)
    gi, gt, gw = ref.nll_loss_backward(g, x, t, w, reduction=reduction)
    close(gi, gx64, atol=1e-13, rtol=1e-12)
    assert gt is None and gw is None


def test_argument_errors_name_the_argument(rt):
    x = put(rt, np.zeros((3, 4), np.float32))
    t = put(rt, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: target must have shape \(3,\)"):
        K.cross_entropy_forward(rt, x, put(rt, np.array([0, 1])))
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have shape \[4\]"):
        K.cross_entropy_forward(rt, x, t, put(rt, np.ones(3, np.float32)))
    with pytest.raises(TypeError, match="cross_entropy: arguments must share one dtype"):
        K.cross_entropy_forward(rt, x, t, put(rt, np.ones(4, np.float16)))
    with pytest.raises(TypeError, match="nll_loss: target must hold integer class indices"):
        K.nll_loss_forward(rt, x, put(rt, np.zeros((3, 4), np.float32)))
    with pytest.raises(ValueError, match="cross_entropy_backward: grad_out must have the "
                                         r"output's shape \(3,\)"):
        K.cross_entropy_backward(rt, put(rt, np.ones((), np.float32)), x, t, reduction="none")
    with pytest.raises(ValueError, match="nll_loss: reduction must be one of"):
        K.nll_loss_forward(rt, x, t, reduction="avg")
    with pytest.raises(ValueError, match="nll_loss: size_average and reduce are deprecated"):
        F.nll_loss(np.zeros((3, 4), np.float32), np.array([0, 1, 2]), size_average=True)
