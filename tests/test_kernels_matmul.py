"""matmul_forward_kernel (matmul, linear; forward and backward) against the float64 reference,
on both launch paths, on the simulator and (where present) on a GPU."""
import numpy as np
import pytest

from cvkernels import reference as ref
from cvkernels.spec import FLOAT32
from cvkernels.specs import matmul as K
from cvkernels.specs import softmax as S
from helpers import assert_close, to_numpy
from runtimes import put, rt  # noqa: F401  (fixture)

from cvkernels.numerics import U32


def matmul_bound(a, b):
    """Elementwise rounding bound of an fp32 product: gamma_K * (|a| @ |b|) (+ input rounding)."""
    k = a.shape[-1] if a.ndim > 1 else a.shape[0]
    return (k + 2) * U32 * np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


SHAPES = [(1, 1, 1), (17, 31, 33), (33, 17, 1), (127, 129, 5), (129, 127, 64), (1, 129, 17),
          (65, 1, 31), (31, 33, 129), (200, 130, 9)]


@pytest.mark.parametrize("M,N,Kd", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_forward_shapes(rt, M, N, Kd, ta, tb):
    rng = np.random.default_rng(M * 1000 + N + Kd)
    a = rand(rng, Kd, M).T if ta else rand(rng, M, Kd)     # transposed views: TRANS flags
    b = rand(rng, N, Kd).T if tb else rand(rng, Kd, N)
    out = K.matmul_forward(rt, put(rt, a), put(rt, b))
    assert_close(out, ref.matmul_forward(a, b), atol=matmul_bound(a, b), rtol=0)


def test_matmul_small_integers_exact(rt):
    rng = np.random.default_rng(0)
    a = rng.integers(-8, 9, (67, 45)).astype(np.float32)
    b = rng.integers(-8, 9, (45, 131)).astype(np.float32)
    out = K.matmul_forward(rt, put(rt, a), put(rt, b))
    assert_close(out, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32), atol=0, rtol=0)


@pytest.mark.parametrize("sa,sb", [((3, 17, 9), (3, 9, 5)), ((17, 9), (4, 9, 5)),
                                   ((2, 1, 17, 9), (3, 9, 5)), ((9,), (2, 9, 5)),
                                   ((2, 7, 9), (9,)), ((9,), (9,)), ((0, 4, 3), (3, 5)),
                                   ((4, 0), (0, 5)), ((4, 3), (3, 0))])
def test_matmul_forward_batched_and_edge(rt, sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a, b = rand(rng, *sa), rand(rng, *sb)
    out = K.matmul_forward(rt, put(rt, a), put(rt, b))
    assert_close(out, ref.matmul_forward(a, b), atol=matmul_bound(a, b) + 0.0, rtol=0)


def test_matmul_noncontiguous(rt):
    rng = np.random.default_rng(3)
    base_a, base_b = rand(rng, 40, 70), rand(rng, 3, 60, 50)
    a = base_a[::2, 1::3]            # strided view (20, 23)
    b = base_b[:, 5:28, ::2]         # (3, 23, 25)
    out = K.matmul_forward(rt, put(rt, a), put(rt, b))
    assert_close(out, ref.matmul_forward(a, b), atol=matmul_bound(a, b), rtol=0)


@pytest.mark.parametrize("sa,sb", [((17, 9), (9, 5)), ((3, 17, 9), (9, 5)), ((9,), (2, 9, 5)),
                                   ((2, 1, 7, 9), (3, 9, 4))])
def test_matmul_backward(rt, sa, sb):
    rng = np.random.default_rng(7)
    a, b = rand(rng, *sa), rand(rng, *sb)
    g = rand(rng, *ref.matmul_forward(a, b).shape)
    ga, gb = K.matmul_backward(rt, put(rt, g), put(rt, a), put(rt, b))
    ea, eb = ref.matmul_backward(g.astype(np.float64), a.astype(np.float64), b.astype(np.float64))
    # each gradient is itself an fp32 product (then a sum over broadcast batch dims)
    nb = max(1, int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))))
    tol_a = (sb[-1] + nb + 2) * U32 * np.abs(ref.matmul_backward(np.abs(g.astype(np.float64)),
                                                                 np.abs(a.astype(np.float64)),
                                                                 np.abs(b.astype(np.float64)))[0])
    tol_b = ((sa[-2] if len(sa) > 1 else 1) * nb + 2) * U32 * np.abs(
        ref.matmul_backward(np.abs(g.astype(np.float64)), np.abs(a.astype(np.float64)),
                            np.abs(b.astype(np.float64)))[1])
    assert_close(ga, ea.astype(np.float32), atol=tol_a + 1e-30, rtol=0, name="grad_input")
    assert_close(gb, eb.astype(np.float32), atol=tol_b + 1e-30, rtol=0, name="grad_other")


