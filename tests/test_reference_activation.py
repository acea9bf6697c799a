"""Activation and dropout references: against torch (optional oracle), finite differences,
dtype handling, empty and non-contiguous inputs, and argument errors."""
import numpy as np
import pytest

from cvkernels.reference import activation as A
from helpers import assert_close, check_grads

# Rounding-derived tolerances: float64 ops differ from torch by a few ulps (2.2e-16);
# float32 transcendental implementations (SLEEF vs libm) by a few ulps of 1.2e-7.
TOL = {np.float64: dict(atol=1e-14, rtol=1e-12), np.float32: dict(atol=1e-7, rtol=1e-6)}

# name -> (reference kwargs, torch callable, backward takes output instead of input)
OPS = {
    "relu": ({}, lambda F, x: F.relu(x), False),
    "leaky_relu": ({"negative_slope": 0.2}, lambda F, x: F.leaky_relu(x, 0.2), False),
    "elu": ({"alpha": 1.3}, lambda F, x: F.elu(x, 1.3), False),
    "gelu_none": ({"approximate": "none"}, lambda F, x: F.gelu(x, approximate="none"), False),
    "gelu_tanh": ({"approximate": "tanh"}, lambda F, x: F.gelu(x, approximate="tanh"), False),
    "sigmoid": ({}, lambda F, x: F.sigmoid(x), True),
    "tanh": ({}, lambda F, x: F.tanh(x), True),
}


def _fns(name):
    base = name.split("_")[0] if name.startswith("gelu") else name
    return getattr(A, f"{base}_forward"), getattr(A, f"{base}_backward")


def _backward(name, g, x, out):
    kw, _, uses_out = OPS[name]
    _, bwd = _fns(name)
    return bwd(g, out if uses_out else x, **kw)


def _inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.reshape(-1)[:4] = np.array([0.0, -0.0, 25.0, -25.0])[: x.size][:4]  # kinks and saturation
    return x


def _torch_fwd_bwd(name, x, g):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    xt = torch.tensor(x, requires_grad=True)
    yt = OPS[name][1](F, xt)
    yt.backward(torch.tensor(g))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 31, 33), (2, 0, 5)])
def test_forward_backward_vs_torch_float64(name, shape):
    kw, _, _ = OPS[name]
    x = _inputs(shape, np.float64, 0)
    g = np.random.default_rng(1).standard_normal(shape)
    ty, tg = _torch_fwd_bwd(name, x, g)
    out = _fns(name)[0](x, **kw)
    assert_close(out, ty, **TOL[np.float64], name=f"{name} forward")
    assert_close(_backward(name, g, x, out)[0], tg, **TOL[np.float64], name=f"{name} grad_input")


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("shape", [(1,), (3, 31, 33)])
def test_float32_error_at_most_twice_torch(name, shape):
    """float32: our error against the float64 result is at most 2x torch float32's error, plus
    a few float32 ulps (torch's gelu/tanh-grad formulas cancel; ours may cancel differently)."""
    kw, _, _ = OPS[name]
    x = _inputs(shape, np.float32, 0)
    g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ty, tg = _torch_fwd_bwd(name, x, g)
    ey, eg = _torch_fwd_bwd(name, x.astype(np.float64), g.astype(np.float64))
    out = _fns(name)[0](x, **kw)
    gx = _backward(name, g, x, out)[0]
    eps = float(np.finfo(np.float32).eps)
    for ours, theirs, exact, what in ((out, ty, ey, "forward"), (gx, tg, eg, "grad_input")):
        assert ours.dtype == np.float32
        torch_err = float(np.max(np.abs(theirs - exact)))
        scale = float(np.max(np.abs(exact)))
        assert_close(ours, exact, atol=2 * torch_err + 4 * eps * scale, rtol=4 * eps,
                     name=f"{name} {what}", check_dtype=False)


