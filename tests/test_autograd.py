"""Autograd: Tensor arithmetic and every functional op's gradient, against finite differences
(float64) and PyTorch (optional oracle)."""
import numpy as np
import pytest

from helpers import assert_close, check_grads

from cvkernels import functional as F
from cvkernels import ops
from cvkernels.autograd import Function, Tensor, cat, no_grad, stack

SEEDS = [0, 1]


def _rand(rng, *shape):
    return rng.standard_normal(shape)


# ------------------------------------------------------------------ Tensor arithmetic vs FD

def _binary_case(op, a, b, seed):
    def f(x, y):
        return op(Tensor(x), Tensor(y)).data

    def backward(g):
        ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
        op(ta, tb).backward(g)
        return ta.grad.data, tb.grad.data
    check_grads(f, backward, [a, b], seed=seed, atol=1e-6, rtol=1e-5, names=["grad_a", "grad_b"])


BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "pow": lambda x, y: x ** y,
    "mix": lambda x, y: (x * y - x / (y * y + 1)) * 3.0 + 2.0 - (-x) ** 2,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)),
                                    ((2, 1, 4), (3, 1))])
def test_binary_ops_match_finite_differences(name, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = _rand(rng, *shapes[0]), _rand(rng, *shapes[1])
    if name in ("div", "pow"):                 # keep away from 0 and from negative bases
        b = np.abs(b) + 0.5
        a = np.abs(a) + 0.5 if name == "pow" else a
    _binary_case(BINARY[name], a, b, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_matmul_operator_broadcast_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3)), ((2, 1, 3, 4),
                                                                           (5, 4, 2))]:
        _binary_case(lambda x, y: x @ y, _rand(rng, *sa), _rand(rng, *sb), seed)


