"""The four ways a kernel runs, as pytest params: both launch paths on the simulator, and the
same two on a GPU (marked ``gpu``, skipped where no CUDA device is found)."""
from __future__ import annotations

import numpy as np
import pytest

from cvkernels import _ext
from cvkernels.backends import kernel_ops
from cvkernels.backends.rawkernel import SimRawModule


def make_runtime(name):
    if name == "sim-launcher":
        return kernel_ops.ExtRuntime("sim", _ext.sim(), np)
    if name == "sim-rawkernel":
        return kernel_ops.RawRuntime("sim-rawkernel", np, SimRawModule)
    import cupy
    if name == "cuda":
        return kernel_ops.ExtRuntime("cuda", _ext.cuda(), cupy)
    return kernel_ops.RawRuntime("rawkernel", cupy, cupy.RawModule)


RUNTIMES = [
    pytest.param("sim-launcher", marks=pytest.mark.sim),
    pytest.param("sim-rawkernel", marks=pytest.mark.sim),
    pytest.param("cuda", marks=pytest.mark.gpu),
    pytest.param("rawkernel", marks=pytest.mark.gpu),
]


@pytest.fixture(params=RUNTIMES)
def rt(request):
    return make_runtime(request.param)


def put(rt, a):
    """Move a numpy array to the runtime's device (a no-op on the simulator)."""
    return a if rt.xp is np else rt.xp.asarray(a)
