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
    if not _cuda_device_available():
        skip = pytest.mark.skip(reason="no CUDA device found")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
