"""The operators under ``torch.nn.functional``'s names, argument names and defaults.

Every function accepts either raw arrays or :class:`cvkernels.Tensor`:

* raw arrays (numpy, CuPy, torch, ...) in -> raw arrays out: a plain
  ``cvkernels._dispatch.forward`` on the backend the arrays select;
* any ``Tensor`` among the array arguments -> a ``Tensor`` out, recorded by autograd. Its
  backward runs ``cvkernels._dispatch.backward`` on the same backend, with only what the
  backward needs saved.

Both paths are the one generic op of ``cvkernels.autograd.op``: each function here calls an
:class:`~cvkernels.autograd.op.Op` from the table below the imports, which states only how the
op departs from the default convention (e.g. ``Op("softmax", saves=("output", "dim"))``: the
backward takes the output, not the input).

**Ops without a function here.** ``functional.<name>`` also exists for any ``name`` with a
reference pair ``cvkernels.reference.<name>_forward`` and ``<name>_backward`` that follows the
default convention:

* the op's arguments are ``<name>_forward``'s parameters (same names, order and defaults);
* ``<name>_backward(grad_out, *same arguments as the forward)`` returns a tuple with one
  gradient per argument of the forward, in order: one per array argument when those come first
  (``None`` allowed, e.g. for a missing bias; non-array arguments get ``None`` or are left off
  at the end).

So ``reference.bias_relu_forward(input, bias)`` with ``bias_relu_backward(grad_out, input,
bias) -> (grad_input, grad_bias)`` is ``functional.bias_relu(x, b)`` on raw arrays and on
Tensors, with no edit here (``dir()``/``__all__`` do not list such ops). An op that departs
from the convention gets a function and an ``Op`` declaration here.

An op with no kernel on the selected backend raises NotImplementedError naming the op and the
backend; nothing ever falls back to another device silently.
"""
from __future__ import annotations

import math
import numbers
import warnings

from .autograd import Tensor
from .autograd.op import Op, fallback

__all__ = ["matmul", "linear", "softmax", "log_softmax", "conv2d", "conv_transpose2d",
           "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
           "batch_norm", "batch_norm_act", "layer_norm",
           "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "dropout", "cross_entropy",
           "multi_margin_loss", "scaled_dot_product_attention", "multi_head_attention",
           "multi_head_attention_forward", "pad", "group_norm", "nll_loss"]


def __getattr__(name):
    """PEP 562: ``functional.<name>`` for a reference pair that follows the default convention
    (see the module docstring)."""
    if name.startswith("_"):
        raise AttributeError(f"module 'cvkernels.functional' has no attribute {name!r}")
    return fallback(name)


# ops that follow the default convention, with torch's defaults
_matmul, _linear, _conv2d, _conv_transpose2d = (Op(n) for n in (
    "matmul", "linear", "conv2d", "conv_transpose2d"))
_avg_pool2d, _adaptive_avg_pool2d = Op("avg_pool2d"), Op("adaptive_avg_pool2d")
_relu, _leaky_relu, _elu, _gelu = (Op(n) for n in ("relu", "leaky_relu", "elu", "gelu"))
_cross_entropy, _multi_margin_loss = Op("cross_entropy"), Op("multi_margin_loss")
_nll_loss = Op("nll_loss")
_pad, _group_norm = Op("pad"), Op("group_norm")
_sdpa = Op("scaled_dot_product_attention", outputs=("output", "dropout_mask"),
           extra={"return_mask": True}, saves=("*", "dropout_mask"))

# ops whose backward departs from it
_softmax = Op("softmax", saves=("output", "dim"))
_log_softmax = Op("log_softmax", saves=("output", "dim"))
_sigmoid = Op("sigmoid", saves=("output",))
_tanh = Op("tanh", saves=("output",))
_max_pool2d = Op("max_pool2d", outputs=("output", "indices"), extra={"return_indices": True},
                 saves=("*", "indices"))
