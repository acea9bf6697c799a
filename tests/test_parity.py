"""Issue 10 (drop-in parity with torch): each item against torch itself, on tiny shapes.

Crashes (matmul 1-D @ 1-D backward, batched_nms empty with None, unbatched MHA with a 1-D
key_padding_mask), pad / padding_mode / 1-tuples / Conv2d constructor checks, integer boxes,
group_norm, scaled_dot_product_attention (NaN/inf rows, dropout), MultiheadAttention's
arguments, and the kernel backends' NotImplementedError for the new ops.
"""
import cvkernels
import numpy as np
import pytest
from cvkernels import backends, nn, ops
from cvkernels import functional as F
from cvkernels import reference as R
from cvkernels.autograd import Tensor
from helpers import assert_close, check_grads

torch = pytest.importorskip("torch")
TF = torch.nn.functional
needs_sim = pytest.mark.skipif(not backends.get("sim").available(), reason="_cudasim not built")
TOL = dict(atol=1e-12, rtol=1e-10)


def _run_both(ours_fn, torch_fn, arrays, grad_seed=0):
    """Forward and backward of ours (Tensors) and torch on the same float64 arrays."""
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = ours_fn(*ts), torch_fn(*tt)
    g = np.random.default_rng(grad_seed).standard_normal(tuple(ref.shape))
    out.backward(Tensor(g))
    ref.backward(torch.tensor(g))
    assert_close(out, ref, **TOL, name="forward")
    for i, (a, b) in enumerate(zip(ts, tt)):
        assert_close(a.grad, b.grad, **TOL, name=f"grad[{i}]")


# ------------------------------------------------------------------------------------ crashes
@pytest.mark.parametrize("backend", ["cpu", pytest.param("sim", marks=[pytest.mark.sim,
                                                                     needs_sim])])
def test_matmul_1d_1d_backward(backend):
    a, b = np.arange(1.0, 4.0, dtype=np.float32), np.array([2.0, -1.0, 0.5], np.float32)
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    with cvkernels.backend(backend):
        y = F.matmul(ta, tb)
        y.backward(Tensor(np.array(3.0, np.float32)))
    assert y.shape == ()
    assert_close(ta.grad, 3 * b, atol=0, rtol=0, name="grad_input")
    assert_close(tb.grad, 3 * a, atol=0, rtol=0, name="grad_other")


def test_batched_nms_empty_with_none():
    empty = np.zeros((0, 4), np.float32)
    for args in ((None, None, None), (np.zeros(0, np.float32), None, None),
                 (None, np.zeros(0, np.int64), 0.5)):
        keep = ops.batched_nms(empty, *args)
        assert keep.shape == (0,) and keep.dtype == np.int64
    with pytest.raises(TypeError, match="batched_nms: idxs"):      # a given argument is checked
        ops.batched_nms(empty, None, np.zeros(0, np.float32), None)
    with pytest.raises(TypeError):                                  # non-empty still needs them
        ops.batched_nms(np.zeros((2, 4), np.float32), None, None, None)


def test_box_iou_integer_boxes():
    b1 = np.array([[0, 0, 2, 2], [1, 1, 4, 3]], np.int64)
    b2 = np.array([[1, 1, 3, 3]], np.int32)
    want = R.box_iou(b1.astype(np.float64), b2.astype(np.float64))
    out = ops.box_iou(b1, b2)
    assert out.dtype == np.float32                       # torch: int / int is float32
    assert_close(out, want, atol=0, rtol=2**-24, check_dtype=False, name="int boxes")
    assert ops.box_iou(b1, b2.astype(np.float64)).dtype == np.float64


# ------------------------------------------------------------------------------ pad and convs
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,pad", [((2, 3, 4, 5), (1, 2, 2, 1)), ((3, 4, 5), (2, 0)),
                                       ((2, 3, 4, 5), (1, 0, 0, 2, 1, 1)),
                                       ((2, 3, 4, 5), (-1, 2, 1, -2))])
def test_pad_matches_torch(mode, shape, pad):
    x = np.random.default_rng(0).standard_normal(shape)
    try:
        TF.pad(torch.tensor(x), pad, mode=mode)
    except (RuntimeError, NotImplementedError) as e:        # torch refuses: so must we
        with pytest.raises(type(e) if isinstance(e, NotImplementedError) else RuntimeError):
            F.pad(x, pad, mode=mode)
        return
    _run_both(lambda t: F.pad(t, pad, mode=mode), lambda t: TF.pad(t, pad, mode=mode), [x])
    assert F.pad(x, pad, mode=mode).dtype == x.dtype


