"""RoI Align and RoI Pool: NumPy/numba references of torchvision's CPU algorithms.

Boxes are either an array [K, 5] of (batch_index, x1, y1, x2, y2) or a list of [L_i, 4] arrays
(the batch index is the list position), as ``torchvision.ops``. The numba loops run in float64;
results are cast to the input dtype.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .._checks import check_float, check_ndim, pair
from ..errors import ArgumentError, ArgumentTypeError, ShapeError

# Bounds on what sets a loop count or an allocation (torchvision has none; without them a
# careless argument, e.g. sampling_ratio=10**12 or a box of 1e12 pixels, runs for ever):
MAX_OUTPUT_SIDE = 1 << 16     # output_size, per side
MAX_GRID_SIDE = 1 << 16       # sampling grid per bin, per side (sampling_ratio or adaptive)
MAX_SAMPLES = 1 << 34         # rois x channels x bins x samples: minutes of numba work

__all__ = [
    "roi_align_forward", "roi_align_backward", "roi_align",
    "roi_pool_forward", "roi_pool_backward", "roi_pool",
]


# ---------------------------------------------------------------------------------- validation
def _rois(fn: str, boxes, batch_size: int) -> np.ndarray:
    """Validate ``boxes`` and return float64 rois [K, 5] with integral, in-range batch indices."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, b in enumerate(boxes):
            b = np.asarray(b)
            check_float(fn, f"boxes[{i}]", b)
            if b.ndim != 2 or b.shape[1] != 4:
                raise ShapeError(f"{fn}: boxes[{i}] must have shape [L, 4], got {tuple(b.shape)}")
            parts.append(np.concatenate([np.full((b.shape[0], 1), i, np.float64),
                                         b.astype(np.float64)], axis=1))
        rois = np.concatenate(parts) if parts else np.zeros((0, 5), np.float64)
    else:
        b = np.asarray(boxes)
        check_float(fn, "boxes", b)
        if b.ndim != 2 or b.shape[1] != 5:
            raise ShapeError(f"{fn}: boxes must have shape [K, 5], got {tuple(b.shape)}")
        rois = b.astype(np.float64)
    bi = rois[:, 0]
    bad = ~((bi >= 0) & (bi < batch_size) & (bi == np.floor(bi)))
    if bad.any():
        raise ArgumentError(f"{fn}: boxes batch indices must be integers in [0, {batch_size}), "
                         f"got {bi[bad][0]!r}")
    return np.ascontiguousarray(rois)


def _output_size(fn: str, output_size) -> tuple[int, int]:
    ph, pw = pair(fn, "output_size", output_size)
    if ph <= 0 or pw <= 0:
        raise ArgumentError(f"{fn}: output_size must be positive, got {output_size!r}")
    if max(ph, pw) > MAX_OUTPUT_SIDE:
        raise ArgumentError(f"{fn}: output_size must be at most {MAX_OUTPUT_SIDE} per side, "
                            f"got {output_size!r}")
    return ph, pw


