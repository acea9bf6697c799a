"""Weight initialisation as in ``torch.nn.init``, drawn from an explicit numpy Generator.

Randomness in cvkernels is explicit: every function here (and every layer constructor, and
``nn.Dropout``) takes ``generator=`` (a ``np.random.Generator``). When it is None the library's
default generator is used; ``manual_seed(seed)`` replaces that default, so

    cvkernels.nn.init.manual_seed(0)
    net = Net()          # the same weights every run

The draws differ from torch's own RNG; the *distributions* (bounds, fans, gains) are torch's.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["manual_seed", "default_generator", "calculate_fan_in_and_fan_out",
           "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_"]

_default = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator (used where ``generator=None``) and return it; also
    reseeds ``cvkernels.random.default_generator()`` (dropout's Philox stream)."""
    global _default
    _default = np.random.default_rng(seed)
    from ..random import manual_seed as philox_seed
    philox_seed(seed)     # and the default Philox stream of dropout
    return _default


def default_generator() -> np.random.Generator:
    """The library's default ``np.random.Generator``."""
    return _default


def _gen(generator):
    return _default if generator is None else generator


def _assign(tensor, values):
    """Write float64 ``values`` into ``tensor`` (a Tensor/Parameter) keeping its dtype/device."""
    from ..autograd import array_module
    xp = array_module(tensor.data)
    tensor.data = xp.asarray(values.astype(tensor.dtype))
    return tensor


def calculate_fan_in_and_fan_out(shape):
    """torch's fans: fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain of ``torch.nn.init.calculate_gain``."""
    if nonlinearity in ("linear", "conv2d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b)."""
    return _assign(tensor, _gen(generator).uniform(a, b, size=tensor.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2)."""
    return _assign(tensor, _gen(generator).normal(mean, std, size=tensor.shape))


def constant_(tensor, val):
    """Fill with ``val``."""
    return _assign(tensor, np.full(tensor.shape, val, dtype=np.float64))


def zeros_(tensor):
    """Fill with zeros."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with ones."""
    return constant_(tensor, 1.0)


def _kaiming_std(tensor, a, mode, nonlinearity):
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor.shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-b, b), b = gain * sqrt(3 / fan). With ``a=sqrt(5)`` (torch's layer default) this is
    b = 1/sqrt(fan_in)."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std^2), std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor.shape)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
