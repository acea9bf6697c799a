"""cvkernels.reference batch_norm / layer_norm: forward, running statistics and backward."""
import numpy as np
import pytest
from helpers import assert_close, assert_rounded, check_grads, rounding_tol

from cvkernels.reference import (batch_norm, batch_norm_backward, batch_norm_forward, layer_norm,
                                 layer_norm_backward, layer_norm_forward)

SEEDS = [0, 1, 2]
# Central differences with h = 1e-6: truncation h^2 * f''' / 6 ~ 1e-12 for these O(1) functions,
# rounding eps64 * |sum(f*g)| / h ~ 1e-16 * 1e1 / 1e-6 = 1e-9.
FD_TOL = dict(atol=1e-7, rtol=1e-6)


def _t(torch, a, grad=False):
    return None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def _g(t):
    return None if t is None else t.grad.numpy()


# ----------------------------------------------------------------------------- batch_norm

# (input shape, affine?, training, momentum)
BN_CASES = [
    ((8, 5), True, True, 0.1),
    ((4, 3, 7), True, True, 0.3),
    ((2, 3, 5, 4), True, True, 0.1),
    ((2, 3, 5, 4), False, True, 0.1),
    ((1, 4, 3, 3), True, False, 0.1),
    ((3, 2, 1, 1), True, True, 0.1),            # 3 values per channel
    ((2, 6, 33, 31), True, True, 0.1),
    ((5, 2, 4), False, False, 0.1),
]


@pytest.mark.parametrize("shape,affine,training,momentum", BN_CASES)
def test_batch_norm_matches_torch(shape, affine, training, momentum):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.standard_normal(shape) * 3 + 1
    w, b = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    t_rm, t_rv = _t(torch, rm), _t(torch, rv)
    tx, tw, tb = _t(torch, x, True), _t(torch, w, True), _t(torch, b, True)
    ref = torch.nn.functional.batch_norm(tx, t_rm, t_rv, tw, tb, training, momentum, 1e-3)
    g = rng.standard_normal(shape)
    ref.backward(torch.from_numpy(g))

    args = (w, b, training, momentum, 1e-3)
    grads = batch_norm_backward(g, x, rm.copy(), rv.copy(), *args)   # before rm/rv update
    out = batch_norm(x, rm, rv, *args)
    assert_close(out, ref, **rounding_tol(np.float64, ref.detach().numpy()), name="out")
    assert_close(rm, t_rm, **rounding_tol(np.float64, t_rm.numpy()), name="running_mean")
    assert_close(rv, t_rv, **rounding_tol(np.float64, t_rv.numpy()), name="running_var")
    for name, a, t in zip(["grad_input", "grad_weight", "grad_bias"], grads, [tx, tw, tb]):
        if t is None:
            assert a is None, name
        else:
            assert_close(a, t.grad, **rounding_tol(np.float64, t.grad.numpy()), name=name)


def test_batch_norm_without_running_stats_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((4, 3, 2, 5)), rng.standard_normal(3), rng.standard_normal(3)
    tx, tw, tb = _t(torch, x, True), _t(torch, w, True), _t(torch, b, True)
    ref = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)
    g = rng.standard_normal(x.shape)
    ref.backward(torch.from_numpy(g))
    assert_close(batch_norm(x, None, None, w, b, training=True), ref,
                 **rounding_tol(np.float64, ref.detach().numpy()), name="out")
    for name, a, t in zip(["grad_input", "grad_weight", "grad_bias"],
                          batch_norm_backward(g, x, None, None, w, b, training=True),
                          [tx, tw, tb]):
        assert_close(a, t.grad, **rounding_tol(np.float64, t.grad.numpy()), name=name)


