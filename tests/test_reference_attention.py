"""scaled_dot_product_attention and multi_head_attention references: against torch (optional
oracle), finite differences, masks (bool, float, causal, fully masked rows), GQA, broadcasting,
empty inputs and argument errors."""
import numpy as np
import pytest

from cvkernels.reference import attention as A
from helpers import assert_close, check_grads

F64 = dict(atol=1e-13, rtol=1e-12)       # float64 vs torch float64: a few ulps of short sums
EPS32 = float(np.finfo(np.float32).eps)
SDPA, SDPA_BWD = A.scaled_dot_product_attention, A.scaled_dot_product_attention_backward


def _torch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    return torch, F


def _torch_sdpa(q, k, v, mask, g, **kw):
    torch, F = _torch()
    ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    tm = None
    if mask is not None:
        tm = torch.tensor(mask, requires_grad=mask.dtype != bool)
    out = F.scaled_dot_product_attention(*ts, attn_mask=tm, **kw)
    out.backward(torch.tensor(g))
    grads = [t.grad for t in ts] + [None if tm is None or mask.dtype == bool else tm.grad]
    return out, grads


def _qkv(qs, ks, vs, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in (qs, ks, vs)]


CASES = {
    # name: (q shape, k shape, v shape, mask kind, kwargs)
    "basic": ((2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 7), None, {}),
    "3d_odd": ((3, 7, 5), (3, 11, 5), (3, 11, 3), None, {}),
    "2d_single": ((1, 4), (1, 4), (1, 2), None, {}),
    "broadcast_batch": ((2, 3, 5, 4), (1, 3, 6, 4), (2, 1, 6, 7), None, {}),
    "causal_L<S": ((2, 5, 4), (2, 8, 4), (2, 8, 4), None, {"is_causal": True}),
    "causal_L>S": ((2, 8, 4), (2, 5, 4), (2, 5, 4), None, {"is_causal": True}),
    "scale": ((2, 5, 4), (2, 6, 4), (2, 6, 4), None, {"scale": 0.37}),
    "bool_mask": ((2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 7), "bool", {}),
    "float_mask_bcast": ((2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 7), "float_bcast", {}),
    "float_mask_full": ((2, 5, 4), (2, 6, 4), (2, 6, 3), "float_full", {}),
    "gqa": ((2, 6, 5, 4), (2, 2, 6, 4), (2, 2, 6, 7), None, {"enable_gqa": True}),
    "gqa_causal": ((1, 4, 5, 8), (1, 1, 5, 8), (1, 1, 5, 8), None,
                   {"enable_gqa": True, "is_causal": True}),
}


def _mask(kind, qs, ks, seed):
    rng = np.random.default_rng(seed + 100)
    L, S = qs[-2], ks[-2]
    if kind is None:
        return None
    if kind == "bool":
        m = rng.random((L, S)) > 0.4
        m[1] = False                     # one fully masked row: zeros, not NaN
        return m
    if kind == "float_bcast":
        m = rng.standard_normal((3, 1, S))
        m[0, 0, :] = -np.inf              # query rows of head 0: masked through -inf
        m[1, 0, 2] = -np.inf
        return m
    return rng.standard_normal(qs[:-2] + (L, S))


@pytest.mark.parametrize("case", list(CASES))
def test_sdpa_vs_torch_float64(case):
    qs, ks, vs, kind, kw = CASES[case]
    q, k, v = _qkv(qs, ks, vs)
    mask = _mask(kind, qs, ks, 0)
    out = SDPA(q, k, v, mask, **kw)
    g = np.random.default_rng(9).standard_normal(out.shape)
    ref, tgrads = _torch_sdpa(q, k, v, mask, g, **kw)
    assert_close(out, ref, **F64, name="out")
    grads = SDPA_BWD(g, q, k, v, mask, **kw)
    for name, a, e in zip(("grad_query", "grad_key", "grad_value", "grad_attn_mask"), grads,
                          tgrads):
        if e is None:
            assert a is None, name
        else:
            assert_close(a, e, **F64, name=name)


