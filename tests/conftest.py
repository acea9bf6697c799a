import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def _cuda_device_available() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CVK_SANITIZER"):
        # Under a sanitizer build, 'sim-rawkernel' launches the very same compiled kernels as
        # 'sim' (through the same _cudasim.launch; only the Python binding differs, and the
        # normal run tests it), so its half of the runtime matrix adds sanitizer time and no
        # kernel coverage: deselected there.
        keep, drop = [], []
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            (drop if params.get("rt") == "sim-rawkernel" else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    if not _cuda_device_available():
        skip = pytest.mark.skip(reason="no CUDA device found")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
