"""dropout beyond the spec's cases: the Philox mask bit for bit against the NumPy twin (every
dtype, vector and scalar plans, odd sizes, misaligned and strided views), mask statistics,
reproducibility from (seed, offset), the backward regenerating the forward's mask, the p = 0 /
p = 1 / eval edges, the generator's offset, argument errors, and autograd on 'sim'."""
import math

import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import nn, random as cr
from cvkernels import reference as ref
from cvkernels.spec import ALL_DTYPES
from cvkernels.specs import dropout as K
from runtimes import put, rt  # noqa: F401  (fixture)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def kept(y):
    return host(y).astype(np.float32) != 0


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: d.short)
@pytest.mark.parametrize("shape,seed,offset", [((1,), 0, 0), ((3,), 2 ** 64 - 5, 2 ** 62),
                                               ((7, 33), 123456789123, 40),
                                               ((2, 3, 5), -3, 2 ** 34 + 8)])
def test_mask_is_the_references_bit_for_bit(rt, dtype, shape, seed, offset):
    """Seeds beyond 2^63 (and negative ones, mod 2^64) and offsets past 2^32 draws use both
    key words and both low counter words, on the kernels as in the reference."""
    x = (np.random.default_rng(0).standard_normal(shape) + 4).astype(dtype.np)  # no zeros
    args = dict(p=0.4, seed=seed, offset=offset)
    y = host(K.dropout_forward(rt, put(rt, x), **args))
    want = ref.dropout_forward(x, **args)
    np.testing.assert_array_equal(y.view(np.uint8), want.view(np.uint8))


def test_vector_and_scalar_plans_and_views_agree(rt):
    """The mask depends on the element index only: VEC16 or not, misaligned or strided input."""
    base = (np.random.default_rng(1).standard_normal(2 * 8 * 29 + 1) + 4).astype(np.float32)
    dev = put(rt, base)
    args = dict(seed=5, offset=0, threshold=np.int64(ref.dropout_threshold(0.5)),
                scale=np.float32(2.0))
    x = put(rt, base[1:8 * 29 + 2].copy())       # 8*29 + 1 elements: vector part + a tail
    outs = []
    for vec in (True, False):
        y = put(rt, np.zeros(x.size, np.float32))
        p = K.plan(rt.device(), K.FLOAT32, x.size, vec)
        assert p.values[1] is vec
        rt.launch(p, x=x, y=y, n=x.size, **args)
        outs.append(host(y))
    np.testing.assert_array_equal(outs[0], outs[1])
    misaligned = dev[1:8 * 29 + 2]
    assert not K.aligned16(misaligned)
    np.testing.assert_array_equal(host(K.dropout_forward(rt, misaligned, 0.5, seed=5, offset=0)),
                                  outs[0])
    strided = dev[::2]
    np.testing.assert_array_equal(host(K.dropout_forward(rt, strided, 0.5, seed=5, offset=0)),
                                  ref.dropout_forward(base[::2], 0.5, seed=5, offset=0))


def test_backward_regenerates_the_forwards_mask(rt):
    x = (np.random.default_rng(2).standard_normal((9, 31)) + 4).astype(np.float32)
    g = np.random.default_rng(3).standard_normal((9, 31)).astype(np.float32)
    args = dict(p=0.3, seed=99, offset=12)
    y = K.dropout_forward(rt, put(rt, x), **args)
    (gx,) = K.dropout_backward(rt, put(rt, g), **args)
    m = kept(y)
    np.testing.assert_array_equal(kept(gx) | (g == 0), m)
    np.testing.assert_array_equal(host(gx), np.where(m, g * np.float32(1 / 0.7), 0))


def test_reproducible_from_seed_and_offset(rt):
    x = put(rt, np.ones(64, np.float32))
    a = host(K.dropout_forward(rt, x, 0.5, seed=1, offset=0))
    np.testing.assert_array_equal(a, host(K.dropout_forward(rt, x, 0.5, seed=1, offset=0)))
    b = host(K.dropout_forward(rt, x, 0.5, seed=1, offset=8))
    c = host(K.dropout_forward(rt, x, 0.5, seed=2, offset=0))
    assert (a != b).any() and (a != c).any()
    np.testing.assert_array_equal(b[:-8], a[8:])      # one stream: offset 8 is a window of it


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_within_a_binomial_bound(p):
    """n Bernoulli(1-p) draws: the kept fraction is within 5 sigma of 1 - p (a false alarm
    ~6e-7), on the reference's mask (bit-identical to the kernels', tested above) and on a
    smaller kernel run."""
    n = 1 << 18
    m = ref.dropout_mask((n,), p, seed=2024, offset=0)
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(m.mean() - (1 - p)) < 5 * sigma
    rt = cvk.backends.runtime.make_runtime("sim")
    nk = 1 << 13
    y = K.dropout_forward(rt, np.ones(nk, np.float32), p, seed=7, offset=0)
    assert abs(kept(y).mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / nk)


