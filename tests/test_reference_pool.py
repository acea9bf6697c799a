"""cvkernels.reference max_pool2d / avg_pool2d / adaptive_avg_pool2d: forward and backward."""
import numpy as np
import pytest
from helpers import assert_close, assert_rounded, check_grads, rounding_tol

from cvkernels.reference import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward,
                                 adaptive_avg_pool2d_forward, avg_pool2d, avg_pool2d_backward,
                                 avg_pool2d_forward, max_pool2d, max_pool2d_backward,
                                 max_pool2d_forward)

SEEDS = [0, 1, 2]
# Pooling is (piecewise) linear: central differences carry only rounding,
# eps64 * |sum(f*g)| / h ~ 1e-16 * 1e1 / 1e-6 = 1e-9.
FD_TOL = dict(atol=1e-7, rtol=1e-6)


def _torch_run(fn_name, x, kwargs, grad_out=None):
    """torch.nn.functional.<fn_name>(x, **kwargs) in float64; returns out[, grad_input]."""
    torch = pytest.importorskip("torch")
    t = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    out = getattr(torch.nn.functional, fn_name)(t, **kwargs)
    if isinstance(out, tuple):
        return tuple(o.detach().numpy() for o in out)
    if grad_out is None:
        return out.detach().numpy()
    out.backward(torch.from_numpy(np.asarray(grad_out, np.float64)))
    return out.detach().numpy(), t.grad.numpy()


