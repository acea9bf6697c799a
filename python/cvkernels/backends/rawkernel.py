"""The rawkernel backend's compile side: kernel sources through NVRTC via CuPy's RawModule.

``nvrtc_options()`` are the options every source is compiled with, here and in the NVRTC compile
test. ``SimRawModule`` has CuPy RawModule's calling convention (``get_function(name)(grid, block,
args, shared_mem=...)``) but runs the kernel on the CPU simulator, so the rawkernel launch code
is exercised in CI without a GPU. Like a careful CuPy caller it insists on numpy scalar types:
CuPy sends a Python float as a double, which a ``float`` parameter would misread.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .. import _ext


@functools.cache
def kernels_dir() -> Path:
    """The ``kernels/`` source tree: in the package (wheel) or beside it (editable install)."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "kernels", here.parent.parent / "kernels"):
        if (cand / "include" / "cvk" / "common.cuh").is_file():
            return cand
    raise FileNotFoundError("cvkernels: kernel sources not found next to the package")


@functools.cache
def cuda_include_dir() -> str | None:
    """The CUDA headers' directory (cuda_fp16.h, cuda_bf16.h), which NVRTC does not carry built
    in: CUDA_HOME / CUDA_PATH, /usr/local/cuda, beside nvcc on PATH, or the nvidia-* wheels."""
    import os
    import shutil
    import sysconfig
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(str(Path(nvcc).resolve().parent.parent))
    site = Path(sysconfig.get_paths()["purelib"]) / "nvidia"
    cands += [str(site / sub) for sub in ("cu13", "cuda_runtime", "cu12")]
    for c in cands:
        if c and (Path(c) / "include" / "cuda_fp16.h").is_file():
            return str(Path(c) / "include")
    try:  # pip wheels and conda, as cuda-bindings finds them
        from cuda.pathfinder import find_nvidia_header_directory
        d = find_nvidia_header_directory("cudart")
        if d and (Path(d) / "cuda_fp16.h").is_file():
            return str(d)
    except Exception:
        pass
    return None


def nvrtc_options() -> tuple[str, ...]:
    """NVRTC options for every kernel source (CuPy adds the architecture itself, and
    -ftz=true, which the nvcc build matches)."""
    inc = cuda_include_dir()
    return ("--std=c++17", f"-I{kernels_dir() / 'include'}", f"-I{kernels_dir()}",
            "-DCVK_NVRTC") + ((f"-I{inc}",) if inc else ())


def source_text(family) -> str:
    """The code NVRTC compiles for ``family``: its source file, found through -I kernels/."""
    return f'#include "{family.source}"\n'


@functools.cache
def _module(family_name: str, name: str, module_cls):
    from ..spec import family
    return module_cls(code=source_text(family(family_name)), options=nvrtc_options(),
                      name_expressions=[name])


def module(family, name: str, module_cls):
    """The compiled module holding ``family``'s instantiation ``name`` (a spec name
    expression), cached per process (and by CuPy on disk). One NVRTC compile per instantiation
    a plan actually picks: compiling a family's whole template space (48 matmul variants) up
    front would cost a GPU run tens of seconds it mostly does not need."""
    if name not in family.names():
        raise ValueError(f"{name!r} is not an instantiation of the {family.name} spec")
    return _module(family.name, name, module_cls)


class SimFunction:
    """A kernel of ``SimRawModule``: call it as ``fn(grid, block, args, shared_mem=0)``."""

    _KINDS = {np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
              np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
              np.dtype(np.uint64): "ptr"}   # a raw pointer value (0: null), as CuPy passes it

    def __init__(self, name: str, ext=None):
        self.name, self._ext = name, ext
        self.max_dynamic_shared_size_bytes = 48 * 1024   # CuPy RawKernel's attribute

    def _arg(self, i, a):
        if isinstance(a, np.ndarray):
            return ("ptr", a.ctypes.data)
        if isinstance(a, np.generic) and a.dtype in self._KINDS:
            return (self._KINDS[a.dtype], a.item())
        raise TypeError(f"{self.name}: argument {i} is {type(a).__name__}; pass numpy arrays "
                        f"and numpy scalars (np.int64, np.float32, ...) as for CuPy RawKernel")

    def __call__(self, grid, block, args, *, shared_mem=0):
        grid = tuple(grid) if isinstance(grid, (tuple, list)) else (grid,)
        block = tuple(block) if isinstance(block, (tuple, list)) else (block,)
        typed = [self._arg(i, a) for i, a in enumerate(args)]
        ext = self._ext or _ext.sim()
        ext.launch(self.name, list(grid), list(block), int(shared_mem), 0, typed,
                   int(self.max_dynamic_shared_size_bytes))


class SimRawModule:
    """Stand-in for ``cupy.RawModule`` that launches on the CPU simulator."""

    def __init__(self, code: str, options=(), name_expressions=(), ext=None):
        self.code, self.options = code, tuple(options)
        self.name_expressions = tuple(name_expressions)
        self._ext = ext   # the simulator module to launch on (default: _cudasim)

    def get_function(self, name: str) -> SimFunction:
        if name not in self.name_expressions:
            raise ValueError(f"SimRawModule: {name!r} was not given in name_expressions")
        return SimFunction(name, self._ext)   # a new object per call, as CuPy's
