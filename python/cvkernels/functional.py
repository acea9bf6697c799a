"""The operators under ``torch.nn.functional``'s names, argument names and defaults.

Every function accepts either raw arrays or :class:`cvkernels.Tensor`:

* raw arrays (numpy, CuPy, torch, ...) in -> raw arrays out: a plain
  ``cvkernels._dispatch.forward`` on the backend the arrays select;
* any ``Tensor`` among the array arguments -> a ``Tensor`` out, recorded by autograd. Its
  backward runs ``cvkernels._dispatch.backward`` on the same backend, with only what the
  backward needs saved (the inputs, or for softmax/log_softmax/sigmoid/tanh the output).

An op with no kernel on the selected backend raises NotImplementedError naming the op and the
backend; nothing ever falls back to another device silently.
"""
from __future__ import annotations

import warnings

from . import _dispatch
from .autograd import Function, Tensor

__all__ = ["matmul", "linear", "softmax", "log_softmax", "conv2d", "conv_transpose2d",
           "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "layer_norm",
           "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "dropout", "cross_entropy",
           "multi_margin_loss", "scaled_dot_product_attention", "multi_head_attention"]


def _has_tensor(values) -> bool:
    for v in values:
        if isinstance(v, Tensor):
            return True
        if isinstance(v, (list, tuple)) and _has_tensor(v):
            return True
    return False


class _Op(Function):
    """One reference-shaped op: ``<op>_forward(**arrays, **params)`` and its backward.

    ``names`` name the positional array inputs (in the reference's order); ``grad_names`` which
    of them receive the backward's returned gradients, in order (default: all of ``names``).
    With ``save_output`` the backward is called as ``<op>_backward(grad, output=y, **params)``,
    otherwise as ``<op>_backward(grad, **arrays, **params)``.
    """

    @staticmethod
    def forward(ctx, *arrays, op, names, params, save_output=False, grad_names=None,
                copy=()):
        call = dict(zip(names, arrays))
        call.update(params)
        out = _dispatch.forward(op, **call)
        ctx.op, ctx.names, ctx.params, ctx.save_output = op, names, params, save_output
        ctx.grad_index = [names.index(n) for n in (grad_names or names)]
        if save_output:
            ctx.save_for_backward(out)
        else:
            # arrays the caller mutates in place later (running stats) are copied
            ctx.save_for_backward(*[a.copy() if n in copy and a is not None else a
                                    for n, a in zip(names, arrays)])
        return out

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        if ctx.save_output:
            grads = _dispatch.backward(ctx.op, grad, output=saved[0], **ctx.params)
        else:
            grads = _dispatch.backward(ctx.op, grad, **dict(zip(ctx.names, saved)), **ctx.params)
        result = [None] * len(ctx.names)
        for i, g in zip(ctx.grad_index, grads):
            if ctx.needs_input_grad[i]:
                result[i] = g
        return tuple(result)


def _run(op, arrays: dict, params: dict, *, save_output=False, grad_names=None, copy=()):
    """Raw arrays -> ``_dispatch.forward``; any Tensor -> the autograd ``_Op``."""
    if not _has_tensor(arrays.values()):
        return _dispatch.forward(op, **arrays, **params)
    names = tuple(arrays)
    return _Op.apply(*arrays.values(), op=op, names=names, params=params,
                     save_output=save_output, grad_names=grad_names, copy=tuple(copy))


def _no_legacy(fn, size_average, reduce):
    if size_average is not None or reduce is not None:
        raise ValueError(f"{fn}: size_average and reduce are deprecated and not supported; "
                         f"use reduction='none' | 'mean' | 'sum'")