def test_batch_norm_cumulative_average_matches_torch_module():
    # momentum=None: torch's BatchNorm2d counts batches and averages with factor 1/count
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    mod = torch.nn.BatchNorm2d(3, momentum=None).double()
    rm, rv = np.zeros(3), np.ones(3)
    nbt = np.zeros(1, np.int64)
    for step in range(3):
        x = rng.standard_normal((2, 3, 4, 5)) * (step + 1)
        ref = mod(torch.from_numpy(x))
        out = batch_norm(x, rm, rv, None, None, True, None, num_batches_tracked=nbt)
        assert_close(out, ref, **rounding_tol(np.float64, ref.detach().numpy()), name="out")
    assert_close(rm, mod.running_mean, **rounding_tol(np.float64, mod.running_mean.numpy()),
                 name="running_mean")
    assert_close(rv, mod.running_var, **rounding_tol(np.float64, mod.running_var.numpy()),
                 name="running_var")
    assert_close(nbt, mod.num_batches_tracked.reshape(1), atol=0, rtol=0,
                 name="num_batches_tracked")
    # with a float momentum the counter still counts, and the factor stays momentum
    batch_norm(x, rm, rv, training=True, momentum=0.5, num_batches_tracked=nbt)
    assert nbt[0] == 4


def test_batch_norm_running_stats_by_hand():
    x = np.array([[1.0], [3.0]])                       # one channel, mean 2, var 1 (unbiased 2)
    rm, rv = np.array([0.0]), np.array([1.0])
    batch_norm(x, rm, rv, training=True, momentum=0.25)
    assert_close(rm, np.array([0.5]), atol=0, rtol=0, name="running_mean")
    assert_close(rv, np.array([0.75 * 1.0 + 0.25 * 2.0]), atol=0, rtol=0, name="running_var")
    rm32, rv32 = rm.astype(np.float32), rv.astype(np.float32)   # updated in their own dtype
    batch_norm(x.astype(np.float16), rm32, rv32, training=True, momentum=0.25)
    assert rm32.dtype == np.float32 and rv32.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_batch_norm_low_precision_is_the_rounded_float64_result(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 3, 5, 6)) * 2).astype(dtype)
    w, b = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    for training in (True, False):
        rm, rv = rng.standard_normal(3).astype(dtype), (rng.random(3) + 0.5).astype(dtype)
        tx, tw, tb = _t(torch, x, True), _t(torch, w, True), _t(torch, b, True)
        ref = torch.nn.functional.batch_norm(tx, _t(torch, rm), _t(torch, rv), tw, tb, training)
        ref.backward(torch.from_numpy(g.astype(np.float64)))
        grads = batch_norm_backward(g, x, rm, rv, w, b, training)
        assert_rounded(batch_norm(x, rm.copy(), rv.copy(), w, b, training),
                        ref.detach().numpy(), dtype, name="out")
        for name, a, t in zip(["grad_input", "grad_weight", "grad_bias"], grads, [tx, tw, tb]):
            assert_rounded(a, t.grad.numpy(), dtype, name=name)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,training", [((3, 2, 2, 2), True), ((4, 3), True),
                                            ((2, 2, 3), False)])
def test_batch_norm_backward_finite_differences(seed, shape, training):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x, w, b = rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c)
    # running stats are not differentiated; in training pass None so nothing is updated
    rm, rv = (None, None) if training else (rng.standard_normal(c), rng.random(c) + 0.5)
    check_grads(lambda x, w, b: batch_norm(x, rm, rv, w, b, training, 0.1, 1e-3),
                lambda g: batch_norm_backward(g, x, rm, rv, w, b, training, 0.1, 1e-3),
                [x, w, b], seed=seed, names=["grad_input", "grad_weight", "grad_bias"],
                **FD_TOL)


# ----------------------------------------------------------------------------- layer_norm

# (input shape, normalized_shape, affine)
LN_CASES = [
    ((4, 10), 10, True),
    ((2, 3, 4, 5), (4, 5), True),
    ((3, 7), [7], False),
    ((2, 3, 5), (3, 5), True),
    ((6, 33), (33,), True),
    ((5,), (5,), True),
]


