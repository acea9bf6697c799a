"""Loading the compiled extensions.

``CVK_SIM_PATH`` points the simulator extensions (``_cudasim``, ``_cudasim_testing``) at another build directory (the sanitizer builds
in CI use this).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys


def _load_sim(modname: str):
    path = os.environ.get("CVK_SIM_PATH")
    if path:
        for fname in os.listdir(path):
            if fname.split(".")[0] == modname and fname.endswith((".so", ".pyd")):
                spec = importlib.util.spec_from_file_location(f"cvkernels.{modname}",
                                                              os.path.join(path, fname))
                mod = importlib.util.module_from_spec(spec)
                sys.modules[f"cvkernels.{modname}"] = mod
                spec.loader.exec_module(mod)
                return mod
        raise ImportError(f"CVK_SIM_PATH={path} holds no {modname} extension")
    try:
        return importlib.import_module(f"cvkernels.{modname}")
    except ImportError:
        return None


@functools.cache
def sim():
    """The ``_cudasim`` module (kernels on the CPU simulator), or None if it was not built."""
    return _load_sim("_cudasim")


@functools.cache
def sim_testing():
    """``_cudasim_testing``: the test-only kernels (kernels/testing/) on the simulator."""
    return _load_sim("_cudasim_testing")


@functools.cache
def cuda_testing():
    """``_cuda_testing``: the test-only kernels from nvcc, or None."""
    try:
        return importlib.import_module("cvkernels._cuda_testing")
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