@pytest.mark.parametrize("rows,in_f,out_f", [(1, 1, 1), (33, 17, 31), (129, 65, 10), (0, 4, 3),
                                             (5, 0, 3)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward_backward(rt, rows, in_f, out_f, with_bias):
    rng = np.random.default_rng(rows + in_f + out_f)
    x, w = rand(rng, 2, rows, in_f), rand(rng, out_f, in_f)
    bias = rand(rng, out_f) if with_bias else None
    out = K.linear_forward(rt, put(rt, x), put(rt, w), None if bias is None else put(rt, bias))
    expect = ref.linear_forward(x, w, bias)
    tol = (in_f + 3) * U32 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
                              + (0 if bias is None else np.abs(bias)))
    assert_close(out, expect, atol=tol + 1e-30, rtol=0)
    g = rand(rng, *expect.shape)
    gx, gw, gb = K.linear_backward(rt, put(rt, g), put(rt, x), put(rt, w),
                                   None if bias is None else put(rt, bias))
    ex, ew, eb = ref.linear_backward(g.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), None if bias is None else bias)
    ax, aw, _ = ref.linear_backward(np.abs(g.astype(np.float64)), np.abs(x.astype(np.float64)),
                                    np.abs(w.astype(np.float64)))
    assert_close(gx, ex.astype(np.float32), atol=(out_f + 2) * U32 * ax + 1e-30, rtol=0,
                 name="grad_input")
    assert_close(gw, ew.astype(np.float32), atol=(2 * rows + 2) * U32 * aw + 1e-30, rtol=0,
                 name="grad_weight")
    if with_bias:
        assert_close(gb, eb.astype(np.float32), atol=(2 * rows + 2) * U32 *
                     np.abs(g).reshape(-1, out_f).sum(0) + 1e-30, rtol=0, name="grad_bias")
    else:
        assert gb is None


def test_linear_transposed_weight_view(rt):
    rng = np.random.default_rng(11)
    x, wt = rand(rng, 13, 7), rand(rng, 7, 9)
    w = wt.T                                   # [9, 7] view: read in place, no TRANS_B needed
    out = K.linear_forward(rt, put(rt, x), put(rt, w))
    tol = 9 * U32 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T)
    assert_close(out, ref.linear_forward(x, w), atol=tol, rtol=0)


def test_matmul_rejects_bad_input(rt):
    a = put(rt, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="matmul: input and other"):
        K.matmul_forward(rt, a, put(rt, np.zeros((5, 2), np.float32)))
    with pytest.raises(TypeError, match="matmul: other must have dtype"):
        K.matmul_forward(rt, a, put(rt, np.zeros((4, 2), np.int32)))
    with pytest.raises(TypeError, match="float32, float16, bfloat16 kernels; input has dtype float64"):
        K.matmul_forward(rt, put(rt, np.zeros((3, 4))), put(rt, np.zeros((4, 2))))
    with pytest.raises(ValueError, match="linear: bias must have shape"):
        K.linear_forward(rt, a, put(rt, np.zeros((2, 4), np.float32)),
                         put(rt, np.zeros(3, np.float32)))


def test_matmul_batch_offsets_past_2_31_elements(rt, tmp_path):
    """The second batch item of A starts 2^31 + 16 elements in: 32-bit offsets would wrap.
    A sparse memory map keeps this cheap: only the touched pages exist."""
    if rt.xp is not np:
        pytest.skip("the sparse host mapping is a simulator trick; GPU runs need 8.6 GB")
    M, N, Kd = 5, 7, 3
    stride = 2 ** 31 + 16
    a = np.memmap(tmp_path / "a.bin", dtype=np.float32, mode="w+", shape=(stride + M * Kd,))
    rng = np.random.default_rng(1)
    a0, a1, b = rand(rng, M, Kd), rand(rng, M, Kd), rand(rng, Kd, N)
    a[:M * Kd] = a0.ravel()
    a[stride:] = a1.ravel()
    c = np.full((2, M, N), np.nan, np.float32)
    plan = K.plan_forward(rt.device(), FLOAT32, 2, M, N, Kd, False, False, False)
    rt.launch(plan, A=a, B=b, bias=None, C=c, batch=2, M=M, N=N, K=Kd, stride_a=stride,
              stride_b=0)
    assert_close(c[0], ref.matmul_forward(a0, b), atol=matmul_bound(a0, b), rtol=0)
    assert_close(c[1], ref.matmul_forward(a1, b), atol=matmul_bound(a1, b), rtol=0)
    del a