@pytest.mark.parametrize("case", ["basic", "bool_mask", "causal_L<S"])
def test_sdpa_float32_error_at_most_twice_torch(case):
    torch, _ = _torch()
    qs, ks, vs, kind, kw = CASES[case]
    q, k, v = _qkv(qs, ks, vs, dtype=np.float32)
    mask = _mask(kind, qs, ks, 0)
    g = np.random.default_rng(9).standard_normal(SDPA(q, k, v, mask, **kw).shape).astype(np.float32)
    ours = [SDPA(q, k, v, mask, **kw)] + list(SDPA_BWD(g, q, k, v, mask, **kw)[:3])
    r32, g32 = _torch_sdpa(q, k, v, mask, g, **kw)
    r64, g64 = _torch_sdpa(*(a.astype(np.float64) for a in (q, k, v)), mask,
                           g.astype(np.float64), **kw)
    for name, a, t32, t64 in zip(("out", "grad_query", "grad_key", "grad_value"), ours,
                                 [r32] + g32[:3], [r64] + g64[:3]):
        t32, t64 = t32.detach().numpy(), t64.detach().numpy()
        assert a.dtype == np.float32, name
        err = float(np.max(np.abs(t32 - t64)))
        assert_close(a, t64, atol=2 * err + 8 * EPS32 * float(np.max(np.abs(t64))),
                     rtol=8 * EPS32, name=name, check_dtype=False)


def test_sdpa_fully_masked_rows_are_zero_with_zero_grads():
    q, k, v = _qkv((2, 4, 3), (2, 5, 3), (2, 5, 2), seed=3)
    bmask = np.ones((4, 5), bool)
    bmask[2] = False
    fmask = np.where(bmask, 0.0, -np.inf)
    for mask in (bmask, fmask):
        out = SDPA(q, k, v, mask)
        assert not np.isnan(out).any()
        assert_close(out[:, 2], np.zeros((2, 2)), atol=0, rtol=0, name="masked row")
        gq, gk, gv, gm = SDPA_BWD(np.ones_like(out), q, k, v, mask)
        for gr in (gq, gk, gv) + (() if gm is None else (gm,)):
            assert not np.isnan(gr).any()
        assert_close(gq[:, 2], np.zeros((2, 3)), atol=0, rtol=0, name="grad_query masked row")


def test_sdpa_causal_equals_explicit_tril_mask():
    q, k, v = _qkv((2, 6, 4), (2, 9, 4), (2, 9, 5), seed=4)
    tril = np.tril(np.ones((6, 9), bool))
    assert_close(SDPA(q, k, v, is_causal=True), SDPA(q, k, v, tril), atol=0, rtol=0)