@pytest.mark.parametrize("name", list(OPS))
def test_nan_propagates_like_torch(name):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    kw, tfn, _ = OPS[name]
    x = np.array([np.nan, 1.0, -1.0, np.inf, -np.inf])
    with np.errstate(invalid="ignore"):           # gelu(-inf) computes -inf * 0
        assert_close(_fns(name)[0](x, **kw), tfn(F, torch.tensor(x)), **TOL[np.float64],
                     name=name)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_finite_differences(name, seed):
    kw, _, uses_out = OPS[name]
    fwd, _ = _fns(name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4)) * 2
    x += np.sign(x) * 0.1                              # keep away from the kink at 0
    check_grads(lambda a: fwd(a, **kw), lambda g: _backward(name, g, x, fwd(x, **kw)), [x],
                seed=seed, names=[f"{name} grad_input"])


@pytest.mark.parametrize("name", list(OPS))
def test_float16_in_float16_out(name):
    kw, _, _ = OPS[name]
    fwd, _ = _fns(name)
    x = _inputs((5, 6), np.float16, 3)
    out = fwd(x, **kw)
    # one fp16 rounding of the float32-computed value: half an ulp of 2^-10
    assert_close(out, fwd(x.astype(np.float64), **kw).astype(np.float16), atol=1e-3, rtol=1e-3,
                 name=name)
    (gx,) = _backward(name, np.ones_like(x), x, out)
    assert gx.dtype == np.float16


@pytest.mark.parametrize("name", list(OPS))
def test_non_contiguous(name):
    kw, _, _ = OPS[name]
    fwd, _ = _fns(name)
    base = _inputs((6, 10), np.float64, 4)
    view = base[::2, 1::3].T
    assert not view.flags.c_contiguous
    out = fwd(view, **kw)
    assert_close(out, fwd(np.ascontiguousarray(view), **kw), atol=0, rtol=0, name=name)
    g = np.ones_like(view)
    assert_close(_backward(name, g, view, out)[0],
                 _backward(name, np.ascontiguousarray(g), np.ascontiguousarray(view),
                           np.ascontiguousarray(out))[0], atol=0, rtol=0, name=name)


def test_inplace_writes_into_input():
    x = np.array([-1.0, 2.0])
    out = A.relu(x, inplace=True)
    assert out is x and np.array_equal(x, [0.0, 2.0])


@pytest.mark.parametrize("name", list(OPS))
def test_bad_dtype_raises(name):
    kw, _, _ = OPS[name]
    fwd, _ = _fns(name)
    fn = name.split("_")[0] if name.startswith("gelu") else name
    with pytest.raises(TypeError, match=f"{fn}: input"):
        fwd(np.arange(3), **kw)


@pytest.mark.parametrize("name", list(OPS))
def test_grad_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match="grad_out"):
        _backward(name, np.ones(3), np.ones(4), np.ones(4))


def test_gelu_bad_approximate():
    with pytest.raises(ValueError, match="gelu: approximate"):
        A.gelu(np.ones(2), approximate="fast")


# ---------------------------------------------------------------------------------- dropout
S = dict(seed=7, offset=0)


def test_dropout_needs_seed_and_offset():
    with pytest.raises(ValueError, match="dropout: seed is required"):
        A.dropout(np.ones(4), p=0.5, offset=0)
    with pytest.raises(ValueError, match="dropout: offset is required"):
        A.dropout(np.ones(4), p=0.5, seed=1)
    with pytest.raises(TypeError, match="dropout: seed must be an int"):
        A.dropout(np.ones(4), p=0.5, seed=1.5, offset=0)
    with pytest.raises(ValueError, match="dropout: offset must be a non-negative multiple of 4"):
        A.dropout(np.ones(4), p=0.5, seed=1, offset=6)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match="dropout: p"):
        A.dropout(np.ones(4), p=p, **S)