def test_pad_value_and_errors():
    x = np.ones((1, 2, 2), np.float32)
    assert_close(F.pad(x, (1, 1), value=-3.0), TF.pad(torch.tensor(x), (1, 1), value=-3.0),
                 atol=0, rtol=0)
    with pytest.raises(ValueError, match="pad: mode"):
        F.pad(x, (1, 1), mode="wrap")
    with pytest.raises(ValueError, match="pad: pad must have an even length"):
        F.pad(x, (1, 1, 1))
    with pytest.raises(ValueError, match="reflect padding"):
        F.pad(x, (2, 0), mode="reflect")


def _pair_conv(mode, padding, stride, dilation, seed=0):
    ours = nn.Conv2d(3, 4, (3, 2), stride=stride, padding=padding, dilation=dilation,
                     padding_mode=mode, dtype=np.float64, generator=np.random.default_rng(seed))
    theirs = torch.nn.Conv2d(3, 4, (3, 2), stride=stride, padding=padding, dilation=dilation,
                             padding_mode=mode).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding,stride,dilation", [(1, 1, 1), ((2, 1), 2, 1),
                                                     ("same", 1, (2, 1)), ("valid", 1, 1)])
def test_conv2d_padding_mode_matches_torch(mode, padding, stride, dilation):
    ours, theirs = _pair_conv(mode, padding, stride, dilation)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5))
    for inp in (x, x[0]):                                   # batched and unbatched
        t, tt = Tensor(inp, requires_grad=True), torch.tensor(inp, requires_grad=True)
        out, ref = ours(t), theirs(tt)
        g = np.random.default_rng(2).standard_normal(tuple(ref.shape))
        out.backward(Tensor(g))
        ref.backward(torch.tensor(g))
        assert_close(out, ref, **TOL, name=f"{mode} forward")
        assert_close(t.grad, tt.grad, **TOL, name=f"{mode} grad_input")
    assert_close(ours.weight.grad, theirs.weight.grad, atol=1e-11, rtol=1e-10, name="grad_w")


def test_conv2d_constructor_checks():
    for kwargs in (dict(padding="foo"), dict(padding_mode="zero"),
                   dict(padding="same", stride=2)):
        with pytest.raises(ValueError):
            torch.nn.Conv2d(3, 4, 3, **kwargs)
        with pytest.raises(ValueError, match="Conv2d"):
            nn.Conv2d(3, 4, 3, **kwargs)


def test_one_tuples_as_torch():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    assert_close(F.conv2d(x, w, padding=(1,), stride=(2,), dilation=(1,)),
                 TF.conv2d(torch.tensor(x), torch.tensor(w), padding=(1,), stride=(2,),
                           dilation=(1,)), **TOL, name="conv2d 1-tuples")
    wt = rng.standard_normal((2, 3, 3, 3))
    assert_close(F.conv_transpose2d(x, wt, padding=(1,), stride=(2,), output_padding=(1,)),
                 TF.conv_transpose2d(torch.tensor(x), torch.tensor(wt), padding=(1,),
                                     stride=(2,), output_padding=(1,)), **TOL,
                 name="conv_transpose2d 1-tuples")
    assert nn.Conv2d(2, 3, (3,), padding=(1,)).padding == (1, 1)


# -------------------------------------------------------------------------------- group_norm
@pytest.mark.parametrize("shape,groups,affine", [((2, 6, 3, 2), 3, True), ((3, 4), 2, True),
                                                 ((2, 4, 5), 4, False), ((1, 6, 2, 2), 1, True),
                                                 ((0, 4, 3), 2, True)])
def test_group_norm_matches_torch(shape, groups, affine):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) * 3 + 1
    if affine:
        w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
        _run_both(lambda *a: F.group_norm(a[0], groups, a[1], a[2], 1e-3),
                  lambda *a: TF.group_norm(a[0], groups, a[1], a[2], 1e-3), [x, w, b])
    else:
        _run_both(lambda t: F.group_norm(t, groups), lambda t: TF.group_norm(t, groups), [x])


