"""Optimisers and learning-rate schedules in the style of ``torch.optim``."""
from . import lr_scheduler
from .optimizer import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR, StepLR

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "lr_scheduler",
           "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR", "SequentialLR"]
