"""Every kernel family, in every dtype, compiles under NVRTC for sm_90 with the rawkernel
backend's own options and name expressions (from the specs), and so do the test-only kernels. Runs without a GPU: NVRTC is a library (cuda-bindings +
nvidia-cuda-nvrtc)."""
import pytest

from cvkernels import spec
from cvkernels.backends import rawkernel as rk

nvrtc = pytest.importorskip("cuda.bindings.nvrtc",
                            reason="cuda-bindings not installed (pip install '.[test]')")


def _check(result):
    err = result[0]
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"NVRTC call failed: {err}"
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def _compile(code: bytes, label: str, names):
    prog = _check(nvrtc.nvrtcCreateProgram(code, label.encode(), 0, [], []))
    for n in names:
        _check(nvrtc.nvrtcAddNameExpression(prog, n.encode()))
    opts = [o.encode() for o in rk.nvrtc_options()] + [b"--gpu-architecture=sm_90",
                                                       b"-ftz=true"]   # as CuPy adds it
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


FAMILY_DTYPES = [pytest.param(f, d, id=f"{f.name}-{d.short}")
                 for f in spec.families() for d in f.dtypes]


@pytest.mark.parametrize("family,dtype", FAMILY_DTYPES)
def test_nvrtc_compiles_each_family_and_dtype_for_sm90(family, dtype):
    """Every instantiation of each family and dtype compiles in one NVRTC program, with every name
    expression the specs can plan."""
    names = family.names(dtype)
    assert names, f"{family.name}: no {dtype.name} instantiations"
    _compile(rk.source_text(family).encode(), f"{family.name}_module.cu", names)


TESTING = sorted(p.name for p in (rk.kernels_dir() / "testing").glob("*.cuh"))


@pytest.mark.parametrize("source", TESTING)
def test_nvrtc_compiles_the_testing_kernels(source):
    """The test-only kernels compile under NVRTC too (they run through nvcc on a GPU)."""
    import re
    names, sim_only = [], 0
    for line in (rk.kernels_dir() / "testing" / source).read_text().splitlines():
        if line.startswith("#ifdef CVK_SIM"):      # simulator-only kernels: not for NVRTC
            sim_only += 1
        elif line.startswith("#endif") and sim_only:
            sim_only -= 1
        elif not sim_only and (m := re.match(r"^CVK_REGISTER\((.+)\)\s*$", line)):
            names.append(m.group(1))
    assert names, f"testing/{source} registers no kernels"
    _compile(f'#include "testing/{source}"\n'.encode(), "testing_module.cu", names)


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
