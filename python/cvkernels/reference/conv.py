"""Reference 2-D convolution and transposed convolution, forward and backward.

Everything is computed in float64 and cast back to the input dtype, so a float64 call is the
oracle and a float32/float16 call is that oracle correctly rounded.

The one picture behind all four functions: pad the input, cut it into (dilated, strided)
windows, and contract every window with the filter of its group.

    out[n, g*Cog + o, y, x] = sum_{c, i, j} xpad[n, g*Cig + c, y*sH + i*dH, x*sW + j*dW]
                                              * weight[g*Cog + o, c, i, j]

The gradient w.r.t. the input scatters each window's gradient back to where it was cut from,
which is also exactly what ``conv_transpose2d`` computes in its forward.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_elements, check_float, check_ndim, check_same_dtype, pair
from ..errors import ArgumentError, ShapeError

__all__ = [
    "conv2d", "conv2d_forward", "conv2d_backward",
    "conv_transpose2d", "conv_transpose2d_forward", "conv_transpose2d_backward",
]


# ----------------------------------------------------------------------------- validation

def _positive_pair(fn, name, v):
    p = pair(fn, name, v)
    if p[0] <= 0 or p[1] <= 0:
        raise ArgumentError(f"{fn}: {name} must be positive, got {v!r}")
    return p


def _nonneg_pair(fn, name, v):
    p = pair(fn, name, v)
    if p[0] < 0 or p[1] < 0:
        raise ArgumentError(f"{fn}: {name} must be non-negative, got {v!r}")
    return p


def _check_groups(fn, groups):
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups <= 0:
        raise ArgumentError(f"{fn}: groups must be a positive int, got {groups!r}")
    return int(groups)


def _check_arrays(fn, input, weight, bias):
    """Dtype and rank checks common to both convolutions; returns (x4, unbatched)."""
    check_float(fn, "input", input)
    check_float(fn, "weight", weight)
    if bias is not None:
        check_float(fn, "bias", bias)
    check_same_dtype(fn, input=input, weight=weight, bias=bias)
    check_ndim(fn, "input", input, (3, 4))
    check_ndim(fn, "weight", weight, 4)
    if min(weight.shape[2:]) <= 0:          # torch: "non-positive kernel size"
        raise ShapeError(f"{fn}: weight must have a positive kernel size, got weight "
                         f"{tuple(weight.shape)}")
    if bias is not None:
        check_ndim(fn, "bias", bias, 1)
    unbatched = input.ndim == 3
    return (input[None] if unbatched else input), unbatched


def _conv2d_params(input, weight, bias, stride, padding, dilation, groups, fn="conv2d"):
    """Validate conv2d's arguments. Returns (x4, unbatched, stride, pads, dilation, groups, out_hw)

    ``pads`` is (top, bottom, left, right): 'same' may pad one more on the bottom/right, as torch.
    """
    x, unbatched = _check_arrays(fn, input, weight, bias)
    groups = _check_groups(fn, groups)
    stride = _positive_pair(fn, "stride", stride)
    dilation = _positive_pair(fn, "dilation", dilation)
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    if c_in % groups or c_out % groups or c_in_g != c_in // groups or c_out == 0:
        raise ShapeError(
            f"{fn}: weight must have shape [C_out, C_in/groups, kH, kW] with C_out > 0 and "
            f"C_in={c_in}, C_out divisible by groups={groups}, got weight {tuple(weight.shape)} "
            f"for input {tuple(input.shape)}")
    if bias is not None and bias.shape != (c_out,):
        raise ShapeError(f"{fn}: bias must have shape [C_out] = ({c_out},), "
                         f"got {tuple(bias.shape)}")
    eff_h, eff_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ArgumentError(f"{fn}: padding='same' is not supported for strided "
                                 f"convolutions, got stride={stride}")
            th, tw = eff_h - 1, eff_w - 1
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ArgumentError(f"{fn}: padding must be an int, a pair, 'same' or 'valid', "
                             f"got {padding!r}")
    else:
        ph, pw = _nonneg_pair(fn, "padding", padding)
        pads = (ph, ph, pw, pw)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    check_elements(fn, "the padded input", (x.shape[0], x.shape[1], hp, wp), "padding")
    if hp < eff_h or wp < eff_w:
        raise ShapeError(f"{fn}: input padded size ({hp} x {wp}) is smaller than the dilated "
                         f"kernel ({eff_h} x {eff_w}); input {tuple(input.shape)}, "
                         f"weight {tuple(weight.shape)}, padding={padding!r}")
    out_hw = ((hp - eff_h) // stride[0] + 1, (wp - eff_w) // stride[1] + 1)
    check_elements(fn, "the output", (x.shape[0], weight.shape[0]) + out_hw,
                   "stride, padding and dilation")
    return x, unbatched, stride, pads, dilation, groups, out_hw


def _conv_transpose2d_params(input, weight, bias, stride, padding, output_padding, groups,
                             dilation, fn="conv_transpose2d"):
    """Validate conv_transpose2d's arguments.

    Returns (x4, unbatched, stride, padding, output_padding, dilation, groups, out_hw).
    """
    x, unbatched = _check_arrays(fn, input, weight, bias)
    groups = _check_groups(fn, groups)
    stride = _positive_pair(fn, "stride", stride)
    dilation = _positive_pair(fn, "dilation", dilation)
    if isinstance(padding, str):
        raise ArgumentError(f"{fn}: padding must be an int or a pair of ints, got {padding!r}")
    padding = _nonneg_pair(fn, "padding", padding)
    output_padding = _nonneg_pair(fn, "output_padding", output_padding)
    for a in range(2):
        if output_padding[a] >= max(stride[a], dilation[a]):
            raise ArgumentError(f"{fn}: output_padding must be smaller than either stride or "
                             f"dilation, got output_padding={output_padding}, stride={stride}, "
                             f"dilation={dilation}")
    n, c_in, h, w = x.shape
    w_in, c_out_g, kh, kw = weight.shape
    if w_in != c_in or c_in % groups or c_out_g == 0:
        raise ShapeError(
            f"{fn}: weight must have shape [C_in, C_out/groups, kH, kW] with C_in={c_in} "
            f"divisible by groups={groups}, got weight {tuple(weight.shape)} "
            f"for input {tuple(input.shape)}")
    c_out = c_out_g * groups
    if bias is not None and bias.shape != (c_out,):
        raise ShapeError(f"{fn}: bias must have shape [C_out] = ({c_out},), "
                         f"got {tuple(bias.shape)}")
    out_hw = tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1
                   for size, s, p, d, k, op in zip((h, w), stride, padding, dilation,
                                                   (kh, kw), output_padding))
    if out_hw[0] <= 0 or out_hw[1] <= 0:
        raise ShapeError(f"{fn}: output size {out_hw} is not positive; input "
                         f"{tuple(input.shape)}, weight {tuple(weight.shape)}, "
                         f"padding={padding}")
    check_elements(fn, "the output", (x.shape[0], weight.shape[1] * groups) + out_hw,
                   "stride, padding, output_padding and dilation")
    return x, unbatched, stride, padding, output_padding, dilation, groups, out_hw


# ----------------------------------------------------------------------------- the math

def _windows(xp, k, stride, dilation, out_hw):
    """View of the (dilated, strided) windows of a padded [N, C, Hp, Wp] array.

    Returns [N, C, Ho, Wo, kH, kW]; no copy.
    """
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = k, stride, dilation, out_hw
    eff = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=(2, 3))
    return win[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw, ::dh, ::dw]


def _conv_fwd(xp, w, stride, dilation, groups, out_hw):
    """Grouped correlation of padded float64 xp [N, C_in, Hp, Wp] with w [C_out, C_in/g, kH, kW]."""
    n, c_in = xp.shape[:2]
    c_out, c_in_g, kh, kw = w.shape
    win = _windows(xp, (kh, kw), stride, dilation, out_hw)
    win = win.reshape(n, groups, c_in_g, *win.shape[2:])           # n g c y x i j
    wg = w.reshape(groups, c_out // groups, c_in_g, kh, kw)         # g o c i j
    out = np.einsum("ngcyxij,gocij->ngoyx", win, wg, optimize=True)
    return out.reshape(n, c_out, *out_hw)


def _conv_grad_weight(xp, g, w_shape, stride, dilation, groups):
    """d(sum(out*g))/dw for out = _conv_fwd(xp, w); g is [N, C_out, Ho, Wo]."""
    n = xp.shape[0]
    c_out, c_in_g, kh, kw = w_shape
    win = _windows(xp, (kh, kw), stride, dilation, g.shape[2:])
    win = win.reshape(n, groups, c_in_g, *win.shape[2:])
    gg = g.reshape(n, groups, c_out // groups, *g.shape[2:])
    gw = np.einsum("ngcyxij,ngoyx->gocij", win, gg, optimize=True)
    return gw.reshape(w_shape)


def _conv_grad_input(g, w, padded_hw, stride, dilation, groups):
    """d(sum(out*g))/dxp for out = _conv_fwd(xp, w): scatter every window's gradient back.

    g is [N, C_out, Ho, Wo]; returns the gradient of the *padded* input [N, C_in, Hp, Wp].
    """
    n, c_out, ho, wo = g.shape
    _, c_in_g, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    gg = g.reshape(n, groups, c_out // groups, ho, wo)
    wg = w.reshape(groups, c_out // groups, c_in_g, kh, kw)
    gxp = np.zeros((n, groups, c_in_g) + tuple(padded_hw))
    for i in range(kh):
        for j in range(kw):
            # filter tap (i, j) of output (y, x) read xp[y*sH + i*dH, x*sW + j*dW]
            gxp[:, :, :, i * dh: i * dh + (ho - 1) * sh + 1: sh,
                j * dw: j * dw + (wo - 1) * sw + 1: sw] += \
                np.einsum("ngoyx,goc->ngcyx", gg, wg[:, :, :, i, j], optimize=True)
    return gxp.reshape(n, groups * c_in_g, *padded_hw)


def _pad(x, pads):
    t, b, l, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))


def _crop(xp, pads, hw):
    t, _, l, _ = pads
    return xp[:, :, t: t + hw[0], l: l + hw[1]]


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _out(a, dtype, unbatched):
    a = np.ascontiguousarray(a, dtype=dtype)
    return a[0] if unbatched else a


def _check_grad_out(fn, grad_out, shape4, unbatched):
    """grad_out must be a float array shaped like the forward's output; returns float64 4-D."""
    check_float(fn, "grad_out", grad_out)
    want = shape4[1:] if unbatched else shape4
    if tuple(grad_out.shape) != tuple(want):
        raise ShapeError(f"{fn}: grad_out must have the forward output's shape {tuple(want)}, "
                         f"got {tuple(grad_out.shape)}")
    g = _f64(grad_out)
    return g[None] if unbatched else g