def _check_sampling(fn, rois, channels, ph, pw, spatial_scale, sampling_ratio, aligned):
    """Bound the sampling grid (sampling_ratio, or the adaptive grid the boxes give) and the
    total number of bilinear samples; returns sampling_ratio as an int."""
    if isinstance(sampling_ratio, (bool, np.bool_)) or not isinstance(
            sampling_ratio, (int, np.integer)):
        raise ArgumentTypeError(f"{fn}: sampling_ratio must be an int, got {sampling_ratio!r}")
    sr = int(sampling_ratio)
    if sr > MAX_GRID_SIDE:
        raise ArgumentError(f"{fn}: sampling_ratio must be at most {MAX_GRID_SIDE}, got {sr}")
    scale = float(spatial_scale)
    if not np.isfinite(scale):
        raise ArgumentError(f"{fn}: spatial_scale must be finite, got {spatial_scale!r}")
    if sr > 0 or rois.shape[0] == 0:
        grids = np.full(rois.shape[0], float(sr) * sr)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            h = (rois[:, 4] - rois[:, 2]) * scale
            w = (rois[:, 3] - rois[:, 1]) * scale
            if not aligned:
                h, w = np.maximum(h, 1.0), np.maximum(w, 1.0)
            gh, gw = np.ceil(h / ph), np.ceil(w / pw)
        g = np.maximum(gh, gw)
        side = float(np.max(np.where(np.isnan(g), 0.0, g), initial=0.0))
        if side > MAX_GRID_SIDE:          # inf included; NaN boxes sample nothing
            raise ArgumentError(f"{fn}: the boxes give an adaptive sampling grid of "
                                f"{side:.4g} per bin side (limit {MAX_GRID_SIDE}); pass a "
                                f"positive sampling_ratio, or boxes in feature-map scale")
        grids = np.nan_to_num(np.maximum(gh, 0) * np.maximum(gw, 0), nan=0.0)
    total = float(grids.sum()) * channels * ph * pw
    if total > MAX_SAMPLES:
        raise ArgumentError(f"{fn}: this call would take {total:.3g} bilinear samples "
                            f"(limit {MAX_SAMPLES:.3g}); lower sampling_ratio or output_size")
    return sr


def _input(fn: str, input) -> np.ndarray:
    x = np.asarray(input)
    check_float(fn, "input", x)
    check_ndim(fn, "input", x, 4)
    return x


def _input_shape(fn: str, input_shape) -> tuple[int, int, int, int]:
    try:
        shp = tuple(int(s) for s in input_shape)
    except TypeError:
        shp = ()
    if len(shp) != 4 or min(shp) < 0:
        raise ArgumentError(f"{fn}: input_shape must be (N, C, H, W), got {input_shape!r}")
    return shp


def _grad_out(fn: str, grad_out, want) -> np.ndarray:
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    if g.shape != tuple(want):
        raise ShapeError(f"{fn}: grad_out must have shape {tuple(want)}, got {g.shape}")
    return g


# ------------------------------------------------------------------------------------ roi_align
@numba.njit(cache=True)
def _adaptive_grid(lo, hi, spatial_scale, offset, n_bins, aligned, single):
    """ceil(roi_size / n_bins), in float32 for float32 input as torchvision's float kernel
    (e.g. 8 * 0.75 - 0 * 0.75 may be 6 or 6.0000005 and the grid 6 or 7)."""
    if single:
        s32 = np.float32(spatial_scale)
        o32 = np.float32(offset)
        size32 = (np.float32(hi) * s32 - o32) - (np.float32(lo) * s32 - o32)
        if not aligned:
            size32 = max(size32, np.float32(1.0))
        return int(math.ceil(size32 / np.float32(n_bins)))
    size = (hi * spatial_scale - offset) - (lo * spatial_scale - offset)
    if not aligned:
        size = max(size, 1.0)
    return int(math.ceil(size / n_bins))


@numba.njit(cache=True)
def _roi_geometry(roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned, single):
    offset = 0.5 if aligned else 0.0
    start_w = roi[1] * spatial_scale - offset
    start_h = roi[2] * spatial_scale - offset
    roi_w = roi[3] * spatial_scale - offset - start_w
    roi_h = roi[4] * spatial_scale - offset - start_h
    if not aligned:                       # malformed rois are forced to 1x1
        roi_w = max(roi_w, 1.0)
        roi_h = max(roi_h, 1.0)
    bin_h = roi_h / ph_n
    bin_w = roi_w / pw_n
    if sampling_ratio > 0:
        grid_h = grid_w = sampling_ratio
    else:
        grid_h = _adaptive_grid(roi[2], roi[4], spatial_scale, offset, ph_n, aligned, single)
        grid_w = _adaptive_grid(roi[1], roi[3], spatial_scale, offset, pw_n, aligned, single)
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w