UNARY = {
    "sum_all": lambda x: x.sum(),
    "sum_dim": lambda x: x.sum(1),
    "sum_keep": lambda x: x.sum((0, 2), keepdim=True),
    "mean_dim": lambda x: x.mean(-1),
    "mean_all": lambda x: x.mean(),
    "reshape": lambda x: x.reshape(4, -1) * 2,
    "transpose": lambda x: x.transpose(0, 2),
    "T": lambda x: x.T,
    "permute": lambda x: x.permute(1, 2, 0),
    "flatten": lambda x: x.flatten(1),
    "slice": lambda x: x[1:, ::2],
    "fancy_repeat": lambda x: x[np.array([0, 1, 0, 0])],   # repeated rows accumulate
    "exp_log": lambda x: (x.exp() + 1.0).log(),
    "sqrt_abs": lambda x: (x.abs() + 0.1).sqrt(),
    "pow_scalar": lambda x: x ** 3 - x ** 2.0 + 1.0 / (x * x + 1),
    "rsub_rdiv": lambda x: 1.0 - 2.0 / (x ** 2 + 1.0),
    "rpow": lambda x: 2.0 ** x,
    "cat": lambda x: cat([x, x * 2], dim=1),
    "stack": lambda x: stack([x, -x], dim=0),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_ops_match_finite_differences(name, seed):
    rng = np.random.default_rng(seed)
    a = _rand(rng, 2, 3, 4)
    op = UNARY[name]

    def f(x):
        return np.asarray(op(Tensor(x)).data)

    def backward(g):
        t = Tensor(a, requires_grad=True)
        op(t).backward(g)
        return (t.grad.data,)
    check_grads(f, backward, [a], seed=seed, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ Tensor arithmetic vs torch

def test_arithmetic_graph_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a, b, c = _rand(rng, 4, 5), _rand(rng, 5), _rand(rng, 5, 3)

    def expr(x, y, z):
        h = (x * y + x / (y * y + 1.0)) @ z
        h = h - h.mean(0, keepdim=True)
        return ((h ** 2).sum(1) * 0.5 + (-h[:, 0])).sum() / 3.0

    ts = [Tensor(v, requires_grad=True) for v in (a, b, c)]
    out = expr(*ts)
    out.backward()
    rs = [torch.tensor(v, requires_grad=True) for v in (a, b, c)]
    ref = expr(*rs)
    ref.backward()
    assert_close(out, ref, atol=1e-12, rtol=1e-12, name="value")
    for t, r, n in zip(ts, rs, "abc"):
        assert_close(t.grad, r.grad, atol=1e-12, rtol=1e-10, name=f"grad_{n}")


# ------------------------------------------------------------------ graph semantics

def test_reused_tensor_and_diamond_accumulate_once_each():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x                      # used twice below: a diamond
    z = (y + y * x + x).sum()      # dz/dx = 2x + 3x^2 + 1
    z.backward()
    assert_close(x.grad, 2 * x.data + 3 * x.data ** 2 + 1, atol=0, rtol=1e-15, name="grad")


def test_grads_accumulate_and_graph_is_freed():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    loss = (x * 3.0).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close(x.grad, np.array([6.0, 6.0]), atol=0, rtol=0, name="accumulated")
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_no_grad_detach_and_leaf_rules():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)


def test_scalars_keep_dtype_and_numpy_left_operand_defers():
    x = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    y = 2.5 * x + 1 - x / 3 + np.float64(2.0) * x
    assert y.dtype == np.float32
    z = np.full((2, 2), 2.0, np.float32) * x      # numpy on the left gives a Tensor
    assert isinstance(z, Tensor) and z.requires_grad
    (y + z).sum().backward()
    assert x.grad.dtype == np.float32
    assert_close(x.grad, np.full((2, 2), 2.5 - 1 / 3 + 2 + 2, np.float32), atol=1e-6, rtol=1e-6)


def test_tensor_basics_and_repr():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert t.shape == (2, 2) and t.ndim == 2 and t.dtype == np.float64 and t.numel() == 4
    assert t.size(1) == 2 and len(t) == 2 and t.device == "cpu"
    assert isinstance(t.numpy(), np.ndarray) and t.T.shape == (2, 2)
    assert "requires_grad=True" in repr(t)
    assert "grad_fn=<linear>" in repr(F.linear(t, t))
    assert "grad_fn=<matmul>" in repr(t @ t) and "grad_fn=<matmul>" in repr(t.matmul(t))
    assert t.sum().item() == 10.0
    assert Tensor(np.zeros(3)).argmax().item() == 0
    mask = t > 2.0
    assert isinstance(mask, Tensor) and mask.dtype == np.bool_ and not mask.requires_grad
    assert_close(mask, np.array([[False, False], [True, True]]), atol=0, rtol=0)
    assert {t: 1}[t] == 1 and (t == t).numpy().all()


def test_custom_function_with_save_for_backward():
    class Cube(Function):
        @staticmethod
        def forward(ctx, x, k=1.0):
            ctx.save_for_backward(x)
            ctx.k = k
            return k * x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            assert ctx.needs_input_grad == (True,)
            return (3 * ctx.k * x ** 2 * g,)

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = Cube.apply(x, k=2.0)
    assert y.grad_fn is Cube
    y.sum().backward()
    assert_close(x.grad, np.array([6.0, 24.0]), atol=0, rtol=0)


def test_mixed_devices_are_refused():
    class FakeGpu:      # anything with __cuda_array_interface__ counts as a GPU array
        __cuda_array_interface__ = {}
        shape, dtype = (2,), np.dtype(np.float64)
    gpu = Tensor.__new__(Tensor)
    gpu.data, gpu.requires_grad, gpu.grad, gpu._grad_fn, gpu._out_index = FakeGpu(), False, \
        None, None, 0
    with pytest.raises(ValueError, match="different devices"):
        Tensor(np.ones(2)) + gpu


# ------------------------------------------------------------------ functional ops

def _fd_op(fn, arrays, kwargs, seed, atol=1e-6, rtol=1e-5, diff=None):
    """FD-check ``fn(*Tensors, **kwargs)`` w.r.t. the arrays flagged in ``diff``."""
    diff = diff or [True] * len(arrays)

    def f(*xs):
        return np.asarray(fn(*xs, **kwargs))          # the raw-array path

    def backward(g):
        ts = [Tensor(a, requires_grad=d) if isinstance(a, np.ndarray) and d else a
              for a, d in zip(arrays, diff)]
        out = fn(*ts, **kwargs)
        assert isinstance(out, Tensor)
        out.backward(g)
        return tuple(t.grad.data if isinstance(t, Tensor) else None for t in ts)
    inputs = [a if d else None for a, d in zip(arrays, diff)]

    def f_all(*xs):
        full = [x if x is not None else a for x, a in zip(xs, arrays)]
        return f(*full)
    check_grads(f_all, backward, inputs, seed=seed, atol=atol, rtol=rtol)


def _functional_cases(rng):
    x4 = _rand(rng, 2, 3, 5, 5)
    w = _rand(rng, 4, 3, 3, 3) * 0.3
    ce_t = np.array([0, 2, 1, 2])
    return {
        "linear": (F.linear, [_rand(rng, 3, 4), _rand(rng, 2, 4), _rand(rng, 2)], {}, None),
        "matmul": (F.matmul, [_rand(rng, 2, 3, 4), _rand(rng, 4, 2)], {}, None),
        "softmax": (F.softmax, [_rand(rng, 3, 5)], {"dim": 1}, None),
        "log_softmax": (F.log_softmax, [_rand(rng, 3, 5)], {"dim": 0}, None),
        "conv2d": (F.conv2d, [x4, w, _rand(rng, 4)], {"stride": 2, "padding": 1}, None),
        "conv2d_groups": (F.conv2d, [_rand(rng, 1, 4, 5, 5), _rand(rng, 4, 2, 3, 3)],
                          {"groups": 2, "padding": "same"}, None),
        "conv_transpose2d": (F.conv_transpose2d, [_rand(rng, 1, 3, 3, 3),
                                                  _rand(rng, 3, 2, 3, 3), _rand(rng, 2)],
                             {"stride": 2, "padding": 1, "output_padding": 1}, None),
        "max_pool2d": (F.max_pool2d, [x4], {"kernel_size": 3, "stride": 2, "padding": 1}, None),
        "avg_pool2d": (F.avg_pool2d, [x4], {"kernel_size": 2, "ceil_mode": True}, None),
        "adaptive_avg_pool2d": (F.adaptive_avg_pool2d, [x4], {"output_size": (2, 3)}, None),
        "batch_norm_train": (F.batch_norm, [x4, np.zeros(3), np.ones(3), _rand(rng, 3),
                                            _rand(rng, 3)], {"training": True},
                             [True, False, False, True, True]),
        "batch_norm_eval": (F.batch_norm, [x4, _rand(rng, 3), np.abs(_rand(rng, 3)) + 0.5,
                                           _rand(rng, 3), _rand(rng, 3)], {"training": False},
                            [True, False, False, True, True]),
        "layer_norm": (lambda x, w, b, **kw: F.layer_norm(x, (3, 4), w, b, **kw),
                       [_rand(rng, 2, 3, 4), _rand(rng, 3, 4), _rand(rng, 3, 4)], {"eps": 1e-3},
                       None),
        "relu": (F.relu, [_rand(rng, 3, 4)], {}, None),
        "leaky_relu": (F.leaky_relu, [_rand(rng, 3, 4)], {"negative_slope": 0.2}, None),
        "elu": (F.elu, [_rand(rng, 3, 4)], {"alpha": 0.7}, None),
        "gelu": (F.gelu, [_rand(rng, 3, 4)], {}, None),
        "gelu_tanh": (F.gelu, [_rand(rng, 3, 4)], {"approximate": "tanh"}, None),
        "sigmoid": (F.sigmoid, [_rand(rng, 3, 4)], {}, None),
        "tanh": (F.tanh, [_rand(rng, 3, 4)], {}, None),
        "cross_entropy": (F.cross_entropy, [_rand(rng, 4, 3), ce_t],
                          {"label_smoothing": 0.1}, [True, False]),
        "cross_entropy_weighted": (F.cross_entropy, [_rand(rng, 4, 3), ce_t,
                                                     np.array([0.2, 1.0, 3.0])],
                                   {"reduction": "sum"}, [True, False, False]),
        "multi_margin_loss": (F.multi_margin_loss, [_rand(rng, 4, 3), ce_t], {"p": 2},
                              [True, False]),
        "sdpa": (F.scaled_dot_product_attention, [_rand(rng, 2, 3, 4), _rand(rng, 2, 5, 4),
                                                  _rand(rng, 2, 5, 3)], {"is_causal": True},
                 None),
        "sdpa_float_mask": (F.scaled_dot_product_attention,
                            [_rand(rng, 2, 3, 4), _rand(rng, 2, 5, 4), _rand(rng, 2, 5, 3),
                             _rand(rng, 3, 5)], {}, None),
    }


_CASE_NAMES = list(_functional_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("name", _CASE_NAMES)
def test_functional_op_grads_match_finite_differences(name):
    for seed in SEEDS:
        fn, arrays, kwargs, diff = _functional_cases(np.random.default_rng(seed))[name]
        if name == "batch_norm_train":   # the raw path updates running stats: keep FD pure
            kwargs = dict(kwargs)
            arrays = [arrays[0], None, None] + arrays[3:]
            diff = [True, False, False, True, True]
        _fd_op(fn, arrays, kwargs, seed, diff=diff)


def test_functional_raw_arrays_in_raw_arrays_out():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = np.ones((2, 3, 1, 1), np.float32)
    for out in (F.conv2d(x, w), F.relu(x), F.max_pool2d(x, 2), F.softmax(x, dim=1)):
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
    out, idx = F.max_pool2d(Tensor(x, requires_grad=True), 2, return_indices=True)
    assert isinstance(out, Tensor) and out.requires_grad
    assert idx.dtype == np.int64 and not idx.requires_grad


def test_dropout_gradient_uses_the_forward_mask():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((50, 40)), requires_grad=True)
    y = F.dropout(x, p=0.3, generator=np.random.default_rng(5))
    y.backward(np.ones(x.shape))
    kept = y.data != 0
    assert_close(x.grad, kept / 0.7, atol=1e-12, rtol=1e-12, name="grad")
    assert 0.6 < kept.mean() < 0.8
    same = F.dropout(x.data, p=0.3, generator=np.random.default_rng(5))
    assert_close(same, y.data, atol=0, rtol=0, name="same generator, same mask")
    assert_close(F.dropout(x, 0.3, training=False), x.data, atol=0, rtol=0, name="eval")
    x.grad = None
    F.dropout(x, 0.3, training=False).backward(np.ones(x.shape))   # eval: the identity
    assert_close(x.grad, np.ones(x.shape), atol=0, rtol=0, name="eval grad")
    with pytest.raises(ValueError, match="probability"):
        F.dropout(x, 1.5, training=False)


def test_batch_norm_training_updates_running_stats_once():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 2, 2)), requires_grad=True)
    rm, rv = np.zeros(3), np.ones(3)
    y = F.batch_norm(x, rm, rv, training=True, momentum=0.5)
    xm = x.data.mean(axis=(0, 2, 3))
    assert_close(rm, 0.5 * xm, atol=1e-12, rtol=1e-12, name="running_mean")
    y.sum().backward()
    assert_close(rm, 0.5 * xm, atol=1e-12, rtol=1e-12, name="running_mean after backward")


