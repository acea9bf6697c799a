"""conv2d_depthwise beyond the spec's cases (which tests/test_kernel_specs.py runs on every
runtime, dtype and layout through reference.conv2d_* with groups=C): bit-exact fp32 results on
small-integer inputs against the float64 reference, bitwise repeatability of the weight
gradient, empty batches, the padding forms the functions accept, plan choices and errors."""
import numpy as np
import pytest

from cvkernels import reference as ref
from cvkernels.specs import conv2d_depthwise as K
from runtimes import put, rt  # noqa: F401  (fixture)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def ints(rng, shape, lo=-3, hi=4):
    """Small integers: every product and partial sum is exact in fp32."""
    return rng.integers(lo, hi, shape).astype(np.float32)


# (N, C, H, W, kH, kW, stride, padding given to the reference, dilation)
EXACT = [
    (2, 3, 9, 8, 3, 3, 1, 1, 1),          # the 3x3 kernel (K=3 instantiations)
    (1, 33, 7, 11, 5, 5, 2, 2, 1),        # 5x5, stride 2, C 33, primes
    (3, 1, 5, 7, 1, 1, 3, 0, 1),          # 1x1, stride > kernel
    (1, 3, 11, 13, 3, 2, (2, 1), (2, 1), (2, 3)),   # rectangular, dilation with padding
    (2, 3, 6, 7, 4, 3, 1, "same", (1, 2)),          # 'same' with an even kernel: asymmetric
]


def _normalised(x, w, stride, padding, dilation):
    from cvkernels.reference.conv import _conv2d_params
    _, _, s, pads, d, _, _ = _conv2d_params(x, w, None, stride, padding, dilation, x.shape[1])
    return s, pads, d


@pytest.mark.parametrize("n,c,h,w,kh,kw,stride,padding,dilation", EXACT,
                         ids=[f"{e[0]}x{e[1]}x{e[2]}x{e[3]}-k{e[4]}x{e[5]}" for e in EXACT])
def test_small_integers_are_bit_exact(rt, n, c, h, w, kh, kw, stride, padding, dilation):
    rng = np.random.default_rng(n * 100 + c)
    x, wt, b = ints(rng, (n, c, h, w)), ints(rng, (c, 1, kh, kw)), ints(rng, (c,))
    s, pads, d = _normalised(x, wt, stride, padding, dilation)
    y = host(K.depthwise_conv2d_forward(rt, put(rt, x), put(rt, wt), put(rt, b), s, pads, d))
    kw_ = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    expect = ref.conv2d_forward(x.astype(np.float64), wt.astype(np.float64),
                                b.astype(np.float64), **kw_)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, expect)
    g = ints(rng, y.shape)
    got = K.depthwise_conv2d_backward(rt, put(rt, g), put(rt, x), put(rt, wt), put(rt, b), s,
                                      pads, d)
    expect = ref.conv2d_backward(*(a.astype(np.float64) for a in (g, x, wt, b)), **kw_)
    for name, o, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expect):
        assert o.dtype == np.float32 and o.shape == e.shape, name
        np.testing.assert_array_equal(host(o), e, err_msg=name)


def test_padding_forms_agree(rt):
    """An int, a pair and the (top, bottom, left, right) form of one padding give one result."""
    rng = np.random.default_rng(3)
    x, wt = ints(rng, (1, 2, 6, 5)), ints(rng, (2, 1, 3, 3))
    outs = [host(K.depthwise_conv2d_forward(rt, put(rt, x), put(rt, wt), None, (1, 1), p,
                                            (1, 1))) for p in (1, (1, 1), (1, 1, 1, 1))]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # asymmetric: one more row at the bottom than at the top
    y = host(K.depthwise_conv2d_forward(rt, put(rt, x), put(rt, wt), None, (1, 1),
                                        (0, 1, 1, 1), (1, 1)))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (0, 1), (0, 0)))
    np.testing.assert_array_equal(y, ref.conv2d_forward(xp, wt.astype(np.float64), padding=(0, 1),
                                                        groups=2))


