"""softmax_forward_kernel / softmax_backward_kernel (softmax and log_softmax) against the float64
reference, on both launch paths, on the simulator and (where present) on a GPU."""
import numpy as np
import pytest

from cvkernels import reference as ref
from cvkernels.specs import softmax as K
from helpers import assert_close
from runtimes import put, rt  # noqa: F401  (fixture)

from cvkernels.numerics import U32

# Rounding budget per output, in units of U32: the normaliser is a sum of `cols` fp32 terms
# (gamma_cols), plus a few roundings for exp, the subtraction and the division.
def budget(cols):
    return (cols + 8) * U32


COLS = [1, 17, 31, 33, 127, 129, 1023, 1025, 2052, 3001]


@pytest.mark.parametrize("cols", COLS)
@pytest.mark.parametrize("rows", [1, 6])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_forward_backward(rt, rows, cols, log):
    rng = np.random.default_rng(rows * 7919 + cols)
    x = (3 * rng.standard_normal((rows, cols))).astype(np.float32)
    g = rng.standard_normal((rows, cols)).astype(np.float32)
    fwd, bwd = (K.log_softmax_forward, K.log_softmax_backward) if log else \
        (K.softmax_forward, K.softmax_backward)
    rfwd, rbwd = (ref.log_softmax_forward, ref.log_softmax_backward) if log else \
        (ref.softmax_forward, ref.softmax_backward)
    y = fwd(rt, put(rt, x))
    y64 = rfwd(x.astype(np.float64))
    if log:   # log(s(1+d)) = log s + d: absolute error, plus relative rounding of x - m
        assert_close(y, y64.astype(np.float32), atol=budget(cols), rtol=4 * U32, name="forward")
    else:
        assert_close(y, y64.astype(np.float32), atol=0, rtol=budget(cols), name="forward")
    # backward from the kernel's own y, against the float64 formula on the same y
    (dx,) = bwd(rt, put(rt, g), y)
    yk = np.asarray(y.get() if hasattr(y, "get") else y, dtype=np.float64)
    (dx64,) = rbwd(g.astype(np.float64), yk)
    scale = np.abs(g).sum(1, keepdims=True) * (np.exp(yk) if log else np.abs(yk)) + np.abs(g)
    assert_close(dx, dx64.astype(np.float32), atol=budget(cols) * scale + 1e-30, rtol=0,
                 name="backward")


@pytest.mark.parametrize("shape,dim", [((4, 5, 6), 0), ((4, 5, 6), 1), ((3, 1025, 2), 1),
                                       ((7,), 0), ((), 0), ((0, 5), 1), ((5, 0), 1), ((2, 0, 3), -1)])
def test_softmax_dims_and_empty(rt, shape, dim):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    for fwd, rfwd in [(K.softmax_forward, ref.softmax_forward),
                      (K.log_softmax_forward, ref.log_softmax_forward)]:
        y = fwd(rt, put(rt, x), dim)
        n = shape[dim] if shape else 1
        assert_close(y, rfwd(x.astype(np.float64), dim).astype(np.float32), atol=budget(n),
                     rtol=budget(n))


def test_softmax_noncontiguous_and_masked(rt):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((40, 300)).astype(np.float32)
    x = base[::3, 7:290:2]                       # strided view
    x[:, :10] = -np.inf                          # masked entries: exp(-inf) = 0, not NaN
    y = K.softmax_forward(rt, put(rt, np.ascontiguousarray(x)))
    y_view = K.softmax_forward(rt, put(rt, x))
    expect = ref.softmax_forward(x.astype(np.float64)).astype(np.float32)
    assert_close(y, expect, atol=0, rtol=budget(x.shape[1]))
    assert_close(y_view, y, atol=0, rtol=0)
    assert float(np.abs(np.asarray(y.get() if hasattr(y, "get") else y)[:, :10]).max()) == 0.0


def test_softmax_rejects_bad_input(rt):
    with pytest.raises(IndexError, match="softmax: dim=2 is out of range"):
        K.softmax_forward(rt, put(rt, np.zeros((3, 4), np.float32)), 2)
    with pytest.raises(TypeError, match="float32, float16, bfloat16 kernels; input has dtype "
                                        "float64"):
        K.softmax_forward(rt, put(rt, np.zeros((3, 4), np.float64)))
    with pytest.raises(ValueError, match="grad_out shape"):
        K.softmax_backward(rt, put(rt, np.zeros((3, 4), np.float32)),
                           put(rt, np.zeros((3, 5), np.float32)))
