"""pool2d beyond the spec's cases (which tests/test_kernel_specs.py runs on every runtime, dtype
and layout against the float64 reference): torch's semantics (ties, NaN, index values) with
torch CPU as the oracle, the reference's new behaviour (adaptive_max_pool2d, unbatched, empty,
1-tuple and integer inputs, a 16777217-row plane), determinism, plan choices, the argument
errors, and the autograd path on the 'sim' backend."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import nn
from cvkernels import reference as ref
from cvkernels.numerics import U32
from cvkernels.specs import pool2d as K
from runtimes import put, rt  # noqa: F401  (fixture)

torch = pytest.importorskip("torch")
TF = torch.nn.functional
BF16 = np.dtype(K.FAMILY.dtypes[2].np)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def tie_nan_input(shape, seed=0):
    """Small integers (many ties), a few NaNs and -infs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 11), replace=False)] = np.nan
    flat[rng.choice(flat.size, max(1, flat.size // 13), replace=False)] = -np.inf
    return x


def torch_pool(name, x, **kw):
    """torch.nn.functional.<name> on CPU, in x's dtype (bf16 through torch.bfloat16)."""
    t = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16) if x.dtype == BF16 \
        else torch.from_numpy(np.ascontiguousarray(x))
    out = getattr(TF, name)(t, **kw)
    return tuple(o.float().numpy() if o.is_floating_point() else o.numpy() for o in out) \
        if isinstance(out, tuple) else out.float().numpy()


MAX_GEOMS = [((2, 3, 9, 11), dict(kernel_size=3, stride=2, padding=1)),
             ((1, 2, 13, 11), dict(kernel_size=(3, 2), stride=(2, 3), padding=1,
                                   dilation=(2, 1), ceil_mode=True)),
             ((1, 1, 5, 6), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
             ((2, 7, 8), dict(kernel_size=2, stride=3))]


# ---- kernels: torch's semantics --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape,kw", MAX_GEOMS)
def test_max_pool2d_ties_nan_and_indices_match_torch(rt, dtype, shape, kw):
    x = tie_nan_input(shape).astype(dtype)
    y, idx = K.max_pool2d_forward(rt, put(rt, x), **kw, return_indices=True)
    ty, tidx = torch_pool("max_pool2d", x, **kw, return_indices=True)
    np.testing.assert_array_equal(host(y).astype(np.float32), ty)    # NaN positions too
    np.testing.assert_array_equal(host(idx), tidx)                    # first max; last NaN
    assert host(idx).dtype == np.int64
    # without indices: the same values from the other instantiation
    np.testing.assert_array_equal(host(K.max_pool2d_forward(rt, put(rt, x), **kw))
                                  .astype(np.float32), host(y).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape,size", [((2, 3, 7, 5), (3, 2)), ((1, 2, 4, 5), (6, 7)),
                                        ((3, 13, 11), 1), ((1, 1, 9, 9), (2, None))])
def test_adaptive_max_pool2d_ties_nan_and_indices_match_torch(rt, dtype, shape, size):
    x = tie_nan_input(shape, seed=3).astype(dtype)
    y, idx = K.adaptive_max_pool2d_forward(rt, put(rt, x), size, return_indices=True)
    ty, tidx = torch_pool("adaptive_max_pool2d", x, output_size=size, return_indices=True)
    np.testing.assert_array_equal(host(y).astype(np.float32), ty)
    np.testing.assert_array_equal(host(idx), tidx)


def test_backwards_match_torch_gradients(rt):
    """Each gather backward against torch's autograd (fp32, tie-free input so the argmax, and
    hence the gradient, is unique)."""
    rng = np.random.default_rng(7)
    x = (rng.permutation(2 * 3 * 11 * 10).reshape(2, 3, 11, 10) / 100.0).astype(np.float32)
    for name, kw, fwd, bwd in [
            ("max_pool2d", dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
             K.max_pool2d_forward, K.max_pool2d_backward),
            ("avg_pool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True,
                                count_include_pad=False), K.avg_pool2d_forward,
             K.avg_pool2d_backward),
            ("adaptive_avg_pool2d", dict(output_size=(4, 3)), K.adaptive_avg_pool2d_forward,
             K.adaptive_avg_pool2d_backward),
            ("adaptive_max_pool2d", dict(output_size=(4, 3)), K.adaptive_max_pool2d_forward,
             K.adaptive_max_pool2d_backward)]:
        t = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        out = getattr(TF, name)(t, **kw)
        g = rng.standard_normal(tuple(out.shape)).astype(np.float32)
        out.backward(torch.from_numpy(g.astype(np.float64)))
        (gx,) = bwd(rt, put(rt, g), put(rt, x), **kw)
        # each input sums m <= 4 terms g/div in fp32: (m + 2) u times the sum of |terms|
        (scale,) = getattr(ref, f"{name}_backward")(np.abs(g).astype(np.float64),
                                                    x.astype(np.float64), **kw)
        err = np.abs(host(gx) - t.grad.numpy())
        assert (err <= 6 * U32 * np.abs(scale)).all(), name


def test_max_backward_with_and_without_indices_agree(rt):
    x = tie_nan_input((2, 3, 9, 11), seed=5)
    kw = dict(kernel_size=3, stride=2, padding=1)
    _, idx = K.max_pool2d_forward(rt, put(rt, x), **kw, return_indices=True)
    g = np.random.default_rng(0).standard_normal(host(idx).shape).astype(np.float32)
    (a,) = K.max_pool2d_backward(rt, put(rt, g), put(rt, x), **kw)
    (b,) = K.max_pool2d_backward(rt, put(rt, g), put(rt, x), **kw, indices=idx)
    np.testing.assert_array_equal(host(a), host(b))
    (r,) = ref.max_pool2d_backward(g.astype(np.float64), x.astype(np.float64), **kw,
                                   indices=host(idx))
    np.testing.assert_allclose(host(a), r, rtol=10 * U32, atol=0)


@pytest.mark.sim
def test_backwards_are_deterministic_across_runs_and_launch_paths():
    """Gathers, no atomics: bitwise equal on repeated runs and on both launch paths."""
    from cvkernels.backends.runtime import make_runtime
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 17, 19)).astype(np.float32)
    g = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)      # 3x3 s2 p1 outputs
    ga = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    runs = []
    for name in ("sim", "sim-rawkernel", "sim"):
        r = make_runtime(name)
        out = [*K.max_pool2d_backward(r, g, x, 3, 2, 1), *K.avg_pool2d_backward(r, g, x, 3, 2, 1),
               *K.adaptive_avg_pool2d_backward(r, ga, x, (5, 7)),
               *K.adaptive_max_pool2d_backward(r, ga, x, (5, 7)),
               K.adaptive_avg_pool2d_forward(r, x, 1)]
        runs.append([host(o).tobytes() for o in out])
    assert runs[0] == runs[1] == runs[2]


