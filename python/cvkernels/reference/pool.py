"""Reference 2-D pooling, forward and backward: max, average, adaptive average and adaptive max.

Every pool reads each output's window directly. Average pooling of either kind is separable, so
it is two passes of 1-D window sums (rows, then columns), each a small numba loop: memory is
linear in the input (no window matrices), so a plane of 16777217 x 1 pools as torch's does.
Max pooling is a loop, because the index bookkeeping of torch (first maximum in scan order, NaN
propagates) reads best as one; it also takes integer input, as torch's CPU kernel does.

Floats are computed in float64 and cast back to the input dtype; integers stay integers.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .._checks import check_elements, check_float, check_ndim, pair
from ..errors import ArgumentError, ShapeError

__all__ = [
    "max_pool2d", "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_forward", "adaptive_max_pool2d_backward",
]


# ----------------------------------------------------------------------------- validation

def _check_input(fn, input, nonzero=-3, integer=False):
    """3-D [C, H, W] or 4-D [N, C, H, W] input of a float dtype (or any integer one, with
    ``integer``). The dimensions ``shape[nonzero:]`` must be non-zero, as torch asks: the last
    three for max/avg pooling, H and W for adaptive_avg_pool2d, all but the first for
    adaptive_max_pool2d (``nonzero=1``)."""
    kind = np.dtype(input.dtype).kind
    if not (integer and kind in "iu"):
        check_float(fn, "input", input)
    check_ndim(fn, "input", input, (3, 4))
    if 0 in tuple(input.shape)[nonzero:]:
        which = {-3: "C, H and W", -2: "H and W"}.get(nonzero, "every dimension but the first")
        raise ShapeError(f"{fn}: input must have non-zero {which}, got shape "
                         f"{tuple(input.shape)}")


def _pair(fn, name, v):
    """``pair`` that also takes a 1-element sequence for both sizes, as torch does."""
    if isinstance(v, (tuple, list)) and len(v) == 1:
        v = v[0]
    return pair(fn, name, v)


def _pool_output_size(size, k, pad, stride, dilation, ceil_mode):
    """torch's pooling_output_shape: with ceil_mode the last window must start inside the
    input or the left padding, else it is dropped."""
    num = size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_params(fn, input, kernel_size, stride, padding, dilation, ceil_mode, integer=False):
    """Validate the window arguments shared by max_pool2d and avg_pool2d.

    Returns (kernel, stride, padding, dilation, (H_out, W_out)), each a pair of ints.
    """
    _check_input(fn, input, integer=integer)
    k = _pair(fn, "kernel_size", kernel_size)
    if k[0] <= 0 or k[1] <= 0:
        raise ArgumentError(f"{fn}: kernel_size must be positive, got {kernel_size!r}")
    if stride is None or (not isinstance(stride, (int, np.integer)) and len(stride) == 0):
        s = k
    else:
        s = _pair(fn, "stride", stride)
    if s[0] <= 0 or s[1] <= 0:
        raise ArgumentError(f"{fn}: stride must be positive, got {stride!r}")
    p = _pair(fn, "padding", padding)
    d = _pair(fn, "dilation", dilation)
    if d[0] <= 0 or d[1] <= 0:
        raise ArgumentError(f"{fn}: dilation must be positive, got {dilation!r}")
    if p[0] < 0 or p[1] < 0 or p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ArgumentError(f"{fn}: padding must be non-negative and at most half of "
                            f"kernel_size, got padding={p}, kernel_size={k}")
    h, w = input.shape[-2:]
    out_hw = tuple(_pool_output_size(size, *args, ceil_mode)
                   for size, args in zip((h, w), zip(k, p, s, d)))
    if out_hw[0] <= 0 or out_hw[1] <= 0:
        raise ArgumentError(f"{fn}: output size {out_hw} is too small for input "
                            f"{tuple(input.shape)} with kernel_size={k}, padding={p}, "
                            f"dilation={d} (check kernel_size and padding)")
    check_elements(fn, "the output", tuple(input.shape[:-2]) + out_hw,
                   "kernel_size, stride, padding and dilation")
    check_elements(fn, "the padded input", tuple(input.shape[:-2]) + (h + 2 * p[0], w + 2 * p[1]),
                   "padding")
    return k, s, p, d, out_hw


def _check_grad_out(fn, grad_out, input, out_hw):
    check_float(fn, "grad_out", grad_out)
    want = tuple(input.shape[:-2]) + tuple(out_hw)
    if tuple(grad_out.shape) != want:
        raise ShapeError(f"{fn}: grad_out must have the forward output's shape {want}, "
                         f"got {tuple(grad_out.shape)}")
    return np.asarray(grad_out, dtype=np.float64)


def _check_indices(fn, indices, input, out_hw):
    """The forward's int64 ``indices``: the output's shape, integers in [-1, H*W). Works on
    any array with numpy's methods (the kernels' callers pass CuPy arrays)."""
    idx = indices if hasattr(indices, "shape") and hasattr(indices, "dtype") else \
        np.asarray(indices)
    want = tuple(input.shape[:-2]) + tuple(out_hw)
    if tuple(idx.shape) != want or np.dtype(idx.dtype).kind not in "iu":
        raise ShapeError(f"{fn}: indices must be an integer array of shape {want}, "
                         f"got {idx.dtype} {tuple(idx.shape)}")
    hw = input.shape[-2] * input.shape[-1]
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if hi >= hw or lo < -1:
            raise ArgumentError(f"{fn}: indices must be in [-1, H*W = {hw}), got values in "
                                f"[{lo}, {hi}]")
    return idx


def _planes(x):
    """[..., H, W] -> [P, H, W] contiguous: float64 for floats, integers as they are."""
    dt = x.dtype if np.dtype(x.dtype).kind in "iu" else np.float64
    return np.ascontiguousarray(np.asarray(x, dtype=dt).reshape(-1, *x.shape[-2:]))


def _scatter_max_grad(fn, grad_out, input, idx):
    """grad_input of a max pool: each output's gradient added at its flat index (-1: none)."""
    g = _check_grad_out(fn, grad_out, input, idx.shape[-2:])
    h, w = input.shape[-2:]
    gx = np.zeros((math.prod(input.shape[:-2]), h * w))
    idx = idx.reshape(gx.shape[0], idx.shape[-2] * idx.shape[-1])
    plane = np.broadcast_to(np.arange(gx.shape[0])[:, None], idx.shape)
    valid = idx >= 0
    np.add.at(gx, (plane[valid], idx[valid]), g.reshape(idx.shape)[valid])
    out_dtype = np.float64 if np.dtype(input.dtype).kind in "iu" else input.dtype
    return (gx.reshape(input.shape).astype(out_dtype),)


