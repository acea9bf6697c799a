"""Helpers the family specs share: dtype checks, row views, shape checks of gradients."""
from __future__ import annotations

from .._arrays import data_ptr
from ..errors import ArgumentTypeError, ShapeError
from ..spec import dtype_of


def need_dtype(rt, fn: str, family, **arrays):
    """The one :class:`~cvkernels.spec.DType` of the given arrays (None entries skipped), which
    the family must have kernels for; ArgumentTypeError (a TypeError) naming the argument
    otherwise."""
    found = None
    for name, a in arrays.items():
        if a is None:
            continue
        d = dtype_of(a.dtype)
        if d is None or d not in family.dtypes:
            have = ", ".join(x.name for x in family.dtypes)
            raise ArgumentTypeError(f"{fn}: backend {rt.name!r} runs {have} kernels; {name} has "
                                    f"dtype {a.dtype} (use the 'cpu' backend for other dtypes)")
        if found is not None and d != found[1]:
            raise ArgumentTypeError(f"{fn}: arguments must share one dtype, got "
                                    f"{found[0]}={found[1].name} and {name}={d.name}")
        found = found or (name, d)
    if found is None:
        raise ArgumentTypeError(f"{fn}: no array arguments")
    return found[1]


def check_grad_out(fn: str, grad_out, shape):
    if tuple(grad_out.shape) != tuple(shape):
        raise ShapeError(f"{fn}: grad_out must have the output's shape {tuple(shape)}, got "
                         f"{tuple(grad_out.shape)}")


def aligned16(*arrays) -> bool:
    """Every array's data pointer is 16-byte aligned (None entries count as aligned)."""
    for a in arrays:
        if a is None:
            continue
        if data_ptr(a) % 16:
            return False
    return True