def test_dropout_identity_when_not_training_or_p0():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert_close(A.dropout(x, 0.7, training=False), x, atol=0, rtol=0)
    assert_close(A.dropout(x, 0.0), x, atol=0, rtol=0)
    assert_close(A.dropout_backward(x, 0.7, training=False)[0], x, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dropout_mask_scale_and_determinism(dtype):
    x = np.random.default_rng(0).standard_normal((40, 50)).astype(dtype)
    p = 0.3
    out = A.dropout(x, p, **S)
    mask = A.dropout_mask(x.shape, p, **S)
    assert out.dtype == dtype and mask.dtype == bool and mask.shape == x.shape
    assert_close(A.dropout(x, p, **S), out, atol=0, rtol=0, name="same seed, same mask")
    scale = dtype(1 / (1 - p)) if dtype != np.float16 else np.float32(1 / (1 - p))
    expect = np.where(mask, x.astype(np.float32 if dtype == np.float16 else dtype) * scale, 0)
    assert_close(out, expect.astype(dtype), atol=0, rtol=0, name="out = x * mask / (1-p)")
    # 2000 Bernoulli(0.7) draws: the kept fraction is 0.7 +- 5 sigma (sigma ~ 0.0102)
    assert abs(mask.mean() - (1 - p)) < 0.052
    (gx,) = A.dropout_backward(np.ones_like(x), p, **S)
    assert_close(gx, np.where(mask, scale, 0).astype(dtype), atol=0, rtol=0, name="grad")


def test_dropout_p1_gives_zeros():
    x = np.ones((3, 4))
    assert_close(A.dropout(x, 1.0, **S), np.zeros_like(x), atol=0, rtol=0)
    assert_close(A.dropout_backward(np.ones_like(x), 1.0, **S)[0], np.zeros_like(x), atol=0,
                 rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dropout_backward_finite_differences(seed):
    x = np.random.default_rng(seed).standard_normal((4, 5))
    f = lambda a: A.dropout(a, 0.4, seed=seed, offset=8)  # noqa: E731
    check_grads(f, lambda g: A.dropout_backward(g, 0.4, seed=seed, offset=8), [x], seed=seed)


def test_dropout_empty_and_errors():
    assert A.dropout(np.zeros((0, 3)), 0.5, **S).shape == (0, 3)
    with pytest.raises(TypeError, match="dropout: input"):
        A.dropout(np.ones(3, np.int32), 0.5, **S)


def test_philox_known_answers():
    """Random123's kat_vectors, the three philox4x32 10 lines (counter, key -> output)."""
    from cvkernels.reference.philox import philox4x32_10
    kat = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
           ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
           ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
            (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for ctr, key, want in kat:
        assert tuple(int(v) for v in philox4x32_10(np.array(ctr, np.uint32), key)) == want
    batch = philox4x32_10(np.array([k[0] for k in kat], np.uint32), (0, 0))   # vectorised
    assert tuple(int(v) for v in batch[0]) == kat[0][2]


def test_philox_draws_are_a_stream():
    """Draws offset..offset+n are a window of one stream, whatever the offset."""
    from cvkernels.reference.philox import philox_draws
    full = philox_draws(5, 0, 40)
    for off, n in ((0, 1), (4, 9), (12, 28), (36, 4)):
        np.testing.assert_array_equal(philox_draws(5, off, n), full[off:off + n])
    assert philox_draws(5, 0, 0).shape == (0,)
    assert (philox_draws(-1, 0, 8) == philox_draws(2 ** 64 - 1, 0, 8)).all()   # mod 2^64


def test_all_names_exported():
    import cvkernels.reference as R
    for op in ("relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "dropout"):
        for suffix in ("", "_forward", "_backward"):
            assert f"{op}{suffix}" in A.__all__ and hasattr(R, f"{op}{suffix}")
        assert getattr(A, op) is getattr(A, f"{op}_forward")
        assert getattr(A, f"{op}_forward").__doc__ and getattr(A, f"{op}_backward").__doc__
