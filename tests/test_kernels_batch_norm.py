"""batch_norm and batch_norm_act beyond the spec's cases (which tests/test_kernel_specs.py runs on
every runtime, dtype and layout): running statistics against torch CPU (the oracle), momentum=None,
eval, determinism, a large mean, the fused op against the composition of reference ops, errors,
the autograd path and nn.BatchNorm1d/2d on the simulator."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import nn
from cvkernels import reference as ref
from cvkernels.autograd import Tensor
from cvkernels.errors import ArgumentError, ArgumentTypeError, ShapeError
from cvkernels.numerics import U32
from cvkernels.specs import batch_norm as K
from runtimes import put, rt  # noqa: F401  (fixture)

torch = pytest.importorskip("torch")


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _stat_bound(x, value, extra=0.0):
    """fp32 bound for a per-channel statistic of x (mean, variance, running updates): the
    worst-case linear growth (M + 16) u of the kernels' merges over the channel's M elements,
    times the magnitudes involved, plus a few u of the value itself."""
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // x.shape[1]
    big = (np.abs(x).max(axis=axes) + extra) ** 2 + np.abs(x).max(axis=axes)
    return (m + 16) * U32 * big + 8 * U32 * np.abs(value)


def _bn_inputs(shape, seed=0, mean=0.0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    return ((mean + rng.standard_normal(shape)).astype(np.float32),
            rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32),
            (0.3 * rng.standard_normal(c)).astype(np.float32),
            (0.5 + rng.random(c)).astype(np.float32))


# ---- running statistics, momentum, eval: torch CPU as the oracle ------------------------------

@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (9, 33), (6, 1, 2, 8)])
def test_training_forward_and_running_stats_match_torch(rt, shape):
    x, w, b, rm, rv = _bn_inputs(shape, seed=len(shape))
    rm_t, rv_t = torch.tensor(rm, dtype=torch.float64), torch.tensor(rv, dtype=torch.float64)
    y_t, sm_t, si_t = torch.ops.aten.native_batch_norm(
        torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64), rm_t, rv_t, True, 0.1, 1e-5)
    rm_k, rv_k = put(rt, rm.copy()), put(rt, rv.copy())
    y, sm, si = K.batch_norm_forward(rt, put(rt, x), rm_k, rv_k, put(rt, w), put(rt, b), True,
                                     0.1, 1e-5, return_stats=True)
    assert host(y).dtype == np.float32 and host(sm).dtype == host(si).dtype == np.float32
    assert np.all(np.abs(host(sm) - sm_t.numpy()) <= _stat_bound(x, sm_t.numpy()))
    assert np.all(np.abs(host(rm_k) - rm_t.numpy()) <= _stat_bound(x, rm_t.numpy()))
    assert np.all(np.abs(host(rv_k) - rv_t.numpy()) <= _stat_bound(x, rv_t.numpy()))
    # invstd: relative error of the variance, halved by the square root
    var = 1 / si_t.numpy() ** 2
    assert np.all(np.abs(host(si) - si_t.numpy()) <= si_t.numpy() * _stat_bound(x, var) / var)
    yr = y_t.numpy()
    assert np.abs(host(y) - yr).max() <= 1e-4 * (1 + np.abs(yr).max())   # loose sanity; the
    # spec's cases hold the elementwise rounding bound


def test_momentum_none_is_the_cumulative_average_as_torch_module(rt):
    mod = torch.nn.BatchNorm2d(3, momentum=None).double()
    rm, rv = put(rt, np.zeros(3, np.float32)), put(rt, np.ones(3, np.float32))
    nbt = np.zeros((), np.int64)
    rng = np.random.default_rng(3)
    for step in range(3):
        x = (rng.standard_normal((2, 3, 3, 3)) * (step + 1)).astype(np.float32)
        mod(torch.tensor(x, dtype=torch.float64))
        K.batch_norm_forward(rt, put(rt, x), rm, rv, None, None, True, None,
                             num_batches_tracked=nbt)
    assert int(nbt) == int(mod.num_batches_tracked) == 3
    bound = _stat_bound(x, mod.running_var.numpy(), extra=3.0)
    assert np.all(np.abs(host(rm) - mod.running_mean.numpy()) <= bound)
    assert np.all(np.abs(host(rv) - mod.running_var.numpy()) <= bound)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3), (2, 5, 3)])
def test_eval_uses_the_running_stats_as_torch(rt, shape):
    x, w, b, rm, rv = _bn_inputs(shape, seed=7)
    y = K.batch_norm_forward(rt, put(rt, x), put(rt, rm), put(rt, rv), put(rt, w), put(rt, b))
    yt = torch.nn.functional.batch_norm(*(torch.tensor(a, dtype=torch.float64)
                                          for a in (x, rm, rv, w, b)), training=False).numpy()
    xt = np.abs(x.astype(np.float64) - rm.reshape((1, -1) + (1,) * (x.ndim - 2)))
    inv = 1 / np.sqrt(rv.astype(np.float64) + 1e-5).reshape((1, -1) + (1,) * (x.ndim - 2))
    wv, bv = (np.abs(a).reshape(inv.shape) for a in (w, b))
    assert np.all(np.abs(host(y) - yt) <= 8 * U32 * (xt * inv * wv + bv + np.abs(yt)))


def test_empty_batch_and_1d_empty_input(rt):
    rm, rv = put(rt, np.zeros(3, np.float32)), put(rt, np.ones(3, np.float32))
    nbt = np.zeros((), np.int64)
    y = K.batch_norm_forward(rt, put(rt, np.zeros((0, 3, 2, 2), np.float32)), rm, rv,
                             training=True, num_batches_tracked=nbt)
    assert y.shape == (0, 3, 2, 2)
    assert (host(rm) == 0).all() and (host(rv) == 1).all() and int(nbt) == 1   # as torch
    e = K.batch_norm_forward(rt, put(rt, np.zeros((0,), np.float32)), rm, rv)   # torch: as is
    assert e.shape == (0,)
    with pytest.raises(ShapeError, match="batch_norm: input must be at least 2-D"):
        K.batch_norm_forward(rt, put(rt, np.zeros((5,), np.float32)), rm, rv)
    assert tuple(torch.nn.functional.batch_norm(torch.zeros(0), torch.zeros(3),
                                                torch.ones(3)).shape) == (0,)


def test_fp32_weight_with_low_precision_input(rt):
    import ml_dtypes
    x, w, b, rm, rv = _bn_inputs((3, 4, 2, 3), seed=2)
    for dt in (np.float16, ml_dtypes.bfloat16):
        xl = x.astype(dt)
        y = K.batch_norm_forward(rt, put(rt, xl), put(rt, rm.copy()), put(rt, rv.copy()),
                                 put(rt, w), put(rt, b), True)
        r = ref.batch_norm_forward(xl.astype(np.float64), rm.copy(), rv.copy(), w, b, True)
        assert host(y).dtype == dt
        # one rounding to dt of a value computed with fp32 error (the bound above) on top
        assert np.all(np.abs(host(y).astype(np.float64) - r) <= 2 * np.abs(r) *
                      float(np.finfo(np.float16).eps if dt is np.float16 else 2 ** -8) + 1e-4)
        gx, gw, gb = K.batch_norm_backward(rt, put(rt, xl), put(rt, xl), None, None,
                                           put(rt, w), put(rt, b), True)
        assert host(gw).dtype == host(gb).dtype == np.float32 and host(gx).dtype == dt


# ---- determinism and numerical stability ------------------------------------------------------

def test_several_chunks_and_bitwise_repeatable(rt):
    shape = (4, 2, 16, 33)
    _, chunks, _ = K.plan(rt.device(), K.STATS, K.FAMILY.dtypes[0], 2, 4 * 16 * 33, False)
    assert chunks > 1   # the merge across chunks is exercised
    x, w, b, rm, rv = _bn_inputs(shape, seed=5)
    g = np.random.default_rng(6).standard_normal(shape).astype(np.float32)

    def once():
        y, sm, si = K.batch_norm_forward(rt, put(rt, x), put(rt, rm.copy()), put(rt, rv.copy()),
                                         put(rt, w), put(rt, b), True, return_stats=True)
        grads = K.batch_norm_backward(rt, put(rt, g), put(rt, x), None, None, put(rt, w),
                                      put(rt, b), True, save_mean=sm, save_invstd=si)
        return [host(a) for a in (y, sm, si) + grads]
    for u, v in zip(once(), once()):
        np.testing.assert_array_equal(u.view(np.uint32), v.view(np.uint32))


def test_large_mean_keeps_the_variance(rt):
    """mean 1e4, unit variance: Welford keeps the variance to a few ulps of the mean's
    rounding; E[x^2] - E[x]^2 in fp32 would lose it (checked: it fails the same bound)."""
    shape = (8, 2, 16, 16)
    x = _bn_inputs(shape, seed=11, mean=1e4)[0]
    y, sm, si = K.batch_norm_forward(rt, put(rt, x), None, None, training=True,
                                     return_stats=True)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    var = x64.var(axis=(0, 2, 3))
    m = x.size // 2
    # variance error from the mean's: (M + 16) u |mean| per merge level times the spread
    tol_var = (m + 16) * U32 * 8.0 * var     # relative 1.2e-3 * 8 here, no |mean|^2 term
    assert np.all(np.abs(1 / host(si).astype(np.float64) ** 2 - 1e-5 - var) <= tol_var)
    assert np.all(np.abs(host(sm) - mean) <= 4 * U32 * np.abs(mean) + (m + 16) * U32 * 4)
    naive = (x * x).mean(axis=(0, 2, 3), dtype=np.float32) - \
        x.mean(axis=(0, 2, 3), dtype=np.float32) ** 2
    assert np.any(np.abs(naive - var) > tol_var)      # the bound has teeth
    r = ref.batch_norm_forward(x64, None, None, training=True)
    assert np.abs(host(y) - r).max() <= 2e-3        # |mean| * u * (a few) / std: ~6e-4 each


# ---- the fused op -----------------------------------------------------------------------------

def _act_inputs(shape, seed=0):
    x, w, b, rm, rv = _bn_inputs(shape, seed)
    rng = np.random.default_rng(seed + 1)
    return x, w, b, rm, rv, rng.standard_normal(shape).astype(np.float32), \
        rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("training", [True, False])
def test_reference_fused_op_is_the_composition(training):
    x, w, b, rm, rv, res, g = (a.astype(np.float64) for a in _act_inputs((3, 4, 2, 5), 1))
    y = ref.batch_norm_act_forward(x, rm.copy(), rv.copy(), w, b, training, residual=res)
    z = ref.batch_norm_forward(x, rm.copy(), rv.copy(), w, b, training) + res
    np.testing.assert_allclose(y, ref.relu_forward(z), rtol=1e-14, atol=1e-14)
    gx, gw, gb, gr = ref.batch_norm_act_backward(g, x, rm, rv, w, b, training, residual=res)
    (gz,) = ref.relu_backward(g, z)
    np.testing.assert_allclose(gr, gz, rtol=0, atol=0)
    for u, v in zip((gx, gw, gb), ref.batch_norm_backward(gz, x, rm, rv, w, b, training)):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("training", [True, False])
def test_reference_fused_backward_finite_differences(seed, training):
    from helpers import check_grads
    rng = np.random.default_rng(seed)
    x, r = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal((3, 2, 2, 2))
    w, b, rm, rv = rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal(2), \
        0.5 + rng.random(2)

    def f(x, w, b, r):
        return ref.batch_norm_act_forward(x, rm.copy(), rv.copy(), w, b, training, 0.1, 1e-3,
                                          residual=r)
    _, sm, si = ref.batch_norm_act_forward(x, rm.copy(), rv.copy(), w, b, training, 0.1, 1e-3,
                                           residual=r, return_stats=True)
    for saved in ({}, {"save_mean": sm, "save_invstd": si, "output": f(x, w, b, r)}):
        check_grads(f, lambda g, saved=saved: ref.batch_norm_act_backward(
                        g, x, rm, rv, w, b, training, 0.1, 1e-3, residual=r, **saved),
                    [x, w, b, r], seed=seed, atol=1e-7, rtol=1e-6,
                    names=["grad_input", "grad_weight", "grad_bias", "grad_residual"])


@pytest.mark.parametrize("residual", [True, False])
def test_kernel_fused_op_matches_the_composition(rt, residual):
    x, w, b, rm, rv, res, g = _act_inputs((2, 3, 4, 4), 4)
    r = put(rt, res) if residual else None
    y, sm, si = K.batch_norm_act_forward(rt, put(rt, x), put(rt, rm.copy()), put(rt, rv.copy()),
                                         put(rt, w), put(rt, b), True, residual=r,
                                         return_stats=True)
    yb = host(K.batch_norm_forward(rt, put(rt, x), put(rt, rm.copy()), put(rt, rv.copy()),
                                   put(rt, w), put(rt, b), True))
    z = yb + (res if residual else 0)
    # one fp32 rounding of the add apart (the fused pass adds before rounding to fp32)
    assert np.all(np.abs(host(y) - np.maximum(z, 0)) <= 2 * U32 * np.abs(z))
    grads = K.batch_norm_act_backward(rt, put(rt, g), put(rt, x), None, None, put(rt, w),
                                      put(rt, b), True, residual=r, save_mean=sm,
                                      save_invstd=si, output=y)
    gz = np.where(host(y) > 0, g, 0).astype(np.float32)
    plain = K.batch_norm_backward(rt, put(rt, gz), put(rt, x), None, None, put(rt, w),
                                  put(rt, b), True, save_mean=sm, save_invstd=si)
    for u, v in zip(grads[:3], plain):
        np.testing.assert_array_equal(host(u), host(v))   # same passes, same order
    if residual:
        np.testing.assert_array_equal(host(grads[3]), gz)
    else:
        assert grads[3] is None


# ---- errors -----------------------------------------------------------------------------------

def test_errors_name_the_argument(rt):
    x = put(rt, np.zeros((2, 3, 2, 2), np.float32))
    c3 = put(rt, np.ones(3, np.float32))
    with pytest.raises(ShapeError, match=r"batch_norm: weight must have shape \[C\] = \(3,\)"):
        K.batch_norm_forward(rt, x, c3, c3, put(rt, np.ones(4, np.float32)))
    with pytest.raises(ArgumentError, match="running_mean and running_var must be defined"):
        K.batch_norm_forward(rt, x, None, None)
    with pytest.raises(ArgumentTypeError, match="batch_norm: weight must have input's dtype"):
        K.batch_norm_forward(rt, put(rt, np.zeros((2, 3), np.float16)), None, None,
                             put(rt, np.ones(3, np.float64)), training=True)
    with pytest.raises(ShapeError, match="batch_norm_act: residual must have input's shape"):
        K.batch_norm_act_forward(rt, x, c3, c3, residual=put(rt, np.zeros((2, 3), np.float32)))
    with pytest.raises(ArgumentError, match="batch_norm_act: activation must be 'relu'"):
        K.batch_norm_act_forward(rt, x, c3, c3, activation="gelu")
    with pytest.raises(ArgumentError, match="save_mean and save_invstd must both be given"):
        K.batch_norm_backward(rt, x, x, c3, c3, save_mean=c3)
    with pytest.raises(ShapeError, match=r"save_invstd must have shape \[C\]"):
        K.batch_norm_backward(rt, x, x, c3, c3, save_mean=c3,
                              save_invstd=put(rt, np.ones(2, np.float32)))
    with pytest.raises(ValueError, match="batch_norm_backward: grad_out must have"):
        K.batch_norm_backward(rt, put(rt, np.zeros((2, 3), np.float32)), x, c3, c3)
    with pytest.raises(ArgumentError, match="Expected more than 1 value per channel"):
        K.batch_norm_forward(rt, put(rt, np.zeros((1, 3), np.float32)), c3, c3, training=True)
    with pytest.raises(ShapeError, match="BatchNorm1d: expected 2-D or 3-D input"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 2, 2), np.float32))


# ---- autograd and nn on the simulator ---------------------------------------------------------

def _torch_bn(x, w, b, rm, rv, training, residual=None):
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    trm, trv = torch.tensor(rm, dtype=torch.float64), torch.tensor(rv, dtype=torch.float64)
    y = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training)
    tr = None
    if residual is not None:
        tr = torch.tensor(residual, dtype=torch.float64, requires_grad=True)
        y = torch.relu(y + tr)
    return y, (tx, tw, tb) + ((tr,) if tr is not None else ()), trm, trv


@pytest.mark.sim
@pytest.mark.parametrize("backend", ["sim", "cpu"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fused", [False, True])
def test_autograd_matches_torch(backend, training, fused):
    x, w, b, rm, rv, res, g = _act_inputs((3, 4, 2, 3), seed=9)
    yt, leaves, trm, trv = _torch_bn(x, w, b, rm, rv, training, res if fused else None)
    yt.backward(torch.tensor(g, dtype=torch.float64))
    tx, tw, tb = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True), \
        Tensor(b, requires_grad=True)
    tr = Tensor(res, requires_grad=True)
    rm_k, rv_k = rm.copy(), rv.copy()
    with cvk.backend(backend):
        if fused:
            y = F.batch_norm_act(tx, rm_k, rv_k, tw, tb, training, residual=tr)
        else:
            y = F.batch_norm(tx, rm_k, rv_k, tw, tb, training)
        after = rm_k.copy(), rv_k.copy()
        rm_k[...] = 7.0   # the backward must not read the running statistics
        rv_k[...] = 7.0
        y.backward(Tensor(g))
    tol = 1e-4   # fp32 kernels vs float64 torch on O(1) values (the spec's cases hold the
    # rounding bounds; this checks the wiring: saves, grads, residual)
    np.testing.assert_allclose(host(y.data), yt.detach().numpy(), atol=tol, rtol=tol)
    for ours, theirs in zip((tx, tw, tb) + ((tr,) if fused else ()), leaves):
        np.testing.assert_allclose(host(ours.grad.data), theirs.grad.numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(after[0], trm.numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(after[1], trv.numpy(), atol=tol, rtol=tol)


@pytest.mark.sim
@pytest.mark.parametrize("cls,shape", [("BatchNorm2d", (3, 4, 2, 3)), ("BatchNorm1d", (5, 4)),
                                       ("BatchNorm1d", (3, 4, 6))])
@pytest.mark.parametrize("kw", [{}, {"affine": False}, {"track_running_stats": False},
                                {"momentum": None}])
def test_nn_batch_norm_on_sim_matches_torch(cls, shape, kw):
    rng = np.random.default_rng(12)
    ours, theirs = getattr(nn, cls)(4, **kw), getattr(torch.nn, cls)(4, **kw).double()
    for step in range(2):
        x = (rng.standard_normal(shape) + step).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        tx = Tensor(x, requires_grad=True)
        with cvk.backend("sim"):
            y = ours(tx)
            y.backward(Tensor(g))
        ttx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        yt = theirs(ttx)
        yt.backward(torch.tensor(g, dtype=torch.float64))
        np.testing.assert_allclose(host(y.data), yt.detach().numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(host(tx.grad.data), ttx.grad.numpy(), atol=1e-4, rtol=1e-4)
    if kw.get("affine", True):
        np.testing.assert_allclose(host(ours.weight.grad.data), theirs.weight.grad.numpy(),
                                   atol=1e-4, rtol=1e-4)
    if kw.get("track_running_stats", True):
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5)
    else:
        assert ours.running_mean is None and theirs.running_mean is None
    ours.eval()
    theirs.eval()
    with cvk.backend("sim"):
        ye = ours(Tensor(x))
    np.testing.assert_allclose(host(ye.data), theirs(torch.tensor(x, dtype=torch.float64))
                               .detach().numpy(), atol=1e-4, rtol=1e-4)