@pytest.mark.parametrize("name", ["roi_align", "roi_pool"])
def test_roi_ops_grads_match_finite_differences(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 6, 7))
    boxes = np.array([[0, 0.5, 1.0, 4.2, 5.1], [1, 2.0, 0.3, 6.0, 3.9]])
    if name == "roi_align":
        fn = lambda inp: ops.roi_align(inp, boxes, (2, 3), 1.0, 2, True)  # noqa: E731
    else:
        fn = lambda inp: ops.roi_pool(inp, boxes, (2, 2), 1.0)  # noqa: E731
    _fd_op(fn, [x], {}, 0)
    tb = [Tensor(boxes[:1, 1:]), Tensor(boxes[1:, 1:])]          # list-of-boxes form
    out = fn(Tensor(x, requires_grad=True)) if name == "roi_pool" else \
        ops.roi_align(Tensor(x, requires_grad=True), tb, (2, 3), 1.0, 2, True)
    assert isinstance(out, Tensor) and out.requires_grad


def test_box_ops_return_tensors_for_tensor_input():
    b = np.array([[0, 0, 2, 2], [0, 0, 2, 2.1], [5, 5, 6, 6]], np.float32)
    s = np.array([0.9, 0.8, 0.7], np.float32)
    keep = ops.nms(Tensor(b), Tensor(s), 0.5)
    assert isinstance(keep, Tensor)
    assert_close(keep, np.array([0, 2]), atol=0, rtol=0)
    assert_close(ops.batched_nms(b, s, np.array([0, 1, 0]), 0.5), np.array([0, 1, 2]),
                 atol=0, rtol=0)
    assert ops.box_iou(b, b).shape == (3, 3)


