"""Route ``(op, direction)`` to the backend the arrays and the user's choice select.

Every backend implements each op with the signature of its reference in ``cvkernels.reference``:
``<op>_forward(...)`` and ``<op>_backward(grad_out, ...)``.
"""
from __future__ import annotations

import contextlib

from . import _backend, _boundary, backends
from ._arrays import GPU, _is_torch, common_kind, kind_of, restorer, to_native


def _call(op: str, direction: str, args, kwargs):
    named = {f"arg{i}": a for i, a in enumerate(args)}
    named.update(kwargs)
    kind = common_kind(op, named)
    name = _backend.resolve(op, kind)
    impl = backends.get(name).lookup(op, direction)
    example = next((a for a in list(args) + list(kwargs.values()) if kind_of(a) is not None),
                   None)
    back = restorer(example)
    with _torch_context(example if kind == GPU else None):
        out = impl(*[to_native(a) for a in args], **{k: to_native(v) for k, v in kwargs.items()})
    if isinstance(out, tuple):
        return tuple(back(o) for o in out)
    return back(out)


@contextlib.contextmanager
def _torch_context(example):
    """For torch CUDA callers: run on torch's current stream and allocate every output and
    temporary from torch's caching allocator, as a torch op would."""
    if example is None or not _is_torch(example):
        yield
        return
    import cupy
    import torch
    device = example.device

    def torch_alloc(size):
        buf = torch.empty(max(size, 1), dtype=torch.uint8, device=device)
        mem = cupy.cuda.UnownedMemory(buf.data_ptr(), size, buf)  # keeps `buf` alive
        return cupy.cuda.MemoryPointer(mem, 0)

    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream), \
            cupy.cuda.using_allocator(torch_alloc):
        yield


def forward(op: str, *args, **kwargs):
    """Run ``op``'s forward on the selected backend, after the boundary checks of
    ``cvkernels._boundary`` (the same rules for every op, from its signature)."""
    return _call(op, "forward", args, _boundary.check_call(op, kwargs))


def backward(op: str, *args, **kwargs):
    """Run ``op``'s backward on the selected backend; returns a tuple of gradients."""
    return _call(op, "backward", args, kwargs)
