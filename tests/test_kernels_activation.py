"""Activation kernels beyond the spec's cases (which tests/test_kernel_specs.py runs on every
runtime, dtype and layout): torch's semantics at 0 and for NaN, empty and misaligned inputs,
the vector plan, inplace on raw arrays, argument errors, and autograd on the simulator."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import reference as ref
from cvkernels.spec import FLOAT32
from cvkernels.specs import activation as K
from runtimes import put, rt  # noqa: F401  (fixture)

# (op, kwargs, backward takes the output)
OPS = [("relu", {}, False), ("leaky_relu", {"negative_slope": 0.2}, False),
       ("elu", {"alpha": 1.3}, False), ("gelu", {"approximate": "none"}, False),
       ("gelu", {"approximate": "tanh"}, False), ("sigmoid", {}, True), ("tanh", {}, True)]
IDS = [o + ("_" + kw["approximate"] if "approximate" in kw else "") for o, kw, _ in OPS]


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def fns(op):
    return getattr(K, f"{op}_forward"), getattr(K, f"{op}_backward")


@pytest.mark.parametrize("op,kw,from_out", OPS, ids=IDS)
def test_nan_propagates_and_matches_reference_at_edges(rt, op, kw, from_out):
    """NaN in -> NaN out (relu(NaN) = NaN, as torch); the backward at NaN as torch's; at +-0,
    saturation (+-20) and tiny values the kernel equals the reference within its bound."""
    x = np.array([np.nan, 0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 0.5, -0.5], np.float32)
    fwd, bwd = fns(op)
    y = host(fwd(rt, put(rt, x), **kw))
    r = getattr(ref, f"{op}_forward")(x.astype(np.float64), **kw)
    assert np.isnan(y[0]) and not np.isnan(y[1:]).any()
    b = K._fwd_expr(op if kw.get("approximate") != "tanh" else "gelu_tanh", x[1:].astype(float),
                    kw.get("negative_slope", kw.get("alpha", 0.0))).bound()
    assert (np.abs(y[1:] - r[1:]) <= b).all(), (y, r)
    g = np.ones_like(x)
    z = y if from_out else x
    (gx,) = bwd(rt, put(rt, g), put(rt, z), **kw)
    gx = host(gx)
    # torch at a NaN input: relu and elu test x <= 0 and pass g, leaky_relu tests x > 0 and
    # gives g * slope; the smooth ones give NaN (as the reference, checked against torch)
    want = {"relu": 1.0, "leaky_relu": np.float32(0.2), "elu": 1.0}.get(op, np.nan)
    np.testing.assert_array_equal(gx[:1], [want])
    np.testing.assert_array_equal(gx[:1], getattr(ref, f"{op}_backward")(g, z, **kw)[0][:1])
    assert not np.isnan(gx[1:]).any()


def test_gradient_at_zero_follows_torch(rt):
    x = np.array([0.0, -0.0, 1.0, -1.0], np.float32)
    g = np.full(4, 2.0, np.float32)
    for op, kw, want in (("relu", {}, [0, 0, 2, 0]),
                         ("leaky_relu", {"negative_slope": 0.25}, [0.5, 0.5, 2, 0.5]),
                         ("elu", {"alpha": 1.5}, [3.0, 3.0, 2, None])):
        (gx,) = fns(op)[1](rt, put(rt, g), put(rt, x), **kw)
        got = host(gx)
        np.testing.assert_array_equal(got[:3], want[:3])
    y = host(K.relu_forward(rt, put(rt, x)))
    np.testing.assert_array_equal(y, [0, 0, 1, 0])


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3), ()])
def test_empty_and_scalar_inputs(rt, shape):
    x = np.full(shape, 0.5, np.float32)
    for op, kw, from_out in OPS:
        fwd, bwd = fns(op)
        y = fwd(rt, put(rt, x), **kw)
        assert y.shape == shape and y.dtype == np.float32
        (gx,) = bwd(rt, put(rt, x), put(rt, x), **kw)
        assert gx.shape == shape


def test_misaligned_and_odd_views_take_the_scalar_path(rt):
    """A view one element off 16-byte alignment cannot use Packed128: the plan says so and the
    results still equal the aligned run's, bit for bit."""
    base = np.random.default_rng(0).standard_normal(1 + 4 * 37).astype(np.float32)
    dev = put(rt, base)
    view = dev[1:]                           # contiguous, 4 bytes past a 16-byte boundary
    assert not K.aligned16(view)
    p = K.plan(rt.device(), K.FORWARD, FLOAT32, K.GELU, view.size, K.aligned16(view))
    assert p.values[2] is False
    p = K.plan(rt.device(), K.FORWARD, FLOAT32, K.GELU, view.size, True)
    assert p.values[2] is True
    aligned = put(rt, base[1:].copy())
    for op, kw, _ in OPS:
        fwd, _b = fns(op)
        np.testing.assert_array_equal(host(fwd(rt, view, **kw)), host(fwd(rt, aligned, **kw)))
    strided = dev[::3]                       # non-contiguous
    np.testing.assert_array_equal(host(K.gelu_forward(rt, strided)),
                                  host(K.gelu_forward(rt, put(rt, base[::3].copy()))))


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_inplace_writes_into_the_input(rt, layout):
    rng = np.random.default_rng(1)
    base = put(rt, rng.standard_normal((6, 10)).astype(np.float32))
    for op, kw in (("relu", {}), ("leaky_relu", {"negative_slope": 0.1}), ("elu", {})):
        x = base.copy()
        view = x if layout == "contiguous" else x[:, ::2]
        before = host(view).copy()
        out = getattr(K, f"{op}_forward")(rt, view, inplace=True, **kw)
        assert out is view
        expect = host(getattr(K, f"{op}_forward")(rt, put(rt, before), **kw))
        np.testing.assert_array_equal(host(view), expect)
        if layout == "strided":          # the other columns are untouched
            np.testing.assert_array_equal(host(x[:, 1::2]), host(base[:, 1::2]))