@numba.njit(cache=True)
def _bilinear_weights(y, x, height, width):
    """torchvision's bilinear rule: (y_low, x_low, y_high, x_high, w1, w2, w3, w4); y_low < 0 =
    the sample lies outside [-1, H] x [-1, W] and contributes nothing."""
    if not (y >= -1.0 and y <= height and x >= -1.0 and x <= width):
        return -1, -1, -1, -1, 0.0, 0.0, 0.0, 0.0
    if y <= 0:
        y = 0.0
    if x <= 0:
        x = 0.0
    y_low = int(y)
    x_low = int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly = y - y_low
    lx = x - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    return y_low, x_low, y_high, x_high, hy * hx, hy * lx, ly * hx, ly * lx


@numba.njit(cache=True)
def _roi_align_kernel(inp, rois, spatial_scale, ph_n, pw_n, sampling_ratio, aligned,
                      grad_out, grad_in, backward, single):
    """Forward (backward=False): returns out [K, C, ph, pw]. Backward: scatters grad_out into
    grad_in [N, C, H, W] (same sample points and weights) and returns an empty array."""
    n_rois = rois.shape[0]
    channels, height, width = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    out = np.zeros((0 if backward else n_rois, channels, ph_n, pw_n))
    for n in range(n_rois):
        b = int(rois[n, 0])
        start_h, start_w, bin_h, bin_w, grid_h, grid_w = _roi_geometry(
            rois[n], spatial_scale, ph_n, pw_n, sampling_ratio, aligned, single)
        count = max(grid_h * grid_w, 1)
        for ph in range(ph_n):
            for pw in range(pw_n):
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        yl, xl, yh, xh, w1, w2, w3, w4 = _bilinear_weights(y, x, height, width)
                        if yl < 0:
                            continue
                        for c in range(channels):
                            if backward:
                                g = grad_out[n, c, ph, pw] / count
                                grad_in[b, c, yl, xl] += g * w1
                                grad_in[b, c, yl, xh] += g * w2
                                grad_in[b, c, yh, xl] += g * w3
                                grad_in[b, c, yh, xh] += g * w4
                            else:
                                out[n, c, ph, pw] += (w1 * inp[b, c, yl, xl]
                                                      + w2 * inp[b, c, yl, xh]
                                                      + w3 * inp[b, c, yh, xl]
                                                      + w4 * inp[b, c, yh, xh])
        if not backward:
            out[n] /= count
    return out


def roi_align_forward(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1,
                      aligned=False):
    """RoI Align, exactly torchvision's CPU algorithm.

    input [N, C, H, W]; boxes [K, 5] (batch_index, x1, y1, x2, y2) or a list of [L_i, 4];
    output_size int or (ph, pw). Returns [K, C, ph, pw] in input's dtype.
    Per roi: coordinates are scaled by ``spatial_scale`` (minus 0.5 when ``aligned``); when not
    aligned the roi is at least 1x1. Each bin averages grid_h x grid_w bilinear samples at the
    centres of a regular sub-grid (grid = sampling_ratio, or ceil(roi_size / output_size) per
    roi when sampling_ratio <= 0). A sample with y < -1, y > H, x < -1 or x > W contributes 0;
    otherwise coordinates below 0 clamp to 0 and those at or beyond H-1 / W-1 clamp to the edge.
    Sample positions and weights are computed in float64; the adaptive grid size (a discrete
    choice) in the input's precision, as torchvision's float kernel does.
    """
    fn = "roi_align"
    x = _input(fn, input)
    ph, pw = _output_size(fn, output_size)
    rois = _rois(fn, boxes, x.shape[0])
    if rois.shape[0] == 0 or x.shape[1] == 0:
        return np.zeros((rois.shape[0], x.shape[1], ph, pw), x.dtype)
    sr = _check_sampling(fn, rois, x.shape[1], ph, pw, spatial_scale, sampling_ratio, aligned)
    inp = np.ascontiguousarray(x, dtype=np.float64)
    out = _roi_align_kernel(inp, rois, float(spatial_scale), ph, pw, sr,
                            bool(aligned), np.zeros((0, 0, 0, 0)), np.zeros((0,) + x.shape[1:]),
                            False, x.dtype != np.float64)
    return out.astype(x.dtype)