# ---- kernels: plans, empty inputs, errors ------------------------------------------------------
def test_plans():
    from cvkernels.device import sim_device
    dev = sim_device()
    p = K.plan_grid(dev, K.MAX_FORWARD, dict(T=K.FAMILY.dtypes[0], INDICES=False), 2048, 56, 56)
    assert p.block == (56, 4, 1) and p.grid == (1, 14, 2048)       # no idle lane on 56 columns
    p = K.plan_grid(dev, K.MAX_FORWARD, dict(T=K.FAMILY.dtypes[0], INDICES=False), 70000, 3,
                    300)
    assert p.block == (128, 2, 1) and p.grid == (3, 2, 65535)      # planes strided in-kernel
    f32 = K.FAMILY.dtypes[0]
    assert K.plan_global(dev, f32, 64, 49, True).values[1:] == (False, False)   # warp, scalar
    assert K.plan_global(dev, f32, 64, 3136, True).values[1:] == (True, True)   # block, 16 B
    assert K.plan_global(dev, f32, 64, 3136, False).values[1:] == (True, False)


@pytest.mark.parametrize("hw", [(5, 7), (40, 41), (32, 36)])
def test_global_average_takes_the_fast_path(rt, hw, monkeypatch):
    x = np.random.default_rng(1).standard_normal((2, 3, *hw)).astype(np.float32)
    names = []
    launch = rt.launch
    monkeypatch.setattr(rt, "launch", lambda p, **a: (names.append(p.kernel.name),
                                                      launch(p, **a))[1])
    y = K.adaptive_avg_pool2d_forward(rt, put(rt, x), 1)
    assert names == ["global_avg_pool2d_forward_kernel"]
    r = ref.adaptive_avg_pool2d_forward(x.astype(np.float64), 1)
    n = hw[0] * hw[1]
    np.testing.assert_allclose(host(y), r, rtol=0,
                               atol=(n + 2) * U32 * np.abs(x).mean(axis=(2, 3)).max())


