"""Detection operators under ``torchvision.ops``'s names and semantics.

Boxes are xyxy. RoI boxes are a ``[K, 5]`` array (batch_index, x1, y1, x2, y2) or a list of
``[L_i, 4]`` arrays, one per image. Raw arrays in -> raw arrays out; ``cvkernels.Tensor`` in ->
Tensor out, and ``roi_align``/``roi_pool`` are differentiable with respect to ``input``.
"""
from __future__ import annotations

from . import _dispatch
from .autograd import Function, Tensor
from .functional import _has_tensor

__all__ = ["box_iou", "nms", "batched_nms", "roi_align", "roi_pool", "RoIAlign", "RoIPool"]


def _raw(x):
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, (list, tuple)):
        return type(x)(_raw(v) for v in x)
    return x


def _wrap_if(flag, out):
    return Tensor(out) if flag else out


def box_iou(boxes1, boxes2):
    """Pairwise IoU ``[N, M]`` of boxes1 ``[N, 4]`` and boxes2 ``[M, 4]`` (not differentiable)."""
    t = _has_tensor([boxes1, boxes2])
    return _wrap_if(t, _dispatch.forward("box_iou", _raw(boxes1), _raw(boxes2)))


def nms(boxes, scores, iou_threshold):
    """Indices (int64) of the boxes kept by greedy NMS, by decreasing score; a box is
    suppressed when its IoU with a kept box is > ``iou_threshold``."""
    t = _has_tensor([boxes, scores])
    return _wrap_if(t, _dispatch.forward("nms", _raw(boxes), _raw(scores), float(iou_threshold)))


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS per category ``idxs``; boxes of different categories never suppress each other."""
    t = _has_tensor([boxes, scores, idxs])
    return _wrap_if(t, _dispatch.forward("batched_nms", _raw(boxes), _raw(scores), _raw(idxs),
                                         float(iou_threshold)))


class _RoIAlign(Function):
    @staticmethod
    def forward(ctx, input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.boxes, ctx.input_shape = boxes, tuple(input.shape)
        ctx.params = (output_size, spatial_scale, sampling_ratio, aligned)
        return _dispatch.forward("roi_align", input, boxes, output_size, spatial_scale,
                                 sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad):
        output_size, spatial_scale, sampling_ratio, aligned = ctx.params
        g = _dispatch.backward("roi_align", grad, ctx.boxes, ctx.input_shape, output_size,
                               spatial_scale, sampling_ratio, aligned)[0]
        return g, None


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoI Align: ``[K, C, ph, pw]`` bilinear averages over each roi's bins (torchvision's
    algorithm; ``sampling_ratio <= 0`` adapts per roi). Differentiable w.r.t. ``input``."""
    if not _has_tensor([input, boxes]):
        return _dispatch.forward("roi_align", input, boxes, output_size, spatial_scale,
                                 sampling_ratio, aligned)
    return _RoIAlign.apply(input, _raw(boxes), output_size, spatial_scale, sampling_ratio,
                           aligned)


class _RoIPool(Function):
    @staticmethod
    def forward(ctx, input, boxes, output_size, spatial_scale):
        out, argmax = _dispatch.forward("roi_pool", input, boxes, output_size, spatial_scale,
                                        return_argmax=True)
        ctx.save_for_backward(argmax)
        ctx.boxes, ctx.input_shape = boxes, tuple(input.shape)
        ctx.params = (output_size, spatial_scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        (argmax,) = ctx.saved_tensors
        g = _dispatch.backward("roi_pool", grad, argmax, ctx.boxes, ctx.input_shape,
                               *ctx.params)[0]
        return g, None


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """RoI max pooling ``[K, C, ph, pw]`` (torchvision's algorithm). Differentiable w.r.t.
    ``input``: each bin's gradient goes to its argmax."""
    if not _has_tensor([input, boxes]):
        return _dispatch.forward("roi_pool", input, boxes, output_size, spatial_scale)
    return _RoIPool.apply(input, _raw(boxes), output_size, spatial_scale)


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
