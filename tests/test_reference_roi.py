"""roi_align and roi_pool references: exact results on linear feature maps (bilinear sampling of
a linear map is exact), hand-built boundary cases, finite differences, torchvision when
importable, empty inputs and argument errors."""
import numpy as np
import pytest

from cvkernels.reference import roi as R
from helpers import assert_close, check_grads

F64 = dict(atol=1e-12, rtol=1e-12)


def _linear_map(n, c, h, w, seed):
    """f[b, ch](y, x) = a*y + b*x + c with per-(image, channel) coefficients."""
    coef = np.random.default_rng(seed).standard_normal((n, c, 3))
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    return coef[..., 0, None, None] * y + coef[..., 1, None, None] * x + coef[..., 2, None, None], \
        coef


def _inside_rois(k, n, h, w, scale, aligned, seed):
    """Random rois whose scaled extent stays inside [0, H-1] x [0, W-1] (no clamping)."""
    rng = np.random.default_rng(seed)
    off = 0.5 if aligned else 0.0
    rois = np.zeros((k, 5))
    rois[:, 0] = rng.integers(0, n, k)
    for j, size in ((1, w), (2, h)):
        lo = rng.uniform(0, (size - 1) * 0.5, k)
        ext = rng.uniform(1.0, (size - 1) * 0.5, k)       # >= 1 so the min-size rule is inert
        rois[:, j] = (lo + off) / scale
        rois[:, j + 2] = (lo + ext + off) / scale
    return rois


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("output_size", [1, (2, 3), 7])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_roi_align_linear_map_is_exact(aligned, sampling_ratio, output_size, scale):
    n, c, h, w = 2, 3, 11, 13
    x, coef = _linear_map(n, c, h, w, 0)
    rois = _inside_rois(6, n, h, w, scale, aligned, 1)
    out = R.roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    # the mean of the bin's sample centres is the bin centre: expected = f(bin centre)
    off = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scale - off, rois[:, 2] * scale - off
    bw = (rois[:, 3] - rois[:, 1]) * scale / pw
    bh = (rois[:, 4] - rois[:, 2]) * scale / ph
    yc = y1[:, None] + (np.arange(ph) + 0.5) * bh[:, None]          # (K, ph)
    xc = x1[:, None] + (np.arange(pw) + 0.5) * bw[:, None]          # (K, pw)
    cf = coef[rois[:, 0].astype(int)]                               # (K, C, 3)
    expect = (cf[..., 0, None, None] * yc[:, None, :, None] + cf[..., 1, None, None]
              * xc[:, None, None, :] + cf[..., 2, None, None])
    assert_close(out, expect, **F64)


def _single(x, box, **kw):
    kw.setdefault("sampling_ratio", 1)
    return R.roi_align(x, np.array([[0.0] + list(box)]), 1, **kw)[0, 0, 0, 0]


def test_roi_align_boundary_rules():
    h, w = 4, 4
    x = (10 * np.arange(h)[:, None] + np.arange(w)[None, :]).astype(np.float64)[None, None]
    # one sample at the roi centre (y = 1.5 throughout); f(y, x) = 10 y + x
    assert _single(x, [0.0, 1, 1.0, 2]) == 15.5                       # interior
    assert _single(x, [-1.0, 1, 0.0, 2]) == 15.0                      # x = -0.5 clamps to 0
    assert _single(x, [-1.5, 1, -0.5, 2]) == 15.0                     # x = -1 is still inside
    assert _single(x, [-2.0, 1, -1.0, 2]) == 0.0                      # x = -1.5 < -1: zero
    assert _single(x, [3.0, 1, 4.0, 2]) == 18.0                       # x = 3.5 clamps to W-1
    assert _single(x, [3.5, 1, 4.5, 2]) == 18.0                       # x = W is still inside
    assert _single(x, [4.0, 1, 5.0, 2]) == 0.0                        # x = 4.5 > W: zero
    assert _single(x, [1.0, -2, 2.0, -1]) == 0.0                      # y = -1.5 < -1: zero
    assert _single(x, [1.0, 3.5, 2.0, 4.5]) == 31.5                   # y = 4 clamps to H-1


