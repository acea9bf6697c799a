"""Loading the compiled extensions.

``CVK_SIM_PATH`` points the simulator extension at another build directory (the sanitizer builds
in CI use this).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys


@functools.cache
def sim():
    """The ``_cudasim`` module (kernels on the CPU simulator), or None if it was not built."""
    path = os.environ.get("CVK_SIM_PATH")
    if path:
        for fname in os.listdir(path):
            if fname.startswith("_cudasim") and fname.endswith((".so", ".pyd")):
                spec = importlib.util.spec_from_file_location("cvkernels._cudasim",
                                                              os.path.join(path, fname))
                mod = importlib.util.module_from_spec(spec)
                sys.modules["cvkernels._cudasim"] = mod
                spec.loader.exec_module(mod)
                return mod
        raise ImportError(f"CVK_SIM_PATH={path} holds no _cudasim extension")
    try:
        return importlib.import_module("cvkernels._cudasim")
    except ImportError:
        return None


_cuda_error: list[str] = []


@functools.cache
def cuda():
    """The ``_cuda`` module (nvcc build), or None if no CUDA toolkit was found at install."""
    try:
        return importlib.import_module("cvkernels._cuda")
    except ImportError as e:
        _cuda_error.append(str(e))
        return None


def cuda_status() -> str:
    """One line: whether the CUDA extension was built and loads, and if not, why."""
    if cuda() is not None:
        return "CUDA extension _cuda loaded"
    err = _cuda_error[0] if _cuda_error else ""
    if "No module named" in err:
        return ("CUDA extension _cuda was not built (no CUDA toolkit found at install: set "
                "CUDA_HOME or put nvcc on PATH, then reinstall)")
    return f"CUDA extension _cuda failed to load: {err}"