# ------------------------------------------------------------------ functional vs torch

@pytest.mark.parametrize("name", _CASE_NAMES)
def test_functional_op_grads_match_torch(name):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    fn, arrays, kwargs, diff = _functional_cases(np.random.default_rng(7))[name]
    diff = diff or [True] * len(arrays)
    tname = {"conv2d_groups": "conv2d", "batch_norm_train": "batch_norm", "batch_norm_eval": "batch_norm",
             "gelu_tanh": "gelu",
             "cross_entropy_weighted": "cross_entropy", "sdpa": "scaled_dot_product_attention",
             "sdpa_float_mask": "scaled_dot_product_attention"}.get(name, name)
    tfn = torch.matmul if tname == "matmul" else getattr(tf, tname)
    if tname == "layer_norm":
        tfn = lambda x, w, b, **kw: tf.layer_norm(x, (3, 4), w, b, **kw)  # noqa: E731
    ours = [Tensor(a.copy(), requires_grad=d) if d else a.copy() for a, d in zip(arrays, diff)]
    theirs = [torch.tensor(a.copy(), requires_grad=d) for a, d in zip(arrays, diff)]
    out, ref = fn(*ours, **kwargs), tfn(*theirs, **kwargs)
    g = np.random.default_rng(1).standard_normal(ref.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    assert_close(out, ref, atol=1e-10, rtol=1e-9, name=f"{name} forward")
    for i, (o, t, d) in enumerate(zip(ours, theirs, diff)):
        if d:
            assert_close(o.grad, t.grad, atol=1e-10, rtol=1e-8, name=f"{name} grad[{i}]")


# ------------------------------------------------------------------ backend routing

def test_tensor_ops_run_on_the_selected_kernel_backend(monkeypatch):
    from cvkernels import backends
    from cvkernels._backend import backend
    sim = backends.get("sim")
    if not sim.available():
        pytest.skip("the sim backend (_cudasim extension) is not built here")
    from cvkernels.backends import kernel_ops  # noqa: F401  (fills the tables)
    needed = [(op, d) for op in ("linear", "matmul", "log_softmax")
              for d in ("forward", "backward")]
    if any(k not in sim.table for k in needed):
        pytest.skip("sim has no kernels for linear/matmul/log_softmax")
    calls = []
    for key in needed:
        fn = sim.table[key]
        monkeypatch.setitem(sim.table, key,
                            lambda *a, _fn=fn, _k=key, **kw: calls.append(_k) or _fn(*a, **kw))
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((5, 7), (6, 7), (6,)))
    m = rng.standard_normal((6, 3)).astype(np.float32)
    g = rng.standard_normal((5, 3)).astype(np.float32)

    def run():
        ts = [Tensor(a, requires_grad=True) for a in (x, w, b, m)]
        y = F.log_softmax(F.linear(ts[0], ts[1], ts[2]) @ ts[3], dim=1)
        y.backward(g)
        return [y] + [t.grad for t in ts]
    ref = run()
    assert not calls
    with backend("sim"):
        got = run()
    assert sorted(set(calls)) == sorted(needed), calls
    for i, (a, r) in enumerate(zip(got, ref)):
        assert_close(a, r, atol=1e-5, rtol=1e-4, name=f"sim vs cpu [{i}]")
    if ("relu", "forward") not in sim.table:
        with backend("sim"), pytest.raises(NotImplementedError, match="no CUDA kernel for relu"):
            F.relu(Tensor(x, requires_grad=True))


