"""Issue 9: hostile and careless input. One test per reproducer of the issue (each fails without
its fix): the boundary's argument checks, degenerate valid input, bounds on loop counts, Ctrl-C
during a simulator launch, and the softmax NaN/precision reproducers."""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pytest

import cvkernels as cvk
from cvkernels import functional as F
from cvkernels import ops as O
from cvkernels.errors import ArgumentError, ArgumentTypeError, IndexOutOfRange, ShapeError

from cvkernels import backends

_sim_skip = pytest.mark.skipif(not backends.get("sim").available(), reason="_cudasim not built")


def needs_sim(f):
    """Runs on the simulator: marked ``sim`` (re-run under the sanitizers in CI)."""
    return pytest.mark.sim(_sim_skip(f))

X = np.arange(6, dtype=np.float32).reshape(2, 3)
BOXES = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32)
SCORES = np.array([0.9, 0.8], np.float32)


# ---------------------------------------------------------------- one rule for array arguments
@pytest.mark.parametrize("bad", [[[1.0, 2.0]], 3.0, None, "x"], ids=["list", "float", "None",
                                                                       "str"])
@pytest.mark.parametrize("call", [
    lambda v: F.softmax(v, -1), lambda v: F.relu(v), lambda v: F.matmul(X, v),
    lambda v: F.linear(v, X), lambda v: F.cross_entropy(v, np.array([0, 1])),
    lambda v: O.nms(v, SCORES, 0.5), lambda v: O.box_iou(BOXES, v),
    lambda v: F.log_softmax(v, -1, dtype=np.float64),
], ids=["softmax", "relu", "matmul.other", "linear.input", "cross_entropy", "nms", "box_iou",
        "log_softmax.dtype"])
def test_non_array_is_a_type_error_naming_the_argument(call, bad):
    with pytest.raises(ArgumentTypeError, match=r"^\w+: argument '\w+' must be an array"):
        call(bad)


@pytest.mark.parametrize("backend", ["cpu",
                                     pytest.param("sim", marks=[pytest.mark.sim, _sim_skip])])
def test_np_matrix_is_an_ndarray_on_every_backend(backend):
    m = np.matrix(np.arange(9, dtype=np.float32).reshape(3, 3))
    v = np.ones(3, np.float32)
    with cvk.backend(backend):
        out = F.matmul(m, v)
    assert type(out) is np.ndarray and out.shape == (3,)
    np.testing.assert_allclose(out, np.asarray(m) @ v)


def test_masked_array_is_refused_by_name():
    x = np.ma.masked_array(X, mask=X > 2)
    with pytest.raises(ArgumentTypeError, match="relu: argument 'input' is a masked array"):
        F.relu(x)


@pytest.mark.parametrize("call, match", [
    (lambda: F.softmax(X, 1.0), "softmax: argument 'dim' must be an int"),
    (lambda: O.nms(BOXES, SCORES, "x"), "nms: argument 'iou_threshold' must be a real number"),
    (lambda: F.scaled_dot_product_attention(X[None], X[None], X[None], scale="a"),
     "scaled_dot_product_attention: argument 'scale'"),
    (lambda: F.cross_entropy(X, np.array([0, 1]), ignore_index=1.5),
     "cross_entropy: argument 'ignore_index' must be an int"),
    (lambda: F.max_pool2d(X[None, None], 2, ceil_mode="yes"), "max_pool2d: argument 'ceil_mode'"),
    (lambda: F.cross_entropy(X, np.array([0, 1]), reduction=1), "argument 'reduction'"),
], ids=["dim", "iou_threshold", "scale", "ignore_index", "ceil_mode", "reduction"])
def test_wrong_type_for_a_non_array_argument(call, match):
    with pytest.raises(ArgumentTypeError, match=match):
        call()


def test_dim_out_of_range_is_still_an_index_error():
    with pytest.raises(IndexOutOfRange):
        F.softmax(X, 2)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("make, match", [
    (lambda: torch.ones(2, 3, device="meta"), "meta tensor"),
    (lambda: torch.ones(2, 3).to_sparse(), "layout"),
    (lambda: torch.ones(2, 3, dtype=torch.complex64).conj(), "complex"),
    (lambda: torch.ones(2, 3, dtype=torch.complex64).conj().imag, "negative view"),
], ids=["meta", "sparse", "complex", "neg-bit"])
def test_torch_tensors_the_layer_cannot_take(make, match):
    with pytest.raises((ArgumentError, ArgumentTypeError),
                       match=f"relu: argument 'input'.*{match}"):
        F.relu(make())


def test_torch_bf16_cpu_tensor_runs():
    t = torch.tensor([[-1.0, 2.0]], dtype=torch.bfloat16)
    out = F.relu(t)
    assert out.dtype == torch.bfloat16 and out.tolist() == [[0.0, 2.0]]