def roi_align_backward(grad_out, boxes, input_shape, output_size, spatial_scale=1.0,
                       sampling_ratio=-1, aligned=False):
    """``roi_align_backward(grad_out, boxes, input_shape, output_size, spatial_scale=1.0,
    sampling_ratio=-1, aligned=False) -> (grad_input, None)``.

    grad_out [K, C, ph, pw]; input_shape (N, C, H, W). Scatters each bin's gradient / count to the
    four bilinear neighbours of every sample point used by the forward. grad_input has
    input_shape and grad_out's dtype; boxes get no gradient (None).
    """
    fn = "roi_align_backward"
    shp = _input_shape(fn, input_shape)
    ph, pw = _output_size(fn, output_size)
    rois = _rois(fn, boxes, shp[0])
    g = _grad_out(fn, grad_out, (rois.shape[0], shp[1], ph, pw))
    grad_in = np.zeros(shp, np.float64)
    sampling_ratio = _check_sampling(fn, rois, shp[1], ph, pw, spatial_scale, sampling_ratio,
                                     aligned)
    if g.size and grad_in.size:
        _roi_align_kernel(np.zeros((0, 0, 0, 0)), rois, float(spatial_scale), ph, pw,
                          int(sampling_ratio), bool(aligned),
                          np.ascontiguousarray(g, dtype=np.float64), grad_in, True,
                          g.dtype != np.float64)
    return grad_in.astype(g.dtype), None


roi_align = roi_align_forward


# ------------------------------------------------------------------------------------- roi_pool
@numba.njit(cache=True)
def _round_half_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


@numba.njit(cache=True)
def _scaled_round(v, spatial_scale, single):
    if single:                             # float32 product, as torchvision's float kernel
        p32 = np.float32(v) * np.float32(spatial_scale)
        return int(_round_half_away(float(p32)))
    return int(_round_half_away(v * spatial_scale))


@numba.njit(cache=True)
def _pool_bounds(p, roi_len, n_bins, single):
    """[floor(p * len / n), ceil((p + 1) * len / n)) in the input's precision: float32 and
    float64 disagree for some sizes (e.g. len 29, n 7: the last bin ends at 29 vs 30)."""
    if single:
        b32 = np.float32(roi_len) / np.float32(n_bins)
        return int(math.floor(np.float32(p) * b32)), int(math.ceil(np.float32(p + 1) * b32))
    b64 = roi_len / n_bins
    return int(math.floor(p * b64)), int(math.ceil((p + 1) * b64))


@numba.njit(cache=True)
def _roi_pool_kernel(inp, rois, spatial_scale, ph_n, pw_n, neg_init, single):
    n_rois = rois.shape[0]
    channels, height, width = inp.shape[1], inp.shape[2], inp.shape[3]
    out = np.zeros((n_rois, channels, ph_n, pw_n))
    argmax = np.full((n_rois, channels, ph_n, pw_n), -1, dtype=np.int64)
    for n in range(n_rois):
        b = int(rois[n, 0])
        start_w = _scaled_round(rois[n, 1], spatial_scale, single)
        start_h = _scaled_round(rois[n, 2], spatial_scale, single)
        end_w = _scaled_round(rois[n, 3], spatial_scale, single)
        end_h = _scaled_round(rois[n, 4], spatial_scale, single)
        roi_w = max(end_w - start_w + 1, 1)           # malformed rois are forced to 1x1
        roi_h = max(end_h - start_h + 1, 1)
        for ph in range(ph_n):
            h0, h1 = _pool_bounds(ph, roi_h, ph_n, single)
            hstart = min(max(h0 + start_h, 0), height)
            hend = min(max(h1 + start_h, 0), height)
            for pw in range(pw_n):
                w0, w1 = _pool_bounds(pw, roi_w, pw_n, single)
                wstart = min(max(w0 + start_w, 0), width)
                wend = min(max(w1 + start_w, 0), width)
                empty = hend <= hstart or wend <= wstart
                for c in range(channels):
                    best = 0.0 if empty else neg_init
                    idx = -1
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            v = inp[b, c, h, w]
                            if v > best:
                                best = v
                                idx = h * width + w
                    out[n, c, ph, pw] = best
                    argmax[n, c, ph, pw] = idx
    return out, argmax


