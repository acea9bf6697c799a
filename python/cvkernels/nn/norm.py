"""Normalisation layers beyond those of ``layers``: ``GroupNorm``."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import ArgumentError
from .module import Module, Parameter

__all__ = ["GroupNorm"]


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
        if affine:
            self.weight = Parameter(np.ones(num_channels, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_channels, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        """Normalise ``input`` (N, C, *)."""
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
