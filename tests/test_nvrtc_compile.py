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


def test_cuda_extension_embeds_sm80_and_sm90():
    """The nvcc build's default targets (issue: sm_80 and sm_90, with PTX)."""
    import os
    import shutil
    import subprocess

    from cvkernels import _ext
    if _ext.cuda() is None:
        pytest.skip("the CUDA extension was not built (no toolkit at install)")
    if os.environ.get("CVK_CUDA_ARCHS"):
        pytest.skip("CVK_CUDA_ARCHS overrides the default architectures")
    import sysconfig
    from pathlib import Path
    wheel_tool = Path(sysconfig.get_paths()["purelib"]) / "nvidia/cu13/bin/cuobjdump"
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump", str(wheel_tool)]
    tool = next((t for t in candidates if t and os.path.exists(t)), None)
    if tool is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    so = _ext.cuda().__file__
    elf = subprocess.run([tool, "--list-elf", so], capture_output=True, text=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", so], capture_output=True, text=True).stdout
    assert "sm_80" in elf and "sm_90" in elf, elf[-500:]
    assert "sm_90" in ptx or "compute_90" in ptx, ptx[-500:]