# ----------------------------------------------------------------------------- max pools

@numba.njit(cache=True)
def _window_max(x, p, y0, y1, dy, x0, x1, dx, w, lowest):
    """(max, flat index) of x[p, y0:y1:dy, x0:x1:dx], as torch's kernels: the first maximum in
    row-major order wins, a NaN wins over everything (the last NaN seen is kept). An empty
    window gives (lowest, -1)."""
    best, best_i = lowest, -1
    for y in range(y0, y1, dy):
        for xx in range(x0, x1, dx):
            v = x[p, y, xx]
            if best_i < 0 or v > best or v != v:
                best, best_i = v, y * w + xx
    return best, best_i


@numba.njit(cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, lowest):
    """x [P, H, W] contiguous -> (max [P, Ho, Wo] in x's dtype, int64 flat index into H*W)."""
    p_count, h, w = x.shape
    out = np.empty((p_count, ho, wo), dtype=x.dtype)
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
                out[p, oy, ox], idx[p, oy, ox] = _window_max(x, p, y0, y1, dh, x0, x1, dw, w,
                                                             lowest)
    return out, idx


@numba.njit(cache=True)
def _adaptive_max_kernel(x, ho, wo, lowest):
    """x [P, H, W] contiguous -> (max [P, Ho, Wo], int64 flat index) over adaptive windows."""
    p_count, h, w = x.shape
    out = np.empty((p_count, ho, wo), dtype=x.dtype)
    idx = np.empty((p_count, ho, wo), dtype=np.int64)
    for p in range(p_count):
        for oy in range(ho):
            y0, y1 = (oy * h) // ho, ((oy + 1) * h + ho - 1) // ho
            for ox in range(wo):
                x0, x1 = (ox * w) // wo, ((ox + 1) * w + wo - 1) // wo
                out[p, oy, ox], idx[p, oy, ox] = _window_max(x, p, y0, y1, 1, x0, x1, 1, w,
                                                             lowest)
    return out, idx