EMPTY = [(lambda rt, x: K.max_pool2d_forward(rt, x, 2), (0, 3, 5, 5)),
         (lambda rt, x: K.max_pool2d_forward(rt, x, 2, return_indices=True)[1], (0, 3, 5, 5)),
         (lambda rt, x: K.avg_pool2d_forward(rt, x, 2), (0, 3, 5, 5)),
         (lambda rt, x: K.adaptive_avg_pool2d_forward(rt, x, 3), (0, 5, 5)),
         (lambda rt, x: K.adaptive_avg_pool2d_forward(rt, x, 1), (2, 0, 5, 5)),
         (lambda rt, x: K.adaptive_max_pool2d_forward(rt, x, 3, True)[1], (0, 5, 5)),
         (lambda rt, x: K.adaptive_avg_pool2d_backward(
             rt, np.zeros(x.shape[:-2] + (3, 3), np.float32), x, 3)[0], (0, 3, 5, 5)),
         (lambda rt, x: K.max_pool2d_backward(
             rt, np.zeros(x.shape[:-2] + (2, 2), np.float32), x, 2)[0], (0, 3, 5, 5))]


@pytest.mark.parametrize("call,shape", EMPTY)
def test_empty_inputs_launch_nothing(rt, call, shape, monkeypatch):
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("launched on empty input"))
    out = host(call(rt, put(rt, np.zeros(shape, np.float32))))
    assert out.size == 0 and out.shape[:-2] == shape[:-2]


def test_output_size_zero_gives_zero_gradients(rt):
    x = np.ones((1, 2, 3, 4), np.float32)
    assert host(K.adaptive_avg_pool2d_forward(rt, put(rt, x), 0)).shape == (1, 2, 0, 0)
    (gx,) = K.adaptive_max_pool2d_backward(rt, put(rt, np.zeros((1, 2, 0, 0), np.float32)),
                                           put(rt, x), 0)
    np.testing.assert_array_equal(host(gx), np.zeros_like(x))