def test_roi_align_adaptive_grid_and_out_of_map_samples():
    x = np.ones((1, 1, 3, 4))
    box = [0.0, 0.0, 6.0, 1.0]            # 6 wide, 1 high, W = 4
    # sr=-1: grid 1 x ceil(6/1)=6, x samples 0.5..5.5; 4.5 and 5.5 are > W: (4*1 + 2*0)/6
    assert_close(_single(x, box, sampling_ratio=-1), np.float64(4 / 6), atol=0, rtol=1e-15)
    # sr=2: x samples 1.5, 4.5 -> half of them count
    assert _single(x, box, sampling_ratio=2) == 0.5
    assert _single(x, box, sampling_ratio=1) == 1.0       # one sample at x = 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_align_adaptive_grid_in_input_precision(dtype):
    # x from 2 to 7 at scale 0.6: width 3.0 in float64 (grid 3: samples 1.7, 2.7, 3.7) but
    # 3.0000002 in float32 (grid 4: 1.575, 2.325, 3.075, 3.825); with W = 3 the samples past 3
    # read 0. torchvision's float and double kernels differ the same way.
    x = np.ones((1, 1, 2, 3), dtype)
    out = R.roi_align(x, np.array([[0, 2, 0, 7, 0]], dtype), 1, 0.6, -1)[0, 0, 0, 0]
    assert_close(out, dtype(0.5 if dtype == np.float32 else 2 / 3), atol=0, rtol=1e-7)


def test_roi_align_aligned_and_min_size():
    x, _ = _linear_map(1, 1, 8, 8, 3)
    f = lambda yy, xx: x[0, 0, 0, 0] + (x[0, 0, 1, 0] - x[0, 0, 0, 0]) * yy \
        + (x[0, 0, 0, 1] - x[0, 0, 0, 0]) * xx                        # noqa: E731
    assert_close(_single(x, [1, 1, 3, 3]), f(2.0, 2.0), **F64)
    assert_close(_single(x, [1, 1, 3, 3], aligned=True), f(1.5, 1.5), **F64)
    # not aligned: a 0.2-pixel roi is treated as 1 pixel, sample at start + 0.5
    assert_close(_single(x, [2, 2, 2.2, 2.2], sampling_ratio=-1), f(2.5, 2.5), **F64)
    # aligned keeps the true size: sample at 1.5 + 0.1
    assert_close(_single(x, [2, 2, 2.2, 2.2], sampling_ratio=-1, aligned=True), f(1.6, 1.6),
                 **F64)
    # aligned zero-size roi with an adaptive grid: ceil(0) = 0 samples, output 0
    assert _single(x, [2, 2, 2, 2], sampling_ratio=-1, aligned=True) == 0.0
    assert_close(_single(x, [2, 2, 2, 2], sampling_ratio=2, aligned=True), f(1.5, 1.5), **F64)


def test_roi_align_list_boxes_equal_array_boxes():
    x, _ = _linear_map(3, 2, 9, 10, 4)
    rng = np.random.default_rng(5)
    per_image = [rng.uniform(0, 8, (k, 4)) for k in (2, 0, 3)]
    for b in per_image:
        b[:, 2:] += b[:, :2]
    arr = np.concatenate([np.concatenate([np.full((len(b), 1), i), b], 1)
                          for i, b in enumerate(per_image)])
    assert_close(R.roi_align(x, per_image, 3, 0.7, 2), R.roi_align(x, arr, 3, 0.7, 2),
                 atol=0, rtol=0)
    g = rng.standard_normal((5, 2, 3, 3))
    assert_close(R.roi_align_backward(g, per_image, x.shape, 3, 0.7, 2)[0],
                 R.roi_align_backward(g, arr, x.shape, 3, 0.7, 2)[0], atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_backward_finite_differences(seed, aligned, sampling_ratio):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 5, 6))
    # fractional corners: samples stay off the integer grid lines; one roi crosses the border
    rois = np.array([[0, 0.3, 0.7, 3.9, 4.1], [1, 1.1, 0.2, 4.3, 2.9], [1, -1.3, 2.6, 2.2, 6.3]])
    kw = dict(output_size=(2, 3), spatial_scale=0.9, sampling_ratio=sampling_ratio,
              aligned=aligned)
    f = lambda a: R.roi_align(a, rois, **kw)                          # noqa: E731
    check_grads(f, lambda g: R.roi_align_backward(g, rois, x.shape, **kw), [x], seed=seed)


