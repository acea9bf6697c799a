"""The four backends. ``get(name)`` returns an object with ``available()`` and ``lookup(op, dir)``.

``cpu`` runs the NumPy references. ``sim``, ``cuda`` and ``rawkernel`` run the CUDA kernels
(on the CPU simulator, through the pybind11 extension, through CuPy RawModule); an op without a
kernel there raises NotImplementedError naming the op and the backend, never falls back silently.
"""
from __future__ import annotations

import functools


class CpuBackend:
    name = "cpu"

    def available(self) -> bool:
        return True

    def lookup(self, op: str, direction: str):
        from .. import reference
        fn = getattr(reference, f"{op}_{direction}", None)
        if fn is None:
            raise NotImplementedError(f"{op}: no {direction} reference exists")
        return fn


class KernelBackend:
    """A backend that runs the CUDA kernel sources; its ops are registered by ``kernel_ops``."""

    def __init__(self, name: str, probe):
        self.name, self._probe, self.table = name, probe, {}

    @functools.cache
    def available(self) -> bool:
        try:
            return bool(self._probe())
        except Exception:
            return False

    def lookup(self, op: str, direction: str):
        from . import kernel_ops  # noqa: F401  (fills the tables)
        if not self.available():
            raise RuntimeError(f"{op}: backend {self.name!r} is not available here "
                               f"(available: {', '.join(available_names())})")
        try:
            return self.table[(op, direction)]
        except KeyError:
            raise NotImplementedError(
                f"{op}: backend {self.name!r} has no CUDA kernel for {op} {direction} yet; "
                f"use the 'cpu' backend on numpy arrays") from None

    def register(self, op: str, direction: str, fn):
        self.table[(op, direction)] = fn


def _probe_sim():
    from .. import _ext
    return _ext.sim() is not None


def _probe_cuda():
    from .. import _ext
    from .runtime import gpu_count
    return _ext.cuda() is not None and gpu_count() > 0


def _probe_rawkernel():
    from .runtime import gpu_count
    return gpu_count() > 0


_BACKENDS = {
    "cpu": CpuBackend(),
    "sim": KernelBackend("sim", _probe_sim),
    "cuda": KernelBackend("cuda", _probe_cuda),
    "rawkernel": KernelBackend("rawkernel", _probe_rawkernel),
}


def get(name: str):
    """The backend object called ``name``."""
    return _BACKENDS[name]


def available_names():
    return [n for n, b in _BACKENDS.items() if b.available()]