_adaptive_max_pool2d = Op("adaptive_max_pool2d", outputs=("output", "indices"),
                          extra={"return_indices": True}, saves=("*", "indices"))
_dropout = Op("dropout", saves=("p", "training", "seed", "offset"))   # no mask: regenerated
# batch norm: the forward also returns the statistics it normalised with, which the backward
# takes instead of recomputing them (the running statistics are not needed, hence not saved)
_BN_SAVES = ("input", "weight", "bias", "training", "eps", "save_mean", "save_invstd")
_batch_norm = Op("batch_norm", grads=("input", "weight", "bias"),
                 outputs=("output", "save_mean", "save_invstd"), extra={"return_stats": True},
                 saves=_BN_SAVES)
_batch_norm_act = Op("batch_norm_act", grads=("input", "weight", "bias", "residual"),
                     outputs=("output", "save_mean", "save_invstd"),
                     extra={"return_stats": True},
                     saves=_BN_SAVES + ("residual", "activation", "output"))
_layer_norm = Op("layer_norm", grads=("input", "weight", "bias"))
_mha = Op("multi_head_attention", grads=("query", "key", "value", "in_proj_weight",
                                          "in_proj_bias", "out_proj_weight", "out_proj_bias",
                                          "attn_mask"))
_mha_torch = Op("mha", outputs=("output", "weights", "dropout_mask"), extra={"return_mask": True},
                saves=("*", "dropout_mask"),
                grads=("query", "key", "value", "in_proj_weight", "in_proj_bias", "bias_k",
                       "bias_v", "out_proj_weight", "out_proj_bias", "attn_mask",
                       "q_proj_weight", "k_proj_weight", "v_proj_weight"))


def _no_legacy(fn, size_average, reduce):
    if size_average is not None or reduce is not None:
        raise ValueError(f"{fn}: size_average and reduce are deprecated and not supported; "
                         f"use reduction='none' | 'mean' | 'sum'")


