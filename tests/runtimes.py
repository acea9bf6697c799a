"""The four ways a kernel runs, as pytest params: both launch paths on the simulator, and the
same two on a GPU (marked ``gpu``, skipped where no CUDA device is found)."""
from __future__ import annotations

import numpy as np
import pytest

from cvkernels.backends.runtime import RUNTIMES as _NAMES
from cvkernels.backends.runtime import make_runtime

RUNTIMES = [pytest.param(n, marks=pytest.mark.sim if n.startswith("sim") else pytest.mark.gpu)
            for n in _NAMES]


@pytest.fixture(params=RUNTIMES)
def rt(request):
    return make_runtime(request.param)


def put(rt, a):
    """Move a numpy array to the runtime's device (a no-op on the simulator)."""
    return a if rt.xp is np else rt.xp.asarray(a)
