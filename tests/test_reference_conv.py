"""cvkernels.reference conv2d / conv_transpose2d: forward and backward.

Oracles: torch (optional, CPU float64), central differences, and an integer computation.
"""
import numpy as np
import pytest
from helpers import assert_close, assert_rounded, check_grads, rounding_tol

from cvkernels.reference import (conv2d, conv2d_backward, conv2d_forward, conv_transpose2d,
                                 conv_transpose2d_backward, conv_transpose2d_forward)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")

SEEDS = [0, 1, 2]
# Finite differences of a function that is linear in each input have no truncation error;
# what is left is rounding, eps64 * |sum(f*g)| / h ~ 1e-16 * 1e1 / 1e-6 = 1e-9.
FD_TOL = dict(atol=1e-7, rtol=1e-6)


def _torch_run(fn_name, arrays, kwargs, grad_out=None, args=()):
    """Run torch.nn.functional.<fn_name>(*arrays, *args, **kwargs) in float64 (arrays upcast).

    Returns the output, and with ``grad_out`` also the gradients of ``arrays``.
    """
    torch = pytest.importorskip("torch")
    ts = [None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=True)
          for a in arrays]
    out = getattr(torch.nn.functional, fn_name)(*ts, *args, **kwargs)
    if grad_out is None:
        return out.detach().numpy()
    out.backward(torch.from_numpy(np.asarray(grad_out, np.float64)))
    return out.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# (input shape, weight shape, bias?, kwargs)
CONV_CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), True, {}),
    ((1, 4, 8, 8), (6, 2, 3, 2), True, dict(stride=2, padding=1, groups=2)),
    ((3, 6, 11, 13), (6, 1, 3, 3), False, dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1),
                                               groups=6)),           # depthwise
    ((2, 4, 6, 5), (8, 2, 2, 4), True, dict(padding="same", dilation=(1, 2), groups=2)),
    ((1, 3, 5, 5), (2, 3, 2, 2), True, dict(padding="same")),       # odd total: extra right
    ((2, 2, 5, 7), (3, 2, 5, 7), True, dict(padding="valid")),      # kernel = input
    ((1, 1, 31, 33), (1, 1, 1, 1), True, dict(stride=3)),
    ((2, 3, 33, 31), (5, 3, 3, 3), True, dict(stride=2, padding=1)),
    ((3, 7, 7), (2, 3, 3, 3), True, dict(padding=1)),                # unbatched
]

# (input shape, weight shape, bias?, kwargs)
CONVT_CASES = [
    ((2, 3, 5, 6), (3, 4, 3, 3), True, {}),
    ((1, 4, 4, 5), (4, 3, 3, 2), True, dict(stride=2, padding=1, output_padding=1, groups=2)),
    ((2, 6, 5, 4), (6, 1, 3, 3), False, dict(stride=(2, 3), padding=(1, 0),
                                             output_padding=(1, 2), groups=6)),
    ((1, 2, 4, 4), (2, 3, 3, 3), True, dict(stride=1, output_padding=1, dilation=2)),
    ((1, 2, 3, 5), (2, 2, 2, 3), True, dict(stride=3, padding=1, output_padding=(2, 0),
                                            dilation=(1, 2))),
    ((3, 5, 6), (3, 2, 3, 3), True, dict(stride=2)),                 # unbatched
]


# ----------------------------------------------------------------------------- vs torch

@pytest.mark.parametrize("xs,ws,has_bias,kw", CONV_CASES)
def test_conv2d_matches_torch(xs, ws, has_bias, kw):
    rng = np.random.default_rng(0)
    x, w = _rand(rng, xs), _rand(rng, ws)
    b = _rand(rng, ws[:1]) if has_bias else None
    out = conv2d(x, w, b, **kw)
    g = _rand(rng, out.shape)
    ref, (rgx, rgw, rgb) = _torch_run("conv2d", [x, w, b], kw, g)
    gx, gw, gb = conv2d_backward(g, x, w, b, **kw)
    assert_close(out, ref, **rounding_tol(np.float64, ref), name="out")
    assert_close(gx, rgx, **rounding_tol(np.float64, rgx), name="grad_input")
    assert_close(gw, rgw, **rounding_tol(np.float64, rgw), name="grad_weight")
    if has_bias:
        assert_close(gb, rgb, **rounding_tol(np.float64, rgb), name="grad_bias")
    else:
        assert gb is None