def test_errors_name_the_function_and_argument(rt):
    x = put(rt, np.zeros((1, 2, 6, 6), np.float32))
    cases = [
        (TypeError, "max_pool2d: .*input has dtype int32",
         lambda: K.max_pool2d_forward(rt, put(rt, np.zeros((1, 1, 4, 4), np.int32)), 2)),
        (ValueError, "max_pool2d: padding must be", lambda: K.max_pool2d_forward(rt, x, 2, 1, 2)),
        (ValueError, "max_pool2d: dilation", lambda: K.max_pool2d_forward(rt, x, 2, dilation=0)),
        (ValueError, "max_pool2d: kernel_size", lambda: K.max_pool2d_forward(rt, x, (2, 2, 2))),
        (ValueError, "avg_pool2d: divisor_override",
         lambda: K.avg_pool2d_forward(rt, x, 2, divisor_override=0)),
        (ValueError, "adaptive_avg_pool2d: output_size",
         lambda: K.adaptive_avg_pool2d_forward(rt, x, (2,))),
        (ValueError, "adaptive_max_pool2d: input must have non-zero",
         lambda: K.adaptive_max_pool2d_forward(rt, put(rt, np.zeros((2, 0, 4, 4),
                                                                    np.float32)), 2)),
        (ValueError, "max_pool2d_backward: grad_out",
         lambda: K.max_pool2d_backward(rt, put(rt, np.zeros((1, 2, 2, 2), np.float32)), x, 2)),
        (ValueError, "max_pool2d_backward: indices must be an integer array",
         lambda: K.max_pool2d_backward(rt, put(rt, np.zeros((1, 2, 3, 3), np.float32)), x, 2,
                                       indices=put(rt, np.zeros((1, 2, 3, 2), np.int64)))),
        (ValueError, r"adaptive_max_pool2d_backward: indices must be in \[-1, H\*W = 36\)",
         lambda: K.adaptive_max_pool2d_backward(
             rt, put(rt, np.zeros((1, 2, 3, 3), np.float32)), x, 3,
             indices=put(rt, np.full((1, 2, 3, 3), 36, np.int64)))),
        (TypeError, "avg_pool2d_backward: arguments must share one dtype",
         lambda: K.avg_pool2d_backward(rt, put(rt, np.zeros((1, 2, 3, 3), np.float16)), x, 2)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()


# ---- autograd on the kernels --------------------------------------------------------------------
@pytest.mark.sim
def test_autograd_on_the_simulator_matches_the_reference():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    for fn, kw in [(F.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
                   (F.avg_pool2d, dict(kernel_size=3, stride=2, padding=1,
                                       count_include_pad=False)),
                   (F.adaptive_avg_pool2d, dict(output_size=(4, 3))),
                   (F.adaptive_avg_pool2d, dict(output_size=1)),
                   (F.adaptive_max_pool2d, dict(output_size=(4, 3)))]:
        with cvk.backend("sim"):
            t = cvk.Tensor(x, requires_grad=True)
            y = fn(t, **kw)
            g = rng.standard_normal(y.shape).astype(np.float32)
            (y * cvk.Tensor(g)).sum().backward()
        name = fn.__name__
        r = getattr(ref, f"{name}_forward")(x.astype(np.float64), **kw)
        np.testing.assert_allclose(y.numpy(), r, rtol=12 * U32, atol=12 * U32, err_msg=name)
        (rg,) = getattr(ref, f"{name}_backward")(g.astype(np.float64), x.astype(np.float64),
                                                 **kw)
        np.testing.assert_allclose(t.grad.numpy(), rg, rtol=12 * U32, atol=12 * U32,
                                   err_msg=name)
    with cvk.backend("sim"):        # indices out; module form
        _, idx = nn.AdaptiveMaxPool2d((4, 3), return_indices=True)(cvk.Tensor(x))
    np.testing.assert_array_equal(idx.numpy(), ref.adaptive_max_pool2d(x, (4, 3), True)[1])


# ---- the reference ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,size", [((2, 3, 7, 5), (3, 2)), ((1, 2, 4, 4), (6, 7)),
                                        ((3, 13, 10), (4, None)), ((2, 3, 9, 11), 1)])
def test_reference_adaptive_max_pool2d_matches_torch(shape, size):
    x = tie_nan_input(shape, seed=9).astype(np.float64)
    y, idx = ref.adaptive_max_pool2d_forward(x, size, return_indices=True)
    ty, tidx = torch_pool("adaptive_max_pool2d", x, output_size=size, return_indices=True)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)
    xf = np.random.default_rng(1).permutation(x.size).reshape(shape).astype(np.float64)
    t = torch.from_numpy(xf).requires_grad_()
    out = TF.adaptive_max_pool2d(t, size)
    g = np.random.default_rng(2).standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ref.adaptive_max_pool2d_backward(g, xf, size)[0], t.grad.numpy(),
                               rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.int64])
