"""The four ways a kernel runs, as pytest params: both launch paths on the simulator, and the
same two on a GPU (marked ``gpu``, skipped where no CUDA device is found)."""
from __future__ import annotations

import numpy as np
import pytest

from cvkernels.backends.kernel_ops import make_runtime

RUNTIMES = [
    pytest.param("sim", marks=pytest.mark.sim),
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