@pytest.mark.parametrize("xs,ws,has_bias,kw", CONVT_CASES)
def test_conv_transpose2d_matches_torch(xs, ws, has_bias, kw):
    rng = np.random.default_rng(1)
    x, w = _rand(rng, xs), _rand(rng, ws)
    groups = kw.get("groups", 1)
    b = _rand(rng, (ws[1] * groups,)) if has_bias else None
    out = conv_transpose2d(x, w, b, **kw)
    g = _rand(rng, out.shape)
    ref, (rgx, rgw, rgb) = _torch_run("conv_transpose2d", [x, w, b], kw, g)
    gx, gw, gb = conv_transpose2d_backward(g, x, w, b, **kw)
    assert_close(out, ref, **rounding_tol(np.float64, ref), name="out")
    assert_close(gx, rgx, **rounding_tol(np.float64, rgx), name="grad_input")
    assert_close(gw, rgw, **rounding_tol(np.float64, rgw), name="grad_weight")
    if has_bias:
        assert_close(gb, rgb, **rounding_tol(np.float64, rgb), name="grad_bias")
    else:
        assert gb is None


def test_conv_transpose2d_positional_order_matches_torch():
    # torch's order: (input, weight, bias, stride, padding, output_padding, groups, dilation)
    rng = np.random.default_rng(2)
    x, w, b = _rand(rng, (1, 4, 3, 4)), _rand(rng, (4, 1, 3, 3)), _rand(rng, (2,))
    args = (2, 1, 1, 2, 2)
    ref = _torch_run("conv_transpose2d", [x, w, b], {}, args=args)
    out = conv_transpose2d(x, w, b, *args)
    assert_close(out, ref, **rounding_tol(np.float64, ref), name="out")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_is_the_rounded_float64_result(dtype):
    rng = np.random.default_rng(3)
    x, w, b = (_rand(rng, s, dtype) for s in [(2, 4, 9, 8), (6, 2, 3, 3), (6,)])
    kw = dict(stride=2, padding=1, groups=2)
    out = conv2d(x, w, b, **kw)
    ref = _torch_run("conv2d", [x, w, b], kw)
    assert_rounded(out, ref, dtype, name="conv2d out")
    g = _rand(rng, out.shape, dtype)
    grads = conv2d_backward(g, x, w, b, **kw)
    _, rgrads = _torch_run("conv2d", [x, w, b], kw, g)
    for name, a, r in zip(["grad_input", "grad_weight", "grad_bias"], grads, rgrads):
        assert_rounded(a, r, dtype, name=name)
    xt, wt = _rand(rng, (2, 4, 5, 5), dtype), _rand(rng, (4, 3, 3, 3), dtype)
    kwt = dict(stride=2, output_padding=1)
    out = conv_transpose2d(xt, wt, None, **kwt)
    ref = _torch_run("conv_transpose2d", [xt, wt, None], kwt)
    assert_rounded(out, ref, dtype, name="conv_transpose2d out")


def test_aliases():
    assert conv2d is conv2d_forward
    assert conv_transpose2d is conv_transpose2d_forward


# ----------------------------------------------------------------------------- exact

def _int_conv2d(x, w, stride, padding, dilation, groups):
    """Direct integer cross-correlation with plain loops (int64): the exact answer."""
    n, c_in, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c_out, ho, wo), dtype=np.int64)
    c_out_g = c_out // groups
    for b in range(n):
        for o in range(c_out):
            grp = o // c_out_g
            for y in range(ho):
                for xx in range(wo):
                    acc = 0
                    for c in range(c_in_g):
                        for i in range(kh):
                            for j in range(kw):
                                iy, ix = y * sh - ph + i * dh, xx * sw - pw + j * dw
                                if 0 <= iy < h and 0 <= ix < wd:
                                    acc += x[b, grp * c_in_g + c, iy, ix] * w[o, c, i, j]
                    out[b, o, y, xx] = acc
    return out


def _int_conv_transpose2d(x, w, stride, padding, output_padding, dilation, groups):
    """Direct integer transposed convolution: each input pixel scatters the filter."""
    n, c_in, h, wd = x.shape
    _, c_out_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    out = np.zeros((n, c_out_g * groups, ho, wo), dtype=np.int64)
    c_in_g = c_in // groups
    for b in range(n):
        for c in range(c_in):
            grp = c // c_in_g
            for y in range(h):
                for xx in range(wd):
                    for o in range(c_out_g):
                        for i in range(kh):
                            for j in range(kw):
                                oy, ox = y * sh - ph + i * dh, xx * sw - pw + j * dw
                                if 0 <= oy < ho and 0 <= ox < wo:
                                    out[b, grp * c_out_g + o, oy, ox] += \
                                        x[b, c, y, xx] * w[c, o, i, j]
    return out


