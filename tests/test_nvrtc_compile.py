"""Every kernel source compiles under NVRTC for sm_90 with the rawkernel backend's own options
and name expressions. Runs without a GPU: NVRTC is a library (cuda-bindings +
nvidia-cuda-nvrtc)."""
import pytest

from cvkernels.backends import rawkernel as rk

nvrtc = pytest.importorskip("cuda.bindings.nvrtc",
                            reason="cuda-bindings not installed (pip install '.[test]')")


def _check(result):
    err = result[0]
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"NVRTC call failed: {err}"
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def test_every_source_is_listed():
    assert {"matmul.cuh", "softmax.cuh"} <= set(rk.kernel_sources())


@pytest.mark.parametrize("source", rk.kernel_sources())
def test_nvrtc_compiles_for_sm90(source):
    code = (rk.kernels_dir() / source).read_text().encode()
    prog = _check(nvrtc.nvrtcCreateProgram(code, source.encode(), 0, [], []))
    names = rk.name_expressions(source)
    assert names, f"{source}: no registered kernel instantiations"
    for n in names:
        _check(nvrtc.nvrtcAddNameExpression(prog, n.encode()))
    opts = [o.encode() for o in rk.nvrtc_options()] + [b"--gpu-architecture=sm_90"]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    size = _check(nvrtc.nvrtcGetProgramLogSize(prog))
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    assert _check(nvrtc.nvrtcGetCUBINSize(prog)) > 0
    for n in names:  # every name expression resolves to a mangled kernel
        lowered = _check(nvrtc.nvrtcGetLoweredName(prog, n.encode()))
        assert lowered.startswith(b"_Z"), (n, lowered)
    nvrtc.nvrtcDestroyProgram(prog)