@pytest.mark.gpu
def test_cuda_and_rawkernel_agree_bitwise():
    """Same source, same plan, same flush-to-zero mode (-ftz=true on both: CuPy appends it to
    every NVRTC compile): the two GPU launch paths give identical bits, subnormal inputs and
    outputs included."""
    from runtimes import make_runtime
    cuda, raw = make_runtime("cuda"), make_runtime("rawkernel")
    rng = np.random.default_rng(2)
    a, b = rand(rng, 300, 129), rand(rng, 129, 257)
    x = rand(rng, 67, 3001)
    tiny = np.float32(1e-39)                                   # subnormal fp32
    a_sub = (a * np.float32(1e-20)).astype(np.float32)        # products ~1e-40: subnormal
    b_sub = b.copy()
    b_sub[::3] = tiny
    x_sub = x * np.float32(40.0)                                # exp underflows to subnormals
    x_sub[:, ::7] = tiny
    assert (np.abs(a_sub) < np.finfo(np.float32).tiny).any()
    for fn, args in [(K.matmul_forward, (a, b)), (S.softmax_forward, (x,)),
                     (S.log_softmax_forward, (x,)), (K.matmul_forward, (a_sub, b_sub)),
                     (S.softmax_forward, (x_sub,))]:
        got_cuda = to_numpy(fn(cuda, *[put(cuda, v) for v in args]))
        got_raw = to_numpy(fn(raw, *[put(raw, v) for v in args]))
        np.testing.assert_array_equal(got_cuda.view(np.uint32), got_raw.view(np.uint32))


@pytest.mark.parametrize("ta,tb,with_bias", [(False, False, False), (True, False, False),
                                             (False, True, True), (True, True, False)])
def test_matmul_big_tile(rt, ta, tb, with_bias):
    """33 x (2 x 2) tiles of 128x128 reach the plan's threshold (132 tiles), so this runs the
    128x128/8x8 instantiation the large benchmarks use; 129x130 also leaves ragged edges."""
    M, N, Kd, batch = 129, 130, 9, 33
    plan = K.plan_forward(rt.device(), FLOAT32, batch, M, N, Kd, ta, tb, with_bias)
    assert plan.name.startswith("matmul_forward_kernel<float, 128, 128"), plan.name
    rng = np.random.default_rng(int(ta) * 2 + int(tb))
    # The contiguous bases go to the device and the transposed views are taken there
    # (cupy.asarray of a non-contiguous numpy view would make a contiguous copy).
    a_base = rng.integers(-4, 5, (batch, Kd, M) if ta else (batch, M, Kd)).astype(np.float32)
    b_base = rng.integers(-4, 5, (batch, N, Kd) if tb else (batch, Kd, N)).astype(np.float32)
    a = a_base.swapaxes(1, 2) if ta else a_base
    b = b_base.swapaxes(1, 2) if tb else b_base
    a_in = put(rt, a_base).swapaxes(1, 2) if ta else put(rt, a_base)
    b_in = put(rt, b_base).swapaxes(1, 2) if tb else put(rt, b_base)
    bias = rng.integers(-4, 5, N).astype(np.float32) if with_bias else None
    c = rt.xp.empty((batch, M, N), dtype=np.float32)
    a3, sa, ta_ = K._operand(rt, a_in, (batch,))
    b3, sb, tb_ = K._operand(rt, b_in, (batch,))
    assert (ta_, tb_) == (ta, tb)                      # the transposed views are read in place
    rt.launch(plan, A=a3, B=b3, bias=None if bias is None else put(rt, bias), C=c, batch=batch,
              M=M, N=N, K=Kd, stride_a=sa, stride_b=sb)
    expect = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32)
    if with_bias:
        expect = expect + bias
    assert_close(c, expect, atol=0, rtol=0)            # small integers: exact


def test_backward_rejects_misshapen_grad_out(rt):
    x, w = put(rt, np.zeros((3, 4), np.float32)), put(rt, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"linear_backward: grad_out must have the output's "
                                         r"shape \(3, 2\), got \(2, 3\)"):
        K.linear_backward(rt, put(rt, np.zeros((2, 3), np.float32)), x, w)
    with pytest.raises(ValueError, match=r"matmul_backward: grad_out must have the output's "
                                         r"shape \(3, 2\), got \(2, 3\)"):
        K.matmul_backward(rt, put(rt, np.zeros((2, 3), np.float32)), x, w.T)
