"""Argument validation shared by the functional API and the references.

Every error names the function and the argument, e.g.
``ValueError: roi_align: boxes must have shape [K, 5], got (3, 4)``.
"""
from __future__ import annotations

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, IndexOutOfRange, ShapeError

try:  # bf16 host arrays are ml_dtypes.bfloat16, as in JAX and CuPy
    import ml_dtypes as _ml_dtypes
    _BF16 = (np.dtype(_ml_dtypes.bfloat16),)
except ImportError:  # pragma: no cover
    _BF16 = ()
FLOAT_DTYPES = (np.dtype(np.float16), *_BF16, np.dtype(np.float32), np.dtype(np.float64))


def check_float(fn: str, name: str, x, dtypes=FLOAT_DTYPES) -> None:
    """Raise ArgumentTypeError (a TypeError) unless ``x`` has one of the floating ``dtypes``."""
    dt = np.dtype(x.dtype)
    if dt not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise ArgumentTypeError(f"{fn}: {name} must have dtype in ({allowed}), got {dt}")


def check_ndim(fn: str, name: str, x, ndims) -> None:
    """Raise ShapeError (a ValueError) unless ``x.ndim`` is ``ndims`` (an int or a collection of ints)."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ShapeError(f"{fn}: {name} must be {want}, got shape {tuple(x.shape)}")


def check_same_dtype(fn: str, **arrays) -> None:
    """Raise TypeError unless all given arrays share a dtype (None entries are skipped)."""
    items = [(k, np.dtype(v.dtype)) for k, v in arrays.items() if v is not None]
    if len({d for _, d in items}) > 1:
        desc = ", ".join(f"{k}={d}" for k, d in items)
        raise ArgumentTypeError(f"{fn}: arguments must share one dtype, got {desc}")


def check_dim(fn: str, name: str, dim: int, ndim: int) -> int:
    """Normalise a possibly negative ``dim`` against ``ndim``; raise IndexError when out of range."""
    lo, hi = (-ndim, ndim - 1) if ndim > 0 else (-1, 0)
    if not isinstance(dim, (int, np.integer)) or not lo <= dim <= hi:
        raise IndexOutOfRange(f"{fn}: {name}={dim} is out of range for a tensor of {ndim} dims "
                         f"(expected to be in range of [{lo}, {hi}])")
    return int(dim) % max(ndim, 1)


def pair(fn: str, name: str, v) -> tuple[int, int]:
    """Turn an int, a 1-sequence (torch expands ``(k,)`` to ``(k, k)``) or a length-2 sequence
    into a pair of ints, naming ``name`` on error."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    try:
        a, b = (v[0], v[0]) if len(v) == 1 else v
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ArgumentError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}") from None


def check_size(fn: str, name: str, v, minimum: int = 0) -> int:
    """A size argument (a feature or channel count): an int (TypeError otherwise) that is at
    least ``minimum`` (ArgumentError otherwise, naming ``fn`` and ``name``)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ArgumentTypeError(f"{fn}: {name} must be an int, got {type(v).__name__} ({v!r})")
    if v < minimum:
        raise ArgumentError(f"{fn}: {name} must be at least {minimum}, got {v}")
    return int(v)


MAX_ELEMENTS = 2 ** 36   # 64 Gi elements: 256 GiB in fp32, more than any one GPU holds


def check_elements(fn: str, what: str, shape, hint: str) -> None:
    """Raise ArgumentError when an array the op would allocate (``what``, of ``shape``) has more
    than :data:`MAX_ELEMENTS` elements: a huge ``output_size``, ``padding`` or ``dilation`` is
    refused by name at once, not by the allocator (or after a long loop)."""
    n = 1
    for s in shape:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise ArgumentError(f"{fn}: {what} would have {n} elements (shape {tuple(shape)}), more "
                            f"than the 2^36 this library allocates; check {hint}")