def _lowest(x):
    """What an empty max window holds: -inf, or the integer type's minimum."""
    return x.dtype.type(np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf)


def _max_pool(fn, input, kernel_size, stride, padding, dilation, ceil_mode):
    k, s, p, d, out_hw = _pool_params(fn, input, kernel_size, stride, padding, dilation,
                                      ceil_mode, integer=True)
    x = _planes(input)
    out, idx = _max_pool_kernel(x, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], *out_hw,
                                _lowest(x))
    shape = tuple(input.shape[:-2]) + tuple(out_hw)
    return out.reshape(shape), idx.reshape(shape)


def max_pool2d_forward(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                       return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    input [N, C, H, W] or [C, H, W], float or (as torch's CPU kernel) integer. ``stride``
    defaults to ``kernel_size``; ``padding`` (implicit -inf) must be at most half of
    ``kernel_size``; 1-element sequences stand for both sizes. ``ceil_mode`` rounds the output
    size up but drops a last window that would start in the right padding, as torch.
    Returns the output in input's dtype, and with ``return_indices=True`` also the int64 flat
    index (into H*W of its plane) of each maximum: the first one in scan order, as torch (a
    NaN wins; a window that holds only padding, possible with dilation, gives -inf and -1).
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
        *_, out_hw = _pool_params(fn, input, kernel_size, stride, padding, dilation, ceil_mode,
                                  integer=True)
        idx = _check_indices(fn, indices, input, out_hw)
    return _scatter_max_grad(fn, grad_out, input, idx)


max_pool2d = max_pool2d_forward


def _adaptive_max(fn, input, output_size):
    out_hw = _adaptive_params(fn, input, output_size, nonzero=1)
    x = _planes(input)
    out, idx = _adaptive_max_kernel(x, *out_hw, _lowest(x))
    shape = tuple(input.shape[:-2]) + tuple(out_hw)
    return out.reshape(shape), idx.reshape(shape)


def adaptive_max_pool2d_forward(input, output_size, return_indices=False):
    """Adaptive 2-D max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    input [N, C, H, W] or [C, H, W] (only the first dimension may be 0, as torch);
    ``output_size`` an int or a pair whose entries may be None. Output row i covers input rows
    [floor(i*H/H_out), ceil((i+1)*H/H_out)), likewise for columns; the maximum is torch's (first
    in scan order, NaN wins). With ``return_indices=True`` also the int64 flat index into H*W.
    """
    out, idx = _adaptive_max("adaptive_max_pool2d", input, output_size)
    out = out.astype(input.dtype)
    return (out, idx) if return_indices else out


def adaptive_max_pool2d_backward(grad_out, input, output_size, return_indices=False, *,
                                 indices=None):
    """Gradient of :func:`adaptive_max_pool2d_forward`.

    Signature: ``adaptive_max_pool2d_backward(grad_out, input, output_size,
    return_indices=False, *, indices=None)``; the argmax is recomputed from ``input`` unless
    the forward's ``indices`` are given. Returns ``(grad_input,)``.
    """
    fn = "adaptive_max_pool2d_backward"
    if indices is None:
        _, idx = _adaptive_max(fn, input, output_size)
    else:
        out_hw = _adaptive_params(fn, input, output_size, nonzero=1)
        idx = _check_indices(fn, indices, input, out_hw)
    return _scatter_max_grad(fn, grad_out, input, idx)


adaptive_max_pool2d = adaptive_max_pool2d_forward


# ----------------------------------------------------------------------------- averages

@numba.njit(cache=True)
def _segment_sum(x, starts, ends):
    """x [R, n] -> [R, m]: out[r, j] = sum(x[r, starts[j]:ends[j]])."""
    out = np.zeros((x.shape[0], starts.shape[0]))
    for r in range(x.shape[0]):
        for j in range(starts.shape[0]):
            acc = 0.0
            for t in range(starts[j], ends[j]):
                acc += x[r, t]
            out[r, j] = acc
    return out


@numba.njit(cache=True)
def _segment_sum_t(g, starts, ends, n):
    """The transpose of :func:`_segment_sum`: g [R, m] -> [R, n]."""
    out = np.zeros((g.shape[0], n))
    for r in range(g.shape[0]):
        for j in range(starts.shape[0]):
            for t in range(starts[j], ends[j]):
                out[r, t] += g[r, j]
    return out


def _along(f, x, axis_arg, *args):
    """Apply a [R, n] -> [R, m] segment function along axis ``axis_arg`` (1 or 2) of [P, A, B]."""
    if axis_arg == 2:
        p, a, b = x.shape
        r = f(np.ascontiguousarray(x.reshape(p * a, b)), *args)
        return r.reshape(p, a, r.shape[1])
    xt = np.ascontiguousarray(x.transpose(0, 2, 1))
    return _along(f, xt, 2, *args).transpose(0, 2, 1)


def _window_sums(x, rows, cols):
    """x [P, H, W] -> [P, Ho, Wo]: sums over rows[0][i]:rows[1][i] x cols[0][j]:cols[1][j]."""
    return _along(_segment_sum, _along(_segment_sum, x, 2, *cols), 1, *rows)


def _window_sums_t(g, rows, cols, hw):
    """The transpose of :func:`_window_sums`: g [P, Ho, Wo] -> [P, H, W]."""
    t = _along(_segment_sum_t, g, 1, *rows, hw[0])
    return _along(_segment_sum_t, t, 2, *cols, hw[1])


@numba.njit(cache=True)
def _avg_axis(size, k, s, p, n_out, count_include_pad):
    """(start, end, count) of each output along one axis of avg_pool2d (torch's rule: a
    ceil_mode window is cut at the right padding; count with or without the padding)."""
    start = np.empty(n_out, np.int64)
    end = np.empty(n_out, np.int64)
    count = np.empty(n_out, np.int64)
    for i in range(n_out):
        b = i * s - p
        e = min(b + k, size + p)
        start[i], end[i] = max(b, 0), min(e, size)
        count[i] = e - b if count_include_pad else end[i] - start[i]
    return start, end, count


def _avg_params(fn, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
    """Validate avg_pool2d's arguments. Returns (kernel, stride, padding, (H_out, W_out))."""
    k, s, p, _, out_hw = _pool_params(fn, input, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or \
                not isinstance(divisor_override, (int, np.integer)):
            raise ArgumentError(f"{fn}: divisor_override must be an int or None, got "
                                f"{divisor_override!r}")
        if divisor_override == 0:
            raise ArgumentError(f"{fn}: divisor_override must be non-zero, got "
                                f"{divisor_override}")
    check_elements(fn, "the output", tuple(input.shape[:-2]) + tuple(out_hw),
                   "kernel_size, stride and padding")
    return k, s, p, out_hw


def _avg_windows(fn, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    """((row starts, ends), (column starts, ends), divisor [Ho, Wo]) of avg_pool2d."""
    k, s, p, (ho, wo) = _avg_params(fn, input, kernel_size, stride, padding, ceil_mode,
                                    count_include_pad, divisor_override)
    h, w = input.shape[-2:]
    *rows, ch = _avg_axis(h, k[0], s[0], p[0], ho, bool(count_include_pad))
    *cols, cw = _avg_axis(w, k[1], s[1], p[1], wo, bool(count_include_pad))
    if divisor_override is not None:
        div = np.full((ho, wo), float(divisor_override))
    else:
        div = np.outer(ch, cw).astype(np.float64)
    div[div == 0] = 1.0   # a window with no input in it averages to 0 (torch skips it)
    return rows, cols, div


def avg_pool2d_forward(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    input [N, C, H, W] or [C, H, W]. The divisor is ``divisor_override`` when given, else the
    window's size counting the zero padding (``count_include_pad=True``) or not; with
    ``ceil_mode`` a window running past the right padding counts only up to it, as torch.
    Returns the output in input's dtype.
    """
    rows, cols, div = _avg_windows("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                                   count_include_pad, divisor_override)
    out = _window_sums(_planes(input), rows, cols) / div
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
    rows, cols, div = _avg_windows(fn, input, kernel_size, stride, padding, ceil_mode,
                                   count_include_pad, divisor_override)
    g = _check_grad_out(fn, grad_out, input, div.shape).reshape(
        math.prod(input.shape[:-2]), *div.shape)
    gx = _window_sums_t(g / div, rows, cols, input.shape[-2:])
    return (gx.reshape(input.shape).astype(input.dtype),)


avg_pool2d = avg_pool2d_forward


def _adaptive_params(fn, input, output_size, nonzero=-2):
    """Validate an adaptive pool's arguments. Returns (H_out, W_out)."""
    _check_input(fn, input, nonzero=nonzero)
    if output_size is None or isinstance(output_size, (int, np.integer)):
        sizes = (output_size, output_size)
    else:
        try:
            sizes = tuple(output_size)
        except TypeError:
            sizes = ()
        if len(sizes) != 2:
            raise ArgumentError(f"{fn}: output_size must be an int or a pair (entries may be "
                                f"None), got {output_size!r}")
    h, w = input.shape[-2:]
    sizes = tuple(size if o is None else o for o, size in zip(sizes, (h, w)))
    if any(isinstance(o, bool) or not isinstance(o, (int, np.integer)) or o < 0 for o in sizes):
        raise ArgumentError(f"{fn}: output_size must be non-negative ints, got "
                            f"{output_size!r}")
    check_elements(fn, "the output", tuple(input.shape[:-2]) + sizes, "output_size")
    return int(sizes[0]), int(sizes[1])


def _adaptive_axis(size, n_out):
    """(start, end) of each output along one axis: [floor(i*size/n), ceil((i+1)*size/n))."""
    i = np.arange(n_out, dtype=np.int64)
    return (i * size) // n_out, ((i + 1) * size + n_out - 1) // n_out


def _adaptive_windows(fn, input, output_size):
    ho, wo = _adaptive_params(fn, input, output_size)
    h, w = input.shape[-2:]
    rows, cols = _adaptive_axis(h, ho), _adaptive_axis(w, wo)
    div = np.outer(rows[1] - rows[0], cols[1] - cols[0]).astype(np.float64)
    return rows, cols, div


def adaptive_avg_pool2d_forward(input, output_size):
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    input [N, C, H, W] or [C, H, W] (N, C may be 0: empty out); ``output_size`` is an int or a
    pair whose entries may be None (keep that input size). Output row i averages input rows
    [floor(i*H/H_out), ceil((i+1)*H/H_out)), and likewise for columns.
    """
    rows, cols, div = _adaptive_windows("adaptive_avg_pool2d", input, output_size)
    out = _window_sums(_planes(input), rows, cols) / div
    return out.reshape(tuple(input.shape[:-2]) + div.shape).astype(input.dtype)


def adaptive_avg_pool2d_backward(grad_out, input, output_size):
    """Gradient of :func:`adaptive_avg_pool2d_forward`.

    Signature: ``adaptive_avg_pool2d_backward(grad_out, input, output_size)``; only ``input``'s
    shape and dtype are used. Returns ``(grad_input,)``.
    """
    fn = "adaptive_avg_pool2d_backward"
    rows, cols, div = _adaptive_windows(fn, input, output_size)
    g = _check_grad_out(fn, grad_out, input, div.shape).reshape(
        math.prod(input.shape[:-2]), *div.shape)
    gx = _window_sums_t(g / div, rows, cols, input.shape[-2:])
    return (gx.reshape(input.shape).astype(input.dtype),)


adaptive_avg_pool2d = adaptive_avg_pool2d_forward