def _implicit_dim(fn, ndim):
    warnings.warn(f"{fn}: implicit dimension choice is deprecated (as in torch); pass dim",
                  stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def _cast(x, dtype):
    if dtype is None:
        return x
    return x.astype(dtype)


# ---------------------------------------------------------------------------- linear algebra

def matmul(input, other):
    """``input @ other`` with torch.matmul's rules (1-D promotion, broadcast batch dims)."""
    return _run("matmul", {"input": input, "other": other}, {})


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``: input ``[..., in]``, weight ``[out, in]``, bias ``[out]``."""
    return _run("linear", {"input": input, "weight": weight, "bias": bias}, {})


# ---------------------------------------------------------------------------- softmax

def softmax(input, dim=-1, _stacklevel=3, dtype=None):
    """Softmax along ``dim`` (default: the last dimension); ``dtype`` casts the input first.
    ``dim=None`` uses torch's deprecated implicit choice (0 for 0-, 1- and 3-D input, else 1)
    with a warning."""
    if dim is None:
        dim = _implicit_dim("softmax", input.ndim)
    return _run("softmax", {"input": _cast(input, dtype)}, {"dim": dim}, save_output=True)


def log_softmax(input, dim=-1, _stacklevel=3, dtype=None):
    """Log-softmax along ``dim`` (same conventions as :func:`softmax`)."""
    if dim is None:
        dim = _implicit_dim("log_softmax", input.ndim)
    return _run("log_softmax", {"input": _cast(input, dtype)}, {"dim": dim}, save_output=True)


# ---------------------------------------------------------------------------- convolution

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation. input ``[N, C_in, H, W]`` (or unbatched), weight
    ``[C_out, C_in/groups, kH, kW]``; ``padding`` an int, a pair, ``'same'`` or ``'valid'``."""
    return _run("conv2d", {"input": input, "weight": weight, "bias": bias},
                {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups})


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-D transposed convolution; weight ``[C_in, C_out/groups, kH, kW]`` (note: ``groups``
    comes before ``dilation``, as in torch)."""
    return _run("conv_transpose2d", {"input": input, "weight": weight, "bias": bias},
                {"stride": stride, "padding": padding, "output_padding": output_padding,
                 "groups": groups, "dilation": dilation})


# ---------------------------------------------------------------------------- pooling

class _MaxPool2d(Function):
    @staticmethod
    def forward(ctx, input, params):
        out, idx = _dispatch.forward("max_pool2d", input, **params, return_indices=True)
        ctx.save_for_backward(input, idx)
        ctx.params = params
        return out, idx

    @staticmethod
    def backward(ctx, grad, _grad_idx):
        input, idx = ctx.saved_tensors
        return (_dispatch.backward("max_pool2d", grad, input, **ctx.params, indices=idx)[0],
                None)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling; with ``return_indices`` also the int64 flat index (into H*W) of each
    maximum. ``stride`` defaults to ``kernel_size``."""
    params = {"kernel_size": kernel_size, "stride": stride, "padding": padding,
              "dilation": dilation, "ceil_mode": ceil_mode}
    if not isinstance(input, Tensor):
        return _dispatch.forward("max_pool2d", input, **params, return_indices=return_indices)
    out, idx = _MaxPool2d.apply(input, params=params)
    return (out, idx) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, torch's divisor rules (``count_include_pad``, ``divisor_override``)."""
    return _run("avg_pool2d", {"input": input},
                {"kernel_size": kernel_size, "stride": stride, "padding": padding,
                 "ceil_mode": ceil_mode, "count_include_pad": count_include_pad,
                 "divisor_override": divisor_override})


def adaptive_avg_pool2d(input, output_size):
    """Adaptive 2-D average pooling to ``output_size`` (an int or a pair; None keeps a size)."""
    return _run("adaptive_avg_pool2d", {"input": input}, {"output_size": output_size})


# ---------------------------------------------------------------------------- normalisation

def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05, *, num_batches_tracked=None):
    """Batch normalisation over ``[N, C, *]``. In training the running statistics (raw arrays)
    are updated in place, as torch; ``num_batches_tracked`` (a 1-element int64 array) is needed
    for ``momentum=None`` (cumulative average). Gradients go to input, weight and bias."""
    if isinstance(running_mean, Tensor) or isinstance(running_var, Tensor):
        running_mean = running_mean.data if isinstance(running_mean, Tensor) else running_mean
        running_var = running_var.data if isinstance(running_var, Tensor) else running_var
    return _run("batch_norm",
                {"input": input, "running_mean": running_mean, "running_var": running_var,
                 "weight": weight, "bias": bias},
                {"training": training, "momentum": momentum, "eps": eps,
                 "num_batches_tracked": num_batches_tracked},
                grad_names=("input", "weight", "bias"),
                copy=() if training else ("running_mean", "running_var"))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    """Layer normalisation over the trailing ``normalized_shape`` dims."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
        else tuple(normalized_shape)
    return _run("layer_norm", {"input": input, "weight": weight, "bias": bias},
                {"normalized_shape": normalized_shape, "eps": eps})


# ---------------------------------------------------------------------------- activations

def relu(input, inplace=False):
    """max(x, 0). ``inplace`` applies to raw arrays; Tensors are computed out of place."""
    if isinstance(input, Tensor):
        inplace = False
    return _run("relu", {"input": input}, {"inplace": inplace})


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope * x (``inplace`` only for raw arrays)."""
    if isinstance(input, Tensor):
        inplace = False
    return _run("leaky_relu", {"input": input},
                {"negative_slope": negative_slope, "inplace": inplace})


