"""Philox generators for the kernels' random numbers (dropout), in torch's CUDA style.

A :class:`Generator` is a ``(seed, offset)`` pair over the Philox4x32-10 stream of
:mod:`cvkernels.reference.philox` (the same bits on the 'cpu' reference and on every kernel
backend). Each call that draws takes the current ``(seed, offset)`` and advances the offset by the
number of 32-bit draws it consumes, rounded up to a multiple of 4 (one Philox call gives 4), as
torch's CUDA generator advances its Philox offset. A launch is therefore reproducible from the
pair it was given, and a backward regenerates its forward's mask from it.

``cvkernels.nn.init.manual_seed(s)`` (and :func:`manual_seed`) reseeds the default generator,
which ``cvkernels.functional.dropout`` uses when no ``generator`` is given.
"""
from __future__ import annotations

from .errors import ArgumentError, ArgumentTypeError

__all__ = ["Generator", "default_generator", "manual_seed"]

_U64 = (1 << 64) - 1


class Generator:
    """A Philox stream position: ``seed`` (uint64) and ``offset`` (draws consumed so far)."""

    def __init__(self, seed: int = 0):
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> "Generator":
        """Restart at ``seed`` (taken mod 2^64), offset 0; returns self."""
        if isinstance(seed, bool) or not isinstance(seed, int) and not hasattr(seed, "__index__"):
            raise ArgumentTypeError(f"Generator.manual_seed: seed must be an int, got "
                                    f"{type(seed).__name__}")
        self._seed, self._offset = int(seed) & _U64, 0
        return self

    def initial_seed(self) -> int:
        """The seed (as torch.Generator.initial_seed)."""
        return self._seed

    def get_state(self) -> tuple:
        """``(seed, offset)``; :meth:`set_state` restores it."""
        return self._seed, self._offset

    def set_state(self, state) -> "Generator":
        """Restore a :meth:`get_state` pair."""
        seed, offset = state
        if int(offset) < 0 or int(offset) % 4:
            raise ArgumentError(f"Generator.set_state: offset must be a non-negative multiple "
                                f"of 4, got {offset}")
        self._seed, self._offset = int(seed) & _U64, int(offset)
        return self

    def next_stream(self, draws: int) -> tuple:
        """The ``(seed, offset)`` for a call that uses ``draws`` 32-bit draws, then advance the
        offset by ``4 * ceil(draws / 4)``."""
        state = (self._seed, self._offset)
        self._offset += 4 * (-(-int(draws) // 4))
        return state

    def __repr__(self):
        return f"cvkernels.random.Generator(seed={self._seed}, offset={self._offset})"


_default = Generator(0)


def default_generator() -> Generator:
    """The library's default Philox generator."""
    return _default


def manual_seed(seed: int) -> Generator:
    """Reseed the default Philox generator (offset back to 0) and return it."""
    return _default.manual_seed(seed)