def test_reference_max_pool2d_takes_integers_as_torch_cpu(dtype):
    x = np.random.default_rng(0).integers(0, 100, (2, 3, 7, 6)).astype(dtype)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y, idx = ref.max_pool2d(x, **kw, return_indices=True)
    ty, tidx = TF.max_pool2d(torch.from_numpy(x), **kw, return_indices=True)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("name,kw", [
    ("max_pool2d", dict(kernel_size=(2,), stride=(2,), padding=(1,), dilation=(1,))),
    ("avg_pool2d", dict(kernel_size=(3,), stride=(2,), padding=(1,))),
    ("max_pool2d", dict(kernel_size=3, stride=[])),
])
def test_reference_one_tuples_stand_for_both_sizes(name, kw):
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 6))
    np.testing.assert_allclose(getattr(ref, name)(x, **kw), torch_pool(name, x, **kw),
                               rtol=1e-6, atol=1e-7)


def test_reference_unbatched_and_empty_follow_torch():
    x3 = np.random.default_rng(0).standard_normal((3, 7, 6))
    for name, kw in [("max_pool2d", dict(kernel_size=2)), ("avg_pool2d", dict(kernel_size=2)),
                     ("adaptive_avg_pool2d", dict(output_size=3)),
                     ("adaptive_max_pool2d", dict(output_size=3))]:
        np.testing.assert_allclose(getattr(ref, name)(x3, **kw), torch_pool(name, x3, **kw),
                                   rtol=1e-6, atol=1e-7)
    # empty: torch's rules, which differ per pool
    for shape in [(0, 4, 5), (0, 2, 4, 5), (2, 0, 4, 5)]:
        assert ref.adaptive_avg_pool2d(np.zeros(shape), 2).shape == shape[:-2] + (2, 2)
    for shape in [(0, 4, 5), (0, 2, 4, 5)]:
        y, i = ref.adaptive_max_pool2d(np.zeros(shape), 2, True)
        assert y.shape == i.shape == shape[:-2] + (2, 2)
        (gx,) = ref.adaptive_max_pool2d_backward(np.zeros(y.shape), np.zeros(shape), 2)
        assert gx.shape == shape
    with pytest.raises(ValueError, match="adaptive_max_pool2d: input must have non-zero"):
        ref.adaptive_max_pool2d(np.zeros((2, 0, 4, 5)), 2)     # as torch
    with pytest.raises(ValueError, match="max_pool2d: input must have non-zero C, H and W"):
        ref.max_pool2d(np.zeros((0, 4, 5)), 2)                   # as torch


def test_reference_pools_a_16777217_row_plane():
    """torch's test_pool_large_size: memory linear in the input (the old avg reference built
    an H_out x H_in window matrix and raised MemoryError); max and the backward at 2^20 + 1
    rows (the largest plane tested in time)."""
    x = np.ones((1, 1, 16777217, 1), np.float32)
    y = ref.avg_pool2d(x, 1, stride=1, padding=0)
    assert y.shape == x.shape and y.dtype == np.float32 and y[0, 0, -1, 0] == 1
    x = x[:, :, :2 ** 20 + 1]
    y = ref.max_pool2d(x, 1, stride=1, padding=0)
    assert y.shape == x.shape and y[0, 0, -1, 0] == 1
    (gx,) = ref.avg_pool2d_backward(x, x, 1, 1)
    assert gx.shape == x.shape and gx[0, 0, -1, 0] == 1


def test_functional_and_module_adaptive_max_pool2d_on_cpu():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 5))
    y, idx = F.adaptive_max_pool2d(x, (3, 2), return_indices=True)
    ry, ridx = ref.adaptive_max_pool2d(x, (3, 2), True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    t = cvk.Tensor(x, requires_grad=True)
    out = nn.AdaptiveMaxPool2d((3, 2))(t)
    g = rng.standard_normal(out.shape)
    (out * cvk.Tensor(g)).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), ref.adaptive_max_pool2d_backward(g, x,
                                                                                   (3, 2))[0])
    assert "output_size=(3, 2)" in repr(nn.AdaptiveMaxPool2d((3, 2)))