def test_conv2d_small_integers_bit_exact_float32():
    rng = np.random.default_rng(4)
    x = rng.integers(-4, 5, (2, 4, 9, 7))
    w = rng.integers(-3, 4, (6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    expected = _int_conv2d(x, w, kw["stride"], kw["padding"], kw["dilation"], 2)
    out = conv2d(x.astype(np.float32), w.astype(np.float32), **kw)
    assert_close(out, expected.astype(np.float32), atol=0, rtol=0, name="conv2d int")


def test_conv_transpose2d_small_integers_bit_exact_float32():
    rng = np.random.default_rng(5)
    x = rng.integers(-4, 5, (2, 4, 4, 5))
    w = rng.integers(-3, 4, (4, 3, 3, 2))
    kw = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2))
    expected = _int_conv_transpose2d(x, w, kw["stride"], kw["padding"], kw["output_padding"],
                                     kw["dilation"], 2)
    out = conv_transpose2d(x.astype(np.float32), w.astype(np.float32), **kw)
    assert_close(out, expected.astype(np.float32), atol=0, rtol=0, name="conv_transpose2d int")


# ----------------------------------------------------------------------------- finite differences

FD_CONV = [
    ((2, 2, 4, 5), (4, 1, 2, 3), dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
    ((1, 3, 5, 4), (2, 3, 3, 3), dict(padding="same")),
]
FD_CONVT = [
    ((2, 2, 3, 3), (2, 2, 2, 3), dict(stride=2, padding=(1, 0), output_padding=1, groups=2)),
    ((1, 2, 3, 2), (2, 1, 2, 2), dict(stride=1, output_padding=(1, 0), dilation=2)),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("xs,ws,kw", FD_CONV)
def test_conv2d_backward_finite_differences(seed, xs, ws, kw):
    rng = np.random.default_rng(seed)
    x, w, b = _rand(rng, xs), _rand(rng, ws), _rand(rng, ws[:1])
    check_grads(lambda x, w, b: conv2d(x, w, b, **kw),
                lambda g: conv2d_backward(g, x, w, b, **kw),
                [x, w, b], seed=seed, names=["grad_input", "grad_weight", "grad_bias"], **FD_TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("xs,ws,kw", FD_CONVT)
def test_conv_transpose2d_backward_finite_differences(seed, xs, ws, kw):
    rng = np.random.default_rng(seed)
    x, w = _rand(rng, xs), _rand(rng, ws)
    b = _rand(rng, (ws[1] * kw.get("groups", 1),))
    check_grads(lambda x, w, b: conv_transpose2d(x, w, b, **kw),
                lambda g: conv_transpose2d_backward(g, x, w, b, **kw),
                [x, w, b], seed=seed, names=["grad_input", "grad_weight", "grad_bias"], **FD_TOL)


# ----------------------------------------------------------------------------- awkward inputs

def test_empty_batch():
    x = np.zeros((0, 3, 6, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    b = np.ones(4, np.float32)
    out = conv2d(x, w, b, stride=2, padding=1)
    assert out.shape == (0, 4, 3, 3) and out.dtype == np.float32
    gx, gw, gb = conv2d_backward(out, x, w, b, stride=2, padding=1)
    assert gx.shape == x.shape and gx.dtype == np.float32
    assert_close(gw, np.zeros_like(w), atol=0, rtol=0, name="grad_weight")
    assert_close(gb, np.zeros_like(b), atol=0, rtol=0, name="grad_bias")
    wt = np.ones((3, 2, 3, 3), np.float32)
    out = conv_transpose2d(x, wt, stride=2)
    assert out.shape == (0, 2, 13, 11) and out.dtype == np.float32
    gx, gw, gb = conv_transpose2d_backward(out, x, wt, stride=2)
    assert gx.shape == x.shape and gw.shape == wt.shape and gb is None


def test_zero_input_channels_gives_bias():
    x = np.zeros((2, 0, 4, 4))
    w = np.zeros((3, 0, 3, 3))
    b = np.array([1.0, 2.0, 3.0])
    out = conv2d(x, w, b)
    assert_close(out, np.broadcast_to(b[:, None, None], (2, 3, 2, 2)), atol=0, rtol=0)


def test_non_contiguous_inputs():
    # small integers make every summation order exact, so any misread shows as a difference
    rng = np.random.default_rng(6)
    big = rng.integers(-3, 4, (2, 9, 6, 7)).astype(np.float64)
    x = big[:, ::2].transpose(0, 1, 3, 2)                        # (2, 5, 7, 6), strided
    w = rng.integers(-2, 3, (3, 5, 2, 4)).astype(np.float64).transpose(0, 1, 3, 2)
    b = rng.integers(-2, 3, (6,)).astype(np.float64)[::2]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or b.flags.c_contiguous)
    xc, wc, bc = (np.ascontiguousarray(a) for a in (x, w, b))
    kw = dict(stride=2, padding=1)
    assert_close(conv2d(x, w, b, **kw), conv2d(xc, wc, bc, **kw), atol=0, rtol=0)
    g = rng.integers(-2, 3, conv2d(xc, wc, bc, **kw).shape).astype(np.float64)
    g_nc = np.asfortranarray(g)
    for name, a, c in zip(["grad_input", "grad_weight", "grad_bias"],
                          conv2d_backward(g_nc, x, w, b, **kw),
                          conv2d_backward(g, xc, wc, bc, **kw)):
        assert_close(a, c, atol=0, rtol=0, name=name)
    wt = w.transpose(1, 0, 2, 3)                                  # (5, 3, 4, 2), strided
    wtc = np.ascontiguousarray(wt)
    assert_close(conv_transpose2d(x, wt, stride=2), conv_transpose2d(xc, wtc, stride=2),
                 atol=0, rtol=0, name="conv_transpose2d")
    gt = rng.integers(-2, 3, conv_transpose2d(xc, wtc, stride=2).shape).astype(np.float64)
    for name, a, c in zip(["grad_input", "grad_weight"],
                          conv_transpose2d_backward(np.asfortranarray(gt), x, wt, stride=2),
                          conv_transpose2d_backward(gt, xc, wtc, stride=2)):
        assert_close(a, c, atol=0, rtol=0, name=name)


# ----------------------------------------------------------------------------- bad inputs

def _x(*s, dtype=np.float32):
    return np.zeros(s, dtype)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 2, 3, 3)), ValueError, "weight"),        # channels
    (lambda: conv2d(_x(1, 4, 5, 5), _x(4, 2, 3, 3), groups=3), ValueError, "weight"),
    (lambda: conv2d(_x(1, 4, 5, 5), _x(4, 4, 3, 3), groups=0), ValueError, "groups"),
    (lambda: conv2d(np.zeros((1, 3, 5, 5), np.int32), _x(4, 3, 3, 3)), TypeError, "input"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3, dtype=np.float64)), TypeError, "weight"),
    (lambda: conv2d(_x(3, 5, 5)[0], _x(4, 3, 3, 3)), ValueError, "input"),          # ndim
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3)), ValueError, "weight"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), _x(3)), ValueError, "bias"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), padding="same", stride=2),
     ValueError, "padding"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), padding="full"), ValueError, "padding"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), padding=-1), ValueError, "padding"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), stride=0), ValueError, "stride"),
    (lambda: conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), dilation=(1, 0)), ValueError, "dilation"),
    (lambda: conv2d(_x(1, 3, 2, 5), _x(4, 3, 3, 3)), ValueError, "input"),          # too small
    (lambda: conv2d_backward(_x(1, 4, 2, 2), _x(1, 3, 5, 5), _x(4, 3, 3, 3)),
     ValueError, "grad_out"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(4, 2, 3, 3)), ValueError, "weight"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), stride=2, output_padding=2),
     ValueError, "output_padding"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), output_padding=1),
     ValueError, "output_padding"),
    (lambda: conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3, 3), padding="same"),
     ValueError, "padding"),
    (lambda: conv_transpose2d(_x(1, 3, 1, 1), _x(3, 2, 1, 1), padding=1),
     ValueError, "output size"),
    (lambda: conv_transpose2d(np.zeros((1, 3, 5, 5), np.int64), _x(3, 2, 3, 3)),
     TypeError, "input"),
])
def test_bad_inputs_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_error_names_the_function():
    with pytest.raises(ValueError, match=r"^conv2d: weight must have shape \[C_out, C_in/groups"):
        conv2d(_x(1, 3, 5, 5), _x(4, 2, 3, 3))
