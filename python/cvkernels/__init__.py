"""cvkernels: hand-written CUDA kernels for computer vision, callable from Python.

Quick start::

    import numpy as np, cvkernels as cvk
    x = np.random.rand(4, 10).astype(np.float32)
    cvk.functional.softmax(x)                 # numpy in: the NumPy reference ('cpu')
    with cvk.backend("sim"):
        cvk.functional.softmax(x)             # the CUDA kernel, run on the CPU simulator

Backends: ``cpu`` (references), ``sim`` (kernels on the CPU simulator), ``cuda`` (pybind11
extension, GPU arrays), ``rawkernel`` (CuPy RawModule, GPU arrays). See ``available_backends()``.

``cvkernels.reference`` (NumPy and numba) is imported on first use, not by ``import cvkernels``.
"""
from ._backend import available_backends, backend, set_backend
from . import functional
from . import ops
from .autograd import Tensor, no_grad
from . import autograd, nn, optim
from . import errors
from .amp import autocast


def __getattr__(name):
    # PEP 562: the references (and numba, ~0.6 s) load on first access, e.g. cvk.reference.X
    if name == "reference":
        import importlib
        return importlib.import_module(".reference", __name__)
    raise AttributeError(f"module 'cvkernels' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = ["available_backends", "backend", "set_backend", "reference", "functional", "ops",
           "Tensor", "no_grad", "autograd", "nn", "optim", "errors", "autocast"]