def test_argument_errors_name_the_argument(rt):
    x = put(rt, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh'"):
        K.gelu_forward(rt, x, approximate="fast")
    with pytest.raises(TypeError, match="relu_backward: arguments must share one dtype"):
        K.relu_backward(rt, x, put(rt, np.zeros((3, 4), np.float16)))
    with pytest.raises(ValueError, match=r"sigmoid_backward: grad_out must have the output's "
                                         r"shape \(3, 4\)"):
        K.sigmoid_backward(rt, put(rt, np.zeros((4, 3), np.float32)), x)
    with pytest.raises(TypeError, match="elu: .*input has dtype int32"):
        K.elu_forward(rt, put(rt, np.zeros(3, np.int32)))


@pytest.mark.sim
@pytest.mark.parametrize("op,kw,from_out", OPS, ids=IDS)
def test_functional_autograd_on_the_simulator(op, kw, from_out):
    """functional.<op> on Tensors runs the kernels forward and backward on 'sim' (sigmoid/tanh
    saving the output); the results equal the kernel ops' own, and relu's the reference's."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    g = rng.standard_normal((5, 7)).astype(np.float32)
    rt = cvk.backends.runtime.make_runtime("sim")
    fwd, bwd = fns(op)
    with cvk.backend("sim"):
        tx = cvk.Tensor(x, requires_grad=True)
        y = getattr(F, op)(tx, **kw)
        (y * cvk.Tensor(g)).sum().backward()
    y_k = fwd(rt, x, **kw)
    np.testing.assert_array_equal(y.numpy(), y_k)
    (gx,) = bwd(rt, g, y_k if from_out else x, **kw)
    np.testing.assert_array_equal(tx.grad.numpy(), gx)
    if op == "relu":
        np.testing.assert_array_equal(y.numpy(), ref.relu_forward(x))


@pytest.mark.sim
def test_functional_inplace_on_a_raw_array():
    x = np.array([-1.0, 2.0, np.nan], np.float32)
    with cvk.backend("sim"):
        out = F.relu(x, inplace=True)
    assert out is x or np.shares_memory(out, x)
    np.testing.assert_array_equal(x, [0.0, 2.0, np.nan])