# ------------------------------------------------------------------ the generic op path

def _shift_relu_forward(input, bias):
    """relu(input + bias), bias broadcast over the last dim (a stand-in for bias_relu)."""
    return np.maximum(input + bias, 0).astype(input.dtype)


def _shift_relu_backward(grad_out, input, bias):
    g = grad_out * (input + bias > 0)
    return g.astype(input.dtype), g.reshape(-1, bias.shape[0]).sum(axis=0).astype(bias.dtype)


@pytest.fixture
def shift_relu(monkeypatch):
    """A reference pair that only exists for this test, as a new op would be added."""
    import cvkernels.reference as reference
    monkeypatch.setattr(reference, "shift_relu_forward", _shift_relu_forward, raising=False)
    monkeypatch.setattr(reference, "shift_relu_backward", _shift_relu_backward, raising=False)
    return "shift_relu"


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_pair_is_a_functional_op_without_edits(shift_relu, seed):
    rng = np.random.default_rng(seed)
    x, b = _rand(rng, 3, 2, 5), _rand(rng, 5)
    out = F.shift_relu(x, b)                                  # raw arrays in, raw arrays out
    assert isinstance(out, np.ndarray)
    assert_close(out, _shift_relu_forward(x, b), atol=0, rtol=0, name="forward")
    assert_close(F.shift_relu(input=x, bias=b), out, atol=0, rtol=0, name="by keyword")
    _fd_op(F.shift_relu, [x, b], {}, seed)                    # Tensors: autograd, both grads
    tx = Tensor(x, requires_grad=True)
    y = F.shift_relu(tx, Tensor(b))                          # only x wants a gradient
    assert repr(y).endswith("grad_fn=<shift_relu>)")
    y.sum().backward()
    assert_close(tx.grad, (x + b > 0).astype(float), atol=0, rtol=0, name="grad_input")
    from cvkernels.functional import shift_relu as imported
    assert imported(x, b).shape == x.shape
    assert "shift_relu" not in F.__all__