def test_weight_gradient_is_bitwise_repeatable(rt):
    """No atomics: two runs give the same bits, on data whose sums do round (several splits
    of the batch, more pixels than threads)."""
    rng = np.random.default_rng(7)
    n, c = 9, 2
    x = rng.standard_normal((n, c, 17, 19)).astype(np.float32)
    wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    g = rng.standard_normal((n, c, 17, 19)).astype(np.float32)
    _, _, splits, _ = K.plan_weight(rt.device(), K.FLOAT32, K.geometry(
        "t", x, wt, b, (1, 1), (1, 1), (1, 1)))
    assert splits > 1   # the two-stage reduction is exercised
    args = [put(rt, a) for a in (g, x, wt, b)]
    first = [host(a) for a in K.depthwise_conv2d_backward(rt, *args, (1, 1), (1, 1), (1, 1))]
    second = [host(a) for a in K.depthwise_conv2d_backward(rt, *args, (1, 1), (1, 1), (1, 1))]
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u.view(np.uint32), v.view(np.uint32))


def test_empty_batch(rt):
    x, wt = np.zeros((0, 3, 5, 4), np.float32), np.ones((3, 1, 3, 3), np.float32)
    b = np.ones(3, np.float32)
    y = K.depthwise_conv2d_forward(rt, put(rt, x), put(rt, wt), put(rt, b), (2, 2), (1, 1),
                                   (1, 1))
    assert y.shape == (0, 3, 3, 2) and y.dtype == np.float32
    gx, gw, gb = K.depthwise_conv2d_backward(rt, put(rt, y), put(rt, x), put(rt, wt),
                                             put(rt, b), (2, 2), (1, 1), (1, 1))
    assert gx.shape == x.shape
    np.testing.assert_array_equal(host(gw), np.zeros_like(wt))
    np.testing.assert_array_equal(host(gb), np.zeros(3, np.float32))
    _, _, gb_none = K.depthwise_conv2d_backward(rt, put(rt, y), put(rt, x), put(rt, wt), None,
                                                (2, 2), (1, 1), (1, 1))
    assert gb_none is None


def test_plans():
    from cvkernels.device import sim_device
    dev = sim_device()
    x, w3, w5 = np.zeros((32, 128, 56, 56)), np.zeros((128, 1, 3, 3)), np.zeros((128, 1, 5, 5))
    g = K.geometry("t", x, w3, None, (1, 1), (1, 1), (1, 1))
    p = K.plan_pixels(dev, K.FORWARD, K.FLOAT32, g)
    assert p.values == (K.FLOAT32, 3) and p.block[0] == 256 and p.grid[:2] == (13, 4096)
    s1, _, splits, ips = K.plan_weight(dev, K.FLOAT32, g)
    assert (splits, ips) == (8, 4) and s1.grid[:2] == (128, 8) and s1.values[1] == 3
    g5 = K.geometry("t", x, w5, None, (1, 1), (2, 2), (1, 1))
    assert K.plan_pixels(dev, K.BACKWARD_DATA, K.FLOAT32, g5).values[1] == 0
    tiny = K.geometry("t", np.zeros((1, 2, 3, 3)), np.zeros((2, 1, 1, 1)), None, 1, 0, 1)
    assert K.plan_pixels(dev, K.FORWARD, K.FLOAT32, tiny).block[0] == 32


def test_argument_errors_name_the_argument(rt):
    x = put(rt, np.zeros((1, 3, 5, 5), np.float32))
    w = put(rt, np.zeros((3, 1, 3, 3), np.float32))
    f = K.depthwise_conv2d_forward
    with pytest.raises(ValueError, match=r"conv2d: depthwise weight must have shape \[C, 1"):
        f(rt, x, put(rt, np.zeros((3, 2, 3, 3), np.float32)), None, 1, 0, 1)
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(3,\)"):
        f(rt, x, w, put(rt, np.zeros(4, np.float32)), 1, 0, 1)
    with pytest.raises(ValueError, match="conv2d: padding must be an int, a pair"):
        f(rt, x, w, None, 1, (1, 2, 3), 1)
    with pytest.raises(ValueError, match="conv2d: stride must be positive"):
        f(rt, x, w, None, (0, 1), 0, 1)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        f(rt, x, w, None, 1, 0, 3)
    with pytest.raises(TypeError, match="conv2d: arguments must share one dtype"):
        f(rt, x, put(rt, np.zeros((3, 1, 3, 3), np.float16)), None, 1, 0, 1)
    with pytest.raises(ValueError, match=r"conv2d_backward: grad_out must have the output's "
                                         r"shape \(1, 3, 3, 3\)"):
        K.depthwise_conv2d_backward(rt, put(rt, np.zeros((1, 3, 5, 5), np.float32)), x, w,
                                    None, 1, 0, 1)