@pytest.mark.parametrize("shape,ns,affine", LN_CASES)
def test_layer_norm_matches_torch(shape, ns, affine):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) * 2 - 1
    wshape = (ns,) if isinstance(ns, int) else tuple(ns)
    w, b = (rng.standard_normal(wshape), rng.standard_normal(wshape)) if affine else (None, None)
    tx, tw, tb = _t(torch, x, True), _t(torch, w, True), _t(torch, b, True)
    ref = torch.nn.functional.layer_norm(tx, wshape, tw, tb, 1e-4)
    g = rng.standard_normal(shape)
    ref.backward(torch.from_numpy(g))
    out = layer_norm(x, ns, w, b, 1e-4)
    assert_close(out, ref, **rounding_tol(np.float64, ref.detach().numpy()), name="out")
    grads = layer_norm_backward(g, x, ns, w, b, 1e-4)
    for name, a, t in zip(["grad_input", "grad_weight", "grad_bias"], grads, [tx, tw, tb]):
        if t is None:
            assert a is None, name
        else:
            assert_close(a, t.grad, **rounding_tol(np.float64, t.grad.numpy()), name=name)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_layer_norm_low_precision_is_the_rounded_float64_result(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6)).astype(dtype)
    w, b = rng.standard_normal((4, 6)).astype(dtype), rng.standard_normal((4, 6)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tx, tw, tb = _t(torch, x, True), _t(torch, w, True), _t(torch, b, True)
    ref = torch.nn.functional.layer_norm(tx, (4, 6), tw, tb)
    ref.backward(torch.from_numpy(g.astype(np.float64)))
    assert_rounded(layer_norm(x, (4, 6), w, b), ref.detach().numpy(), dtype, name="out")
    for name, a, t in zip(["grad_input", "grad_weight", "grad_bias"],
                          layer_norm_backward(g, x, (4, 6), w, b), [tx, tw, tb]):
        assert_rounded(a, t.grad.numpy(), dtype, name=name)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,ns", [((3, 4), 4), ((2, 2, 3), (2, 3))])
def test_layer_norm_backward_finite_differences(seed, shape, ns):
    rng = np.random.default_rng(seed)
    wshape = shape[len(shape) - (1 if isinstance(ns, int) else len(ns)):]
    x, w, b = rng.standard_normal(shape), rng.standard_normal(wshape), rng.standard_normal(wshape)
    check_grads(lambda x, w, b: layer_norm(x, ns, w, b, 1e-3),
                lambda g: layer_norm_backward(g, x, ns, w, b, 1e-3),
                [x, w, b], seed=seed, names=["grad_input", "grad_weight", "grad_bias"],
                **FD_TOL)


def test_aliases():
    assert batch_norm is batch_norm_forward
    assert layer_norm is layer_norm_forward


# ----------------------------------------------------------------------------- awkward inputs

def test_empty_batch():
    x = np.zeros((0, 3, 4, 4), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    out = batch_norm(x, rm, rv, w, b, training=True)
    assert out.shape == x.shape and out.dtype == np.float32
    # as torch: an empty batch leaves the running statistics alone
    assert_close(rm, np.zeros(3, np.float32), atol=0, rtol=0, name="running_mean")
    assert_close(rv, np.ones(3, np.float32), atol=0, rtol=0, name="running_var")
    gx, gw, gb = batch_norm_backward(out, x, rm, rv, w, b, training=True)
    assert gx.shape == x.shape and gw.shape == gb.shape == (3,)
    assert batch_norm(x, rm, rv).shape == x.shape
    x = np.zeros((0, 5), np.float32)
    out = layer_norm(x, 5, np.ones(5, np.float32))
    assert out.shape == (0, 5) and out.dtype == np.float32
    gx, gw, gb = layer_norm_backward(out, x, 5, np.ones(5, np.float32))
    assert gx.shape == (0, 5) and gw.shape == (5,) and gb is None


def test_non_contiguous_inputs():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 8, 6, 3))[:, ::2].transpose(0, 1, 3, 2)     # (5, 4, 3, 6)
    w, b = rng.standard_normal(8)[::2], rng.standard_normal(8)[1::2]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous)
    xc, wc, bc = (np.ascontiguousarray(a) for a in (x, w, b))
    g = rng.standard_normal(x.shape)
    gnc = np.asfortranarray(g)
    # numpy's pairwise sums follow the memory layout: allow a few eps64 of reordering
    tol = dict(atol=1e-14, rtol=1e-14)
    assert_close(batch_norm(x, None, None, w, b, True), batch_norm(xc, None, None, wc, bc, True),
                 **tol, name="batch_norm")
    for a, c in zip(batch_norm_backward(gnc, x, None, None, w, b, True),
                    batch_norm_backward(g, xc, None, None, wc, bc, True)):
        assert_close(a, c, **tol, name="batch_norm grads")
    ln_w = rng.standard_normal((6, 3)).T                                       # (3, 6) view
    assert_close(layer_norm(x, (3, 6), ln_w), layer_norm(xc, (3, 6), np.ascontiguousarray(ln_w)),
                 **tol, name="layer_norm")
    for a, c in zip(layer_norm_backward(gnc, x, (3, 6), ln_w),
                    layer_norm_backward(g, xc, (3, 6), np.ascontiguousarray(ln_w))):
        if c is not None:
            assert_close(a, c, **tol, name="layer_norm grads")


