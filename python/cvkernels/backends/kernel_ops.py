"""The kernel backends' op tables, derived from the kernel specs.

Every op a family declares (``@FAMILY.op(name, direction)`` in ``cvkernels/specs/``) is
registered with the ``sim``, ``cuda`` and ``rawkernel`` backends, bound to that backend's
runtime (``cvkernels.backends.runtime``). Nothing here names an op.
"""
from __future__ import annotations

import functools

from ..spec import families
from . import get
from .runtime import make_runtime

_BACKEND_RUNTIME = {"sim": "sim", "cuda": "cuda", "rawkernel": "rawkernel"}


def _bind(op_fn, runtime_name):
    @functools.wraps(op_fn)
    def impl(*args, **kwargs):
        return op_fn(make_runtime(runtime_name), *args, **kwargs)
    return impl


for _fam in families():
    for (_op, _dir), _fn in _fam.ops.items():
        for _backend, _rt in _BACKEND_RUNTIME.items():
            if _backend == "sim" and not _fam.sim:
                continue  # GPU-only: the sim backend reports the op as missing
            get(_backend).register(_op, _dir, _bind(_fn, _rt))