@pytest.mark.sim
def test_plane_loop_and_split_cap_on_a_small_grid():
    """More planes than gridDim.y (the blocks stride over planes) and a batch split capped by
    the grid: still bit-exact on small integers."""
    import dataclasses

    from cvkernels.backends.runtime import make_runtime
    from cvkernels.device import H100, simulated
    sim = make_runtime("sim")
    small = dataclasses.replace(H100, max_grid=(2 ** 31 - 1, 2, 65535))
    rng = np.random.default_rng(11)
    x, wt, b = ints(rng, (3, 5, 6, 7)), ints(rng, (5, 1, 3, 3)), ints(rng, (5,))
    g = ints(rng, (3, 5, 6, 7))
    kw_ = dict(stride=1, padding=1, dilation=1, groups=5)
    with simulated(small):
        geo = K.geometry("t", x, wt, b, (1, 1), (1, 1), (1, 1))
        assert K.plan_pixels(small, K.FORWARD, K.FLOAT32, geo).grid[1] == 2
        assert K.plan_weight(small, K.FLOAT32, geo)[2] == 2
        y = K.depthwise_conv2d_forward(sim, x, wt, b, (1, 1), (1, 1), (1, 1))
        got = K.depthwise_conv2d_backward(sim, g, x, wt, b, (1, 1), (1, 1), (1, 1))
    f64 = [a.astype(np.float64) for a in (g, x, wt, b)]
    np.testing.assert_array_equal(y, ref.conv2d_forward(*f64[1:], **kw_))
    for o, e in zip(got, ref.conv2d_backward(*f64, **kw_)):
        np.testing.assert_array_equal(o, e)


@pytest.mark.sim
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_functional_conv2d_dispatches_depthwise_shapes_here(unbatched, monkeypatch):
    """functional.conv2d with groups == C_in == C_out launches only this family's kernels
    (forward and backward, exact on small integers); a channel multiplier (C_out = 2 C_in)
    stays on the implicit GEMM."""
    import cvkernels as cvk
    from cvkernels import functional as F
    from cvkernels.backends.runtime import Runtime
    launched, launch = [], Runtime.launch

    def spy(self, plan, **args):
        launched.append(plan.kernel.name)
        return launch(self, plan, **args)
    monkeypatch.setattr(Runtime, "launch", spy)
    rng = np.random.default_rng(3)
    x, w, b = ints(rng, (2, 5, 7, 6)), ints(rng, (5, 1, 3, 3)), ints(rng, 5)
    if unbatched:
        x = x[0]
    p = dict(stride=2, padding=1)
    want = ref.conv2d_forward(x, w, b, groups=5, **p)
    g = ints(rng, want.shape)
    with cvk.backend("sim"):
        tx, tw, tb = (cvk.Tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(tx, tw, tb, groups=5, **p)
        (y * cvk.Tensor(g)).sum().backward()
    np.testing.assert_array_equal(y.numpy(), want)
    for got, exp in zip((tx.grad, tw.grad, tb.grad), ref.conv2d_backward(g, x, w, b, groups=5,
                                                                        **p)):
        np.testing.assert_array_equal(got.numpy(), exp)
    mine = {k.name for k in K.FAMILY.kernels}
    assert launched and set(launched) <= mine, launched
    launched.clear()
    with cvk.backend("sim"):
        F.conv2d(x, ints(rng, (10, 1, 3, 3)), groups=5, **p)
    assert launched and not set(launched) & mine, launched
