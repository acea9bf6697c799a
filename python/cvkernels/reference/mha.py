"""``mha``: torch.nn.functional.multi_head_attention_forward as a NumPy reference pair.

Layout and masks are torch's: query (L, N, E) (or unbatched (L, E)), key (S, N, kdim), value
(S, N, vdim); ``key_padding_mask`` (N, S) or (S,); ``attn_mask`` (L, S) or (N*H, L, S) (or
(H, L, S) unbatched); bool masks are True where attention is NOT allowed, float masks are added
to the scores. Computed in float64, cast back to the query's dtype.

**Fully masked rows.** torch has two paths and they differ: with ``need_weights=True`` (its
default) the weights come from a plain softmax, so a row with every key masked gives NaN
weights and a NaN output; with ``need_weights=False`` it calls scaled_dot_product_attention,
whose safe softmax gives a zero output for such a row. This reference follows whichever path
the same arguments select in torch. (torch's fused "fast path", taken by nn.MultiheadAttention
in eval mode without autograd, also gives zeros with need_weights=False.)
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import check_float
from ..errors import ArgumentError, ArgumentTypeError, ShapeError
from .attention import _apply_keep, _dropout_keep, _heads, _merge, _safe_softmax_last

__all__ = ["mha_forward", "mha_backward", "mha"]

_F64 = np.float64


def _a(x):
    return None if x is None else np.asarray(x)


def _f(x):
    return None if x is None else np.asarray(x, dtype=_F64)


def _additive(m):
    m = np.asarray(m)
    return np.where(m, -np.inf, 0.0) if m.dtype == np.bool_ else m.astype(_F64)


def _setup(fn, query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
           bias_k, bias_v, out_proj_weight, out_proj_bias, key_padding_mask, attn_mask,
           use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k,
           static_v, is_causal):
    q, k, v = _a(query), _a(key), _a(value)
    for name, x in (("query", q), ("key", k), ("value", v)):
        check_float(fn, name, x)
    if static_k is not None or static_v is not None:
        raise NotImplementedError(f"{fn}: static_k/static_v are not supported")
    if is_causal and attn_mask is None:
        raise ArgumentError(f"{fn}: need attn_mask if specifying the is_causal hint (as torch)")
    unbatched = q.ndim == 2
    if q.ndim not in (2, 3) or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ShapeError(f"{fn}: query, key and value must all be 3-D (L, N, E) or all 2-D "
                         f"(L, E), got {q.shape}, {k.shape}, {v.shape}")
    if unbatched:
        q, k, v = q[:, None], k[:, None], v[:, None]
    L, N, E = q.shape
    S = k.shape[0]
    if E != embed_dim_to_check:
        raise ShapeError(f"{fn}: was expecting embedding dimension of {embed_dim_to_check}, "
                         f"but got {E}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) \
            or num_heads <= 0 or E % num_heads:
        raise ArgumentError(f"{fn}: num_heads must be a positive divisor of E={E}, got "
                            f"{num_heads!r}")
    if k.shape[:2] != (S, N) or v.shape[:2] != (S, N):
        raise ShapeError(f"{fn}: key and value must be (S, N, *) with N={N} and one S, got "
                         f"{k.shape} and {v.shape}")
    if use_separate_proj_weight:
        wq, wk, wv = _f(q_proj_weight), _f(k_proj_weight), _f(v_proj_weight)
        if wq is None or wk is None or wv is None:
            raise ArgumentError(f"{fn}: use_separate_proj_weight needs q/k/v_proj_weight")
    else:
        if in_proj_weight is None:
            raise ArgumentError(f"{fn}: in_proj_weight is None; pass it or "
                                f"use_separate_proj_weight=True")
        if np.shape(in_proj_weight) != (3 * E, E):
            raise ShapeError(f"{fn}: in_proj_weight must have shape ({3 * E}, {E}), got "
                             f"{np.shape(in_proj_weight)}")
        wq, wk, wv = np.split(_f(in_proj_weight), 3)
    for name, w, d in (("q", wq, E), ("k", wk, k.shape[2]), ("v", wv, v.shape[2])):
        if w.shape != (E, d):
            raise ShapeError(f"{fn}: the {name} projection weight must have shape ({E}, {d}), "
                             f"got {w.shape}")
    bq = bk = bv = None
    if in_proj_bias is not None:
        if np.shape(in_proj_bias) != (3 * E,):
            raise ShapeError(f"{fn}: in_proj_bias must have shape ({3 * E},), got "
                             f"{np.shape(in_proj_bias)}")
        bq, bk, bv = np.split(_f(in_proj_bias), 3)
    if (bias_k is None) != (bias_v is None):
        raise ArgumentError(f"{fn}: bias_k and bias_v must both be given or both be None")
    for name, b in (("bias_k", bias_k), ("bias_v", bias_v)):
        if b is not None and np.size(b) != E:
            raise ShapeError(f"{fn}: {name} must have E={E} elements, got {np.shape(b)}")
    if out_proj_weight is None:
        raise ArgumentTypeError(f"{fn}: out_proj_weight must be an array, got None")
    wo = _f(out_proj_weight)
    if wo.shape != (E, E):
        raise ShapeError(f"{fn}: out_proj_weight must have shape ({E}, {E}), got {wo.shape}")
    if out_proj_bias is not None and np.shape(out_proj_bias) != (E,):
        raise ShapeError(f"{fn}: out_proj_bias must have shape ({E},), got "
                         f"{np.shape(out_proj_bias)}")
    mask = None
    H = int(num_heads)
    if attn_mask is not None:
        m = _a(attn_mask)
        want = ((L, S), (H, L, S)) if unbatched else ((L, S), (N * H, L, S))
        if m.shape not in want:
            raise ShapeError(f"{fn}: attn_mask must have shape {' or '.join(map(str, want))}, "
                             f"got {m.shape}")
        mask = _additive(m).reshape((1, 1, L, S) if m.ndim == 2 else (N, H, L, S))
    if key_padding_mask is not None:
        m = _a(key_padding_mask)
        if m.shape != ((S,) if unbatched else (N, S)):
            raise ShapeError(f"{fn}: key_padding_mask must have shape "
                             f"{(S,) if unbatched else (N, S)}, got {m.shape}")
        kpm = _additive(m).reshape(N, 1, 1, S)
        mask = kpm if mask is None else mask + kpm
    t = lambda x: np.swapaxes(x, 0, 1).astype(_F64)  # noqa: E731  (S, N, E) -> (N, S, E)
    return dict(q=t(q), k=t(k), v=t(v), wq=wq, wk=wk, wv=wv, bq=bq, bk=bk, bv=bv,
                bias_k=_f(bias_k), bias_v=_f(bias_v), wo=wo, bo=_f(out_proj_bias), mask=mask,
                H=H, unbatched=unbatched, dtype=_a(query).dtype)


def _proj(x, w, b):
    return x @ w.T + (0 if b is None else b)


def _forward(c, add_zero_attn, need_weights, dropout_p, keep=None, generator=None):
    """The forward with every intermediate the backward needs."""
    N, H = c["q"].shape[0], c["H"]
    Q, K, V = _proj(c["q"], c["wq"], c["bq"]), _proj(c["k"], c["wk"], c["bk"]), \
        _proj(c["v"], c["wv"], c["bv"])
    mask = c["mask"]
    extra = 0
    if c["bias_k"] is not None:            # one more key/value, always attendable
        E = K.shape[2]
        K = np.concatenate([K, np.broadcast_to(c["bias_k"].reshape(1, 1, E), (N, 1, E))], 1)
        V = np.concatenate([V, np.broadcast_to(c["bias_v"].reshape(1, 1, E), (N, 1, E))], 1)
        extra += 1
    if add_zero_attn:                      # and a zero key/value
        K = np.concatenate([K, np.zeros((N, 1, K.shape[2]))], 1)
        V = np.concatenate([V, np.zeros((N, 1, V.shape[2]))], 1)
        extra += 1
    if mask is not None and extra:
        mask = np.concatenate([mask, np.zeros(mask.shape[:3] + (extra,))], -1)
    Qh, Kh, Vh = _heads(Q, H), _heads(K, H), _heads(V, H)
    scale = 1.0 / math.sqrt(Qh.shape[-1])
    with np.errstate(invalid="ignore", over="ignore"):
        s = Qh @ np.swapaxes(Kh, -1, -2) * scale
        if mask is not None:
            s = s + mask
        if need_weights:                   # torch's explicit softmax: fully masked -> NaN
            e = np.exp(s - s.max(-1, keepdims=True)) if s.shape[-1] else s
            P = e / e.sum(-1, keepdims=True)
        else:                              # torch's sdpa path: fully masked -> zeros
            P = _safe_softmax_last(s)
    if keep is None:
        keep = _dropout_keep(P, dropout_p, generator)
    Pd = _apply_keep(P, keep, dropout_p)
    Om = _merge(Pd @ Vh)
    out = _proj(Om, c["wo"], c["bo"])
    return dict(Qh=Qh, Kh=Kh, Vh=Vh, P=P, Pd=Pd, Om=Om, out=out, keep=keep, scale=scale)


def _out_layout(c, out):
    out = np.swapaxes(out, 0, 1)
    return (out[:, 0] if c["unbatched"] else out).astype(c["dtype"])


def mha_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                is_causal=False, *, generator=None, return_mask=False):
    """torch.nn.functional.multi_head_attention_forward (see the module docstring).

    Returns ``(attn_output, attn_weights)``: attn_output (L, N, E) or (L, E); attn_weights
    (N, L, S') averaged over heads (``average_attn_weights``) or (N, H, L, S'), unbatched
    without N, or None when ``need_weights`` is False; S' counts the bias_kv and zero_attn
    keys. Dropout (``training`` and ``dropout_p`` > 0) draws from ``generator`` (default: the
    library's generator); the weights returned are the dropped ones, as torch. With
    ``return_mask`` the keep-mask (or None) comes third. ``is_causal`` is only a hint, as in
    torch: ``attn_mask`` must be given and is what applies. ``static_k``/``static_v`` raise
    NotImplementedError.
    """
    c = _setup("multi_head_attention_forward", query, key, value, embed_dim_to_check, num_heads,
               in_proj_weight, in_proj_bias, bias_k, bias_v, out_proj_weight, out_proj_bias,
               key_padding_mask, attn_mask, use_separate_proj_weight, q_proj_weight,
               k_proj_weight, v_proj_weight, static_k, static_v, is_causal)
    p = dropout_p if training else 0.0
    r = _forward(c, add_zero_attn, need_weights, p, generator=generator)
    weights = None
    if need_weights:
        w = r["Pd"].mean(axis=1) if average_attn_weights else r["Pd"]
        weights = (w[0] if c["unbatched"] else w).astype(c["dtype"])
    out = _out_layout(c, r["out"])
    return (out, weights, r["keep"]) if return_mask else (out, weights)


def mha_backward(grad_out, query, key, value, embed_dim_to_check, num_heads, in_proj_weight,
                 in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight,
                 out_proj_bias, training=True, key_padding_mask=None, need_weights=True,
                 attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                 k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
                 average_attn_weights=True, is_causal=False, generator=None, dropout_mask=None):
    """Gradients of ``mha_forward``'s attn_output (the weights output is not differentiated):
    ``(grad_query, grad_key, grad_value, grad_in_proj_weight, grad_in_proj_bias, grad_bias_k,
    grad_bias_v, grad_out_proj_weight, grad_out_proj_bias, grad_attn_mask, grad_q_proj_weight,
    grad_k_proj_weight, grad_v_proj_weight)``, None where an argument was None (or a bool
    mask). The forward's keep-mask ``dropout_mask`` is needed when it dropped."""
    fn = "multi_head_attention_forward_backward"
    c = _setup(fn, query, key, value, embed_dim_to_check, num_heads, in_proj_weight,
               in_proj_bias, bias_k, bias_v, out_proj_weight, out_proj_bias, key_padding_mask,
               attn_mask, use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight,
               static_k, static_v, is_causal)
    p = dropout_p if training else 0.0
    if p != 0.0 and dropout_mask is None:
        raise ArgumentError(f"{fn}: dropout_p > 0 needs the forward's dropout_mask")
    r = _forward(c, add_zero_attn, need_weights, p, keep=None if p == 0.0 else dropout_mask)
    g = np.asarray(grad_out, dtype=_F64)
    g = np.swapaxes(g[:, None] if c["unbatched"] else g, 0, 1)        # (N, L, E)
    H, S = c["H"], c["k"].shape[1]
    g_wo = np.einsum("nle,nlf->ef", g, r["Om"])
    g_bo = g.sum(axis=(0, 1))
    dO = _heads(g @ c["wo"], H)
    dPd = dO @ np.swapaxes(r["Vh"], -1, -2)
    dVh = np.swapaxes(r["Pd"], -1, -2) @ dO
    dP = _apply_keep(dPd, r["keep"], p)
    P = r["P"]
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    dQh = dS @ r["Kh"] * r["scale"]
    dKh = np.swapaxes(dS, -1, -2) @ r["Qh"] * r["scale"]
    dQ, dK, dV = _merge(dQh), _merge(dKh), _merge(dVh)
    g_bk = g_bv = None
    if c["bias_k"] is not None:
        g_bk = dK[:, S].sum(0).reshape(np.shape(bias_k))
        g_bv = dV[:, S].sum(0).reshape(np.shape(bias_v))
    dK, dV = dK[:, :S], dV[:, :S]
    grads_in, grads_w, grads_b = [], [], []
    for d, x, w in ((dQ, c["q"], c["wq"]), (dK, c["k"], c["wk"]), (dV, c["v"], c["wv"])):
        grads_in.append(d @ w)
        grads_w.append(np.einsum("nse,nsf->ef", d, x))
        grads_b.append(d.sum(axis=(0, 1)))
    dt = c["dtype"]
    cast = (lambda a, like=None: None if a is None else
            np.asarray(a).astype(dt if like is None else np.asarray(like).dtype))
    back = (lambda d: cast(np.swapaxes(d, 0, 1)[:, 0] if c["unbatched"] else np.swapaxes(d, 0, 1)))
    g_mask = None
    if attn_mask is not None and np.asarray(attn_mask).dtype != np.bool_:
        m = np.asarray(attn_mask)
        dm = dS[..., :S]
        dm = dm.sum(axis=(0, 1)) if m.ndim == 2 else dm.reshape(m.shape)
        g_mask = cast(dm, m)
    sep = use_separate_proj_weight
    return (back(grads_in[0]), back(grads_in[1]), back(grads_in[2]),
            None if sep else cast(np.concatenate(grads_w), in_proj_weight),
            None if in_proj_bias is None else cast(np.concatenate(grads_b), in_proj_bias),
            cast(g_bk, bias_k), cast(g_bv, bias_v), cast(g_wo, out_proj_weight),
            None if out_proj_bias is None else cast(g_bo, out_proj_bias), g_mask,
            cast(grads_w[0], q_proj_weight) if sep else None,
            cast(grads_w[1], k_proj_weight) if sep else None,
            cast(grads_w[2], v_proj_weight) if sep else None)


mha = mha_forward