def _implicit_dim(fn, ndim, stacklevel):
    # stacklevel counts from here: 1 this function, 2 softmax, 3 softmax's caller (torch's
    # default); nn.Softmax passes 5 to point past its forward and Module.__call__
    warnings.warn(f"{fn}: implicit dimension choice is deprecated (as in torch); pass dim",
                  stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def _cast(fn, x, dtype):
    # the boundary's array check first: a list must not reach .astype
    from ._boundary import check_array, torch_dtype_to_numpy
    x = check_array(fn, "input", x)
    if dtype is None:
        return x
    dt = torch_dtype_to_numpy(fn, dtype)
    if not hasattr(x, "astype"):                              # torch tensors
        import torch
        if isinstance(x, torch.Tensor):
            return x.to(getattr(torch, dt.name))
    return x.astype(dt)


# ---------------------------------------------------------------------------- linear algebra

def matmul(input, other):
    """``input @ other`` with torch.matmul's rules (1-D promotion, broadcast batch dims)."""
    return _matmul(input=input, other=other)


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``: input ``[..., in]``, weight ``[out, in]``, bias ``[out]``."""
    return _linear(input=input, weight=weight, bias=bias)


# ---------------------------------------------------------------------------- softmax

def softmax(input, dim=-1, _stacklevel=3, dtype=None):
    """Softmax along ``dim`` (default: the last dimension); ``dtype`` casts the input first.
    ``dim=None`` uses torch's deprecated implicit choice (0 for 0-, 1- and 3-D input, else 1)
    with a DeprecationWarning-style warning issued ``_stacklevel`` frames up, as torch."""
    input = _cast("softmax", input, dtype)
    if dim is None:
        dim = _implicit_dim("softmax", input.ndim, _stacklevel)
    return _softmax(input=input, dim=dim)


def log_softmax(input, dim=-1, _stacklevel=3, dtype=None):
    """Log-softmax along ``dim`` (same conventions as :func:`softmax`)."""
    input = _cast("log_softmax", input, dtype)
    if dim is None:
        dim = _implicit_dim("log_softmax", input.ndim, _stacklevel)
    return _log_softmax(input=input, dim=dim)


# ---------------------------------------------------------------------------- convolution

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation. input ``[N, C_in, H, W]`` (or unbatched), weight
    ``[C_out, C_in/groups, kH, kW]``; ``padding`` an int, a pair, ``'same'`` or ``'valid'``."""
    return _conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                   dilation=dilation, groups=groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-D transposed convolution; weight ``[C_in, C_out/groups, kH, kW]`` (note: ``groups``
    comes before ``dilation``, as in torch)."""
    return _conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride,
                             padding=padding, output_padding=output_padding, groups=groups,
                             dilation=dilation)


# ---------------------------------------------------------------------------- pooling

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling; with ``return_indices`` also the int64 flat index (into H*W) of each
    maximum. ``stride`` defaults to ``kernel_size``."""
    out, indices = _max_pool2d(input=input, kernel_size=kernel_size, stride=stride,
                               padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return (out, indices) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, torch's divisor rules (``count_include_pad``, ``divisor_override``)."""
    return _avg_pool2d(input=input, kernel_size=kernel_size, stride=stride, padding=padding,
                       ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                       divisor_override=divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """Adaptive 2-D average pooling to ``output_size`` (an int or a pair; None keeps a size)."""
    return _adaptive_avg_pool2d(input=input, output_size=output_size)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Adaptive 2-D max pooling to ``output_size``; with ``return_indices`` also the int64 flat
    index (into H*W) of each maximum."""
    out, indices = _adaptive_max_pool2d(input=input, output_size=output_size)
    return (out, indices) if return_indices else out


# ---------------------------------------------------------------------------- normalisation

def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05, *, num_batches_tracked=None):
    """Batch normalisation over ``[N, C, *]``. In training the running statistics (raw arrays)
    are updated in place, as torch; ``num_batches_tracked`` (a 1-element int64 array) is needed
    for ``momentum=None`` (cumulative average). Gradients go to input, weight and bias."""
    # running statistics are buffers, never graph inputs: a Tensor's array is updated in place
    running_mean = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    running_var = running_var.data if isinstance(running_var, Tensor) else running_var
    return _batch_norm(input=input, running_mean=running_mean, running_var=running_var,
                       weight=weight, bias=bias, training=training, momentum=momentum, eps=eps,
                       num_batches_tracked=num_batches_tracked)[0]


def batch_norm_act(input, running_mean, running_var, weight=None, bias=None, training=False,
                   momentum=0.1, eps=1e-05, *, residual=None, activation="relu",
                   num_batches_tracked=None):
    """``relu(batch_norm(input, ...) + residual)`` in one fused op (torch has none): ResNet's
    ``relu(bn(conv(x)) + shortcut)`` (``residual`` given) or ``relu(bn(x))`` (``residual=None``).

    The batch-norm arguments and running-statistic updates are exactly :func:`batch_norm`'s;
    ``residual`` has input's shape and dtype; ``activation`` must be ``'relu'``. On the kernel
    backends the statistics pass is batch_norm's and the add and relu are fused into the
    normalising pass (one read of input and residual, one write), and the backward masks the
    gradient with ``output > 0`` inside batch_norm's two passes. Gradients go to input, weight,
    bias and residual. The float64 reference is ``reference.batch_norm_act_forward``.
    """
    running_mean = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    running_var = running_var.data if isinstance(running_var, Tensor) else running_var
    return _batch_norm_act(input=input, running_mean=running_mean, running_var=running_var,
                           weight=weight, bias=bias, training=training, momentum=momentum,
                           eps=eps, residual=residual, activation=activation,
                           num_batches_tracked=num_batches_tracked)[0]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    """Layer normalisation over the trailing ``normalized_shape`` dims."""
    from ._boundary import check_call
    check_call("layer_norm", {"normalized_shape": normalized_shape})   # before tuple() below
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
        else tuple(normalized_shape)
    return _layer_norm(input=input, normalized_shape=normalized_shape, weight=weight, bias=bias,
                       eps=eps)


# ---------------------------------------------------------------------------- activations

def relu(input, inplace=False):
    """max(x, 0). ``inplace`` applies to raw arrays; Tensors are computed out of place."""
    return _relu(input=input, inplace=inplace and not isinstance(input, Tensor))


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope * x (``inplace`` only for raw arrays)."""
    return _leaky_relu(input=input, negative_slope=negative_slope,
                       inplace=inplace and not isinstance(input, Tensor))


def elu(input, alpha=1.0, inplace=False):
    """x if x > 0 else alpha * (exp(x) - 1) (``inplace`` only for raw arrays)."""
    return _elu(input=input, alpha=alpha, inplace=inplace and not isinstance(input, Tensor))


def gelu(input, approximate="none"):
    """x * Phi(x) (``approximate='none'``) or its tanh approximation (``'tanh'``)."""
    return _gelu(input=input, approximate=approximate)


def sigmoid(input):
    """1 / (1 + exp(-x)); the backward uses the output."""
    return _sigmoid(input=input)


def tanh(input):
    """tanh(x); the backward uses the output."""
    return _tanh(input=input)


def dropout(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Inverted dropout: zero elements with probability ``p``, scale survivors by 1/(1-p).

    The mask comes from a Philox4x32-10 stream (seed, offset), the same bits on every backend
    (see ``cvkernels.reference.dropout_forward``): ``generator`` is a
    ``cvkernels.random.Generator`` (default: ``cvkernels.random.default_generator()``, which
    ``cvkernels.nn.init.manual_seed`` reseeds), whose offset advances by ``4 * ceil(n / 4)``
    draws per call, as torch's CUDA generator does; a ``np.random.Generator`` is also accepted
    and gives one fresh seed per call (offset 0). The backward gets ``(p, seed, offset)`` and
    regenerates the mask; none is stored. ``inplace`` writes into a raw array ``input`` (as
    torch); Tensors are computed out of place. Not training, or ``p == 0``: the identity.
    """
    from .errors import ArgumentError
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ArgumentError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not training:
        p = 0.0       # the identity: its backward must not scale by 1/(1-p) either
    seed = offset = None
    if p > 0:
        seed, offset = _philox_stream(generator, math.prod(input.shape))
    return _dropout(input=input, p=p, training=training,
                    inplace=inplace and not isinstance(input, Tensor), seed=seed, offset=offset)


def _philox_stream(generator, draws):
    from . import random
    from .errors import ArgumentTypeError
    if generator is None:
        generator = random.default_generator()
    if isinstance(generator, random.Generator):
        return generator.next_stream(draws)
    import numpy as np
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, 2 ** 63)), 0
    raise ArgumentTypeError(f"dropout: generator must be a cvkernels.random.Generator or a "
                            f"np.random.Generator, got {type(generator).__name__}")


# ---------------------------------------------------------------------------- losses

def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``input`` ``(N, C, *)`` against class indices or probabilities.

    ``size_average``/``reduce`` are torch's deprecated arguments, kept only for positional
    compatibility; passing them raises.
    """
    _no_legacy("cross_entropy", size_average, reduce)
    return _cross_entropy(input=input, target=target, weight=weight, ignore_index=ignore_index,
                          reduction=reduction, label_smoothing=label_smoothing)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` ``(N, C, *)`` against class
    indices. ``size_average``/``reduce`` are torch's deprecated arguments, kept only for
    positional compatibility; passing them raises."""
    _no_legacy("nll_loss", size_average, reduce)
    return _nll_loss(input=input, target=target, weight=weight, ignore_index=ignore_index,
                     reduction=reduction)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean"):
    """Multi-class hinge (SVM) loss; ``p`` in {1, 2}. Only ``input`` gets a gradient."""
    _no_legacy("multi_margin_loss", size_average, reduce)
    return _multi_margin_loss(input=input, target=target, p=p, margin=margin, weight=weight,
                              reduction=reduction)


# ---------------------------------------------------------------------------- attention

def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *,
                                 generator=None):
    """softmax(Q K^T * scale + mask) V. ``attn_mask`` bool (True = takes part) or additive float
    (differentiable when a Tensor); a fully masked row gives zeros. ``dropout_p`` > 0 drops
    attention probabilities with ``generator`` (a ``np.random.Generator``; default: the
    library's default generator); the backward reuses the forward's mask."""
    if generator is None and dropout_p != 0.0:
        from .nn.init import default_generator
        generator = default_generator()
    return _sdpa(query=query, key=key, value=value, attn_mask=attn_mask, dropout_p=dropout_p,
                 is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
                 generator=generator)[0]


def multi_head_attention(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                         out_proj_weight, out_proj_bias, attn_mask=None):
    """Batch-first multi-head attention (cvkernels helper behind ``nn.MultiheadAttention``).

    query ``(N, L, E)``, key/value ``(N, S, E)``; ``in_proj_weight`` ``(3E, E)``. ``attn_mask``
    uses :func:`scaled_dot_product_attention`'s convention (bool True = takes part), which is the
    opposite of ``torch.nn.MultiheadAttention``'s.
    """
    return _mha(query=query, key=key, value=value, num_heads=num_heads,
                in_proj_weight=in_proj_weight, in_proj_bias=in_proj_bias,
                out_proj_weight=out_proj_weight, out_proj_bias=out_proj_bias,
                attn_mask=attn_mask)


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads,
                                 in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
                                 dropout_p, out_proj_weight, out_proj_bias, training=True,
                                 key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None,
                                 k_proj_weight=None, v_proj_weight=None, static_k=None,
                                 static_v=None, average_attn_weights=True, is_causal=False, *,
                                 generator=None):
    """``torch.nn.functional.multi_head_attention_forward``: torch's layout ((L, N, E) or
    unbatched (L, E)) and mask convention (bool True = NOT allowed). Returns ``(attn_output,
    attn_weights)``; only attn_output is differentiable. A fully masked row gives NaN with
    ``need_weights=True`` and zeros with False, as torch's two paths (see ``reference.mha``).
    ``generator`` (a ``np.random.Generator``) drives dropout; default: the library's."""
    raw = lambda m: m.data if isinstance(m, Tensor) else m  # noqa: E731
    if generator is None and training and dropout_p != 0.0:
        from .nn.init import default_generator
        generator = default_generator()
    out, weights, _ = _mha_torch(
        query=query, key=key, value=value, embed_dim_to_check=embed_dim_to_check,
        num_heads=num_heads, in_proj_weight=in_proj_weight, in_proj_bias=in_proj_bias,
        bias_k=bias_k, bias_v=bias_v, add_zero_attn=add_zero_attn, dropout_p=dropout_p,
        out_proj_weight=out_proj_weight, out_proj_bias=out_proj_bias, training=training,
        key_padding_mask=raw(key_padding_mask), need_weights=need_weights, attn_mask=attn_mask,
        use_separate_proj_weight=use_separate_proj_weight, q_proj_weight=q_proj_weight,
        k_proj_weight=k_proj_weight, v_proj_weight=v_proj_weight, static_k=static_k,
        static_v=static_v, average_attn_weights=average_attn_weights, is_causal=is_causal,
        generator=generator)
    if isinstance(weights, Tensor):
        weights = weights.detach()
    return out, weights


def pad(input, pad, mode="constant", value=None):
    """``torch.nn.functional.pad``: modes 'constant', 'reflect', 'replicate', 'circular';
    ``pad`` lists (left, right) pairs from the last dim backwards (negative pads crop)."""
    return _pad(input=input, pad=pad, mode=mode, value=value)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05):
    """Group normalisation of ``input`` (N, C, *) over ``num_groups`` channel groups;
    gradients go to input, weight and bias."""
    return _group_norm(input=input, num_groups=num_groups, weight=weight, bias=bias, eps=eps)