def test_torch_requires_grad_refused_while_grad_enabled():
    t = torch.ones(2, 3, requires_grad=True)
    with pytest.raises(ArgumentError, match="gradient would be silently dropped.*cvkernels.Tensor"):
        F.relu(t)
    with torch.no_grad():
        assert F.relu(t).shape == (2, 3)
    assert F.relu(t.detach()).shape == (2, 3)


def test_torch_dtype_argument():
    out = F.softmax(torch.ones(2, 3), -1, dtype=torch.float64)
    assert out.dtype == torch.float64
    out = F.softmax(np.ones((2, 3), np.float32), -1, dtype=torch.float64)
    assert out.dtype == np.float64
    with pytest.raises(ArgumentTypeError, match="softmax: argument 'dtype'"):
        F.softmax(X, -1, dtype=object())


# ---------------------------------------------------------------- constructors and optimisers
@pytest.mark.parametrize("make, name", [
    (lambda: cvk.nn.Linear(-1, 3), "in_features"), (lambda: cvk.nn.Linear(3, -2), "out_features"),
    (lambda: cvk.nn.BatchNorm2d(-1), "num_features"),
    (lambda: cvk.nn.Conv2d(1, 3, 0), "kernel_size"),
    (lambda: cvk.nn.Conv2d(-1, 3, 1), "in_channels"),
])
def test_constructor_arguments_are_named(make, name):
    with pytest.raises(ArgumentError, match=name):
        make()


@pytest.mark.parametrize("kw", [dict(lr=float("nan")), dict(lr=-1.0), dict(lr=0.1, momentum=-1),
                                dict(lr=0.1, momentum=float("nan"))])
def test_optimiser_rejects_nan_and_negative(kw):
    p = cvk.Tensor(X.copy(), requires_grad=True)
    with pytest.raises(ArgumentError, match="Invalid"):
        cvk.optim.SGD([p], **kw)
    with pytest.raises(ArgumentTypeError):
        cvk.optim.SGD([p], lr="0.1")


# ---------------------------------------------------------------- read-only outputs and buffers
def test_inplace_on_read_only_array():
    ro = np.broadcast_to(np.float32(-1), (2, 3))
    with pytest.raises(ArgumentError, match="relu: argument 'input' is read-only"):
        F.relu(ro, inplace=True)
    assert F.relu(ro).sum() == 0          # out of place is fine


def test_broadcast_running_stats_in_training():
    rm = np.broadcast_to(np.float32(0), (3,))
    rv = np.ones(3, np.float32)
    with pytest.raises(ArgumentError, match="batch_norm: argument 'running_mean' is read-only"):
        F.batch_norm(X, rm, rv, training=True)
    F.batch_norm(X, rm, rv, training=False)   # eval reads them only


def test_too_large_names_the_op_called():
    from cvkernels.device import H100
    from cvkernels.specs.matmul import plan_forward
    from cvkernels.spec import FLOAT32
    tiny = dataclasses.replace(H100, max_grid=(4, 2, 2))
    with pytest.raises(ShapeError, match=r"^linear: M=1000 .* M <= 128"):
        plan_forward(tiny, FLOAT32, 1, 1000, 10, 10, False, False, True, "linear")
    with pytest.raises(ShapeError, match=r"^matmul: "):
        plan_forward(tiny, FLOAT32, 1, 1000, 10, 10, False, False, False)


