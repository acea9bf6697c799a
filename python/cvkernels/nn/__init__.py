"""Layers, containers and losses in the style of ``torch.nn``, on the cvkernels autograd.

Randomness is explicit: layer constructors and ``Dropout`` take ``generator=`` (a
``np.random.Generator``); ``cvkernels.nn.init.manual_seed(seed)`` reseeds the default one.
"""
from . import init
from .init import manual_seed
from .module import Module, Parameter
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers_all
from .norm import GroupNorm

__all__ = ["init", "manual_seed", "Module", "Parameter"] + list(_layers_all) + ["GroupNorm"]
