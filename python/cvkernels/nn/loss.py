"""The loss modules of ``cvkernels.nn`` (``torch.nn``'s names and argument order): each holds
its options and an optional class ``weight`` buffer and calls ``cvkernels.functional``."""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MultiMarginLoss"]


class CrossEntropyLoss(Module):
    """``F.cross_entropy`` as a module (torch's argument order, deprecated ones must be None)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__()
        F._no_legacy("CrossEntropyLoss", size_average, reduce)
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        """The loss of logits ``input`` against ``target``."""
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(Module):
    """``F.nll_loss`` as a module (torch's argument order, deprecated ones must be None)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__()
        F._no_legacy("NLLLoss", size_average, reduce)
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input, target):
        """The loss of log-probabilities ``input`` against ``target``."""
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MultiMarginLoss(Module):
    """``F.multi_margin_loss`` as a module."""

    def __init__(self, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                 reduction="mean"):
        super().__init__()
        F._no_legacy("MultiMarginLoss", size_average, reduce)
        self.p, self.margin, self.reduction = p, margin, reduction
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        """The loss of scores ``input`` against ``target``."""
        return F.multi_margin_loss(input, target, self.p, self.margin, self.weight,
                                   reduction=self.reduction)