def test_roi_align_backward_returns_none_for_boxes_and_keeps_dtype():
    g = np.ones((1, 2, 2, 2), np.float32)
    gi, gb = R.roi_align_backward(g, np.array([[0, 0, 0, 3, 3.0]], np.float32), (1, 2, 4, 4), 2)
    assert gb is None and gi.dtype == np.float32 and gi.shape == (1, 2, 4, 4)
    # all of a bin's weight lands somewhere: total gradient = number of bins per channel
    assert_close(gi.sum(axis=(2, 3)), np.full((1, 2), 4.0, np.float32), atol=0, rtol=1e-6)


def test_roi_align_non_contiguous_and_float32():
    rng = np.random.default_rng(6)
    big = rng.standard_normal((2, 6, 10, 14))
    view = big[:, ::2, :, 1::2]
    assert not view.flags.c_contiguous
    rois = _inside_rois(4, 2, 10, 7, 1.0, False, 7)
    ref = R.roi_align(np.ascontiguousarray(view), rois, 3, 1.0, 2)
    assert_close(R.roi_align(view, rois, 3, 1.0, 2), ref, atol=0, rtol=0)
    out32 = R.roi_align(view.astype(np.float32), rois.astype(np.float32), 3, 1.0, 2)
    # float32 input rounded once, float64 arithmetic, rounded once more
    assert_close(out32, ref.astype(np.float32), atol=1e-6, rtol=1e-6)


def test_roi_align_empty():
    x = np.ones((2, 3, 5, 5))
    assert R.roi_align(x, np.zeros((0, 5)), 2).shape == (0, 3, 2, 2)
    assert R.roi_align(x, [np.zeros((0, 4)), np.zeros((0, 4))], (2, 3)).shape == (0, 3, 2, 3)
    assert R.roi_align(np.ones((0, 3, 5, 5)), np.zeros((0, 5)), 2).shape == (0, 3, 2, 2)
    assert R.roi_align(np.ones((1, 0, 5, 5)), np.array([[0, 0, 0, 2, 2.0]]), 2).shape == \
        (1, 0, 2, 2)
    gi, _ = R.roi_align_backward(np.zeros((0, 3, 2, 2)), np.zeros((0, 5)), x.shape, 2)
    assert_close(gi, np.zeros_like(x), atol=0, rtol=0)


def test_roi_align_errors():
    x = np.ones((2, 3, 5, 5))
    msg = r"roi_align: boxes must have shape \[K, 5\], got \(3, 4\)"
    with pytest.raises(ValueError, match=msg):
        R.roi_align(x, np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match="roi_align: boxes batch indices"):
        R.roi_align(x, np.array([[2, 0, 0, 1, 1.0]]), 2)
    with pytest.raises(ValueError, match="roi_align: boxes batch indices"):
        R.roi_align(x, np.array([[-1, 0, 0, 1, 1.0]]), 2)
    with pytest.raises(ValueError, match="roi_align: boxes batch indices"):
        R.roi_align(x, np.array([[0.5, 0, 0, 1, 1.0]]), 2)
    with pytest.raises(ValueError, match="roi_align: boxes batch indices"):
        R.roi_align(x, [np.zeros((1, 4))] * 3, 2)
    with pytest.raises(ValueError, match=r"roi_align: boxes\[1\] must have shape"):
        R.roi_align(x, [np.zeros((1, 4)), np.zeros((1, 5))], 2)
    with pytest.raises(TypeError, match="roi_align: boxes"):
        R.roi_align(x, np.zeros((1, 5), np.int64), 2)
    with pytest.raises(TypeError, match="roi_align: input"):
        R.roi_align(x.astype(np.int32), np.zeros((1, 5)), 2)
    with pytest.raises(ValueError, match="roi_align: input must be 4-D"):
        R.roi_align(x[0], np.zeros((1, 5)), 2)
    with pytest.raises(ValueError, match="roi_align: output_size"):
        R.roi_align(x, np.zeros((1, 5)), (0, 2))
    with pytest.raises(ValueError, match="roi_align: output_size"):
        R.roi_align(x, np.zeros((1, 5)), (1, 2, 3))
    with pytest.raises(ValueError, match="roi_align_backward: grad_out"):
        R.roi_align_backward(np.zeros((1, 3, 2, 3)), np.zeros((1, 5)), x.shape, 2)
    with pytest.raises(ValueError, match="roi_align_backward: input_shape"):
        R.roi_align_backward(np.zeros((1, 3, 2, 2)), np.zeros((1, 5)), (3, 5, 5), 2)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_align_vs_torchvision(aligned, sampling_ratio, dtype):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 13, 17)).astype(dtype)
    rois = np.concatenate([rng.integers(0, 2, (20, 1)), rng.uniform(-4, 20, (20, 4))], 1)
    rois[:, 3:] = np.maximum(rois[:, 3:], rois[:, 1:3] - 1)     # a few malformed rois remain
    rois = rois.astype(dtype)
    kw = dict(output_size=(3, 4), spatial_scale=0.75, sampling_ratio=sampling_ratio,
              aligned=aligned)
    xt = torch.tensor(x, requires_grad=True)
    ref = tv.ops.roi_align(xt, torch.tensor(rois), **kw)
    g = rng.standard_normal(ref.shape).astype(dtype)
    ref.backward(torch.tensor(g))
    tol = F64 if dtype == np.float64 else dict(atol=1e-5, rtol=1e-5)  # torchvision: fp32 math
    assert_close(R.roi_align(x, rois, **kw), ref, **tol, name="forward")
    assert_close(R.roi_align_backward(g, rois, x.shape, **kw)[0], xt.grad, **tol, name="grad")


