"""Route ``(op, direction)`` to the backend the arrays and the user's choice select.

Every backend implements each op with the signature of its reference in ``cvkernels.reference``:
``<op>_forward(...)`` and ``<op>_backward(grad_out, ...)``.
"""
from __future__ import annotations

from . import _backend, backends
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
    token = None
    if kind == GPU and _is_torch(example):  # launch on the caller's torch stream
        import torch
        from .backends.kernel_ops import STREAM_HINT
        token = STREAM_HINT.set(torch.cuda.current_stream(example.device).cuda_stream)
    try:
        out = impl(*[to_native(a) for a in args], **{k: to_native(v) for k, v in kwargs.items()})
    finally:
        if token is not None:
            STREAM_HINT.reset(token)
    if isinstance(out, tuple):
        return tuple(back(o) for o in out)
    return back(out)


def forward(op: str, *args, **kwargs):
    """Run ``op``'s forward on the selected backend."""
    return _call(op, "forward", args, kwargs)


def backward(op: str, *args, **kwargs):
    """Run ``op``'s backward on the selected backend; returns a tuple of gradients."""
    return _call(op, "backward", args, kwargs)
