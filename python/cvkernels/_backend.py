"""Backend selection: ``set_backend``, the ``backend`` context manager, ``CVK_BACKEND``.

The choice is resolved per call against the kind of arrays the call received: ``cpu`` and ``sim``
run on host (numpy) arrays, ``cuda`` and ``rawkernel`` on GPU arrays. A choice that does not fit
the arrays raises rather than moving data between devices behind the caller's back.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

from ._arrays import GPU, HOST

BACKENDS = ("cpu", "sim", "cuda", "rawkernel")
DEVICE_OF = {"cpu": HOST, "sim": HOST, "cuda": GPU, "rawkernel": GPU}

_global_choice: str | None = None
_ctx_choice: contextvars.ContextVar = contextvars.ContextVar("cvk_backend", default=None)


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"set_backend: name must be one of {BACKENDS} or None, got {name!r}")
    return name


def available_backends() -> list[str]:
    """The backends that can run on this machine, in order of preference."""
    from . import backends
    return [b for b in BACKENDS if backends.get(b).available()]


def set_backend(name: str | None) -> None:
    """Choose the backend for all later calls; ``None`` restores automatic choice."""
    global _global_choice
    _global_choice = None if name is None else _check_name(name)


@contextlib.contextmanager
def backend(name: str):
    """Run the enclosed block with backend ``name``: ``with cvkernels.backend("sim"): ...``."""
    token = _ctx_choice.set(_check_name(name))
    try:
        yield
    finally:
        _ctx_choice.reset(token)


def chosen() -> str | None:
    """The user's explicit choice (context, then set_backend, then CVK_BACKEND), or None."""
    env = os.environ.get("CVK_BACKEND") or None
    if env is not None and env not in BACKENDS:
        raise ValueError(f"CVK_BACKEND must be one of {BACKENDS}, got {env!r}")
    return _ctx_choice.get() or _global_choice or env


def resolve(fn: str, kind: str) -> str:
    """The backend that runs ``fn`` on arrays of ``kind``."""
    from . import backends
    name = chosen()
    if name is None:
        if kind == HOST:
            return "cpu"
        return "cuda" if backends.get("cuda").available() else "rawkernel"
    if DEVICE_OF[name] != kind:
        where = "host (numpy)" if kind == HOST else "GPU"
        raise ValueError(f"{fn}: backend {name!r} cannot run on {where} arrays; pass "
                         f"{'GPU' if DEVICE_OF[name] == GPU else 'numpy'} arrays or choose "
                         f"another backend")
    return name