def test_functional_fallback_refuses_what_is_not_a_reference_pair():
    with pytest.raises(AttributeError, match="no_such_op"):
        F.no_such_op                                          # noqa: B018
    with pytest.raises(AttributeError):
        F.nms                                                 # a forward without a backward
    with pytest.raises(AttributeError):
        F._private


def test_fallback_uses_an_ops_declaration_where_there_is_one():
    # roi_align's backward does not follow the default convention; its Op (in ops) is used
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5))
    boxes = np.array([[0, 0.5, 1.0, 4.2, 3.1]])
    ta, tb = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    F.roi_align(ta, boxes, (2, 2), 1.0, 2, True).sum().backward()
    ops.roi_align(tb, boxes, (2, 2), 1.0, 2, True).sum().backward()
    assert_close(ta.grad, tb.grad, atol=0, rtol=0, name="grad_input")


def test_generic_op_saves_only_what_its_declaration_names():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    y = F.softmax(x, dim=1)
    node = y._grad_fn
    assert node.keys == ["output", "dim"]
    assert node.saved_tensors[0] is y.data and node.saved_tensors[1] == 1
    _, idx = F.max_pool2d(Tensor(np.ones((1, 1, 4, 4)), requires_grad=True), 2,
                          return_indices=True)
    assert idx.dtype == np.int64 and not idx.requires_grad
    with no_grad():                                           # nothing is kept without a graph
        assert not hasattr(F.softmax(x, dim=1)._grad_fn, "keys")