# ------------------------------------------------------------------------------------- roi_pool
def test_roi_pool_hand_built():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    out, am = R.roi_pool(x, np.array([[0, 0, 0, 3, 3.0]]), 2, return_argmax=True)
    assert_close(out[0, 0], np.array([[5.0, 7.0], [13.0, 15.0]]), atol=0, rtol=0)
    assert_close(am[0, 0], np.array([[5, 7], [13, 15]]), atol=0, rtol=0)
    assert am.dtype == np.int64
    assert R.roi_pool(x, np.array([[0, 1, 1, 2, 2.0]]), 1)[0, 0, 0, 0] == 10.0
    # corners are scaled then rounded half AWAY from zero: 0.5 -> 1 and 2.5 -> 3 (rows 1..3)
    assert R.roi_pool(x, np.array([[0, 1, 1, 5, 5.0]]), 1, 0.5)[0, 0, 0, 0] == 15.0
    assert R.roi_pool(x, np.array([[0, 1, 1, 1, 1.0]]), 1, 0.5)[0, 0, 0, 0] == 5.0
    # -0.5 -> -1 (clipped to 0) and 0.5 -> 1: rows/cols 0..1
    assert R.roi_pool(x, np.array([[0, -1, -1, 1, 1.0]]), 1, 0.5)[0, 0, 0, 0] == 5.0
    # output larger than the roi: every bin covers the single pixel (2, 2)
    assert_close(R.roi_pool(x, np.array([[0, 2, 2, 2, 2.0]]), 2)[0, 0], np.full((2, 2), 10.0),
                 atol=0, rtol=0)
    # roi outside the image: empty bins give 0 and argmax -1
    out, am = R.roi_pool(x, np.array([[0, 10, 10, 12, 12.0]]), 2, return_argmax=True)
    assert (out == 0).all() and (am == -1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_bin_edges_in_input_precision(dtype):
    # roi rows 0..28 (29 px) in 7 bins: the last bin ends at ceil(7 * (29/7)), which is 30 in
    # float64 but 29 in float32 -- torchvision's float and double kernels differ; so do we.
    x = np.zeros((1, 1, 40, 1), dtype)
    x[0, 0, 29, 0] = 5.0                     # just below the roi: only float64 reaches it
    x[0, 0, 28, 0] = 1.0
    out = R.roi_pool(x, np.array([[0, 0, 0, 0, 28]], dtype), (7, 1))
    assert out[0, 0, 6, 0] == (5.0 if dtype == np.float64 else 1.0)


def test_roi_pool_negative_values_and_flt_max_quirk():
    x = -np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    assert R.roi_pool(x, np.array([[0, 1, 1, 3, 3.0]]), 1)[0, 0, 0, 0] == -6.0
    # torchvision starts the max at -FLT_MAX even for float64: lower values are never picked
    y = np.full((1, 1, 2, 2), -1e39)
    out, am = R.roi_pool(y, np.array([[0, 0, 0, 1, 1.0]]), 1, return_argmax=True)
    assert out[0, 0, 0, 0] == -np.finfo(np.float32).max and am[0, 0, 0, 0] == -1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roi_pool_backward_finite_differences(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 6, 7))
    rois = np.array([[0, 0.2, 1.4, 4.6, 5.1], [1, 2.0, 0.0, 6.0, 3.0], [1, 0, 0, 1, 1.0],
                     [0, 3.0, 3.0, 9.0, 9.0]])
    out, am = R.roi_pool(x, rois, (2, 3), 1.0, return_argmax=True)
    f = lambda a: R.roi_pool(a, rois, (2, 3), 1.0)                    # noqa: E731
    check_grads(f, lambda g: R.roi_pool_backward(g, am, rois, x.shape, (2, 3), 1.0), [x],
                seed=seed)


