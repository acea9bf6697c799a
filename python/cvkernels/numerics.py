"""Numerical constants and helpers shared by the references, the kernels' host code, autograd,
the tests, ``cvk check`` and the benchmarks: one definition each.

* :data:`U32` -- the unit roundoff of float32, ``2**-24``. A rounding budget of ``n`` float32
  roundings is ``n * U32 * |exact|`` (atol + rtol*|ref| style bounds).
* :func:`unit_roundoff` -- the same for any floating dtype (float16, bfloat16, float32, float64).
* :func:`unbroadcast` -- the adjoint of broadcasting: sum a gradient down to an input's shape.

Importing this module costs numpy only (``ml_dtypes`` is looked up on the first bfloat16 query).
"""
from __future__ import annotations

import numpy as np

__all__ = ["U32", "U16", "UBF16", "U64", "unit_roundoff", "unbroadcast"]

U64 = 2.0 ** -53    #: unit roundoff of float64
U32 = 2.0 ** -24    #: unit roundoff of float32
U16 = 2.0 ** -11    #: unit roundoff of float16 (IEEE binary16, 10 stored mantissa bits)
UBF16 = 2.0 ** -8   #: unit roundoff of bfloat16 (7 stored mantissa bits)

_BY_NAME = {"float64": U64, "float32": U32, "float16": U16, "bfloat16": UBF16}


def unit_roundoff(dtype) -> float:
    """Unit roundoff ``u = 2**-p`` of a floating dtype with ``p`` significand bits: the largest
    relative error of one round-to-nearest. float64 2^-53, float32 2^-24, float16 2^-11,
    bfloat16 2^-8.

    ``dtype`` is anything ``np.dtype`` accepts (``np.float32``, ``'float16'``, an array's
    ``.dtype``); bfloat16 is ``ml_dtypes.bfloat16`` (or the string ``'bfloat16'``, which works
    without ml_dtypes). Raises TypeError for other dtypes.
    """
    if isinstance(dtype, str) and dtype == "bfloat16":
        return UBF16
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unit_roundoff: {dtype!r} is not a dtype") from None
    u = _BY_NAME.get(dt.name)
    if u is None:
        raise TypeError(f"unit_roundoff: dtype must be float16, bfloat16, float32 or float64, "
                        f"got {dt}")
    return u


def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``: the adjoint of broadcasting an array of ``shape`` to
    ``g.shape`` (numpy rules). Leading axes that broadcasting added and axes where ``shape`` has
    1 but ``g`` has more are summed, in one reduction; ``g`` itself is returned when the shapes
    already agree. Works on numpy and CuPy arrays; the result is an array (0-d for ``()``),
    never a scalar.
    """
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"unbroadcast: cannot sum shape {tuple(g.shape)} down to {shape}")
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and g.shape[i + lead] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)
