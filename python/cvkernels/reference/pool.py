"""Reference 2-D pooling, forward and backward: max, average and adaptive average.

Average pooling of either kind is separable: every output row averages a range of input rows
and every output column a range of input columns. So it is written as two small 0/1 "window
matrices", ``out = (Mh @ x @ Mw.T) / divisor`` per plane, whose transposes give the backward.
Max pooling is a loop (numba), because the index bookkeeping of torch (first maximum in scan
order, NaN propagates) reads best as one.

Everything is computed in float64 and cast back to the input dtype.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .._checks import check_float, check_ndim, pair

__all__ = [
    "max_pool2d", "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
]


# ----------------------------------------------------------------------------- validation

def _check_input(fn, input):
    """Float, 3-D [C, H, W] or 4-D [N, C, H, W] with non-zero C, H, W (batch 0 is allowed)."""
    check_float(fn, "input", input)
    check_ndim(fn, "input", input, (3, 4))
    if 0 in input.shape[-3:]:
        raise ValueError(f"{fn}: input must have non-zero C, H and W (only the batch may be "
                         f"empty), got shape {tuple(input.shape)}")


def _pool_output_size(size, k, pad, stride, dilation, ceil_mode):
    """torch's pooling_output_shape: with ceil_mode the last window must start inside the
    input or the left padding, else it is dropped."""
    num = size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_params(fn, input, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate the window arguments shared by max_pool2d and avg_pool2d.

    Returns (kernel, stride, padding, dilation, (H_out, W_out)), each a pair of ints.
    """
    _check_input(fn, input)
    k = pair(fn, "kernel_size", kernel_size)
    if k[0] <= 0 or k[1] <= 0:
        raise ValueError(f"{fn}: kernel_size must be positive, got {kernel_size!r}")
    if stride is None or (not isinstance(stride, (int, np.integer)) and len(stride) == 0):
        s = k
    else:
        s = pair(fn, "stride", stride)
    if s[0] <= 0 or s[1] <= 0:
        raise ValueError(f"{fn}: stride must be positive, got {stride!r}")
    p = pair(fn, "padding", padding)
    d = pair(fn, "dilation", dilation)
    if d[0] <= 0 or d[1] <= 0:
        raise ValueError(f"{fn}: dilation must be positive, got {dilation!r}")
    if p[0] < 0 or p[1] < 0 or p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{fn}: padding must be non-negative and at most half of kernel_size, "
                         f"got padding={p}, kernel_size={k}")
    h, w = input.shape[-2:]
    out_hw = tuple(_pool_output_size(size, *args, ceil_mode)
                   for size, args in zip((h, w), zip(k, p, s, d)))
    if out_hw[0] <= 0 or out_hw[1] <= 0:
        raise ValueError(f"{fn}: output size {out_hw} is too small for input "
                         f"{tuple(input.shape)} with kernel_size={k}, padding={p}, "
                         f"dilation={d} (check kernel_size and padding)")
    return k, s, p, d, out_hw


def _check_grad_out(fn, grad_out, input, out_hw):
    check_float(fn, "grad_out", grad_out)
    want = tuple(input.shape[:-2]) + tuple(out_hw)
    if tuple(grad_out.shape) != want:
        raise ValueError(f"{fn}: grad_out must have the forward output's shape {want}, "
                         f"got {tuple(grad_out.shape)}")
    return np.asarray(grad_out, dtype=np.float64)


def _planes(x):
    """[..., H, W] -> float64 [P, H, W] (any layout in; a copy only where needed)."""
    return np.asarray(x, dtype=np.float64).reshape(-1, *x.shape[-2:])


# ----------------------------------------------------------------------------- max_pool2d

