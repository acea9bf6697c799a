"""Array kinds: which device an argument lives on, and conversion to the native array type.

numpy arrays (and torch CPU tensors) are host arrays; CuPy arrays, torch CUDA tensors and anything
with ``__cuda_array_interface__`` or a CUDA DLPack device are GPU arrays and are viewed, without a
copy, as CuPy arrays. Results go back to the caller's framework (torch in, torch out).
"""
from __future__ import annotations

import numpy as np

HOST, GPU = "host", "gpu"
_DLPACK_CUDA = 2


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "is_cuda")


def kind_of(x):
    """Return HOST, GPU, or None when ``x`` is not an array (None, a Python scalar, a string)."""
    if x is None or isinstance(x, (bool, int, float, str, np.generic)):
        return None
    if isinstance(x, np.ndarray):
        return HOST
    if _is_torch(x):
        return GPU if x.is_cuda else HOST
    if hasattr(x, "__cuda_array_interface__"):
        return GPU
    if hasattr(x, "__dlpack_device__"):
        dev_type = int(x.__dlpack_device__()[0])
        return GPU if dev_type == _DLPACK_CUDA else HOST
    if hasattr(x, "__array_interface__") or hasattr(x, "__array__"):
        return HOST
    return None


def common_kind(fn: str, named: dict):
    """The single kind shared by all array arguments of ``fn``; ValueError naming them if mixed."""
    kinds = {}
    for name, v in named.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        for item in vals:
            k = kind_of(item)
            if k is not None:
                kinds.setdefault(k, name)
    if len(kinds) > 1:
        raise ValueError(f"{fn}: arguments live on different devices: {kinds[HOST]} is a host "
                         f"array and {kinds[GPU]} a GPU array; move them to one device")
    return next(iter(kinds), HOST)


def to_native(x):
    """View ``x`` as a numpy array (host) or a CuPy array (GPU); other values pass through."""
    if isinstance(x, (list, tuple)):   # e.g. roi boxes given as a list of [L, 4] arrays
        return type(x)(to_native(v) for v in x)
    k = kind_of(x)
    if k is None or isinstance(x, np.ndarray):
        return x
    if k == HOST:
        if _is_torch(x):
            return _torch_to_numpy(x.detach())
        return np.asarray(x)
    import cupy
    if isinstance(x, cupy.ndarray):
        return x
    if _is_torch(x):
        return cupy.from_dlpack(x.detach())
    if hasattr(x, "__cuda_array_interface__"):
        return cupy.asarray(x)
    return cupy.from_dlpack(x)


def _torch_to_numpy(t):
    """A numpy view of a CPU tensor; bf16 as ml_dtypes.bfloat16 (through its bits: torch's
    .numpy() has no bf16)."""
    import torch
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _numpy_to_torch(a):
    import torch
    a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def data_ptr(a) -> int:
    """The address of a native array's first element: numpy (``ctypes.data``) or CuPy."""
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def restorer(example):
    """A function that turns native results back into ``example``'s framework."""
    if _is_torch(example):
        import torch

        def back(r):
            if r is None or not hasattr(r, "shape"):
                return r
            if isinstance(r, np.ndarray):
                return _numpy_to_torch(r)
            return torch.from_dlpack(r)
        return back
    return lambda r: r
