"""``MultiheadAttention`` as ``torch.nn.MultiheadAttention``, on
``F.multi_head_attention_forward``."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..errors import ArgumentError
from . import init
from .module import Module, Parameter

__all__ = ["MultiheadAttention"]


def _swap01(t):
    return t.transpose(0, 1) if isinstance(t, Tensor) else t.swapaxes(0, 1)


class MultiheadAttention(Module):
    """Multi-head attention as ``torch.nn.MultiheadAttention``: the same arguments, parameter
    names and init (projection weights Xavier-uniform, ``in_proj_bias``/``out_proj.bias``
    zeros, ``bias_k``/``bias_v`` Xavier-normal).

    ``kdim``/``vdim`` other than ``embed_dim`` give separate ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight``; ``add_bias_kv``, ``add_zero_attn``, ``batch_first``
    and ``dropout`` (training mode; drawn from ``generator``, default the library's) as torch.
    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(attn_output, attn_weights)``:
    the weights averaged over heads by default, per head with ``average_attn_weights=False``,
    None with ``need_weights=False``. Inputs (L, N, E), (N, L, E) with ``batch_first``, or
    unbatched (L, E). Masks use torch's convention (bool True = NOT allowed; float added).

    A query whose keys are all masked gives NaN with ``need_weights=True`` (torch's default
    path, an explicit softmax) and zeros with ``need_weights=False`` (torch's
    scaled_dot_product_attention path); torch's fused fast path (eval mode, no autograd) also
    gives zeros there. The weights output carries no gradient.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, *,
                 generator=None, dtype=np.float32):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ArgumentError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible "
                                f"by num_heads ({num_heads}), both positive")
        if not 0.0 <= dropout <= 1.0:
            raise ArgumentError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.add_zero_attn, self.head_dim = dropout, add_zero_attn, \
            embed_dim // num_heads
        self.generator = generator
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.zeros((3 * E, E), dtype))
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(n, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = Parameter(np.zeros((E, E), dtype))
            self.k_proj_weight = Parameter(np.zeros((E, self.kdim), dtype))
            self.v_proj_weight = Parameter(np.zeros((E, self.vdim), dtype))
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * E, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        from .layers import Linear
        self.out_proj = Linear(E, E, bias=bias, generator=generator, dtype=dtype)
        if add_bias_kv:
            self.bias_k = Parameter(np.zeros((1, 1, E), dtype))
            self.bias_v = Parameter(np.zeros((1, 1, E), dtype))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self._reset_parameters(generator)

    def _reset_parameters(self, generator=None):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight, generator=generator)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w, generator=generator)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k, generator=generator)
            init.xavier_normal_(self.bias_v, generator=generator)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        """Attend; see the class docstring for shapes, masks and the returned pair."""
        batched = query.ndim == 3
        if self.batch_first and batched:
            query, key, value = (_swap01(t) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight,
            self.in_proj_bias, self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
            self.out_proj.weight, self.out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=self.q_proj_weight, k_proj_weight=self.k_proj_weight,
            v_proj_weight=self.v_proj_weight, average_attn_weights=average_attn_weights,
            is_causal=is_causal, generator=self.generator)
        if self.batch_first and batched:
            out = _swap01(out)
        return out, weights

    def extra_repr(self):
        """The constructor arguments shown in the repr."""
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