@numba.njit(cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """x float64 [P, H, W] contiguous -> (max [P, Ho, Wo], flat argmax index into H*W int64).

    Mirrors torch's CPU kernel: the first maximum in row-major window order wins; a NaN wins
    over everything (the last NaN seen is kept). Index -1 marks a window with no input in it.
    """
    p_count, h, w = x.shape
    out = np.empty((p_count, ho, wo))
    idx = np.empty((p_count, ho, wo), dtype=np.int64)
    for p in range(p_count):
        for oy in range(ho):
            y0 = oy * sh - ph
            y1 = min(y0 + (kh - 1) * dh + 1, h)
            while y0 < 0:
                y0 += dh
            for ox in range(wo):
                x0 = ox * sw - pw
                x1 = min(x0 + (kw - 1) * dw + 1, w)
                while x0 < 0:
                    x0 += dw
                best = -np.inf
                best_i = -1
                for y in range(y0, y1, dh):
                    for xx in range(x0, x1, dw):
                        v = x[p, y, xx]
                        if v > best or np.isnan(v) or best_i < 0:
                            best = v
                            best_i = y * w + xx
                out[p, oy, ox] = best
                idx[p, oy, ox] = best_i
    return out, idx


def _max_pool(fn, input, kernel_size, stride, padding, dilation, ceil_mode):
    k, s, p, d, out_hw = _pool_params(fn, input, kernel_size, stride, padding, dilation,
                                      ceil_mode)
    x = np.ascontiguousarray(_planes(input))
    out, idx = _max_pool_kernel(x, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], *out_hw)
    shape = tuple(input.shape[:-2]) + tuple(out_hw)
    return out.reshape(shape), idx.reshape(shape)