def roi_pool_forward(input, boxes, output_size, spatial_scale=1.0, *, return_argmax=False):
    """RoI max pooling, exactly torchvision's CPU algorithm.

    input [N, C, H, W]; boxes [K, 5] or a list of [L_i, 4]; output_size int or (ph, pw).
    Roi corners are scaled and rounded half away from zero; the roi is at least 1x1 pixel
    (end inclusive). This integer geometry is computed in float32 for float16/float32 input
    and float64 for float64 input, as torchvision does (the two can differ by one pixel).
    Bin (ph, pw) covers rows floor(ph*h/PH) .. ceil((ph+1)*h/PH) (exclusive), offset by the
    roi start and clipped to the image; an empty bin gives 0. The max starts at -FLT_MAX
    (torchvision's constant), so values below it (and NaN) are never picked.
    Returns [K, C, ph, pw] in input's dtype, or ``(out, argmax)`` with ``return_argmax=True``,
    argmax int64 = h * W + w within the roi's image (-1 where nothing was pooled).
    """
    fn = "roi_pool"
    x = _input(fn, input)
    ph, pw = _output_size(fn, output_size)
    rois = _rois(fn, boxes, x.shape[0])
    shape = (rois.shape[0], x.shape[1], ph, pw)
    if rois.shape[0] == 0 or x.shape[1] == 0:
        out, argmax = np.zeros(shape, x.dtype), np.full(shape, -1, np.int64)
    else:
        out, argmax = _roi_pool_kernel(np.ascontiguousarray(x, dtype=np.float64), rois,
                                       float(spatial_scale), ph, pw,
                                       -float(np.finfo(np.float32).max),
                                       x.dtype != np.float64)
        out = out.astype(x.dtype)
    return (out, argmax) if return_argmax else out


def roi_pool_backward(grad_out, argmax, boxes, input_shape, output_size, spatial_scale=1.0):
    """``roi_pool_backward(grad_out, argmax, boxes, input_shape, output_size, spatial_scale=1.0)
    -> (grad_input, None)``.

    ``argmax`` comes from ``roi_pool_forward(..., return_argmax=True)``. Each bin's gradient goes
    to the pixel its max came from (nothing where argmax == -1). grad_input has input_shape
    (N, C, H, W) and grad_out's dtype; boxes get no gradient (None).
    """
    fn = "roi_pool_backward"
    shp = _input_shape(fn, input_shape)
    ph, pw = _output_size(fn, output_size)
    rois = _rois(fn, boxes, shp[0])
    want = (rois.shape[0], shp[1], ph, pw)
    g = _grad_out(fn, grad_out, want)
    am = np.asarray(argmax)
    if am.dtype.kind not in "iu":
        raise ArgumentTypeError(f"roi_pool_backward: argmax must have an integer dtype, "
                                f"got {am.dtype}")
    if am.shape != want:
        raise ShapeError(f"roi_pool_backward: argmax must have shape {want}, got {am.shape}")
    if ((am < -1) | (am >= shp[2] * shp[3])).any():
        raise ArgumentError(f"roi_pool_backward: argmax values must be in "
                            f"[-1, {shp[2] * shp[3]})")
    grad_in = np.zeros((shp[0], shp[1], shp[2] * shp[3]), np.float64)
    if g.size:
        sel = am >= 0
        kk, cc, _, _ = np.nonzero(sel)
        np.add.at(grad_in, (rois[kk, 0].astype(np.int64), cc, am[sel]),
                  g.astype(np.float64)[sel])
    return grad_in.reshape(shp).astype(g.dtype), None


roi_pool = roi_pool_forward
