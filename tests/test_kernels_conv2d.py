"""conv2d / conv_transpose2d beyond the spec's cases (which tests/test_kernel_specs.py runs on
every runtime, dtype and layout): bit-exact small-integer results on every path and both tile
sizes, bitwise determinism of the split-K weight gradient, empty batches, the argument errors
(identical to the reference's), and the autograd path through cvkernels.functional."""
import dataclasses

import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import reference as ref
from cvkernels.spec import BFLOAT16, FLOAT16, FLOAT32
from cvkernels.specs import conv2d as K
from runtimes import put, rt  # noqa: F401  (fixture)


def host(a):
    return None if a is None else (a.get() if hasattr(a, "get") else np.asarray(a))


def ints(rng, shape, lo=-3, hi=3):
    """Small integers as fp32: every product and partial sum is exact in fp32."""
    return rng.integers(lo, hi + 1, size=shape).astype(np.float32)


def exact(ours, want):
    for o, w in zip(ours, want):
        if w is None:
            assert o is None
        else:
            o = host(o)
            assert o.shape == w.shape and o.dtype == w.dtype
            np.testing.assert_array_equal(o, w)


CONV = [  # (x shape, w shape, params): odd sizes, 1x1 and 7x7, groups, strides, dilation
    ((2, 3, 7, 5), (5, 3, 3, 3), dict(padding=1)),
    ((1, 4, 9, 11), (6, 2, 7, 7), dict(padding=3, stride=2, groups=2)),
    ((2, 5, 6, 7), (3, 5, 1, 1), dict(stride=3)),
    ((1, 2, 8, 9), (4, 2, 2, 3), dict(padding="same", dilation=2)),
    ((2, 4, 5, 5), (4, 1, 3, 3), dict(padding=1, groups=4)),           # depthwise shape
]
TRANSPOSED = [
    ((2, 3, 4, 5), (3, 5, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 3, 4), (4, 2, 2, 3), dict(stride=(2, 1), dilation=2, output_padding=(1, 0),
                                      groups=2)),
]


@pytest.mark.parametrize("xs,ws,params", CONV)
def test_conv2d_small_integers_are_exact(rt, xs, ws, params):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x, w, b = ints(rng, xs), ints(rng, ws), ints(rng, ws[0])
    y = K.conv2d_forward(rt, put(rt, x), put(rt, w), put(rt, b), **params)
    exact([y], [ref.conv2d_forward(x, w, b, **params)])
    g = ints(rng, y.shape)
    ours = K.conv2d_backward(rt, put(rt, g), put(rt, x), put(rt, w), put(rt, b), **params)
    exact(ours, ref.conv2d_backward(g, x, w, b, **params))


@pytest.mark.parametrize("xs,ws,params", TRANSPOSED)
def test_conv_transpose2d_small_integers_are_exact(rt, xs, ws, params):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    groups = params.get("groups", 1)
    x, w, b = ints(rng, xs), ints(rng, ws), ints(rng, ws[1] * groups)
    y = K.conv_transpose2d_forward(rt, put(rt, x), put(rt, w), put(rt, b), **params)
    exact([y], [ref.conv_transpose2d_forward(x, w, b, **params)])
    g = ints(rng, y.shape)
    ours = K.conv_transpose2d_backward(rt, put(rt, g), put(rt, x), put(rt, w), put(rt, b),
                                       **params)
    exact(ours, ref.conv_transpose2d_backward(g, x, w, b, **params))