# ----------------------------------------------------------------------------- bad inputs

def _x(*s, dtype=np.float32):
    return np.zeros(s, dtype)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: batch_norm(_x(1, 3), None, None, training=True), ValueError,
     "more than 1 value per channel.*input"),
    (lambda: batch_norm(_x(1, 3, 1, 1), _x(3), _x(3), training=True), ValueError,
     "more than 1 value per channel"),
    (lambda: batch_norm(_x(4, 3), None, None, training=False), ValueError, "running_mean"),
    (lambda: batch_norm(_x(4, 3), _x(3), None, training=True), ValueError, "running_var"),
    (lambda: batch_norm(_x(4, 3), _x(4), _x(3)), ValueError, "running_mean"),
    (lambda: batch_norm(_x(4, 3), _x(3), _x(3), _x(2)), ValueError, "weight"),
    (lambda: batch_norm(_x(4, 3), _x(3), _x(3), None, _x(3, 1)), ValueError, "bias"),
    (lambda: batch_norm(np.zeros((4, 3), np.int32), _x(3), _x(3)), TypeError, "input"),
    (lambda: batch_norm(_x(4, 3), _x(3), _x(3), _x(3, dtype=np.float64)), TypeError, "weight"),
    (lambda: batch_norm(_x(4), None, None, training=True), ValueError, "input"),
    (lambda: batch_norm(_x(4, 3), _x(3), _x(3), training=True, momentum=None), ValueError,
     "num_batches_tracked"),
    (lambda: batch_norm(_x(4, 3), _x(3), _x(3), training=True, num_batches_tracked=3),
     ValueError, "num_batches_tracked"),
    (lambda: batch_norm_backward(_x(4, 2), _x(4, 3), _x(3), _x(3)), ValueError, "grad_out"),
    (lambda: layer_norm(_x(4, 3), 4), ValueError, "normalized_shape"),
    (lambda: layer_norm(_x(4, 3), (4, 3, 1)), ValueError, "normalized_shape"),
    (lambda: layer_norm(_x(4, 3), 3, _x(4)), ValueError, "weight"),
    (lambda: layer_norm(_x(4, 3), 3, None, _x(3, 1)), ValueError, "bias"),
    (lambda: layer_norm(np.zeros((4, 3), np.int64), 3), TypeError, "input"),
    (lambda: layer_norm_backward(_x(3, 4), _x(4, 3), 3), ValueError, "grad_out"),
])
def test_bad_inputs_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_error_names_the_function():
    with pytest.raises(ValueError, match=r"^batch_norm: Expected more than 1 value per channel"):
        batch_norm(_x(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match=r"^layer_norm: input must have shape \[\*, 4\]"):
        layer_norm(_x(4, 3), 4)
