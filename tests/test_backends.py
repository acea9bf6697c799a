"""Backend selection (set_backend, the context manager, CVK_BACKEND), routing through the
functional API to the kernels, device checks, and the `cvk check` command."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import _arrays, _backend, backends
from cvkernels import spec
from cvkernels.backends import runtime
from cvkernels.check import run_checks
from cvkernels.numerics import U32
from helpers import assert_close

needs_sim = pytest.mark.skipif(not backends.get("sim").available(), reason="_cudasim not built")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("CVK_BACKEND", raising=False)
    cvk.set_backend(None)
    yield
    cvk.set_backend(None)


def test_available_backends_lists_cpu_and_sim_first():
    names = cvk.available_backends()
    assert names[0] == "cpu"
    assert ("sim" in names) == (cvk._ext.sim() is not None)


def test_choice_precedence(monkeypatch):
    assert _backend.resolve("f", _arrays.HOST) == "cpu"          # automatic
    monkeypatch.setenv("CVK_BACKEND", "sim")
    assert _backend.resolve("f", _arrays.HOST) == "sim"          # environment
    cvk.set_backend("cpu")
    assert _backend.resolve("f", _arrays.HOST) == "cpu"          # set_backend beats the env
    with cvk.backend("sim"):
        assert _backend.resolve("f", _arrays.HOST) == "sim"      # context beats set_backend
    assert _backend.resolve("f", _arrays.HOST) == "cpu"


def test_bad_names_are_rejected(monkeypatch):
    with pytest.raises(ValueError, match="set_backend: name must be one of"):
        cvk.set_backend("gpu")
    with pytest.raises(ValueError, match="set_backend: name must be one of"):
        with cvk.backend("tpu"):
            pass
    monkeypatch.setenv("CVK_BACKEND", "nope")
    with pytest.raises(ValueError, match="CVK_BACKEND must be one of"):
        F.softmax(np.zeros((2, 2), np.float32))


def test_gpu_backend_refuses_host_arrays():
    with cvk.backend("cuda"):
        with pytest.raises(ValueError, match="softmax: backend 'cuda' cannot run on host"):
            F.softmax(np.zeros((2, 3), np.float32))


class FakeGpuArray:
    """Anything with __cuda_array_interface__ counts as a GPU array."""
    shape, dtype, ndim = (2, 3), np.dtype(np.float32), 2
    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False),
                                "version": 3}


def test_mixed_devices_are_refused_by_name():
    with pytest.raises(ValueError, match="matmul: arguments live on different devices: input is "
                                         "a host array and other a GPU array"):
        F.matmul(np.zeros((2, 3), np.float32), FakeGpuArray())


@needs_sim
def test_functional_on_sim_runs_the_kernel(monkeypatch):
    calls = []
    real = runtime.ExtRuntime.launch

    def spy(self, plan, **args):
        calls.append((plan.name, args["rows"], args["cols"]))
        return real(self, plan, **args)
    monkeypatch.setattr(runtime.ExtRuntime, "launch", spy)
    x = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    with cvk.backend("sim"):
        y = F.softmax(x, dim=0)
    # dim 0 moved last: 300 rows of 5
    assert calls == [("softmax_forward_kernel<float, false, false, false>", 300, 5)]
    assert_close(y, cvk.reference.softmax_forward(x.astype(np.float64), 0).astype(np.float32),
                 atol=0, rtol=13 * U32)


@needs_sim
def test_sim_backend_names_missing_kernels(monkeypatch):
    x = np.zeros((1, 1, 4, 4), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    monkeypatch.setattr(backends.get("sim"), "table", {})   # as if conv2d had no kernel yet
    with cvk.backend("sim"):
        with pytest.raises(NotImplementedError, match="conv2d: backend 'sim' has no CUDA kernel"):
            F.conv2d(x, w)


@needs_sim
def test_torch_cpu_tensors_round_trip():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 7)
    with cvk.backend("sim"):
        y = F.log_softmax(x, dim=-1)
    assert isinstance(y, torch.Tensor)
    assert_close(y.numpy(), torch.log_softmax(x, -1).numpy(), atol=2e-6, rtol=0)


@needs_sim
def test_cvk_check_passes_and_catches_a_broken_kernel(monkeypatch):
    rows = run_checks(verbose=False)
    assert rows and all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    assert {r["backend"] for r in rows} >= {"sim", "sim-rawkernel"}
    # the check can fail: a kernel nudged just beyond its error model is caught, in fp32 by
    # 0.1% (many fp32 ulps), in fp16/bf16 by 5% (several bf16 ulps: 2^-7 relative spacing)
    ops = spec.family("softmax").ops
    real = ops[("softmax", "forward")]
    for factor, dtypes in [(1.001, ["float32"]), (1.05, ["float16", "bfloat16"])]:
        monkeypatch.setitem(ops, ("softmax", "forward"),
                            lambda rt, input, dim=-1, f=factor: real(rt, input, dim) * f)
        bad = [r for r in run_checks(verbose=False, dtypes=dtypes) if r["op"] == "softmax"]
        assert {r["dtype"] for r in bad} == set(dtypes)
        assert bad and not any(r["passed"] for r in bad), [r for r in bad if r["passed"]]


@needs_sim
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_arrays_run_on_the_kernels(dtype):
    """numpy float16 / ml_dtypes bfloat16 arrays and torch CPU tensors of both types run on the
    sim backend and come back in their own type (torch in, torch out)."""
    import ml_dtypes
    npdt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float16)
    x = np.random.default_rng(0).standard_normal((4, 40)).astype(npdt)
    with cvk.backend("sim"):
        y = F.softmax(x, dim=-1)
    assert y.dtype == npdt and y.shape == x.shape
    ref = cvk.reference.softmax_forward(x.astype(np.float64))
    assert np.abs(y.astype(np.float64) - ref).max() <= 2.0 ** -7
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16) if dtype == "bfloat16" \
        else torch.from_numpy(x)
    with cvk.backend("sim"):
        ty = F.softmax(t, dim=-1)
    assert isinstance(ty, torch.Tensor) and ty.dtype == t.dtype
    np.testing.assert_array_equal(ty.view(torch.int16).numpy(), y.view(np.int16))