# ----------------------------------------------------------------------------- conv2d

def conv2d_forward(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input [N, C_in, H, W] or unbatched [C_in, H, W]; weight [C_out, C_in/groups, kH, kW];
    bias [C_out] or None. ``padding`` is an int, a pair, ``'valid'`` (no padding) or ``'same'``
    (stride 1 only; an odd total padding puts the extra row/column at the bottom/right, as
    torch does). Returns [N, C_out, H_out, W_out] (or [C_out, H_out, W_out]) in input's dtype,
    H_out = (H + pad_top + pad_bottom - dilation*(kH-1) - 1) // stride + 1.
    """
    x, unbatched, stride, pads, dilation, groups, out_hw = _conv2d_params(
        input, weight, bias, stride, padding, dilation, groups)
    out = _conv_fwd(_pad(_f64(x), pads), _f64(weight), stride, dilation, groups, out_hw)
    if bias is not None:
        out += _f64(bias)[:, None, None]
    return _out(out, input.dtype, unbatched)


def conv2d_backward(grad_out, input, weight, bias=None, stride=1, padding=0, dilation=1,
                    groups=1):
    """Gradients of :func:`conv2d_forward`.

    Signature: ``conv2d_backward(grad_out, input, weight, bias=None, stride=1, padding=0,
    dilation=1, groups=1)`` -- the forward's arguments after ``grad_out``; ``bias`` is only
    looked at to know whether it exists (its values are not needed).

    Returns ``(grad_input, grad_weight, grad_bias)``, shaped and typed like ``input``,
    ``weight`` and ``bias``; ``grad_bias`` is None when ``bias`` is None.
    """
    fn = "conv2d_backward"
    x, unbatched, stride, pads, dilation, groups, out_hw = _conv2d_params(
        input, weight, bias, stride, padding, dilation, groups, fn=fn)
    g = _check_grad_out(fn, grad_out, (x.shape[0], weight.shape[0]) + out_hw,
                        unbatched)
    xp = _pad(_f64(x), pads)
    w = _f64(weight)
    gx = _crop(_conv_grad_input(g, w, xp.shape[2:], stride, dilation, groups), pads, x.shape[2:])
    gw = _conv_grad_weight(xp, g, w.shape, stride, dilation, groups)
    gb = None if bias is None else g.sum(axis=(0, 2, 3))
    return (_out(gx, input.dtype, unbatched), _out(gw, weight.dtype, False),
            None if gb is None else _out(gb, bias.dtype, False))


conv2d = conv2d_forward


# ----------------------------------------------------------------------------- conv_transpose2d

def conv_transpose2d_forward(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                             groups=1, dilation=1):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d`` (note the
    argument order: ``groups`` before ``dilation``).

    input [N, C_in, H, W] or [C_in, H, W]; weight [C_in, C_out/groups, kH, kW]; bias [C_out].
    It is the gradient of conv2d w.r.t. its input: every input pixel scatters ``weight`` into
    the output. H_out = (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1, and
    ``output_padding`` must be smaller than stride or dilation (torch's rule).
    """
    x, unbatched, stride, padding, _, dilation, groups, out_hw = _conv_transpose2d_params(
        input, weight, bias, stride, padding, output_padding, groups, dilation)
    pads = (padding[0], padding[0], padding[1], padding[1])
    padded = (out_hw[0] + 2 * padding[0], out_hw[1] + 2 * padding[1])
    out = _crop(_conv_grad_input(_f64(x), _f64(weight), padded, stride, dilation, groups),
                pads, out_hw)
    if bias is not None:
        out = out + _f64(bias)[:, None, None]
    return _out(out, input.dtype, unbatched)


def conv_transpose2d_backward(grad_out, input, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1):
    """Gradients of :func:`conv_transpose2d_forward`.

    Signature: ``conv_transpose2d_backward(grad_out, input, weight, bias=None, stride=1,
    padding=0, output_padding=0, groups=1, dilation=1)`` -- the forward's arguments after
    ``grad_out``; ``bias`` is only looked at to know whether it exists.

    Returns ``(grad_input, grad_weight, grad_bias)`` (``grad_bias`` None when ``bias`` is None).
    grad_input is conv2d(grad_out, weight) with the same stride/padding/dilation/groups.
    """
    fn = "conv_transpose2d_backward"
    x, unbatched, stride, padding, _, dilation, groups, out_hw = _conv_transpose2d_params(
        input, weight, bias, stride, padding, output_padding, groups, dilation, fn=fn)
    c_out = weight.shape[1] * groups
    g = _check_grad_out(fn, grad_out, (x.shape[0], c_out) + out_hw, unbatched)
    pads = (padding[0], padding[0], padding[1], padding[1])
    gp = _pad(g, pads)
    w = _f64(weight)
    # The forward is conv2d's input-gradient with weight w mapping C_out -> C_in, so its
    # input-gradient is that conv2d, and its weight-gradient is conv2d's weight-gradient
    # with the roles of image and output-gradient swapped.
    in_hw = x.shape[2:]
    gx = _conv_fwd(gp, w, stride, dilation, groups, in_hw)
    gw = _conv_grad_weight(gp, _f64(x), w.shape, stride, dilation, groups)
    gb = None if bias is None else g.sum(axis=(0, 2, 3))
    return (_out(gx, input.dtype, unbatched), _out(gw, weight.dtype, False),
            None if gb is None else _out(gb, bias.dtype, False))


conv_transpose2d = conv_transpose2d_forward