def test_group_norm_grads_and_module():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 4, 3)), rng.standard_normal(4), rng.standard_normal(4)
    check_grads(lambda x, w, b: R.group_norm_forward(x, 2, w, b),
                lambda g: [r for r in R.group_norm_backward(g, x, 2, w, b) if r is not None],
                [x, w, b], atol=1e-6, rtol=1e-5)
    x32 = x.astype(np.float32)
    assert R.group_norm_forward(x32, 2).dtype == np.float32
    ours, theirs = nn.GroupNorm(2, 4, dtype=np.float64), torch.nn.GroupNorm(2, 4).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert_close(ours(x), theirs(torch.tensor(x)), **TOL, name="nn.GroupNorm")
    with pytest.raises(ValueError, match="divisible by num_groups"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match="GroupNorm"):
        nn.GroupNorm(3, 4)


# ----------------------------------------------------------------------------------- sdpa
def test_sdpa_nan_and_overflow_rows_as_torch():
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), \
        rng.standard_normal((2, 5, 4))
    k_nan = k.copy()
    k_nan[0, 1, 0] = np.nan                        # NaN in one key: every row of batch 0
    k_inf = k.copy()
    k_inf[1, 2, :] = np.inf                        # +inf scores for some rows, -inf for others
    mask = np.ones((3, 5), bool)
    mask[1] = False                                # one fully masked row: zeros (safe softmax)
    for kk, m in ((k_nan, None), (k_inf, None), (k, mask), (k_nan, mask)):
        ref = TF.scaled_dot_product_attention(
            torch.tensor(q), torch.tensor(kk), torch.tensor(v),
            attn_mask=None if m is None else torch.tensor(m))
        out = F.scaled_dot_product_attention(q, kk, v, attn_mask=m)
        assert_close(out, ref, **TOL, name="sdpa special rows")
    assert np.isnan(F.scaled_dot_product_attention(q, k_nan, v)[0]).all()


def test_sdpa_dropout_statistics_reproducibility_and_grads():
    rng = np.random.default_rng(7)
    q, k, v = rng.standard_normal((2, 2, 16, 8)), rng.standard_normal((2, 2, 32, 8)), \
        np.ones((2, 2, 32, 8))
    p = 0.25
    out1 = F.scaled_dot_product_attention(q, k, v, dropout_p=p,
                                          generator=np.random.default_rng(1))
    out2 = F.scaled_dot_product_attention(q, k, v, dropout_p=p,
                                          generator=np.random.default_rng(1))
    assert_close(out1, out2, atol=0, rtol=0, name="same generator, same result")
    # with v = 1 each output is sum(P * keep) / (1 - p): mean 1 over rows, keep rate 1 - p
    _, keep = R.scaled_dot_product_attention_forward(q, k, v, dropout_p=p, return_mask=True,
                                                     generator=np.random.default_rng(2))
    rate = keep.mean()
    n = keep.size
    assert abs(rate - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n), rate
    assert abs(out1.mean() - 1.0) < 0.05
    cvkernels.nn.manual_seed(3)
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    cvkernels.nn.manual_seed(3)
    assert_close(F.scaled_dot_product_attention(q, k, v, dropout_p=p), a, atol=0, rtol=0,
                 name="default generator follows manual_seed")
    assert not np.allclose(a, F.scaled_dot_product_attention(q, k, v))
    assert_close(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0), np.zeros_like(a),
                 atol=0, rtol=0, name="p = 1")
    # backward: finite differences with the keep-mask held fixed
    q, k, v = (rng.standard_normal(s) for s in ((1, 3, 4), (1, 5, 4), (1, 5, 2)))
    _, keep = R.scaled_dot_product_attention_forward(q, k, v, dropout_p=0.5, return_mask=True,
                                                     generator=np.random.default_rng(4))
    fixed = type("G", (), {"random": lambda self, shape: np.where(keep, 1.0, 0.0)})()
    check_grads(lambda q, k, v: R.scaled_dot_product_attention_forward(
                    q, k, v, dropout_p=0.5, generator=fixed),
                lambda g: R.scaled_dot_product_attention_backward(
                    g, q, k, v, dropout_p=0.5, dropout_mask=keep)[:3], [q, k, v])
    tq = Tensor(q, requires_grad=True)
    y = F.scaled_dot_product_attention(tq, k, v, dropout_p=0.5, generator=fixed)
    y.backward(Tensor(np.ones(y.shape)))
    want = R.scaled_dot_product_attention_backward(np.ones(y.shape), q, k, v, dropout_p=0.5,
                                                   dropout_mask=keep)[0]
    assert_close(tq.grad, want, **TOL, name="autograd reuses the forward's mask")


