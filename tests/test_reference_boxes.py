"""box_iou, nms and batched_nms references: hand-built and threshold cases (IoU = threshold
+- 1e-5 built analytically), a brute-force greedy oracle, torchvision when importable, empty
inputs and argument errors."""
import numpy as np
import pytest

from cvkernels.reference import boxes as B
from helpers import assert_close


def _random_boxes(n, seed, dtype=np.float64, size=100.0):
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * size
    wh = rng.random((n, 2)) * size / 4 + 1
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype), rng.random(n).astype(dtype)


def _greedy_oracle(boxes, scores, thr):
    """Obvious O(N^2) greedy NMS on the IoU matrix, visiting by (-score, index)."""
    iou = B.box_iou(boxes.astype(np.float64), boxes.astype(np.float64))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        if all(not iou[i, j] > thr for j in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


# -------------------------------------------------------------------------------------- box_iou
def test_box_iou_hand_computed():
    a = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0],
                  [2.0, 0.0, 4.0, 2.0]])
    expect = np.array([[1 / 7, 1.0, 0.0, 0.0],      # touching edges: zero intersection
                       [0.0, 0.25, 0.0, 0.0]])
    assert_close(B.box_iou(a, b), expect, atol=0, rtol=1e-15)


def test_box_iou_shapes_dtypes_empty_noncontiguous():
    a, _ = _random_boxes(5, 0, np.float32)
    assert B.box_iou(a, a).dtype == np.float32
    assert B.box_iou(np.zeros((0, 4)), a.astype(np.float64)).shape == (0, 5)
    assert B.box_iou(a, np.zeros((0, 4), np.float32)).shape == (5, 0)
    big = np.zeros((5, 8))
    big[:, ::2] = a
    view = big[:, ::2]
    assert not view.flags.c_contiguous
    assert_close(B.box_iou(view, view), B.box_iou(a.astype(np.float64), a.astype(np.float64)),
                 atol=0, rtol=0)


def test_box_iou_vs_torchvision():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    a, _ = _random_boxes(13, 1)
    b, _ = _random_boxes(7, 2)
    assert_close(B.box_iou(a, b), tv.ops.box_iou(torch.tensor(a), torch.tensor(b)),
                 atol=1e-15, rtol=1e-14)


def test_box_iou_errors():
    with pytest.raises(ValueError, match="box_iou: boxes1 must have shape"):
        B.box_iou(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="box_iou: boxes2 must have shape"):
        B.box_iou(np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(TypeError, match="box_iou: boxes1"):
        B.box_iou(np.zeros((3, 4), np.bool_), np.zeros((2, 4)))


# ------------------------------------------------------------------------------------------ nms
def _pair_at_iou(iou, axis, dtype, origin=(10.0, 20.0)):
    """Two 2x1 boxes, the second shifted by s along ``axis``: IoU = (2-s)/(2+s) along x
    (widths 2) -> s = 2(1-iou)/(1+iou). Along y the boxes are 1x2 instead."""
    s = 2 * (1 - iou) / (1 + iou)
    x0, y0 = origin
    if axis == 0:
        a, b = [x0, y0, x0 + 2, y0 + 1], [x0 + s, y0, x0 + 2 + s, y0 + 1]
    else:
        a, b = [x0, y0, x0 + 1, y0 + 2], [x0, y0 + s, x0 + 1, y0 + 2 + s]
    return np.array([a, b], dtype=dtype)


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nms_threshold_plus_minus_1e5(thr, axis, dtype):
    scores = np.array([0.9, 0.8], dtype=dtype)
    above = _pair_at_iou(thr + 1e-5, axis, dtype)
    below = _pair_at_iou(thr - 1e-5, axis, dtype)
    # the construction really gives IoU = thr +- 1e-5 (to float rounding, far below 1e-5)
    assert abs(B.box_iou(above.astype(np.float64), above.astype(np.float64))[0, 1]
               - (thr + 1e-5)) < 1e-6
    assert_close(B.nms(above, scores, thr), np.array([0]), atol=0, rtol=0, name="suppressed")
    assert_close(B.nms(below, scores, thr), np.array([0, 1]), atol=0, rtol=0, name="kept")
    # the lower-scored box first in the input: same decision, indices follow the scores
    assert_close(B.nms(above[::-1], scores, thr), np.array([0]), atol=0, rtol=0)
    assert_close(B.nms(below, scores[::-1], thr), np.array([1, 0]), atol=0, rtol=0)


def test_nms_iou_exactly_threshold_is_kept():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5]])     # IoU = 0.5 exactly
    scores = np.array([0.9, 0.8])
    assert B.box_iou(boxes, boxes)[0, 1] == 0.5
    assert_close(B.nms(boxes, scores, 0.5), np.array([0, 1]), atol=0, rtol=0)
    assert_close(B.nms(boxes, scores, 0.4999), np.array([0]), atol=0, rtol=0)


def test_nms_equal_scores_keep_lower_index_first():
    boxes = np.array([[0.0, 0, 1, 1], [10, 10, 11, 11], [0, 0, 1, 1], [20, 20, 21, 21]])
    scores = np.array([0.5, 0.5, 0.5, 0.7])
    # box 2 duplicates box 0: with equal scores the lower index (0) wins
    assert_close(B.nms(boxes, scores, 0.5), np.array([3, 0, 1]), atol=0, rtol=0)


