"""Box operations (xyxy boxes): IoU matrix, NMS and per-category NMS. NumPy/numba references.

Signatures and semantics follow ``torchvision.ops``. No backward: the outputs are indices, and
torchvision does not differentiate box_iou either.
"""
from __future__ import annotations

import numba
import numpy as np

from .._checks import check_float
from ..errors import ArgumentError, ArgumentTypeError, ShapeError

__all__ = [
    "box_iou_forward", "box_iou",
    "nms_forward", "nms",
    "batched_nms_forward", "batched_nms",
]


def _check_boxes(fn: str, name: str, boxes, integer=False) -> np.ndarray:
    b = np.asarray(boxes)
    if not (integer and b.dtype.kind in "iu"):
        check_float(fn, name, b)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ShapeError(f"{fn}: {name} must have shape [N, 4], got {tuple(b.shape)}")
    return b


def box_iou_forward(boxes1, boxes2):
    """Pairwise IoU of xyxy boxes: boxes1 [N, 4], boxes2 [M, 4] -> [N, M], dtype of boxes1.

    iou = inter / (area1 + area2 - inter) with inter = max(0, w) * max(0, h) of the overlap, as
    torchvision (two zero-area boxes give 0/0 = NaN there too). Computed in float64. Integer
    boxes are accepted, as torchvision: the result is then float32 (torch's true division), or
    the float dtype of the other argument.
    """
    b1 = _check_boxes("box_iou", "boxes1", boxes1, integer=True)
    b2 = _check_boxes("box_iou", "boxes2", boxes2, integer=True)
    a, b = b1.astype(np.float64), b2.astype(np.float64)
    area1 = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area2 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area1[:, None] + area2[None, :] - inter)
    floats = [d for d in (b1.dtype, b2.dtype) if d.kind == "f" or d.kind == "V"]
    return iou.astype(np.result_type(*floats) if floats else np.float32)


box_iou = box_iou_forward


@numba.njit(cache=True, error_model="numpy")   # 0/0 (two zero-area boxes) is NaN, as torch
def _nms_kernel(boxes, order, iou_threshold):
    """Greedy NMS over ``order`` (indices by decreasing score); float64 boxes. Returns kept idx."""
    n = order.shape[0]
    suppressed = np.zeros(boxes.shape[0], dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    nk = 0
    for _i in range(n):
        i = order[_i]
        if suppressed[i]:
            continue
        keep[nk] = i
        nk += 1
        ix1, iy1, ix2, iy2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        iarea = (ix2 - ix1) * (iy2 - iy1)
        for _j in range(_i + 1, n):
            j = order[_j]
            if suppressed[j]:
                continue
            jarea = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            w = max(0.0, min(ix2, boxes[j, 2]) - max(ix1, boxes[j, 0]))
            h = max(0.0, min(iy2, boxes[j, 3]) - max(iy1, boxes[j, 1]))
            inter = w * h
            ovr = inter / (iarea + jarea - inter)
            if ovr > iou_threshold:              # IoU == threshold is kept; NaN never suppresses
                suppressed[j] = True
    return keep[:nk]


def _check_scores(fn: str, scores, n: int) -> np.ndarray:
    s = np.asarray(scores)
    check_float(fn, "scores", s)
    if s.shape != (n,):
        raise ShapeError(f"{fn}: scores must have shape [{n}] (one per box), got {tuple(s.shape)}")
    if np.isnan(s).any():
        raise ArgumentError(f"{fn}: scores must not contain NaN")
    return s


def _check_idxs(fn: str, idxs, n: int) -> np.ndarray:
    ix = np.asarray(idxs)
    if ix.dtype.kind not in "iu":
        raise ArgumentTypeError(f"{fn}: idxs must have an integer dtype, got {ix.dtype}")
    if ix.shape != (n,):
        raise ShapeError(f"{fn}: idxs must have shape [{n}] (one per box), got {tuple(ix.shape)}")
    return ix


def _check_threshold(fn: str, iou_threshold) -> float:
    if isinstance(iou_threshold, (bool, np.bool_, str, bytes)):
        raise ArgumentTypeError(f"{fn}: iou_threshold must be a number, got {iou_threshold!r}")
    try:
        t = float(iou_threshold)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{fn}: iou_threshold must be a number, "
                                f"got {iou_threshold!r}") from None
    if np.isnan(t):
        raise ArgumentError(f"{fn}: iou_threshold must not be NaN")
    return t


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    # Stable descending sort: equal scores keep the lower index first.
    order = np.argsort(-scores.astype(np.float64), kind="stable").astype(np.int64)
    return _nms_kernel(np.ascontiguousarray(boxes, dtype=np.float64), order, thr)


def nms_forward(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    boxes [N, 4] xyxy float, scores [N] float (no NaN). Visits boxes by decreasing score (stable:
    ties keep the lower index first), keeps a box unless an already kept box overlaps it with
    IoU > iou_threshold (strictly; IoU == threshold is kept). IoU is computed in float64.
    Returns the kept indices, int64, in decreasing score order.
    """
    b = _check_boxes("nms", "boxes", boxes)
    s = _check_scores("nms", scores, b.shape[0])
    return _nms(b, s, _check_threshold("nms", iou_threshold))


nms = nms_forward


def batched_nms_forward(boxes, scores, idxs, iou_threshold):
    """NMS done independently per category, as ``torchvision.ops.batched_nms``.

    boxes [N, 4], scores [N], idxs [N] integer category of each box. Boxes of different
    categories never suppress each other. As torchvision, empty ``boxes`` give an empty result
    whatever the other arguments are, ``None`` included (they are still checked when given).
    Returns int64 indices of the kept boxes sorted by
    decreasing score (stable: ties keep the lower index first -- torchvision's coordinate-offset
    path gives the same order; its per-class path for > 4000 CPU boxes uses an unstable sort).
    """
    fn = "batched_nms"
    b = _check_boxes(fn, "boxes", boxes)
    if b.shape[0] == 0 and any(v is None for v in (scores, idxs, iou_threshold)):
        for v, check in ((scores, _check_scores), (idxs, _check_idxs)):
            if v is not None:
                check(fn, v, 0)
        if iou_threshold is not None:
            _check_threshold(fn, iou_threshold)
        return np.empty(0, dtype=np.int64)
    s = _check_scores(fn, scores, b.shape[0])
    ix = _check_idxs(fn, idxs, b.shape[0])
    thr = _check_threshold(fn, iou_threshold)
    if b.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    keep = np.zeros(b.shape[0], dtype=bool)
    for c in np.unique(ix):
        members = np.flatnonzero(ix == c)
        keep[members[_nms(b[members], s[members], thr)]] = True
    kept = np.flatnonzero(keep)
    return kept[np.argsort(-s[kept].astype(np.float64), kind="stable")].astype(np.int64)


batched_nms = batched_nms_forward
