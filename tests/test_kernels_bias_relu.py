"""bias_relu beyond the spec's cases (which tests/test_kernel_specs.py runs on every runtime,
dtype and layout): torch's semantics at 0 and for NaN, empty and N-d inputs, determinism, the
argument checks, and the autograd op that cvkernels.functional derives from the reference."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import reference as ref
from cvkernels.specs import bias_relu as K
from runtimes import put, rt  # noqa: F401  (fixture)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_zero_and_nan_follow_torch(rt):
    x = np.array([[-1.0, 0.0, np.nan, 2.0]], np.float32)
    b = np.array([1.0, 0.0, 0.0, -3.0], np.float32)      # x + b = 0, 0, nan, -1
    y = host(K.bias_relu_forward(rt, put(rt, x), put(rt, b)))
    np.testing.assert_array_equal(y, [[0.0, 0.0, np.nan, 0.0]])
    g = np.ones_like(x)
    gx, gb = K.bias_relu_backward(rt, put(rt, g), put(rt, x), put(rt, b))
    # gradient 0 at 0; a NaN passes grad_out, as torch.relu(x + b)'s backward
    np.testing.assert_array_equal(host(gx), [[0.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(host(gb), [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (2, 0, 3)])
def test_empty_inputs(rt, shape):
    x, b = np.zeros(shape, np.float32), np.zeros(shape[-1], np.float32)
    y = K.bias_relu_forward(rt, put(rt, x), put(rt, b))
    assert y.shape == shape
    gx, gb = K.bias_relu_backward(rt, put(rt, x), put(rt, x), put(rt, b))
    assert gx.shape == shape and gb.shape == (shape[-1],)
    np.testing.assert_array_equal(host(gb), np.zeros(shape[-1], np.float32))


def test_backward_is_bitwise_repeatable(rt):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((513, 37)).astype(np.float32), rng.standard_normal((513, 37))
    b = rng.standard_normal(37).astype(np.float32)
    args = [put(rt, g.astype(np.float32)), put(rt, x), put(rt, b)]
    first = [host(a) for a in K.bias_relu_backward(rt, *args)]
    second = [host(a) for a in K.bias_relu_backward(rt, *args)]
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u.view(np.uint32), v.view(np.uint32))


def test_argument_errors_name_the_argument(rt):
    x = put(rt, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"bias_relu: bias must have shape \(4,\)"):
        K.bias_relu_forward(rt, x, put(rt, np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match="bias_relu: arguments must share one dtype"):
        K.bias_relu_forward(rt, x, put(rt, np.zeros(4, np.float16)))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(3, 4\)"):
        K.bias_relu_backward(rt, put(rt, np.zeros((4, 3), np.float32)), x,
                             put(rt, np.zeros(4, np.float32)))


@pytest.mark.sim
def test_functional_autograd_on_the_simulator():
    """functional.bias_relu exists without an entry of its own (the reference pair is enough),
    and its Tensor gradients on the kernels equal the reference's."""
    rng = np.random.default_rng(1)
    x, b = rng.standard_normal((6, 9)).astype(np.float32), rng.standard_normal(9).astype(np.float32)
    g = rng.standard_normal((6, 9)).astype(np.float32)
    with cvk.backend("sim"):
        tx, tb = cvk.Tensor(x, requires_grad=True), cvk.Tensor(b, requires_grad=True)
        y = F.bias_relu(tx, tb)
        (y * cvk.Tensor(g)).sum().backward()
    np.testing.assert_array_equal(y.numpy(), ref.bias_relu_forward(x, b))
    ex, eb = ref.bias_relu_backward(g, x, b)
    np.testing.assert_array_equal(tx.grad.numpy(), ex)
    np.testing.assert_allclose(tb.grad.numpy(), eb, rtol=7 * 2.0 ** -24, atol=0)


@pytest.mark.parametrize("act", range(7))
def test_bias_act_epilogue_equals_the_activation_kernels(rt, act):
    """The generalised epilogue f(x + bias) for every activation functor: in fp32 it equals the
    activation kernel on fp32(x + bias) bit for bit (the same functor after the same rounded
    sum), and grad_bias is the fp32 row-order sum of grad_input."""
    from cvkernels.spec import FLOAT32
    from cvkernels.specs import activation as A
    rng = np.random.default_rng(act)
    x = (2 * rng.standard_normal((9, 13))).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    g = rng.standard_normal((9, 13)).astype(np.float32)
    alpha = {A.LEAKY_RELU: 0.2, A.ELU: 1.3}.get(act, 0.0)
    pre = x + b                                            # fp32, as the kernel's sum
    y = host(K.bias_act_forward(rt, put(rt, x), put(rt, b), act, alpha))
    w = put(rt, np.empty_like(pre))
    rt.launch(A.plan(rt.device(), A.FORWARD, FLOAT32, act, pre.size, False),
              x=put(rt, pre), y=w, n=pre.size, alpha=np.float32(alpha))
    np.testing.assert_array_equal(y, host(w))
    gx, gb = K.bias_act_backward(rt, put(rt, g), put(rt, x), put(rt, b), act, alpha)
    z = host(w) if act in (A.SIGMOID, A.TANH) else pre      # sigmoid/tanh: from the output
    want_gx = put(rt, np.empty_like(pre))
    rt.launch(A.plan(rt.device(), A.BACKWARD, FLOAT32, act, pre.size, False), grad_out=put(rt, g),
              z=put(rt, z), grad_input=want_gx, n=pre.size, alpha=np.float32(alpha))
    np.testing.assert_array_equal(host(gx), host(want_gx))
    colsum = np.zeros(13, np.float32)
    for r in host(want_gx):                                # fp32, row order
        colsum += r
    np.testing.assert_array_equal(host(gb), colsum)
