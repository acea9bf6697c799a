"""Normalisation layers beyond those of ``layers``: ``GroupNorm``."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import ArgumentError
from .module import Module, Parameter

__all__ = ["GroupNorm"]


def affine_parameters(module, shape, affine, bias, dtype):
    """Register ``weight`` (ones) and ``bias`` (zeros, or None when ``bias`` is False) of
    ``shape``, or both None without ``affine``: the affine part of torch's norm layers."""
    module.register_parameter("weight", Parameter(np.ones(shape, dtype=dtype)) if affine else None)
    module.register_parameter("bias", Parameter(np.zeros(shape, dtype=dtype))
                              if affine and bias else None)


class GroupNorm(Module):
    """Group normalisation as ``torch.nn.GroupNorm``: ``num_channels`` split into
    ``num_groups`` groups, each normalised per sample; with ``affine``, a per-channel weight
    (ones) and, unless ``bias=False``, a bias (zeros)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, bias=True, *,
                 dtype=np.float32):
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups:
            raise ArgumentError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                                f"num_groups ({num_groups}), with num_groups > 0")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        affine_parameters(self, (num_channels,), affine, bias, dtype)

    def forward(self, input):
        """Normalise ``input`` (N, C, *)."""
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