# ------------------------------------------------------------------------- MultiheadAttention
def _mha_pair(E=8, H=2, seed=0, **kw):
    ours = nn.MultiheadAttention(E, H, dtype=np.float64, generator=np.random.default_rng(seed),
                                 **kw)
    theirs = torch.nn.MultiheadAttention(E, H, **kw).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


MHA_CASES = [  # (kdim, vdim, add_bias_kv, add_zero_attn, batch_first, bias, unbatched)
    (None, None, False, False, False, True, False),
    (6, 7, True, True, True, True, False),
    (6, 5, False, True, False, False, True),
    (None, None, True, False, True, True, True),
    (None, None, True, True, False, False, False),
]


@pytest.mark.parametrize("kdim,vdim,bias_kv,zero_attn,batch_first,bias,unbatched", MHA_CASES)
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
def test_multihead_attention_matches_torch(kdim, vdim, bias_kv, zero_attn, batch_first, bias,
                                           unbatched, need_weights, average):
    E, L, S, N = 8, 3, 4, 2
    ours, theirs = _mha_pair(E, 2, kdim=kdim, vdim=vdim, add_bias_kv=bias_kv,
                             add_zero_attn=zero_attn, batch_first=batch_first, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(8)
    shape = (lambda n, d: (n, d)) if unbatched else \
        (lambda n, d: (N, n, d)) if batch_first else (lambda n, d: (n, N, d))
    q, k, v = (rng.standard_normal(shape(n, d))
               for n, d in ((L, E), (S, kdim or E), (S, vdim or E)))
    kpm = np.zeros((S,) if unbatched else (N, S), bool)
    kpm[..., 1] = True                                  # torch convention: True = ignore
    am = np.triu(np.ones((L, S), bool), 2)
    ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    tt = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    kw = dict(need_weights=need_weights, average_attn_weights=average)
    out, w = ours(*ts, key_padding_mask=kpm, attn_mask=am, **kw)
    ref, wt = theirs(*tt, key_padding_mask=torch.tensor(kpm), attn_mask=torch.tensor(am), **kw)
    g = rng.standard_normal(tuple(ref.shape))
    out.backward(Tensor(g))
    ref.backward(torch.tensor(g))
    assert_close(out, ref, **TOL, name="attn_output")
    if need_weights:
        assert_close(w, wt, **TOL, name="attn_weights")
    else:
        assert w is None and wt is None
    for i, (a, b) in enumerate(zip(ts, tt)):
        assert_close(a.grad, b.grad, **TOL, name=f"grad input {i}")
    tp = dict(theirs.named_parameters())
    for n, prm in ours.named_parameters():
        assert_close(prm.grad, tp[n].grad, **TOL, name=f"grad {n}")


def test_multihead_attention_unbatched_1d_key_padding_mask_and_float_masks():
    ours, theirs = _mha_pair()
    rng = np.random.default_rng(9)
    q, k = rng.standard_normal((3, 8)), rng.standard_normal((5, 8))
    kpm = np.array([False, True, False, False, True])
    am = rng.standard_normal((2, 3, 5))                  # (H, L, S) float mask, unbatched
    out, w = ours(q, k, k, key_padding_mask=kpm, attn_mask=am)
    ref, wt = theirs(*(torch.tensor(a) for a in (q, k, k)), key_padding_mask=torch.tensor(kpm),
                     attn_mask=torch.tensor(am))
    assert_close(out, ref, **TOL, name="unbatched output")
    assert_close(w, wt, **TOL, name="unbatched weights")
    am3 = rng.standard_normal((2 * 2, 3, 5))             # (N*H, L, S), batched
    xb = rng.standard_normal((3, 2, 8))
    kb = rng.standard_normal((5, 2, 8))
    out, _ = ours(xb, kb, kb, attn_mask=am3)
    ref, _ = theirs(torch.tensor(xb), torch.tensor(kb), torch.tensor(kb),
                    attn_mask=torch.tensor(am3))
    assert_close(out, ref, **TOL, name="(N*H, L, S) mask")


def test_multihead_attention_fully_masked_row_as_torch_paths():
    ours, theirs = _mha_pair()
    rng = np.random.default_rng(10)
    x, kv = rng.standard_normal((3, 1, 8)), rng.standard_normal((4, 1, 8))
    kpm = np.ones((1, 4), bool)                          # every key masked
    for need_weights in (True, False):
        out, _ = ours(x, kv, kv, key_padding_mask=kpm, need_weights=need_weights)
        ref, _ = theirs(torch.tensor(x), torch.tensor(kv), torch.tensor(kv),
                        key_padding_mask=torch.tensor(kpm), need_weights=need_weights)
        assert_close(out, ref, **TOL, name=f"need_weights={need_weights}")
        assert np.isnan(out.numpy()).all() == need_weights


def test_multihead_attention_dropout_and_functional():
    ours = nn.MultiheadAttention(8, 2, dropout=0.5, dtype=np.float64,
                                 generator=np.random.default_rng(0))
    x = np.random.default_rng(11).standard_normal((3, 2, 8))
    ours.generator = np.random.default_rng(5)
    a, wa = ours(x, x, x, average_attn_weights=False)
    ours.generator = np.random.default_rng(5)
    b, _ = ours(x, x, x)
    assert_close(a, b, atol=0, rtol=0, name="same generator, same dropout")
    w = wa.numpy()
    assert (w == 0).any() and np.allclose(np.unique(w[w > 0] * 0 + 1), 1)
    ours.eval()
    c, _ = ours(x, x, x)
    assert not np.allclose(a.numpy(), c.numpy())         # eval: no dropout
    _, theirs = _mha_pair()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    theirs.eval()
    assert_close(c, theirs(*(torch.tensor(x),) * 3)[0], **TOL, name="eval output")
    out, w = F.multi_head_attention_forward(
        x, x, x, 8, 2, ours.in_proj_weight.numpy(), ours.in_proj_bias.numpy(), None, None,
        False, 0.0, ours.out_proj.weight.numpy(), ours.out_proj.bias.numpy())
    assert_close(out, c.numpy(), **TOL, name="functional on raw arrays")
    with pytest.raises(ValueError, match="is_causal"):
        F.multi_head_attention_forward(
            x, x, x, 8, 2, ours.in_proj_weight.numpy(), None, None, None, False, 0.0,
            ours.out_proj.weight.numpy(), None, is_causal=True)


def test_mha_reference_grads_finite_differences():
    rng = np.random.default_rng(12)
    E, H = 4, 2
    q, k, v = rng.standard_normal((2, 1, E)), rng.standard_normal((3, 1, 3)), \
        rng.standard_normal((3, 1, 5))
    wq, wk, wv = rng.standard_normal((E, E)), rng.standard_normal((E, 3)), \
        rng.standard_normal((E, 5))
    bin_, bk, bv = rng.standard_normal(3 * E), rng.standard_normal((1, 1, E)), \
        rng.standard_normal((1, 1, E))
    wo, bo, am = rng.standard_normal((E, E)), rng.standard_normal(E), rng.standard_normal((2, 3))

    def f(q, k, v, bin_, bk, bv, wo, bo, am, wq, wk, wv):
        return R.mha_forward(q, k, v, E, H, None, bin_, bk, bv, True, 0.0, wo, bo,
                             attn_mask=am, use_separate_proj_weight=True, q_proj_weight=wq,
                             k_proj_weight=wk, v_proj_weight=wv)[0]

    def back(g):
        r = R.mha_backward(g, q, k, v, E, H, None, bin_, bk, bv, True, 0.0, wo, bo,
                           attn_mask=am, use_separate_proj_weight=True, q_proj_weight=wq,
                           k_proj_weight=wk, v_proj_weight=wv)
        return [r[i] for i in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12)]
    check_grads(f, back, [q, k, v, bin_, bk, bv, wo, bo, am, wq, wk, wv], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- kernel backends refuse by name
@pytest.mark.sim
@needs_sim
@pytest.mark.parametrize("name,call", [
    ("pad", lambda x: F.pad(x, (1, 1), mode="reflect")),
    ("group_norm", lambda x: F.group_norm(x, 1)),
    ("scaled_dot_product_attention",
     lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.5)),
    ("mha", lambda x: nn.MultiheadAttention(3, 1)(x, x, x)),
    ("pad", lambda x: nn.Conv2d(2, 2, 1, padding=1, padding_mode="circular")(x[None])),
])
def test_kernel_backend_refuses_new_ops_by_name(name, call):
    x = np.ones((2, 3, 3), np.float32)
    with cvkernels.backend("sim"), pytest.raises(NotImplementedError,
                                                 match=f"{name}: backend 'sim'"):
        call(x)


def test_mha_cases_cover_each_argument():
    """The parametrization above sets every MHA argument at least once each way."""
    cols = list(zip(*MHA_CASES))
    assert all({bool(x) for x in c} == {True, False} for c in cols), cols