def test_roi_pool_list_boxes_dtype_noncontiguous_empty():
    rng = np.random.default_rng(9)
    big = rng.standard_normal((2, 3, 8, 16)).astype(np.float32)
    view = big[..., ::2]
    per_image = [np.array([[0, 0, 5, 5.0]], np.float32), np.array([[1, 2, 7, 6.0]], np.float32)]
    arr = np.array([[0, 0, 0, 5, 5], [1, 1, 2, 7, 6]], np.float32)
    out = R.roi_pool(view, per_image, 2)
    assert out.dtype == np.float32
    assert_close(out, R.roi_pool(np.ascontiguousarray(view), arr, 2), atol=0, rtol=0)
    out, am = R.roi_pool(view, np.zeros((0, 5), np.float32), 2, return_argmax=True)
    assert out.shape == (0, 3, 2, 2) and am.shape == (0, 3, 2, 2)
    gi, gb = R.roi_pool_backward(np.zeros((0, 3, 2, 2)), am, np.zeros((0, 5)), view.shape, 2)
    assert gb is None and gi.shape == view.shape and not gi.any()


def test_roi_pool_errors():
    x = np.ones((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"roi_pool: boxes must have shape \[K, 5\]"):
        R.roi_pool(x, np.zeros((2, 4)), 2)
    with pytest.raises(ValueError, match="roi_pool: boxes batch indices"):
        R.roi_pool(x, np.array([[1, 0, 0, 1, 1.0]]), 2)
    with pytest.raises(TypeError, match="roi_pool: input"):
        R.roi_pool(x.astype(np.int64), np.zeros((1, 5)), 2)
    am = np.zeros((1, 2, 2, 2), np.int64)
    with pytest.raises(ValueError, match="roi_pool_backward: argmax"):
        R.roi_pool_backward(np.zeros((1, 2, 2, 2)), am + 16, np.zeros((1, 5)), x.shape, 2)
    with pytest.raises(TypeError, match="roi_pool_backward: argmax"):
        R.roi_pool_backward(np.zeros((1, 2, 2, 2)), am * 1.0, np.zeros((1, 5)), x.shape, 2)
    with pytest.raises(ValueError, match="roi_pool_backward: grad_out"):
        R.roi_pool_backward(np.zeros((1, 2, 3, 2)), am, np.zeros((1, 5)), x.shape, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_vs_torchvision(dtype):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 13, 17)).astype(dtype)
    rois = np.concatenate([rng.integers(0, 2, (20, 1)), rng.uniform(-4, 30, (20, 4))], 1)
    rois = rois.astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    ref = tv.ops.roi_pool(xt, torch.tensor(rois), (3, 4), 0.6)
    g = rng.standard_normal(ref.shape).astype(dtype)
    ref.backward(torch.tensor(g))
    out, am = R.roi_pool(x, rois, (3, 4), 0.6, return_argmax=True)
    assert_close(out, ref, atol=0, rtol=0, name="forward")
    assert_close(R.roi_pool_backward(g, am, rois, x.shape, (3, 4), 0.6)[0], xt.grad,
                 atol=1e-12 if dtype == np.float64 else 1e-5, rtol=1e-12 if dtype == np.float64
                 else 1e-6, name="grad")


def test_all_names_exported():
    import cvkernels.reference as REF
    for op in ("roi_align", "roi_pool"):
        for suffix in ("", "_forward", "_backward"):
            assert f"{op}{suffix}" in R.__all__ and hasattr(REF, f"{op}{suffix}")
            assert getattr(R, f"{op}{suffix}").__doc__
