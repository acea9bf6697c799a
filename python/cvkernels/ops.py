"""Detection operators under ``torchvision.ops``'s names and semantics.

Boxes are xyxy. RoI boxes are a ``[K, 5]`` array (batch_index, x1, y1, x2, y2) or a list of
``[L_i, 4]`` arrays, one per image. Raw arrays in -> raw arrays out; ``cvkernels.Tensor`` in ->
Tensor out, and ``roi_align``/``roi_pool`` are differentiable with respect to ``input``.
"""
from __future__ import annotations

from .autograd.op import Op

__all__ = ["box_iou", "nms", "batched_nms", "roi_align", "roi_pool", "RoIAlign", "RoIPool"]

# Declarations on the generic op path (``cvkernels.autograd.op``).
_box_iou = Op("box_iou", differentiable=False)
_nms = Op("nms", differentiable=False)
_batched_nms = Op("batched_nms", differentiable=False)
# the backwards need the boxes and the input's shape, not the input
_roi_align = Op("roi_align", saves=("boxes", "input_shape", "output_size", "spatial_scale",
                                    "sampling_ratio", "aligned"))
_roi_pool = Op("roi_pool", outputs=("output", "argmax"), extra={"return_argmax": True},
               saves=("argmax", "boxes", "input_shape", "output_size", "spatial_scale"))


def box_iou(boxes1, boxes2):
    """Pairwise IoU ``[N, M]`` of boxes1 ``[N, 4]`` and boxes2 ``[M, 4]`` (not differentiable)."""
    return _box_iou(boxes1=boxes1, boxes2=boxes2)


def nms(boxes, scores, iou_threshold):
    """Indices (int64) of the boxes kept by greedy NMS, by decreasing score; a box is
    suppressed when its IoU with a kept box is > ``iou_threshold``."""
    return _nms(boxes=boxes, scores=scores, iou_threshold=iou_threshold)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS per category ``idxs``; boxes of different categories never suppress each other.
    Empty ``boxes`` give an empty result, even with ``None`` for the other arguments."""
    return _batched_nms(boxes=boxes, scores=scores, idxs=idxs, iou_threshold=iou_threshold)


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoI Align: ``[K, C, ph, pw]`` bilinear averages over each roi's bins (torchvision's
    algorithm; ``sampling_ratio <= 0`` adapts per roi). Differentiable w.r.t. ``input``."""
    return _roi_align(input=input, boxes=boxes, output_size=output_size,
                      spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                      aligned=aligned)


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """RoI max pooling ``[K, C, ph, pw]`` (torchvision's algorithm). Differentiable w.r.t.
    ``input``: each bin's gradient goes to its argmax."""
    return _roi_pool(input=input, boxes=boxes, output_size=output_size,
                     spatial_scale=spatial_scale)[0]


class RoIAlign:
    """Callable holding roi_align's parameters, as ``torchvision.ops.RoIAlign``."""

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def __call__(self, input, rois):
        """Apply :func:`roi_align`."""
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)


class RoIPool:
    """Callable holding roi_pool's parameters, as ``torchvision.ops.RoIPool``."""

    def __init__(self, output_size, spatial_scale):
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def __call__(self, input, rois):
        """Apply :func:`roi_pool`."""
        return roi_pool(input, rois, self.output_size, self.spatial_scale)