def test_nms_greedy_chain():
    # A overlaps B, B overlaps C, A does not overlap C: A suppresses B, so C survives.
    boxes = np.array([[0.0, 0, 2, 1], [0.5, 0, 2.5, 1], [0.9, 0, 2.9, 1]])
    scores = np.array([0.9, 0.8, 0.7])
    iou = B.box_iou(boxes, boxes)
    assert iou[0, 1] > 0.5 and iou[1, 2] > 0.5 and iou[0, 2] < 0.5
    assert_close(B.nms(boxes, scores, 0.5), np.array([0, 2]), atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7, 1.0])
def test_nms_vs_greedy_oracle(seed, thr):
    boxes, scores = _random_boxes(200, seed)
    scores[::7] = scores[0]                                  # some ties
    keep = B.nms(boxes, scores, thr)
    assert keep.dtype == np.int64
    assert_close(keep, _greedy_oracle(boxes, scores, thr), atol=0, rtol=0)


def test_nms_non_contiguous_and_float16():
    boxes, scores = _random_boxes(50, 3)
    big = np.zeros((50, 8))
    big[:, 1::2] = boxes
    view = big[:, 1::2]
    assert not view.flags.c_contiguous
    ref = B.nms(boxes, scores, 0.4)
    assert_close(B.nms(view, scores, 0.4), ref, atol=0, rtol=0)
    b16, s16 = boxes.astype(np.float16), scores.astype(np.float16)
    assert_close(B.nms(b16, s16, 0.4), _greedy_oracle(b16, s16, 0.4), atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nms_vs_torchvision(seed, dtype):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    boxes, scores = _random_boxes(500, seed, dtype)
    for thr in (0.2, 0.5, 0.8):
        expect = tv.ops.nms(torch.tensor(boxes), torch.tensor(scores), thr)
        assert_close(B.nms(boxes, scores, thr), expect, atol=0, rtol=0, name=f"thr={thr}")


def test_nms_empty():
    keep = B.nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    keep = B.batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                         np.zeros(0, np.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64


def test_nms_errors():
    with pytest.raises(ValueError, match="nms: boxes must have shape"):
        B.nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="nms: boxes must have shape"):
        B.nms(np.zeros(4), np.zeros(1), 0.5)
    with pytest.raises(ValueError, match="nms: scores must not contain NaN"):
        B.nms(np.zeros((3, 4)), np.array([0.1, np.nan, 0.2]), 0.5)
    with pytest.raises(ValueError, match="nms: scores must have shape"):
        B.nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(TypeError, match="nms: boxes"):
        B.nms(np.zeros((3, 4), np.int32), np.zeros(3), 0.5)
    with pytest.raises(TypeError, match="nms: scores"):
        B.nms(np.zeros((3, 4)), np.zeros(3, np.int64), 0.5)
    with pytest.raises(ValueError, match="nms: iou_threshold"):
        B.nms(np.zeros((3, 4)), np.zeros(3), float("nan"))


# -------------------------------------------------------------------------------- batched_nms
def test_batched_nms_categories_are_independent():
    boxes = np.array([[0.0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]])
    scores = np.array([0.6, 0.9, 0.7, 0.8])
    idxs = np.array([0, 1, 0, 1])
    # category 0: box 2 (0.7) suppresses box 0; category 1: boxes 1 and 3 do not overlap
    assert_close(B.batched_nms(boxes, scores, idxs, 0.5), np.array([1, 3, 2]), atol=0, rtol=0)
    assert_close(B.batched_nms(boxes, scores, np.zeros(4, np.int64), 0.5), np.array([1, 3]),
                 atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_nms_vs_per_category_oracle(seed):
    boxes, scores = _random_boxes(150, seed)
    idxs = np.random.default_rng(seed).integers(0, 4, 150)
    keep = B.batched_nms(boxes, scores, idxs, 0.4)
    expect = np.concatenate([np.flatnonzero(idxs == c)[_greedy_oracle(boxes[idxs == c],
                                                                      scores[idxs == c], 0.4)]
                             for c in range(4)])
    expect = expect[np.argsort(-scores[expect], kind="stable")]
    assert_close(keep, expect, atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_nms_vs_torchvision(seed):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    boxes, scores = _random_boxes(300, seed)
    idxs = np.random.default_rng(seed).integers(0, 5, 300)
    expect = tv.ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(idxs),
                                0.5)
    assert_close(B.batched_nms(boxes, scores, idxs, 0.5), expect, atol=0, rtol=0)


def test_batched_nms_errors():
    b, s = np.zeros((3, 4)), np.zeros(3)
    with pytest.raises(ValueError, match="batched_nms: idxs must have shape"):
        B.batched_nms(b, s, np.zeros(2, np.int64), 0.5)
    with pytest.raises(TypeError, match="batched_nms: idxs"):
        B.batched_nms(b, s, np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="batched_nms: boxes must have shape"):
        B.batched_nms(np.zeros((3, 2)), s, np.zeros(3, np.int64), 0.5)
    with pytest.raises(ValueError, match="batched_nms: scores must not contain NaN"):
        B.batched_nms(b, np.array([0.0, np.nan, 1.0]), np.zeros(3, np.int64), 0.5)


def test_all_names_exported():
    import cvkernels.reference as R
    for name in ("box_iou", "box_iou_forward", "nms", "nms_forward", "batched_nms",
                 "batched_nms_forward"):
        assert name in B.__all__ and hasattr(R, name) and getattr(B, name).__doc__