# ---------------------------------------------------------------- degenerate but valid input
def test_nms_zero_area_boxes_keep_both():
    boxes = np.zeros((2, 4), np.float32)         # IoU 0/0 = NaN never suppresses (torchvision)
    assert O.nms(boxes, SCORES, 0.5).tolist() == [0, 1]
    assert O.batched_nms(boxes, SCORES, np.zeros(2, np.int64), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("weight", [np.zeros((4, 3, 0, 0), np.float32),
                                    np.zeros((4, 3, 2, 0), np.float32)])
def test_conv2d_empty_kernel_raises(weight):
    with pytest.raises(ShapeError, match="conv2d: weight must have a positive kernel size"):
        F.conv2d(np.ones((1, 3, 4, 4), np.float32), weight)


def test_autograd_on_0d_tensors():
    t = cvk.Tensor(np.array(2.0, np.float32), requires_grad=True)
    t.sum().backward()
    assert t.grad.shape == () and float(t.grad.data) == 1.0
    w = cvk.Tensor(np.array(3.0, np.float32), requires_grad=True)
    t.grad = None
    (t * w).sum().backward()
    assert float(t.grad.data) == 3.0 and float(w.grad.data) == 2.0 and w.grad.shape == ()


# ---------------------------------------------------------------- bounds on loop counts
ROI_X = np.ones((1, 1, 4, 4), np.float32)


@pytest.mark.parametrize("kw, match", [
    (dict(sampling_ratio=10 ** 12), "sampling_ratio must be at most"),
    (dict(output_size=10 ** 6), "output_size must be at most"),
    (dict(boxes=np.array([[0, 0, 0, 1e12, 2]], np.float32)), "adaptive sampling grid"),
    (dict(sampling_ratio=60000, output_size=64), "bilinear samples"),
    (dict(sampling_ratio=2.5), "sampling_ratio"),
])
def test_roi_align_bounds(kw, match):
    args = dict(boxes=np.array([[0, 0, 0, 2, 2]], np.float32), output_size=2)
    args.update(kw)
    t0 = time.perf_counter()
    with pytest.raises((ArgumentError, ArgumentTypeError), match=match):
        O.roi_align(ROI_X, **args)
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------- softmax reproducers (kernel)
@needs_sim
@pytest.mark.parametrize("cols", [3, 4096])
def test_softmax_nan_poisons_the_row_on_sim(cols):
    x = np.zeros((2, cols), np.float32)
    x[0, cols // 2] = np.nan
    with cvk.backend("sim"):
        for f in (F.softmax, F.log_softmax):
            y = f(x, -1)
            assert np.isnan(y[0]).all() and not np.isnan(y[1]).any()


@needs_sim
def test_log_softmax_keeps_precision_for_large_logits_on_sim():
    with cvk.backend("sim"):
        y = F.log_softmax(np.full((1, 2), 1e8, np.float32), -1)
        np.testing.assert_allclose(y, -np.log(2), rtol=1e-6)
        x = (np.float32(1e4) + np.linspace(0, 1, 64, dtype=np.float32))[None]
        y = F.log_softmax(x, -1)
    ref = cvk.reference.log_softmax_forward(x.astype(np.float64), -1)
    assert np.abs(y - ref).max() < 1e-5    # the unfixed kernel was 4e-4 off


# ---------------------------------------------------------------- Ctrl-C during a launch
@needs_sim
@pytest.mark.skipif(bool(os.environ.get("CVK_SANITIZER")),
                    reason="the sanitizer runtimes intercept signal handling (ThreadSanitizer "
                           "defers asynchronous signals to its own delivery points), so SIGINT "
                           "there is not the simulator's; the test runs in the normal stage")
def test_ctrl_c_stops_a_simulator_launch():
    a = np.ones((2048, 256), np.float32)    # ~30 s on the simulator
    b = np.ones((256, 2048), np.float32)
    sent = []

    def interrupt():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.5, interrupt)
    timer.start()
    try:
        with cvk.backend("sim"), pytest.raises(KeyboardInterrupt):
            F.matmul(a, b)
        latency = time.perf_counter() - sent[0]
    finally:
        timer.cancel()
    assert latency < 1.5, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
    with cvk.backend("sim"):                 # the simulator is usable afterwards
        np.testing.assert_allclose(F.matmul(a[:8], b[:, :8]), np.full((8, 8), 256.0))


def test_every_parameter_of_every_op_has_a_boundary_rule():
    """The boundary's rules come from the reference signatures: every parameter of every public
    op gets a kind (only a random generator is left to the op), and dims are ints."""
    from cvkernels import _boundary
    ops = list(F.__all__) + [o for o in O.__all__ if o.islower()]
    dispatched_as = {"multi_head_attention_forward": "mha"}   # torch's name -> the op's
    for op in ops:
        rules = _boundary._rules(dispatched_as.get(op, op))
        assert rules, f"{op}: no reference signature"
        unchecked = [n for n, kind, _ in rules if kind is None]
        assert unchecked in ([], ["generator"]), f"{op}: no rule for {unchecked}"
        for name, kind, _ in rules:
            if name == "dim" or name.endswith("_dim"):
                assert kind is int, f"{op}: {name} is {kind}"


@pytest.mark.parametrize("backend", ["cpu", "sim"])
@pytest.mark.parametrize("call, needle", [
    (lambda x: F.adaptive_avg_pool2d(x, 2 ** 40), "output_size"),
    (lambda x: F.adaptive_max_pool2d(x, (2 ** 40, 1)), "output_size"),
    (lambda x: F.max_pool2d(x, 3, stride=1, padding=1, dilation=2 ** 40), "too small"),
    (lambda x: F.conv2d(x, np.ones((1, 2, 1, 1), np.float32), padding=2 ** 40), "padding"),
    (lambda x: F.conv_transpose2d(x, np.ones((2, 1, 1, 1), np.float32), stride=2 ** 40),
     "the output"),
])
def test_huge_sizes_are_refused_by_name_before_any_allocation(backend, call, needle):
    """An output_size, padding, dilation or stride that would make an array above 2^36
    elements raises ArgumentError naming the op, on every backend (it used to be numpy's
    MemoryError or 'array is too big', or a multi-terabyte allocation attempt)."""
    from cvkernels.errors import ArgumentError
    if backend == "sim" and not cvk.backends.get("sim").available():
        pytest.skip("_cudasim not built")
    x = np.ones((1, 2, 5, 5), np.float32)
    with cvk.backend(backend), pytest.raises(ArgumentError, match=needle) as e:
        call(x)
    assert str(e.value).split(":")[0] in ("adaptive_avg_pool2d", "adaptive_max_pool2d",
                                          "max_pool2d", "conv2d", "conv_transpose2d")