def max_pool2d_forward(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    input [N, C, H, W] or [C, H, W]. ``stride`` defaults to ``kernel_size``; ``padding`` (implicit
    -inf) must be at most half of ``kernel_size``. ``ceil_mode`` rounds the output size up but
    drops a last window that would start in the right padding, as torch.
    Returns the output in input's dtype, and with ``return_indices=True`` also the int64 flat
    index (into H*W of its plane) of each maximum: the first one in scan order, as torch.
    """
    out, idx = _max_pool("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    out = out.astype(input.dtype)
    return (out, idx) if return_indices else out


def max_pool2d_backward(grad_out, input, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, return_indices=False, *, indices=None):
    """Gradient of :func:`max_pool2d_forward`.

    Signature: ``max_pool2d_backward(grad_out, input, kernel_size, stride=None, padding=0,
    dilation=1, ceil_mode=False, return_indices=False, *, indices=None)`` -- the forward's
    arguments after ``grad_out`` (``return_indices`` is ignored). Each output's gradient goes
    to its argmax, recomputed from ``input``; pass the forward's ``indices`` to use those
    instead (what a kernel that saved them does).

    Returns ``(grad_input,)``, shaped and typed like ``input``.
    """
    fn = "max_pool2d_backward"
    if indices is None:
        _, idx = _max_pool(fn, input, kernel_size, stride, padding, dilation, ceil_mode)
    else:
        *_, out_hw = _pool_params(fn, input, kernel_size, stride, padding, dilation, ceil_mode)
        idx = np.asarray(indices)
        want = tuple(input.shape[:-2]) + tuple(out_hw)
        if idx.shape != want or idx.dtype.kind not in "iu":
            raise ValueError(f"{fn}: indices must be an integer array of shape {want}, "
                             f"got {idx.dtype} {tuple(idx.shape)}")
    g = _check_grad_out(fn, grad_out, input, idx.shape[-2:])
    h, w = input.shape[-2:]
    gx = np.zeros((math.prod(input.shape[:-2]), h * w))
    idx = idx.reshape(gx.shape[0], idx.shape[-2] * idx.shape[-1])
    plane = np.broadcast_to(np.arange(gx.shape[0])[:, None], idx.shape)
    valid = idx >= 0
    if np.any(idx[valid] >= h * w):
        raise ValueError(f"{fn}: indices must be < H*W = {h * w}")
    np.add.at(gx, (plane[valid], idx[valid]), g.reshape(idx.shape)[valid])
    return (gx.reshape(input.shape).astype(input.dtype),)


max_pool2d = max_pool2d_forward


# ----------------------------------------------------------------------------- averages

def _window_matrix(starts, ends, size):
    """0/1 matrix [len(starts), size]: row i selects input positions [starts[i], ends[i])."""
    pos = np.arange(size)
    return ((pos >= np.asarray(starts)[:, None]) & (pos < np.asarray(ends)[:, None])).astype(
        np.float64)


def _avg_axis(size, k, s, p, n_out, ceil_mode, count_include_pad):
    """Window matrix and per-output count along one axis of avg_pool2d (torch's rule)."""
    start = np.arange(n_out) * s - p
    end = np.minimum(start + k, size + p)      # a ceil_mode window is cut at the right padding
    padded_count = end - start
    start_c, end_c = np.maximum(start, 0), np.minimum(end, size)
    count = padded_count if count_include_pad else end_c - start_c
    return _window_matrix(start_c, end_c, size), count


def _avg_params(fn, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
    """Returns (Mh, Mw, divisor[Ho, Wo]) of avg_pool2d."""
    k, s, p, _, (ho, wo) = _pool_params(fn, input, kernel_size, stride, padding, 1, ceil_mode)
    h, w = input.shape[-2:]
    mh, ch = _avg_axis(h, k[0], s[0], p[0], ho, ceil_mode, count_include_pad)
    mw, cw = _avg_axis(w, k[1], s[1], p[1], wo, ceil_mode, count_include_pad)
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError(f"{fn}: divisor_override must be non-zero, got {divisor_override}")
        div = np.full((ho, wo), float(divisor_override))
    else:
        div = np.outer(ch, cw).astype(np.float64)
    # a window with no input in it averages to 0 (torch skips it); never 0/0
    div[div == 0] = 1.0
    return mh, mw, div


def avg_pool2d_forward(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    input [N, C, H, W] or [C, H, W]. The divisor is ``divisor_override`` when given, else the
    window's size counting the zero padding (``count_include_pad=True``) or not; with
    ``ceil_mode`` a window running past the right padding counts only up to it, as torch.
    Returns the output in input's dtype.
    """
    mh, mw, div = _avg_params("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override)
    out = mh @ _planes(input) @ mw.T / div
    return out.reshape(tuple(input.shape[:-2]) + div.shape).astype(input.dtype)


def avg_pool2d_backward(grad_out, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d_forward`.

    Signature: ``avg_pool2d_backward(grad_out, input, kernel_size, stride=None, padding=0,
    ceil_mode=False, count_include_pad=True, divisor_override=None)`` -- the forward's
    arguments after ``grad_out``; only ``input``'s shape and dtype are used.

    Returns ``(grad_input,)``.
    """
    fn = "avg_pool2d_backward"
    mh, mw, div = _avg_params(fn, input, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override)
    g = _check_grad_out(fn, grad_out, input, div.shape).reshape(-1, *div.shape)
    gx = mh.T @ (g / div) @ mw
    return (gx.reshape(input.shape).astype(input.dtype),)


avg_pool2d = avg_pool2d_forward


def _adaptive_params(fn, input, output_size):
    """Returns (Mh, Mw, divisor[Ho, Wo]) of adaptive_avg_pool2d."""
    _check_input(fn, input)
    if output_size is None or isinstance(output_size, (int, np.integer)):
        sizes = (output_size, output_size)
    else:
        try:
            sizes = tuple(output_size)
        except TypeError:
            sizes = ()
        if len(sizes) != 2:
            raise ValueError(f"{fn}: output_size must be an int or a pair (entries may be "
                             f"None), got {output_size!r}")
    h, w = input.shape[-2:]
    sizes = tuple(size if o is None else o for o, size in zip(sizes, (h, w)))
    if any(not isinstance(o, (int, np.integer)) or o < 0 for o in sizes):
        raise ValueError(f"{fn}: output_size must be non-negative ints, got {output_size!r}")
    mats, counts = [], []
    for size, o in zip((h, w), sizes):
        i = np.arange(o)
        start = (i * size) // o                         # floor(i*size/o)
        end = ((i + 1) * size + o - 1) // o             # ceil((i+1)*size/o)
        mats.append(_window_matrix(start, end, size))
        counts.append(end - start)
    return mats[0], mats[1], np.outer(*counts).astype(np.float64)


def adaptive_avg_pool2d_forward(input, output_size):
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    input [N, C, H, W] or [C, H, W]; ``output_size`` is an int or a pair whose entries may be
    None (keep that input size). Output row i averages input rows
    [floor(i*H/H_out), ceil((i+1)*H/H_out)), and likewise for columns.
    """
    mh, mw, div = _adaptive_params("adaptive_avg_pool2d", input, output_size)
    out = mh @ _planes(input) @ mw.T / div
    return out.reshape(tuple(input.shape[:-2]) + div.shape).astype(input.dtype)


def adaptive_avg_pool2d_backward(grad_out, input, output_size):
    """Gradient of :func:`adaptive_avg_pool2d_forward`.

    Signature: ``adaptive_avg_pool2d_backward(grad_out, input, output_size)``; only ``input``'s
    shape and dtype are used. Returns ``(grad_input,)``.
    """
    fn = "adaptive_avg_pool2d_backward"
    mh, mw, div = _adaptive_params(fn, input, output_size)
    g = _check_grad_out(fn, grad_out, input, div.shape).reshape(-1, *div.shape)
    gx = mh.T @ (g / div) @ mw
    return (gx.reshape(input.shape).astype(input.dtype),)


adaptive_avg_pool2d = adaptive_avg_pool2d_forward