def test_no_correlation_between_neighbours():
    """Lag-k autocorrelation of the keep mask (k = 1..8: inside one Philox block and across
    blocks) and between the masks of consecutive calls: each |r| < 5 / sqrt(n)."""
    n, p = 1 << 18, 0.5
    m = ref.dropout_mask((n,), p, seed=11, offset=0).astype(np.float64)
    z = m - m.mean()
    for k in range(1, 9):
        r = (z[:-k] * z[k:]).mean() / z.var()
        assert abs(r) < 5 / math.sqrt(n), (k, r)
    m2 = ref.dropout_mask((n,), p, seed=11, offset=4 * (-(-n // 4))).astype(np.float64)
    z2 = m2 - m2.mean()
    assert abs((z * z2).mean() / math.sqrt(z.var() * z2.var())) < 5 / math.sqrt(n)


def test_p0_p1_and_eval_edges(rt):
    x = np.array([1.0, -2.0, np.nan, 3.0, np.inf], np.float32)
    for kw in (dict(p=0.0), dict(p=0.7, training=False)):
        np.testing.assert_array_equal(host(K.dropout_forward(rt, put(rt, x), **kw)), x)
        np.testing.assert_array_equal(host(K.dropout_backward(rt, put(rt, x), **kw)[0]), x)
    y = host(K.dropout_forward(rt, put(rt, x), 1.0, seed=0, offset=0))
    np.testing.assert_array_equal(y, [0, 0, np.nan, 0, np.nan])     # x * 0, as torch
    np.testing.assert_array_equal(y, ref.dropout_forward(x, 1.0, seed=0, offset=0))


def test_empty_and_inplace(rt):
    assert K.dropout_forward(rt, put(rt, np.zeros((0, 3), np.float32)), 0.5, seed=0,
                             offset=0).shape == (0, 3)
    base = put(rt, np.ones((4, 10), np.float32))
    for view in (base, base[:, ::2]):
        before = host(view).copy()
        out = K.dropout_forward(rt, view, 0.5, True, True, seed=3, offset=0)
        assert out is view
        np.testing.assert_array_equal(host(view), ref.dropout_forward(before, 0.5, seed=3,
                                                                      offset=0))


def test_argument_errors_name_the_argument(rt):
    x = put(rt, np.ones(8, np.float32))
    with pytest.raises(ValueError, match="dropout: seed is required"):
        K.dropout_forward(rt, x, 0.5, offset=0)
    with pytest.raises(ValueError, match="dropout_backward: offset must be a non-negative "
                                         "multiple of 4"):
        K.dropout_backward(rt, x, 0.5, seed=0, offset=2)
    with pytest.raises(ValueError, match=r"dropout: p must be a probability in \[0, 1\]"):
        K.dropout_forward(rt, x, 1.5, seed=0, offset=0)
    with pytest.raises(TypeError, match="dropout: .*input has dtype int32"):
        K.dropout_forward(rt, put(rt, np.ones(8, np.int32)), 0.5, seed=0, offset=0)
    with pytest.raises(TypeError, match="dropout: generator must be"):
        F.dropout(np.ones(4, np.float32), 0.5, generator=42)


def test_generator_offset_advances_like_torchs():
    g = cr.Generator(17)
    assert g.next_stream(5) == (17, 0) and g.next_stream(8) == (17, 8)
    assert g.get_state() == (17, 16)
    cvk.nn.init.manual_seed(3)
    assert cr.default_generator().get_state() == (3, 0)
    x = np.ones(10, np.float32)
    a, b = F.dropout(x, 0.5), F.dropout(x, 0.5)          # consecutive calls: new offsets
    assert cr.default_generator().get_state() == (3, 24)
    np.testing.assert_array_equal(a, ref.dropout_forward(x, 0.5, seed=3, offset=0))
    np.testing.assert_array_equal(b, ref.dropout_forward(x, 0.5, seed=3, offset=12))
    cvk.nn.init.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.5), a)


@pytest.mark.sim
def test_autograd_on_the_simulator_and_same_bits_as_cpu():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((6, 11)) + 4).astype(np.float32)
    g = rng.standard_normal((6, 11)).astype(np.float32)
    with cvk.backend("sim"):
        tx = cvk.Tensor(x, requires_grad=True)
        y = F.dropout(tx, 0.25, generator=cr.Generator(8))
        (y * cvk.Tensor(g)).sum().backward()
        layer = nn.Dropout(0.5, generator=cr.Generator(1))
        ys = layer(cvk.Tensor(x)).numpy()
    np.testing.assert_array_equal(y.numpy(), F.dropout(x, 0.25, generator=cr.Generator(8)))
    m = y.numpy() != 0
    np.testing.assert_array_equal(tx.grad.numpy(), np.where(m, g * np.float32(1 / 0.75), 0))
    np.testing.assert_array_equal(ys, ref.dropout_forward(x, 0.5, seed=1, offset=0))


def test_kernel_philox_known_answer(rt):
    """cvk/philox.cuh itself against Random123's first philox4x32 10 vector (counter 0, key 0 ->
    6627e8d5 e169c58d bc57ac4c 9b00dbd8), read through the kernel's keep test: draw k equals
    W_k exactly when element k is kept at threshold W_k and dropped at W_k + 1."""
    want = (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)
    x = put(rt, np.ones(4, np.float32))
    for k, w in enumerate(want):
        for t, kept_k in ((w, True), (w + 1, False)):
            y = put(rt, np.zeros(4, np.float32))
            rt.launch(K.plan(rt.device(), K.FLOAT32, 4, False), x=x, y=y, n=4, seed=np.int64(0),
                      offset=np.int64(0), threshold=np.int64(t), scale=np.float32(1.0))
            assert bool(host(y)[k]) is kept_k, (k, hex(w), t)