def test_op_declaration_naming_an_unknown_value_fails_by_name():
    from cvkernels.autograd import Op
    bad = Op("relu", saves=("outptu",))
    with pytest.raises(TypeError, match="relu: Op\\(saves=...\\) names 'outptu'"):
        bad(input=Tensor(np.ones(2), requires_grad=True), inplace=False)


def test_softmax_implicit_dim_warning_points_at_the_caller():
    from cvkernels import nn
    x = np.ones((2, 3), np.float32)
    with pytest.warns(UserWarning, match="implicit dimension") as rec:
        F.softmax(x, None)
    assert rec[0].filename == __file__
    with pytest.warns(UserWarning, match="implicit dimension") as rec:
        nn.Softmax()(Tensor(x))
    assert rec[0].filename == __file__


# ------------------------------------------------------------------ 0-d tensors

def test_zero_dim_tensors_backward():
    t = Tensor(np.array(2.0, np.float32), requires_grad=True)
    t.sum().backward()
    assert t.grad.shape == () and t.grad.dtype == np.float32 and t.grad.item() == 1.0
    for expr, grad in [(lambda v: v.mean(), 1.0), (lambda v: v * v, 4.0),
                       (lambda v: (v.exp()).log() * 3.0, 3.0),
                       (lambda v: (Tensor(np.ones(3, np.float32)) * v).sum(), 3.0),
                       (lambda v: v.reshape(1, 1).sum(0).sum(), 1.0),
                       (lambda v: F.softmax(v, dim=0) + v, 1.0)]:
        t = Tensor(np.array(2.0, np.float32), requires_grad=True)
        expr(t).backward()
        assert t.grad.shape == (), expr
        assert_close(t.grad, np.array(grad, np.float32), atol=1e-6, rtol=1e-6, name="grad")


# ------------------------------------------------------------------ numerics

@pytest.mark.parametrize("g_shape, shape", [((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)),
                                            ((2, 3, 4), (1, 1, 1)), ((2, 3, 4), ()),
                                            ((5, 1, 4), (1, 4)), ((3,), (3,))])
def test_unbroadcast_is_the_adjoint_of_broadcasting(g_shape, shape):
    from cvkernels.numerics import unbroadcast
    rng = np.random.default_rng(0)
    g, x = rng.standard_normal(g_shape), rng.standard_normal(shape)
    r = unbroadcast(g, shape)
    assert isinstance(r, np.ndarray) and r.shape == shape
    # <unbroadcast(g), x> == <g, broadcast(x)>
    assert np.vdot(r, x) == pytest.approx(np.vdot(g, np.broadcast_to(x, g_shape)), rel=1e-12)
    assert (unbroadcast(g, g_shape) is g) or g_shape != shape


def test_unit_roundoff():
    import ml_dtypes
    from cvkernels.numerics import U32, unit_roundoff
    assert U32 == 2.0 ** -24 == unit_roundoff(np.float32) == np.finfo(np.float32).eps / 2
    assert unit_roundoff("float16") == 2.0 ** -11 == np.finfo(np.float16).eps / 2
    assert unit_roundoff(np.dtype(np.float64)) == 2.0 ** -53
    assert unit_roundoff(ml_dtypes.bfloat16) == 2.0 ** -8 == \
        float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps) / 2
    assert unit_roundoff("bfloat16") == 2.0 ** -8
    with pytest.raises(TypeError, match="unit_roundoff"):
        unit_roundoff(np.int32)


# ------------------------------------------------------------------ the package

def test_import_cvkernels_leaves_the_references_and_numba_unloaded():
    import subprocess
    import sys
    code = ("import sys, cvkernels as cvk\n"
            "assert 'numba' not in sys.modules and 'cvkernels.reference' not in sys.modules\n"
            "assert callable(cvk.reference.relu_forward) and 'numba' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