def _distinct(rng, shape):
    """Values at least 1/size apart, so no tie and no argmax flips under a 1e-6 nudge."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) / n - 0.5).astype(np.float64)


# (input shape, kwargs)
MAX_CASES = [
    ((2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 8, 8), dict(kernel_size=2)),
    ((2, 2, 9, 10), dict(kernel_size=(3, 2), stride=(2, 3), padding=1, dilation=(2, 1),
                         ceil_mode=True)),
    ((1, 1, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),           # ceil adds one
    ((1, 1, 5, 6), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # ... and drops one
    ((3, 11, 7), dict(kernel_size=3, stride=1, padding=1)),                  # unbatched
    ((2, 3, 31, 33), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((1, 2, 6, 7), dict(kernel_size=(1, 4), stride=(1, 3), padding=(0, 2), dilation=(1, 2))),
]

AVG_CASES = [
    ((2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 3, 7, 9), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((1, 2, 8, 8), dict(kernel_size=2)),
    ((2, 2, 9, 10), dict(kernel_size=(3, 2), stride=(2, 3), padding=1, ceil_mode=True)),
    ((2, 2, 9, 10), dict(kernel_size=(3, 2), stride=(2, 3), padding=1, ceil_mode=True,
                         count_include_pad=False)),
    ((1, 1, 5, 6), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    ((1, 1, 5, 5), dict(kernel_size=3, stride=2, ceil_mode=True, count_include_pad=False)),
    ((2, 3, 6, 7), dict(kernel_size=3, padding=1, divisor_override=5)),
    ((2, 3, 6, 7), dict(kernel_size=(2, 3), padding=(1, 1), ceil_mode=True, divisor_override=-2)),
    ((3, 11, 7), dict(kernel_size=3, stride=1, padding=1)),
    ((2, 3, 31, 33), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
]

ADAPTIVE_CASES = [
    ((2, 3, 7, 5), (3, 2)),
    ((1, 2, 8, 8), 8),
    ((1, 2, 5, 7), (None, 3)),
    ((1, 2, 4, 4), (6, 7)),          # more outputs than inputs: overlapping windows
    ((2, 3, 9, 11), 1),              # global
    ((3, 13, 10), (4, None)),        # unbatched
    ((1, 2, 31, 33), (7, 7)),
]


# ----------------------------------------------------------------------------- vs torch

@pytest.mark.parametrize("shape,kw", MAX_CASES)
def test_max_pool2d_matches_torch(shape, kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    out, idx = max_pool2d(x, **kw, return_indices=True)
    ref, ref_idx = _torch_run("max_pool2d", x, dict(kw, return_indices=True))
    assert_close(out, ref, atol=0, rtol=0, name="out")         # a max is exact
    assert_close(idx, ref_idx, atol=0, rtol=0, name="indices")
    g = rng.standard_normal(out.shape)
    _, ref_gx = _torch_run("max_pool2d", x, kw, g)
    (gx,) = max_pool2d_backward(g, x, **kw)
    assert_close(gx, ref_gx, **rounding_tol(np.float64, ref_gx), name="grad_input")
    (gx_idx,) = max_pool2d_backward(g, x, **kw, indices=idx)
    assert_close(gx_idx, ref_gx, **rounding_tol(np.float64, ref_gx), name="grad_input (indices)")


@pytest.mark.parametrize("shape,kw", AVG_CASES)
def test_avg_pool2d_matches_torch(shape, kw):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    out = avg_pool2d(x, **kw)
    g = rng.standard_normal(out.shape)
    ref, ref_gx = _torch_run("avg_pool2d", x, kw, g)
    (gx,) = avg_pool2d_backward(g, x, **kw)
    assert_close(out, ref, **rounding_tol(np.float64, ref), name="out")
    assert_close(gx, ref_gx, **rounding_tol(np.float64, ref_gx), name="grad_input")


@pytest.mark.parametrize("shape,size", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_torch(shape, size):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    out = adaptive_avg_pool2d(x, size)
    g = rng.standard_normal(out.shape)
    ref, ref_gx = _torch_run("adaptive_avg_pool2d", x, dict(output_size=size), g)
    (gx,) = adaptive_avg_pool2d_backward(g, x, size)
    assert_close(out, ref, **rounding_tol(np.float64, ref), name="out")
    assert_close(gx, ref_gx, **rounding_tol(np.float64, ref_gx), name="grad_input")


def test_max_pool2d_ties_nan_and_inf_follow_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    ties = rng.integers(0, 3, (2, 2, 7, 8)).astype(np.float64)    # many ties: first max wins
    nan = rng.standard_normal((1, 2, 6, 6))
    nan[0, 0, 1, 1] = nan[0, 1, 2, 3] = nan[0, 1, 3, 3] = np.nan    # NaN propagates
    neg_inf = np.full((1, 1, 4, 5), -np.inf)                        # index of the first valid
    for x, kw in [(ties, dict(kernel_size=3, stride=2, padding=1)),
                  (ties, dict(kernel_size=2, stride=1, dilation=2)),
                  (nan, dict(kernel_size=3, stride=1, padding=1)),
                  (neg_inf, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True))]:
        out, idx = max_pool2d(x, **kw, return_indices=True)
        ref, ref_idx = F.max_pool2d(torch.from_numpy(x), **kw, return_indices=True)
        if np.isinf(ref.numpy()).any():
            # assert_close takes inf - inf = NaN as within tolerance: compare exactly instead
            assert np.array_equal(out, ref.numpy()), "out"
        else:
            assert_close(out, ref, atol=0, rtol=0, name="out")
        assert_close(idx, ref_idx, atol=0, rtol=0, name="indices")
    t = torch.tensor(ties, requires_grad=True)
    F.max_pool2d(t, 3, 1, 1).sum().backward()
    (gx,) = max_pool2d_backward(np.ones((2, 2, 7, 8)), ties, 3, 1, 1)
    assert_close(gx, t.grad, atol=0, rtol=0, name="grad_input (ties)")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_is_the_rounded_float64_result(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    for name, fn, kw in [
        ("max_pool2d", max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
        ("avg_pool2d", avg_pool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
        ("adaptive_avg_pool2d", adaptive_avg_pool2d, dict(output_size=(4, 3))),
    ]:
        out = fn(x, **kw)
        ref = _torch_run(name, x, kw)
        assert_rounded(out, ref, dtype, name=name)
        g = rng.standard_normal(out.shape).astype(dtype)
        _, ref_gx = _torch_run(name, x, kw, g)
        (gx,) = globals()[f"{name}_backward"](g, x, **kw)
        assert_rounded(gx, ref_gx, dtype, name=f"{name} grad")


def test_aliases():
    assert max_pool2d is max_pool2d_forward
    assert avg_pool2d is avg_pool2d_forward
    assert adaptive_avg_pool2d is adaptive_avg_pool2d_forward


def test_output_size_rules_without_torch():
    x = np.zeros((1, 1, 5, 5))
    assert max_pool2d(x, 2, 2).shape == (1, 1, 2, 2)
    assert max_pool2d(x, 2, 2, ceil_mode=True).shape == (1, 1, 3, 3)
    # ceil_mode: the window at 3*2 - 1 = 5 would start in the right padding: dropped
    assert max_pool2d(x, 2, 2, padding=1, ceil_mode=True).shape == (1, 1, 3, 3)
    assert avg_pool2d(np.zeros((1, 1, 6, 6)), 2, 2, padding=1, ceil_mode=True).shape == (1, 1, 4, 4)
    assert adaptive_avg_pool2d(x, (0, 2)).shape == (1, 1, 0, 2)


def test_avg_pool2d_divisor_by_hand():
    x = np.ones((1, 1, 3, 3))
    # corner window of a 3x3/pad 1 pool sees 4 real pixels out of 9
    assert avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0] == pytest.approx(4 / 9, rel=1e-15)
    assert avg_pool2d(x, 3, 1, 1, count_include_pad=False)[0, 0, 0, 0] == 1.0
    assert avg_pool2d(x, 3, 1, 1, divisor_override=2)[0, 0, 0, 0] == 2.0


# ----------------------------------------------------------------------------- finite differences

FD_MAX = [
    ((1, 2, 5, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 1, 5, 5), dict(kernel_size=2, stride=1, dilation=2)),
]
FD_AVG = [
    ((1, 2, 5, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                        count_include_pad=False)),
    ((2, 1, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 4, 5), dict(kernel_size=(2, 3), padding=(1, 0), divisor_override=3)),
]
FD_ADAPTIVE = [((1, 2, 5, 7), (3, 4)), ((2, 1, 3, 4), (5, None))]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,kw", FD_MAX)
def test_max_pool2d_backward_finite_differences(seed, shape, kw):
    x = _distinct(np.random.default_rng(seed), shape)
    check_grads(lambda x: max_pool2d(x, **kw), lambda g: max_pool2d_backward(g, x, **kw), [x],
                seed=seed, names=["grad_input"], **FD_TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,kw", FD_AVG)
def test_avg_pool2d_backward_finite_differences(seed, shape, kw):
    x = np.random.default_rng(seed).standard_normal(shape)
    check_grads(lambda x: avg_pool2d(x, **kw), lambda g: avg_pool2d_backward(g, x, **kw), [x],
                seed=seed, names=["grad_input"], **FD_TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,size", FD_ADAPTIVE)
def test_adaptive_avg_pool2d_backward_finite_differences(seed, shape, size):
    x = np.random.default_rng(seed).standard_normal(shape)
    check_grads(lambda x: adaptive_avg_pool2d(x, size),
                lambda g: adaptive_avg_pool2d_backward(g, x, size), [x],
                seed=seed, names=["grad_input"], **FD_TOL)


# ----------------------------------------------------------------------------- awkward inputs

@pytest.mark.parametrize("fn,kw,out_hw", [
    (max_pool2d, dict(kernel_size=3, stride=2, padding=1), (4, 3)),
    (avg_pool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (4, 4)),
    (adaptive_avg_pool2d, dict(output_size=(2, 3)), (2, 3)),
])
def test_empty_batch(fn, kw, out_hw):
    x = np.zeros((0, 3, 7, 6), np.float32)
    out = fn(x, **kw)
    assert out.shape == (0, 3) + out_hw and out.dtype == np.float32
    (gx,) = globals()[f"{fn.__name__.replace('_forward', '')}_backward"](out, x, **kw)
    assert gx.shape == x.shape and gx.dtype == np.float32


def test_max_pool2d_empty_batch_indices():
    out, idx = max_pool2d(np.zeros((0, 2, 4, 4)), 2, return_indices=True)
    assert out.shape == idx.shape == (0, 2, 2, 2) and idx.dtype == np.int64


@pytest.mark.parametrize("name,kw", [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=(3, 2), stride=(1, 2), padding=1, count_include_pad=False)),
    ("adaptive_avg_pool2d", dict(output_size=(3, 5))),
])
def test_non_contiguous_inputs(name, kw):
    fwd, bwd = globals()[name], globals()[f"{name}_backward"]
    rng = np.random.default_rng(5)
    # small integers (and dyadic averages of them) make every summation order agree exactly
    x = rng.integers(-4, 5, (3, 8, 7, 9)).astype(np.float64)[:, ::3].transpose(1, 0, 3, 2)
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    out = fwd(x, **kw)
    assert_close(out, fwd(xc, **kw), atol=0, rtol=0, name="out")
    g = rng.integers(-2, 3, out.shape).astype(np.float64)
    g_nc = np.asfortranarray(g)
    assert_close(bwd(g_nc, x, **kw)[0], bwd(g, xc, **kw)[0], atol=0, rtol=0, name="grad_input")


# ----------------------------------------------------------------------------- bad inputs

def _x(*s, dtype=np.float32):
    return np.zeros(s, dtype)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: max_pool2d(np.zeros((1, 1, 4, 4), bool), 2), TypeError, "input"),
    (lambda: max_pool2d(_x(4, 4), 2), ValueError, "input"),
    (lambda: max_pool2d(_x(1, 1, 1, 4, 4), 2), ValueError, "input"),
    (lambda: max_pool2d(_x(1, 0, 4, 4), 2), ValueError, "input"),
    (lambda: max_pool2d(_x(1, 1, 4, 4), 2, padding=2), ValueError, "padding"),
    (lambda: max_pool2d(_x(1, 1, 4, 4), 3, padding=(1, 2)), ValueError, "padding"),
    (lambda: max_pool2d(_x(1, 1, 4, 4), 0), ValueError, "kernel_size"),
    (lambda: max_pool2d(_x(1, 1, 4, 4), 2, stride=0), ValueError, "stride"),
    (lambda: max_pool2d(_x(1, 1, 4, 4), 2, dilation=0), ValueError, "dilation"),
    (lambda: max_pool2d(_x(1, 1, 1, 1), 3, padding=1, dilation=2), ValueError, "output size"),
    (lambda: max_pool2d(_x(1, 1, 2, 2), 3), ValueError, "output size"),
    (lambda: max_pool2d_backward(_x(1, 1, 3, 3), _x(1, 1, 4, 4), 2), ValueError, "grad_out"),
    (lambda: max_pool2d_backward(_x(1, 1, 2, 2), _x(1, 1, 4, 4), 2,
                                 indices=np.zeros((1, 1, 2, 3), np.int64)), ValueError, "indices"),
    (lambda: avg_pool2d(np.zeros((1, 1, 4, 4), np.int64), 2), TypeError, "input"),
    (lambda: avg_pool2d(_x(1, 1, 4, 4), 2, padding=2, ceil_mode=True), ValueError, "padding"),
    (lambda: avg_pool2d(_x(1, 1, 4, 4), 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: avg_pool2d(_x(1, 1, 4, 4), (2, 2, 2)), ValueError, "kernel_size"),
    (lambda: adaptive_avg_pool2d(_x(1, 1, 4, 4), (2, 2, 2)), ValueError, "output_size"),
    (lambda: adaptive_avg_pool2d(_x(1, 1, 4, 4), -1), ValueError, "output_size"),
    (lambda: adaptive_avg_pool2d(_x(4, 4), 2), ValueError, "input"),
    (lambda: adaptive_avg_pool2d(np.zeros((1, 1, 4, 4), bool), 2), TypeError, "input"),
])
def test_bad_inputs_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_error_names_the_function():
    with pytest.raises(ValueError, match=r"^max_pool2d: padding must be"):
        max_pool2d(_x(1, 1, 4, 4), 2, padding=2)
    with pytest.raises(ValueError, match=r"^avg_pool2d_backward: grad_out"):
        avg_pool2d_backward(_x(1, 1, 3, 3), _x(1, 1, 4, 4), 2)