@pytest.mark.parametrize("tc", [True, False], ids=["tensor-cores", "simt"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_forward_small_integers_are_exact(rt, monkeypatch, dtype, tc):
    """fp16/bf16 forward on the tensor-core kernel (the default) and on the SIMT kernel: sums of
    small integers below 2^8 are exact in both formats."""
    from cvkernels.backends.runtime import Runtime
    launched, launch = [], Runtime.launch

    def spy(self, plan, **args):
        launched.append(plan.kernel.name)
        return launch(self, plan, **args)
    monkeypatch.setattr(Runtime, "launch", spy)
    monkeypatch.setattr(K, "USE_TENSOR_CORES", tc)
    npt = {"float16": FLOAT16, "bfloat16": BFLOAT16}[dtype].np
    rng = np.random.default_rng(11)
    x, w, b = (ints(rng, s, -2, 2).astype(npt) for s in ((2, 6, 7, 9), (10, 3, 3, 3), (10,)))
    p = dict(stride=2, padding=1, groups=2)
    y = K.conv2d_forward(rt, put(rt, x), put(rt, w), put(rt, b), **p)
    exact([y], [ref.conv2d_forward(x, w, b, **p)])
    assert launched == [K.TC_FORWARD.name if tc else K.FORWARD.name]


@pytest.mark.sim
def test_128_tiles_and_one_split_are_exact(monkeypatch):
    """On a one-SM device the plans take the 128x128 tiles (more than 64 channels) and a single
    split; the results stay exact."""
    rt = cvk.backends.runtime.make_runtime("sim")
    small = dataclasses.replace(rt.device(), sm_count=1)
    monkeypatch.setattr(rt, "device", lambda: small)
    rng = np.random.default_rng(3)
    x, w, b = ints(rng, (1, 66, 5, 6)), ints(rng, (67, 66, 1, 2)), ints(rng, 67)
    p = dict(padding=(0, 1))
    geom = K._geometry(1, 66, (5, 6), 67, (5, 7), 1, (1, 2), (1, 1), (0, 1), (1, 1))
    for kernel in (K.FORWARD, K.BACKWARD_DATA):
        assert K.plan_gemm(small, kernel, FLOAT32, geom, True).values[1] == K.TILES[0]
    plan, splits, _ = K.plan_backward_weight(small, FLOAT32, geom)
    assert plan.values[1] == K.TILES[0] and splits == 1
    y = K.conv2d_forward(rt, x, w, b, **p)
    exact([y], [ref.conv2d_forward(x, w, b, **p)])
    g = ints(rng, y.shape)
    exact(K.conv2d_backward(rt, g, x, w, b, **p), ref.conv2d_backward(g, x, w, b, **p))


def test_backward_weight_is_split_and_bitwise_repeatable(rt):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 13, 11)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 5, 13, 11)).astype(np.float32)
    geom = K._geometry(3, 4, (13, 11), 5, (13, 11), 1, (3, 3), (1, 1), (1, 1), (1, 1))
    _, splits, _ = K.plan_backward_weight(rt.device(), FLOAT32, geom)
    assert splits > 1          # the fixed-order reduction of partials is what runs here
    args = [put(rt, a) for a in (g, x, w)]
    first = host(K.conv2d_backward(rt, *args, padding=1)[1])
    second = host(K.conv2d_backward(rt, *args, padding=1)[1])
    np.testing.assert_array_equal(first.view(np.uint32), second.view(np.uint32))


def test_empty_batch(rt):
    x, w = np.zeros((0, 3, 5, 5), np.float32), np.ones((4, 3, 3, 3), np.float32)
    b = np.ones(4, np.float32)
    y = K.conv2d_forward(rt, put(rt, x), put(rt, w), put(rt, b), padding=1)
    assert y.shape == (0, 4, 5, 5)
    gx, gw, gb = K.conv2d_backward(rt, put(rt, y), put(rt, x), put(rt, w), put(rt, b), padding=1)
    assert gx.shape == x.shape
    exact([gw, gb], [np.zeros_like(w), np.zeros_like(b)])
    wt = np.ones((3, 2, 3, 3), np.float32)
    yt = K.conv_transpose2d_forward(rt, put(rt, x), put(rt, wt), stride=2)
    assert yt.shape == (0, 2, 11, 11)
    gx, gw, gb = K.conv_transpose2d_backward(rt, put(rt, yt), put(rt, x), put(rt, wt), stride=2)
    assert gx.shape == x.shape and gb is None
    exact([gw], [np.zeros_like(wt)])


def _same_error(fn_ours, fn_ref):
    with pytest.raises(Exception) as want:
        fn_ref()
    with pytest.raises(type(want.value)) as got:
        fn_ours()
    assert str(got.value) == str(want.value)
    return str(got.value)