def elu(input, alpha=1.0, inplace=False):
    """x if x > 0 else alpha * (exp(x) - 1) (``inplace`` only for raw arrays)."""
    if isinstance(input, Tensor):
        inplace = False
    return _run("elu", {"input": input}, {"alpha": alpha, "inplace": inplace})


def gelu(input, approximate="none"):
    """x * Phi(x) (``approximate='none'``) or its tanh approximation (``'tanh'``)."""
    return _run("gelu", {"input": input}, {"approximate": approximate})


def sigmoid(input):
    """1 / (1 + exp(-x)); the backward uses the output."""
    return _run("sigmoid", {"input": input}, {}, save_output=True)


def tanh(input):
    """tanh(x); the backward uses the output."""
    return _run("tanh", {"input": input}, {}, save_output=True)


class _Dropout(Function):
    @staticmethod
    def forward(ctx, input, p, training, generator):
        out, mask = _dispatch.forward("dropout", input, p=p, training=training,
                                      generator=generator, return_mask=True)
        ctx.save_for_backward(mask)
        ctx.p = p
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return (_dispatch.backward("dropout", grad, mask, p=ctx.p)[0],)


def dropout(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Inverted dropout: zero elements with probability ``p``, scale survivors by 1/(1-p).

    ``generator`` is a ``np.random.Generator``; when None, the library's default generator
    (seeded by ``cvkernels.nn.init.manual_seed``) is used. ``inplace`` is accepted for
    signature compatibility and ignored (the result is a new array).
    """
    if generator is None and training and p > 0:
        from .nn.init import default_generator
        generator = default_generator()
    if not isinstance(input, Tensor):
        return _dispatch.forward("dropout", input, p=p, training=training, generator=generator)
    return _Dropout.apply(input, p, training, generator)


# ---------------------------------------------------------------------------- losses

def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``input`` ``(N, C, *)`` against class indices or probabilities.

    ``size_average``/``reduce`` are torch's deprecated arguments, kept only for positional
    compatibility; passing them raises.
    """
    _no_legacy("cross_entropy", size_average, reduce)
    return _run("cross_entropy", {"input": input, "target": target, "weight": weight},
                {"ignore_index": ignore_index, "reduction": reduction,
                 "label_smoothing": label_smoothing})


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean"):
    """Multi-class hinge (SVM) loss; ``p`` in {1, 2}. Only ``input`` gets a gradient."""
    _no_legacy("multi_margin_loss", size_average, reduce)
    return _run("multi_margin_loss", {"input": input, "target": target, "weight": weight},
                {"p": p, "margin": margin, "reduction": reduction})


# ---------------------------------------------------------------------------- attention

def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """softmax(Q K^T * scale + mask) V. ``attn_mask`` bool (True = takes part) or additive float
    (differentiable when a Tensor); a fully masked row gives zeros."""
    return _run("scaled_dot_product_attention",
                {"query": query, "key": key, "value": value, "attn_mask": attn_mask},
                {"dropout_p": dropout_p, "is_causal": is_causal, "scale": scale,
                 "enable_gqa": enable_gqa})


def multi_head_attention(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                         out_proj_weight, out_proj_bias, attn_mask=None):
    """Batch-first multi-head attention (cvkernels helper behind ``nn.MultiheadAttention``).

    query ``(N, L, E)``, key/value ``(N, S, E)``; ``in_proj_weight`` ``(3E, E)``. ``attn_mask``
    uses :func:`scaled_dot_product_attention`'s convention (bool True = takes part), which is the
    opposite of ``torch.nn.MultiheadAttention``'s.
    """
    return _run("multi_head_attention",
                {"query": query, "key": key, "value": value, "in_proj_weight": in_proj_weight,
                 "in_proj_bias": in_proj_bias, "out_proj_weight": out_proj_weight,
                 "out_proj_bias": out_proj_bias, "attn_mask": attn_mask},
                {"num_heads": num_heads})
