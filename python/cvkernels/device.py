"""Device descriptors: what a plan needs to know about the GPU it launches on.

On the GPU paths the descriptor is read from the real device (CuPy's device properties). The
simulator describes an H100 SXM by default; tests can simulate another device with
:func:`simulated`. Plans take the descriptor as their first argument, and every launch path
refuses what the device would refuse (see ``cvkernels.backends.runtime``).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses

KIB = 1024


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    arch: int                         # compute capability as major*10 + minor: 90 for sm_90
    sm_count: int
    smem_per_block: int = 48 * KIB    # dynamic shared memory without the opt-in
    smem_per_block_optin: int = 227 * KIB
    regs_per_sm: int = 65536
    max_threads_per_block: int = 1024
    max_grid: tuple = (2 ** 31 - 1, 65535, 65535)


#: The simulator's default: an H100 SXM (sm_90, 132 SMs, 227 KiB opt-in shared memory a block).
H100 = Device("NVIDIA H100 (simulated)", 90, 132)

_simulated: contextvars.ContextVar = contextvars.ContextVar("cvk_sim_device", default=H100)


def sim_device() -> Device:
    """The device the simulator describes to plans (H100 unless :func:`simulated` says)."""
    return _simulated.get()


@contextlib.contextmanager
def simulated(device: Device):
    """Plan and launch on the simulator as if on ``device``: ``with simulated(A100): ...``."""
    token = _simulated.set(device)
    try:
        yield device
    finally:
        _simulated.reset(token)


_gpu_cache: dict = {}


def gpu_device(device_id: int | None = None) -> Device:
    """The descriptor of a real CUDA device (CuPy's current device by default), cached."""
    import cupy
    if device_id is None:
        device_id = cupy.cuda.Device().id
    if device_id not in _gpu_cache:
        p = cupy.cuda.runtime.getDeviceProperties(device_id)
        name = p.get("name", b"GPU")
        _gpu_cache[device_id] = Device(
            name=name.decode() if isinstance(name, bytes) else str(name),
            arch=int(p["major"]) * 10 + int(p["minor"]),
            sm_count=int(p["multiProcessorCount"]),
            smem_per_block=int(p["sharedMemPerBlock"]),
            smem_per_block_optin=int(p.get("sharedMemPerBlockOptin", p["sharedMemPerBlock"])),
            regs_per_sm=int(p.get("regsPerMultiprocessor", 65536)),
            max_threads_per_block=int(p.get("maxThreadsPerBlock", 1024)),
            max_grid=tuple(int(x) for x in p.get("maxGridSize", (2 ** 31 - 1, 65535, 65535))))
    return _gpu_cache[device_id]