def test_argument_errors_are_the_reference_s(rt):
    x, w = np.zeros((1, 4, 6, 6), np.float32), np.zeros((6, 2, 3, 3), np.float32)
    X, W = put(rt, x), put(rt, w)
    cases = [  # (expected fragment, kwargs)
        ("conv2d: stride must be positive", dict(stride=0, groups=2)),
        ("conv2d: groups must be a positive int", dict(groups=0)),
        ("conv2d: weight must have shape", dict(groups=1)),
        ("conv2d: padding='same' is not supported for strided", dict(padding="same",
                                                                      stride=2, groups=2)),
        ("conv2d: dilation must be positive", dict(dilation=(1, -1), groups=2)),
    ]
    for fragment, kw in cases:
        msg = _same_error(lambda kw=kw: K.conv2d_forward(rt, X, W, **kw),
                          lambda kw=kw: ref.conv2d_forward(x, w, **kw))
        assert fragment in msg
    msg = _same_error(lambda: K.conv2d_forward(rt, X, W, put(rt, np.zeros(5, np.float32)),
                                               groups=2),
                      lambda: ref.conv2d_forward(x, w, np.zeros(5, np.float32), groups=2))
    assert "conv2d: bias must have shape" in msg
    with pytest.raises(TypeError, match="conv2d: arguments must share one dtype"):
        K.conv2d_forward(rt, X, put(rt, w.astype(np.float16)), groups=2)
    with pytest.raises(ValueError, match=r"conv2d_backward: grad_out must have the output's "
                                         r"shape \(1, 6, 4, 4\)"):
        K.conv2d_backward(rt, put(rt, np.zeros((1, 6, 6, 6), np.float32)), X, W, groups=2)
    wt = np.zeros((4, 3, 3, 3), np.float32)
    msg = _same_error(lambda: K.conv_transpose2d_forward(rt, X, put(rt, wt), output_padding=1),
                      lambda: ref.conv_transpose2d_forward(x, wt, output_padding=1))
    assert "conv_transpose2d: output_padding must be smaller than either stride or" in msg
    msg = _same_error(lambda: K.conv_transpose2d_forward(rt, X, put(rt, wt), padding="same"),
                      lambda: ref.conv_transpose2d_forward(x, wt, padding="same"))
    assert "conv_transpose2d: padding must be an int or a pair" in msg


@pytest.mark.sim
@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_functional_autograd_on_the_simulator(transposed, monkeypatch):
    """functional.conv2d / conv_transpose2d with Tensor gradients on the kernels: exact against
    the reference for small integers, and every launch is one of this family's kernels."""
    from cvkernels.backends.runtime import Runtime
    launched, launch = [], Runtime.launch

    def spy(self, plan, **args):
        launched.append(plan.kernel.name)
        return launch(self, plan, **args)
    monkeypatch.setattr(Runtime, "launch", spy)
    rng = np.random.default_rng(7)
    p = dict(stride=2, padding=1, groups=2)
    if transposed:
        p["output_padding"] = 1
    x = ints(rng, (2, 4, 5, 6))
    w = ints(rng, (4, 3, 3, 3) if transposed else (6, 2, 3, 3))
    b = ints(rng, 6)
    fwd = F.conv_transpose2d if transposed else F.conv2d
    rf = ref.conv_transpose2d_forward if transposed else ref.conv2d_forward
    rb = ref.conv_transpose2d_backward if transposed else ref.conv2d_backward
    want = rf(x, w, b, **p)
    g = ints(rng, want.shape)
    with cvk.backend("sim"):
        tx, tw, tb = (cvk.Tensor(a, requires_grad=True) for a in (x, w, b))
        y = fwd(tx, tw, tb, **p)
        (y * cvk.Tensor(g)).sum().backward()
    np.testing.assert_array_equal(y.numpy(), want)
    assert {K.FORWARD.name, K.BACKWARD_DATA.name, K.BACKWARD_WEIGHT.name,
            K.WEIGHT_REDUCE.name, K.BACKWARD_BIAS.name} <= set(launched)
    for got, exp in zip((tx.grad, tw.grad, tb.grad), rb(g, x, w, b, **p)):
        np.testing.assert_array_equal(got.numpy(), exp)


def test_plans_refuse_what_the_32_bit_tap_math_cannot_hold():
    from cvkernels.device import H100
    from cvkernels.errors import ArgumentError
    geom = K._geometry(1, 2 ** 16, (3, 3), 4, (3, 3), 1, (2 ** 8, 2 ** 8), (1, 1), (0, 0),
                       (1, 1))                     # K = 2^16 * 2^16 taps: past 2^31
    for plan in (lambda: K.plan_gemm(H100, K.FORWARD, FLOAT32, geom, False),
                 lambda: K.plan_tc_forward(H100, FLOAT16, geom, False)):
        with pytest.raises(ArgumentError, match="conv2d_(tc_)?forward_kernel: the GEMM's K"):
            plan()
    big = K._geometry(2 ** 12, 1, (2 ** 10, 2 ** 10), 1, (2 ** 10, 2 ** 10), 1, (1, 1), (1, 1),
                      (0, 0), (1, 1))               # 2^32 pixels to sum over
    with pytest.raises(ArgumentError, match="conv2d_backward_weight_kernel: the GEMM's K"):
        K.plan_backward_weight(H100, FLOAT32, big)
