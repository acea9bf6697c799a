"""The library's exception classes: one set for argument checks, shapes and kernel-side errors.

Messages name the function and the argument (``conv2d: weight must be 4-D, got shape (3, 3)``).
The types follow torch's choices, and each also subclasses RuntimeError, so that code written
for torch (which raises RuntimeError for most bad shapes and values) keeps working:

=========================  =================================  ==========================
class                      raised for                         catches as
=========================  =================================  ==========================
:class:`ArgumentTypeError`  a wrong type (a list for an array,  TypeError, RuntimeError
                           ``dim=1.0``, a string threshold)
:class:`ArgumentError`      a wrong value (a negative size,     ValueError, RuntimeError
                           ``p=1.5``, an unknown reduction)
:class:`ShapeError`         a wrong shape or rank, mismatched   ValueError, RuntimeError
                           sizes (a kind of ArgumentError)
:class:`IndexOutOfRange`    a dim out of range, a class index   IndexError, RuntimeError
                           or other index out of bounds
:class:`KernelError`        an error a kernel found on the      RuntimeError
                           device (e.g. a bad target index),
                           reported after the launch
=========================  =================================  ==========================

``LaunchError`` (``cvkernels.backends.runtime``) is a KernelError for launches the runtime or
the device refused.
"""
from __future__ import annotations

__all__ = ["ArgumentTypeError", "ArgumentError", "ShapeError", "IndexOutOfRange", "KernelError"]


class ArgumentTypeError(TypeError, RuntimeError):
    """An argument of the wrong type (torch: TypeError)."""


class ArgumentError(ValueError, RuntimeError):
    """An argument with a wrong value (torch: RuntimeError or ValueError)."""


class ShapeError(ArgumentError):
    """An array argument with a wrong shape, rank or size (torch: RuntimeError)."""


class IndexOutOfRange(IndexError, RuntimeError):
    """A dimension or an index out of range (torch: IndexError)."""


class KernelError(RuntimeError):
    """An error detected by a kernel on the device, reported after its launch."""
