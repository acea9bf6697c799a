"""Plans know the device: the simulator describes an H100 unless told otherwise, plans read the
descriptor, and dynamic shared memory is opted into above 48 KiB and refused above the
device's opt-in limit, on both launch paths, with cudaFuncSetAttribute's error."""
import numpy as np
import pytest

from cvkernels import _ext, spec
from cvkernels.backends.runtime import ExtRuntime, LaunchError, RawRuntime
from cvkernels.device import H100, Device, sim_device, simulated
from cvkernels.specs import matmul

A100 = Device("NVIDIA A100 (simulated)", 80, 108, smem_per_block_optin=163 * 1024)


def test_default_simulated_device_is_an_h100():
    d = sim_device()
    assert d is H100 and (d.arch, d.sm_count) == (90, 132)
    assert d.smem_per_block == 48 * 1024 and d.smem_per_block_optin == 227 * 1024
    with simulated(A100):
        assert sim_device() is A100
    assert sim_device() is H100


def test_plans_read_the_device():
    """120 tiles of 128x128 fill an A100 (108 SMs) but not an H100 (132): the tile follows."""
    args = (spec.FLOAT32, 120, 128, 128, 8, False, False, False)
    assert matmul.plan_forward(H100, *args).values[1] == (64, 64, 8, 4, 4)
    assert matmul.plan_forward(A100, *args).values[1] == (128, 128, 8, 8, 8)


# A test-only family over kernels/testing/simulator_checks.cuh: indexing_smem_kernel reverses
# each block through dynamic shared memory.
SMEM_KERNEL = spec.Kernel("indexing_smem_kernel", (), (spec.In("in", "float32"),
                                                       spec.Out("out", "float32")))
SMEM_FAMILY = spec.Family("testing_smem", "testing/simulator_checks.cuh", [SMEM_KERNEL],
                          dtypes=(spec.FLOAT32,))


def _runtimes():
    if _ext.sim_testing() is None:
        pytest.skip("_cudasim_testing not built")
    from cvkernels.backends.rawkernel import SimRawModule

    class _Raw(RawRuntime):   # the rawkernel launch code, over the testing module
        def function(self, plan):
            mod = SimRawModule("", name_expressions=[plan.name], ext=_ext.sim_testing())
            return mod.get_function(plan.name)
    return [ExtRuntime("sim-testing", _ext.sim_testing(), np, True, families=[SMEM_FAMILY]),
            _Raw("sim-rawkernel-testing", np, SimRawModule, True)]


@pytest.mark.sim
@pytest.mark.parametrize("smem_kib", [4, 64, 227])
def test_dynamic_shared_memory_up_to_the_optin_limit_launches(smem_kib):
    nt = 64
    for rt in _runtimes():
        plan = SMEM_FAMILY.plan(SMEM_KERNEL, {}, grid=(3,), block=(nt,), smem=smem_kib * 1024)
        assert rt.smem_attribute(plan) == max(48 * 1024, smem_kib * 1024)
        x = np.arange(3 * nt, dtype=np.float32)
        out = np.zeros_like(x)
        rt.launch(plan, **{"in": x, "out": out})
        expect = x.reshape(3, nt)[:, ::-1] + 1000.0 * np.arange(3)[:, None]
        np.testing.assert_array_equal(out.reshape(3, nt), expect, err_msg=rt.name)


@pytest.mark.sim
def test_dynamic_shared_memory_above_the_optin_limit_is_refused():
    for rt in _runtimes():
        too_big = SMEM_FAMILY.plan(SMEM_KERNEL, {}, grid=(1,), block=(32,), smem=228 * 1024)
        with pytest.raises(LaunchError, match=r"cudaFuncSetAttribute\(cudaFuncAttributeMax"
                                              r"DynamicSharedMemorySize, 233472\) failed: "
                                              r"invalid argument"):
            rt.launch(too_big, **{"in": np.zeros(32, np.float32),
                                  "out": np.zeros(32, np.float32)})
        with simulated(A100):   # 163 KiB there
            p = SMEM_FAMILY.plan(SMEM_KERNEL, {}, grid=(1,), block=(32,), smem=164 * 1024)
            with pytest.raises(LaunchError, match="A100 .* allows at most 166912 bytes"):
                rt.launch(p, **{"in": np.zeros(32, np.float32), "out": np.zeros(32, np.float32)})


@pytest.mark.sim
def test_workspace_is_allocated_by_the_runtime_and_bound_by_name(monkeypatch):
    """A plan's workspace_bytes become a uint8 array from the caller's allocator (numpy here,
    CuPy's current allocator on a GPU), bound to the schema's `workspace` argument."""
    from cvkernels.backends import runtime
    if _ext.sim_testing() is None:
        pytest.skip("_cudasim_testing not built")
    kernel = spec.Kernel("copy_kernel", (), (spec.In("workspace", "float32"),
                                             spec.Out("out", "float32"), spec.I64("n")))
    fam = spec.Family("testing_workspace", "testing/sanitizer_controls.cuh", [kernel],
                      dtypes=(spec.FLOAT32,))
    seen = []
    real = runtime.bind

    def spy(plan, args, ptr):
        seen.append(args["workspace"])
        return real(plan, args, ptr)
    monkeypatch.setattr(runtime, "bind", spy)
    rt = ExtRuntime("sim-testing", _ext.sim_testing(), np, True, families=[fam])
    plan = fam.plan(kernel, {}, grid=(1,), block=(32,), workspace_bytes=4 * 32)
    out = np.full(32, np.nan, np.float32)
    with pytest.raises(TypeError, match="workspace must have dtype float32, got uint8"):
        rt.launch(plan, out=out, n=32)      # the schema still checks what it is given
    ws = seen[-1]
    assert ws.dtype == np.uint8 and ws.nbytes == 128
    w = np.arange(32, dtype=np.float32)
    rt.launch(plan, workspace=w, out=out, n=32)   # a caller's own workspace is used as given
    np.testing.assert_array_equal(out, w)
