"""The rawkernel backend's compile side: kernel sources through NVRTC via CuPy's RawModule.

``NVRTC_OPTIONS`` are the options every source is compiled with, here and in the NVRTC compile
test. ``SimRawModule`` has CuPy RawModule's calling convention (``get_function(name)(grid, block,
args, shared_mem=...)``) but runs the kernel on the CPU simulator, so the rawkernel launch code
is exercised in CI without a GPU. Like a careful CuPy caller it insists on numpy scalar types:
CuPy sends a Python float as a double, which a ``float`` parameter would misread.
"""
from __future__ import annotations

import functools
import re
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


def nvrtc_options() -> tuple[str, ...]:
    """NVRTC options for every kernel source (CuPy adds the architecture itself)."""
    return ("--std=c++17", f"-I{kernels_dir() / 'include'}", f"-I{kernels_dir()}",
            "-DCVK_NVRTC")


def kernel_sources() -> list[str]:
    """Every kernel source file, relative to ``kernels/``."""
    root = kernels_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.cuh")
                  if "include" not in p.relative_to(root).parts)


def name_expressions(source: str) -> list[str]:
    """The registered instantiations of the kernels that ``source`` defines."""
    text = (kernels_dir() / source).read_text()
    defined = set(re.findall(r"\b(\w+_kernel)\s*\(", text))
    ext = _ext.cuda() or _ext.sim()
    return [n for n in ext.kernel_names() if n.split("<")[0] in defined]


@functools.cache
def _module(source: str, module_cls):
    code = (kernels_dir() / source).read_text()
    return module_cls(code=code, options=nvrtc_options(),
                      name_expressions=name_expressions(source))


def module(source: str, module_cls):
    """The compiled module for ``source``, cached per process (and by CuPy on disk)."""
    return _module(source, module_cls)


class SimFunction:
    """A kernel of ``SimRawModule``: call it as ``fn(grid, block, args, shared_mem=0)``."""

    _KINDS = {np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
              np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

    def __init__(self, name: str):
        self.name = name

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
        _ext.sim().launch(self.name, list(grid), list(block), int(shared_mem), 0, typed)


class SimRawModule:
    """Stand-in for ``cupy.RawModule`` that launches on the CPU simulator."""

    def __init__(self, code: str, options=(), name_expressions=()):
        self.code, self.options = code, tuple(options)
        self.name_expressions = tuple(name_expressions)

    def get_function(self, name: str) -> SimFunction:
        if name not in self.name_expressions:
            raise ValueError(f"SimRawModule: {name!r} was not given in name_expressions")
        return SimFunction(name)
