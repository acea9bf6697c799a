"""Mixed precision: ``with cvkernels.autocast("bf16"): loss = model(x)``.

Inside the block, dispatched ops cast their floating-point array arguments by torch's autocast
policy, so a model can keep fp32 *master* weights (what the optimiser updates) and still run its
matmuls and convolutions in 16 bits:

* **low precision** (``LOWP``: matmul, linear, conv2d, conv_transpose2d): floating arguments are
  cast to the autocast dtype (fp16 or bf16); the kernels accumulate in fp32 and round once;
* **fp32** (``FP32``: softmax, log_softmax, cross_entropy, nll_loss, layer_norm, group_norm):
  floating arguments are cast up to fp32, where range and precision matter (torch's
  "autocast to float32" list);
* every other op runs in the dtype it is given (relu and pooling on bf16 activations stay bf16;
  batch_norm takes bf16 input with fp32 weight, bias and running statistics, as torch does).

A cast of a :class:`~cvkernels.Tensor` is differentiable (``Tensor.astype``): the gradient
flows back cast to the master weight's dtype. Casts are the array library's ``astype`` (NumPy,
ml_dtypes or CuPy), like reshapes: they are data movement, not kernels of this library.
Integer and boolean arguments (targets, indices, masks) are never cast.
"""
from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from ._checks import FLOAT_DTYPES
from .errors import ArgumentError

__all__ = ["autocast", "LOWP", "FP32", "autocast_dtype"]

LOWP = frozenset({"matmul", "linear", "conv2d", "conv_transpose2d"})
FP32 = frozenset({"softmax", "log_softmax", "cross_entropy", "nll_loss", "layer_norm",
                  "group_norm"})

_state: contextvars.ContextVar = contextvars.ContextVar("cvk_autocast", default=None)


def _lowp_dtype(dtype) -> np.dtype:
    from .spec import FLOAT16, BFLOAT16
    for d in (FLOAT16, BFLOAT16):
        if dtype in (d.short, d.name):
            return d.np
        try:
            if np.dtype(dtype) == d.np:
                return d.np
        except TypeError:
            pass
    raise ArgumentError(f"autocast: dtype must be fp16 or bf16 (a name or a numpy dtype), "
                        f"got {dtype!r}")


@contextlib.contextmanager
def autocast(dtype="bf16", enabled: bool = True):
    """Run the enclosed ops under the mixed-precision policy above, in ``dtype`` ('bf16',
    'fp16', or the numpy dtypes); ``enabled=False`` turns an enclosing autocast off."""
    token = _state.set(_lowp_dtype(dtype) if enabled else None)
    try:
        yield
    finally:
        _state.reset(token)


def autocast_dtype():
    """The active autocast dtype, or None outside :func:`autocast`."""
    return _state.get()


def _cast(v, dt):
    dtype = getattr(v, "dtype", None)
    if dtype is None:
        return v
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return v          # no dtype, or not a numpy-style one (torch tensors): as is
    if dtype == dt or dtype not in FLOAT_DTYPES:
        return v          # ints, bools (targets, indices, masks) are never cast
    return v.astype(dt)


def cast_args(op: str, args: dict) -> dict:
    """``args`` with floating arrays cast for ``op`` by the active policy (unchanged outside
    autocast or for ops on neither list). Running statistics are left alone."""
    lowp = _state.get()
    if lowp is None or (op not in LOWP and op not in FP32):
        return args
    dt = lowp if op in LOWP else np.dtype(np.float32)
    return {k: _cast(v, dt) if k not in ("running_mean", "running_var") else v
            for k, v in args.items()}