def test_sdpa_single_key_returns_value():
    q, k, v = _qkv((3, 4, 5), (3, 1, 5), (3, 1, 2), seed=5)
    assert_close(SDPA(q, k, v), np.broadcast_to(v, (3, 4, 2)), atol=1e-15, rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", [None, "bool", "float_full", "causal", "gqa"])
def test_sdpa_finite_differences(seed, kind):
    kw = {}
    qs, ks, vs = (2, 3, 4), (2, 5, 4), (2, 5, 3)
    if kind == "causal":
        kw = {"is_causal": True}
    if kind == "gqa":
        qs, ks, vs, kw = (4, 3, 2), (2, 5, 2), (2, 5, 3), {"enable_gqa": True, "scale": 0.8}
    q, k, v = _qkv(qs, ks, vs, seed=seed)
    mask = _mask(kind if kind in ("bool", "float_full") else None, qs, ks, seed)
    if kind == "float_full":
        f = lambda a, b, c, m: SDPA(a, b, c, m, **kw)                  # noqa: E731
        check_grads(f, lambda g: SDPA_BWD(g, q, k, v, mask, **kw), [q, k, v, mask], seed=seed)
    else:
        f = lambda a, b, c: SDPA(a, b, c, mask, **kw)                  # noqa: E731
        check_grads(f, lambda g: SDPA_BWD(g, q, k, v, mask, **kw)[:3], [q, k, v], seed=seed)


@pytest.mark.parametrize("shapes", [((0, 4, 3), (0, 5, 3), (0, 5, 2)),
                                    ((2, 0, 3), (2, 5, 3), (2, 5, 2)),
                                    ((2, 4, 3), (2, 0, 3), (2, 0, 2))])
def test_sdpa_empty(shapes):
    q, k, v = _qkv(*shapes)
    out = SDPA(q, k, v)
    want = shapes[0][:-1] + (shapes[2][-1],)
    assert out.shape == want
    assert_close(out, np.zeros(want), atol=0, rtol=0)      # no keys: rows are zeros, as torch
    gq, gk, gv, _ = SDPA_BWD(np.ones(want), q, k, v)
    assert gq.shape == q.shape and gk.shape == k.shape and gv.shape == v.shape


def test_sdpa_non_contiguous():
    q, k, v = _qkv((3, 2, 5, 4), (3, 2, 6, 4), (3, 2, 7, 6), seed=6)
    qv, kv, vv = q.transpose(1, 0, 2, 3), k.transpose(1, 0, 2, 3), v.transpose(1, 0, 3, 2)
    assert not qv.flags.c_contiguous
    assert_close(SDPA(qv, kv, vv), SDPA(*(np.ascontiguousarray(a) for a in (qv, kv, vv))),
                 atol=0, rtol=0)


def test_sdpa_float16_keeps_dtype():
    q, k, v = _qkv((2, 5, 4), (2, 6, 4), (2, 6, 3), dtype=np.float16)
    out = SDPA(q, k, v)
    assert out.dtype == np.float16
    ref = SDPA(*(a.astype(np.float64) for a in (q, k, v)))
    # float32 arithmetic then one fp16 rounding: half an ulp of 2^-10 relative
    assert_close(out, ref.astype(np.float16), atol=1e-3, rtol=1e-3)
    assert all(g.dtype == np.float16 for g in SDPA_BWD(np.ones_like(out), q, k, v)[:3])


def test_sdpa_errors():
    q, k, v = _qkv((2, 5, 4), (2, 6, 4), (2, 6, 3))
    with pytest.raises(ValueError, match="dropout_p"):
        SDPA(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match="query and key"):
        SDPA(q, k[..., :3], v)
    with pytest.raises(ValueError, match="key and value"):
        SDPA(q, k, v[:, :5])
    with pytest.raises(TypeError, match="scaled_dot_product_attention: query"):
        SDPA(q.astype(np.int64), k, v)
    with pytest.raises(TypeError, match="scaled_dot_product_attention: arguments must share"):
        SDPA(q, k.astype(np.float32), v)
    with pytest.raises(ValueError, match="attn_mask"):
        SDPA(q, k, v, np.ones((5, 7), bool))
    with pytest.raises(ValueError, match="is_causal"):
        SDPA(q, k, v, np.ones((5, 6), bool), is_causal=True)
    with pytest.raises(TypeError, match="attn_mask"):
        SDPA(q, k, v, np.ones((5, 6), np.int64))
    with pytest.raises(ValueError, match="enable_gqa"):
        SDPA(np.zeros((3, 5, 4)), np.zeros((2, 6, 4)), np.zeros((2, 6, 3)), enable_gqa=True)
    with pytest.raises(ValueError, match="grad_out"):
        SDPA_BWD(np.ones((2, 5, 4)), q, k, v)


# ------------------------------------------------------------------------ multi_head_attention
def _mha_params(E, seed, bias=True):
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((3 * E, E)) / np.sqrt(E)
    b_in = rng.standard_normal(3 * E) * 0.1 if bias else None
    w_out = rng.standard_normal((E, E)) / np.sqrt(E)
    b_out = rng.standard_normal(E) * 0.1 if bias else None
    return w_in, b_in, w_out, b_out


@pytest.mark.parametrize("mask_kind", [None, "float", "bool"])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_vs_torch(mask_kind, bias):
    torch, F = _torch()
    N, L, S, E, H = 2, 5, 7, 8, 2
    rng = np.random.default_rng(11)
    q, k, v = (rng.standard_normal(s) for s in ((N, L, E), (N, S, E), (N, S, E)))
    params = _mha_params(E, 12, bias)
    mask = None
    if mask_kind == "float":
        mask = rng.standard_normal((L, S))
    elif mask_kind == "bool":
        mask = rng.random((L, S)) > 0.3
        mask[:, 0] = True                            # no fully masked rows (torch MHA gives NaN)
    out = A.multi_head_attention(q, k, v, H, *params, attn_mask=mask)
    g = rng.standard_normal(out.shape)
    tq, tk, tv = (torch.tensor(a.transpose(1, 0, 2).copy(), requires_grad=True)
                  for a in (q, k, v))
    tp = [None if p is None else torch.tensor(p, requires_grad=True) for p in params]
    tm = None
    if mask is not None:
        # nn.MultiheadAttention's bool convention is the opposite: True = masked out
        tm = torch.tensor(~mask) if mask.dtype == bool else torch.tensor(mask, requires_grad=True)
    ref, _ = F.multi_head_attention_forward(
        tq, tk, tv, E, H, tp[0], tp[1], None, None, False, 0.0, tp[2], tp[3], training=False,
        need_weights=False, attn_mask=tm)
    ref.backward(torch.tensor(g.transpose(1, 0, 2).copy()))
    assert_close(out, ref.detach().numpy().transpose(1, 0, 2), **F64, name="out")
    grads = A.multi_head_attention_backward(g, q, k, v, H, *params, attn_mask=mask)
    expect = [t.grad.numpy().transpose(1, 0, 2) for t in (tq, tk, tv)] + \
        [None if t is None else t.grad for t in tp] + \
        [tm.grad if mask_kind == "float" else None]
    names = ["query", "key", "value", "in_proj_weight", "in_proj_bias", "out_proj_weight",
             "out_proj_bias", "attn_mask"]
    for name, a, e in zip(names, grads, expect):
        if e is None:
            assert a is None, name
        else:
            assert_close(a, e, **F64, name=f"grad_{name}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mha_finite_differences(seed):
    N, L, S, E, H = 1, 3, 4, 4, 2
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s) for s in ((N, L, E), (N, S, E), (N, S, E)))
    params = list(_mha_params(E, seed + 20))
    mask = rng.standard_normal((L, S))
    f = lambda *a: A.multi_head_attention(*a[:3], H, *a[3:7], attn_mask=a[7])  # noqa: E731
    check_grads(f, lambda g: A.multi_head_attention_backward(g, q, k, v, H, *params,
                                                             attn_mask=mask),
                [q, k, v] + params + [mask], seed=seed)


def test_mha_errors_and_empty():
    E = 8
    p = _mha_params(E, 0)
    q = np.zeros((2, 3, E))
    with pytest.raises(ValueError, match="multi_head_attention: num_heads"):
        A.multi_head_attention(q, q, q, 3, *p)
    with pytest.raises(ValueError, match="multi_head_attention: in_proj_weight"):
        A.multi_head_attention(q, q, q, 2, p[0][:E], *p[1:])
    with pytest.raises(ValueError, match="multi_head_attention: query"):
        A.multi_head_attention(q[0], q, q, 2, *p)
    with pytest.raises(ValueError, match="multi_head_attention: key and value"):
        A.multi_head_attention(q, q[:1], q, 2, *p)
    out = A.multi_head_attention(np.zeros((0, 3, E)), np.zeros((0, 4, E)), np.zeros((0, 4, E)),
                                 2, *p)
    assert out.shape == (0, 3, E)


def test_all_names_exported():
    import cvkernels.reference as R
    for op in ("scaled_dot_product_attention", "multi_head_attention"):
        for suffix in ("", "_forward", "_backward"):
            assert f"{op}{suffix}" in A.__all__ and hasattr(R, f"{op}{suffix}")
            assert getattr(A, f"{op}{suffix}").__doc__
