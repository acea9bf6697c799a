"""Scaled dot-product attention and a batch-first multi-head helper: NumPy references.

``scaled_dot_product_attention`` follows ``torch.nn.functional.scaled_dot_product_attention``.
Arithmetic runs in float32 for float16/float32 inputs and float64 for float64; results are cast
back to the input dtype. A row whose every key is masked out gives zeros (not NaN) in the forward
and zero gradients in the backward, as torch's math backend does since 2.5; a NaN score (a NaN
in q or k) or a score that overflows to +inf gives a NaN row, as torch.
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import check_float, check_ndim, check_same_dtype
from ..errors import ArgumentError, ShapeError

__all__ = [
    "scaled_dot_product_attention_forward", "scaled_dot_product_attention_backward",
    "scaled_dot_product_attention",
    "multi_head_attention_forward", "multi_head_attention_backward", "multi_head_attention",
]


def _acc_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _sum_to_shape(g: np.ndarray, shape) -> np.ndarray:
    """Reduce a broadcast gradient back to ``shape`` (numpy broadcasting rules)."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead > 0:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (gs, s) in enumerate(zip(g.shape, shape)) if s == 1 and gs != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _safe_softmax_last(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a row that is entirely -inf gives zeros (torch's
    _safe_softmax), while NaN or +inf scores give NaN, as a plain softmax."""
    m = np.max(s, axis=-1, keepdims=True) if s.shape[-1] else np.zeros(s.shape[:-1] + (1,), s.dtype)
    full = np.isneginf(m)                      # every key masked out
    m = np.where(full, 0, m).astype(s.dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(s - m)
        den = np.sum(e, axis=-1, keepdims=True)
        return np.where(full, 0, e / np.where(full, 1, den)).astype(s.dtype)


def _sdpa_setup(fn, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    q, k, v = np.asarray(query), np.asarray(key), np.asarray(value)
    for name, a in (("query", q), ("key", k), ("value", v)):
        check_float(fn, name, a)
        if a.ndim < 2:
            raise ShapeError(f"{fn}: {name} must be at least 2-D (..., L, E), got shape {a.shape}")
    check_same_dtype(fn, query=q, key=k, value=v)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float, np.floating)) \
            or not 0.0 <= dropout_p <= 1.0:
        raise ArgumentError(f"{fn}: dropout_p must be a probability in [0, 1], got "
                            f"{dropout_p!r}")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"{fn}: query and key must share the embedding size E, got "
                         f"{q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{fn}: key and value must share the sequence length S, got "
                         f"{k.shape[-2]} and {v.shape[-2]}")
    rep = 1
    if enable_gqa:
        if q.ndim < 3 or k.ndim < 3 or v.ndim < 3:
            raise ShapeError(f"{fn}: enable_gqa needs (..., H, L, E) inputs")
        hq, hk = q.shape[-3], k.shape[-3]
        if hk == 0 or hq % hk or v.shape[-3] != hk:
            raise ShapeError(f"{fn}: with enable_gqa the number of query heads ({hq}) must be a "
                             f"multiple of the key/value heads ({hk}, {v.shape[-3]})")
        rep = hq // hk
        k = np.repeat(k, rep, axis=-3)          # head h of q reads kv head h // rep
        v = np.repeat(v, rep, axis=-3)
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ShapeError(f"{fn}: the batch dims of query {q.shape}, key {k.shape} and value "
                         f"{v.shape} do not broadcast") from None
    L, S = q.shape[-2], k.shape[-2]
    mask = None
    if attn_mask is not None:
        if is_causal:
            raise ArgumentError(f"{fn}: attn_mask and is_causal cannot both be set")
        mask = np.asarray(attn_mask)
        if mask.dtype != np.bool_:
            check_float(fn, "attn_mask", mask)
        try:
            ok = np.broadcast_shapes(mask.shape, batch + (L, S)) == batch + (L, S)
        except ValueError:
            ok = False
        if not ok:
            raise ShapeError(f"{fn}: attn_mask of shape {mask.shape} does not broadcast to the "
                             f"attention scores' shape {batch + (L, S)}") from None
    elif is_causal:
        mask = np.tril(np.ones((L, S), dtype=bool))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    acc = _acc_dtype(q.dtype)
    return q.astype(acc), k.astype(acc), v.astype(acc), mask, acc.type(scale), rep


def _probs(q, k, mask, scale):
    with np.errstate(invalid="ignore", over="ignore"):
        s = (q @ np.swapaxes(k, -1, -2)) * scale
        if mask is not None:       # a bool mask is added as 0 / -inf, as torch: NaN stays NaN
            s = s + (np.where(mask, 0, -np.inf) if mask.dtype == np.bool_ else mask
                     ).astype(s.dtype)
    return _safe_softmax_last(s)


def _dropout_keep(p, dropout_p, generator):
    """The keep-mask of attention dropout over the probabilities ``p`` (None: no dropout)."""
    if dropout_p == 0.0:
        return None
    if generator is None:
        from ..nn.init import default_generator
        generator = default_generator()
    return generator.random(p.shape) >= dropout_p


def _apply_keep(p, keep, dropout_p):
    if keep is None:
        return p
    scale = 0.0 if dropout_p >= 1.0 else 1.0 / (1.0 - dropout_p)
    return np.where(keep, p * p.dtype.type(scale), 0).astype(p.dtype)


def scaled_dot_product_attention_forward(query, key, value, attn_mask=None, dropout_p=0.0,
                                         is_causal=False, scale=None, enable_gqa=False, *,
                                         generator=None, return_mask=False):
    """softmax(Q K^T * scale + mask) V over the last two dims, as torch.

    query (..., L, E), key (..., S, E), value (..., S, Ev); batch dims broadcast. ``attn_mask``:
    bool (True = takes part) or float (added to the scores), broadcastable to (..., L, S).
    ``is_causal`` uses the top-left causal mask tril(ones(L, S)). ``scale`` defaults to 1/sqrt(E).
    ``enable_gqa``: key/value carry H_kv heads on dim -3, query head h reads kv head h // (H/H_kv).
    ``dropout_p`` > 0 zeroes each probability with that chance and scales the others by
    1/(1-dropout_p), drawing from ``generator`` (a ``np.random.Generator``; default: the
    library's default generator, see ``nn.init.manual_seed``); torch's random stream is not
    reproduced. Returns (..., L, Ev), and with ``return_mask`` also the bool keep-mask
    (None without dropout) that the backward needs.
    """
    q, k, v, mask, scale, _ = _sdpa_setup("scaled_dot_product_attention", query, key, value,
                                          attn_mask, dropout_p, is_causal, scale, enable_gqa)
    p = _probs(q, k, mask, scale)
    keep = _dropout_keep(p, dropout_p, generator)
    out = (_apply_keep(p, keep, dropout_p) @ v).astype(np.asarray(query).dtype)
    return (out, keep) if return_mask else out


def scaled_dot_product_attention_backward(grad_out, query, key, value, attn_mask=None,
                                          dropout_p=0.0, is_causal=False, scale=None,
                                          enable_gqa=False, generator=None, dropout_mask=None):
    """``scaled_dot_product_attention_backward(grad_out, query, key, value, attn_mask=None,
    dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)
    -> (grad_query, grad_key, grad_value, grad_attn_mask)``.

    Recomputes P = softmax(S); dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)),
    dQ = scale dS K, dK = scale dS^T Q. Gradients are reduced to each input's own (broadcast /
    GQA) shape. grad_attn_mask is dS summed to the mask's shape for a float mask, None for a bool
    mask or no mask. Fully masked rows give zero gradients. With ``dropout_p`` > 0 the
    forward's keep-mask ``dropout_mask`` is required (``generator`` is ignored).
    """
    fn = "scaled_dot_product_attention_backward"
    q, k, v, mask, scale, rep = _sdpa_setup(fn, query, key, value, attn_mask, dropout_p,
                                            is_causal, scale, enable_gqa)
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    p = _probs(q, k, mask, scale)
    if dropout_p != 0.0 and dropout_mask is None:
        raise ArgumentError(f"{fn}: dropout_p > 0 needs the forward's dropout_mask")
    keep = None if dropout_p == 0.0 else np.asarray(dropout_mask)
    o_shape = np.broadcast_shapes(p.shape[:-2], v.shape[:-2]) + (p.shape[-2], v.shape[-1])
    if g.shape != o_shape:
        raise ShapeError(f"{fn}: grad_out must have shape {o_shape}, got {g.shape}")
    g = g.astype(q.dtype)
    pt = np.swapaxes(_apply_keep(p, keep, dropout_p), -1, -2)
    dv = pt @ g
    dp = _apply_keep(g @ np.swapaxes(v, -1, -2), keep, dropout_p)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = (ds @ k) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    qs, ks, vs = np.shape(query), np.shape(key), np.shape(value)
    if rep > 1:                                  # fold the repeated kv heads back
        for name in ("dk", "dv"):
            d, shp = (dk, ks) if name == "dk" else (dv, vs)
            d = _sum_to_shape(d, shp[:-3] + (shp[-3] * rep,) + shp[-2:])
            d = d.reshape(shp[:-3] + (shp[-3], rep) + shp[-2:]).sum(axis=-3)
            if name == "dk":
                dk = d
            else:
                dv = d
    dt = np.asarray(query).dtype
    grads = [_sum_to_shape(dq, qs).astype(dt), _sum_to_shape(dk, ks).astype(dt),
             _sum_to_shape(dv, vs).astype(dt)]
    gmask = None
    if attn_mask is not None and np.asarray(attn_mask).dtype != np.bool_:
        m = np.asarray(attn_mask)
        gmask = _sum_to_shape(ds, m.shape).astype(m.dtype)
    return grads[0], grads[1], grads[2], gmask


scaled_dot_product_attention = scaled_dot_product_attention_forward


# ------------------------------------------------------------------------ multi_head_attention
def _mha_setup(fn, query, key, value, num_heads, in_proj_weight, in_proj_bias, out_proj_weight,
               out_proj_bias):
    q, k, v = np.asarray(query), np.asarray(key), np.asarray(value)
    for name, a in (("query", q), ("key", k), ("value", v)):
        check_float(fn, name, a)
        check_ndim(fn, name, a, 3)
    w_in, w_out = np.asarray(in_proj_weight), np.asarray(out_proj_weight)
    b_in = None if in_proj_bias is None else np.asarray(in_proj_bias)
    b_out = None if out_proj_bias is None else np.asarray(out_proj_bias)
    check_same_dtype(fn, query=q, key=k, value=v, in_proj_weight=w_in, in_proj_bias=b_in,
                     out_proj_weight=w_out, out_proj_bias=b_out)
    n, L, E = q.shape
    if k.shape[0] != n or v.shape[0] != n or k.shape[2] != E or v.shape[2] != E \
            or k.shape[1] != v.shape[1]:
        raise ShapeError(f"{fn}: key and value must be (N, S, E) with N={n}, E={E}, got key "
                         f"{k.shape} and value {v.shape}")
    if not isinstance(num_heads, (int, np.integer)) or num_heads <= 0 or E % num_heads:
        raise ShapeError(f"{fn}: num_heads must be a positive divisor of E={E}, got {num_heads!r}")
    if w_in.shape != (3 * E, E):
        raise ShapeError(f"{fn}: in_proj_weight must have shape [{3 * E}, {E}], got {w_in.shape}")
    if b_in is not None and b_in.shape != (3 * E,):
        raise ShapeError(f"{fn}: in_proj_bias must have shape [{3 * E}], got {b_in.shape}")
    if w_out.shape != (E, E):
        raise ShapeError(f"{fn}: out_proj_weight must have shape [{E}, {E}], got {w_out.shape}")
    if b_out is not None and b_out.shape != (E,):
        raise ShapeError(f"{fn}: out_proj_bias must have shape [{E}], got {b_out.shape}")
    return q, k, v, w_in, b_in, w_out, b_out


def _heads(x, h):            # (N, L, E) -> (N, h, L, E/h)
    n, L, E = x.shape
    return x.reshape(n, L, h, E // h).transpose(0, 2, 1, 3)


def _merge(x):               # (N, h, L, d) -> (N, L, h*d)
    n, h, L, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, L, h * d)


def _mask4(mask):
    """An attention mask of shape (L, S) or (N, H, L, S) (any broadcastable shape) as is."""
    return None if mask is None else np.asarray(mask)


def multi_head_attention_forward(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                                 out_proj_weight, out_proj_bias, attn_mask=None):
    """Batch-first multi-head attention (inference path of ``nn.MultiheadAttention``).

    query (N, L, E), key and value (N, S, E) -- batch FIRST. in_proj_weight (3E, E) stacks
    W_q, W_k, W_v; in_proj_bias (3E,) or None; out_proj_weight (E, E); out_proj_bias (E,) or None.
    Q = query W_q^T + b_q (likewise K, V), split into ``num_heads`` heads of size E/num_heads,
    O_h = scaled_dot_product_attention(Q_h, K_h, V_h, attn_mask), out = concat(O_h) W_o^T + b_o.
    ``attn_mask`` follows :func:`scaled_dot_product_attention` (bool True = takes part, or float
    added to the scores), broadcastable to (N, num_heads, L, S), e.g. (L, S). NOTE: this is the
    opposite bool convention to ``nn.MultiheadAttention`` (where True = masked out).
    Returns (N, L, E).
    """
    fn = "multi_head_attention"
    q, k, v, w_in, b_in, w_out, b_out = _mha_setup(fn, query, key, value, num_heads,
                                                   in_proj_weight, in_proj_bias,
                                                   out_proj_weight, out_proj_bias)
    acc = _acc_dtype(q.dtype)
    E = q.shape[2]
    wq, wk, wv = (w.astype(acc) for w in np.split(w_in, 3))
    bq, bk, bv = (np.zeros(E, acc),) * 3 if b_in is None else \
        (b.astype(acc) for b in np.split(b_in, 3))
    Q = _heads(q.astype(acc) @ wq.T + bq, num_heads)
    K = _heads(k.astype(acc) @ wk.T + bk, num_heads)
    V = _heads(v.astype(acc) @ wv.T + bv, num_heads)
    O = scaled_dot_product_attention_forward(Q, K, V, _mask4(attn_mask))
    out = _merge(O) @ w_out.astype(acc).T
    if b_out is not None:
        out = out + b_out.astype(acc)
    return out.astype(q.dtype)


def multi_head_attention_backward(grad_out, query, key, value, num_heads, in_proj_weight,
                                  in_proj_bias, out_proj_weight, out_proj_bias, attn_mask=None):
    """``multi_head_attention_backward(grad_out, query, key, value, num_heads, in_proj_weight,
    in_proj_bias, out_proj_weight, out_proj_bias, attn_mask=None)
    -> (grad_query, grad_key, grad_value, grad_in_proj_weight, grad_in_proj_bias,
        grad_out_proj_weight, grad_out_proj_bias, grad_attn_mask)``.

    Recomputes the forward. A bias that was None gets None; grad_attn_mask is None for a bool
    mask or no mask, else the gradient of the float mask reduced to its shape.
    """
    fn = "multi_head_attention_backward"
    q, k, v, w_in, b_in, w_out, b_out = _mha_setup(fn, query, key, value, num_heads,
                                                   in_proj_weight, in_proj_bias,
                                                   out_proj_weight, out_proj_bias)
    g = np.asarray(grad_out)
    check_float(fn, "grad_out", g)
    if g.shape != q.shape:
        raise ShapeError(f"{fn}: grad_out must have shape {q.shape}, got {g.shape}")
    acc = _acc_dtype(q.dtype)
    dt = q.dtype
    E = q.shape[2]
    g = g.astype(acc)
    qa, ka, va = q.astype(acc), k.astype(acc), v.astype(acc)
    wq, wk, wv = (w.astype(acc) for w in np.split(w_in, 3))
    bq, bk, bv = (np.zeros(E, acc),) * 3 if b_in is None else \
        (b.astype(acc) for b in np.split(b_in, 3))
    Qp, Kp, Vp = qa @ wq.T + bq, ka @ wk.T + bk, va @ wv.T + bv
    Q, K, V = _heads(Qp, num_heads), _heads(Kp, num_heads), _heads(Vp, num_heads)
    mask = _mask4(attn_mask)
    O = _merge(scaled_dot_product_attention_forward(Q, K, V, mask))
    wo = w_out.astype(acc)
    g_wout = np.einsum("nle,nlf->ef", g, O)
    g_bout = None if b_out is None else g.sum(axis=(0, 1))
    dO = _heads(g @ wo, num_heads)
    dQ, dK, dV, dmask = scaled_dot_product_attention_backward(dO, Q, K, V, mask)
    dQp, dKp, dVp = _merge(dQ), _merge(dK), _merge(dV)
    gq, gk, gv = dQp @ wq, dKp @ wk, dVp @ wv
    g_win = np.concatenate([np.einsum("nle,nlf->ef", d, x)
                            for d, x in ((dQp, qa), (dKp, ka), (dVp, va))])
    g_bin = None if b_in is None else np.concatenate([d.sum(axis=(0, 1))
                                                       for d in (dQp, dKp, dVp)])
    cast = (lambda a: None if a is None else a.astype(dt))
    return (cast(gq), cast(gk), cast(gv), cast(g_win), cast(g_bin), cast(g_wout), cast(g_bout),
            dmask)


multi_head_attention = multi_head_attention_forward
