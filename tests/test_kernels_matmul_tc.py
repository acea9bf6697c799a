"""matmul_tc_forward_kernel (kernels/matmul_tc.cuh): fp16/bf16 C = A @ B on tensor cores, fp32
accumulate and output, against the float64 reference, on the simulator through both launch
paths (the extension's generic launch and the rawkernel path's RawModule stand-in) and, where a
GPU is found, on it through the same two.

Tolerance (design.md): the error against float64 must be at most 2x that of the same product
computed by torch in the input precision, plus 1 ulp (fp32, at the largest |C|); and, elementwise,
within the fp32 accumulation bound (K + 2) * u * (|A| @ |B|) (u = 2^-24; 2^-23 on a GPU, whose
tensor cores may truncate). Small integers must be exact.

The plan (tile, VEC) lives here until the kernel-spec work gives the family its spec.
"""
import ml_dtypes
import numpy as np
import pytest

from cvkernels import _ext
from cvkernels.backends import rawkernel as rk

BF16 = ml_dtypes.bfloat16
TILE = 64
RUNTIMES = [pytest.param("sim", marks=pytest.mark.sim),
            pytest.param("sim-rawkernel", marks=pytest.mark.sim),
            pytest.param("cuda", marks=pytest.mark.gpu),
            pytest.param("rawkernel", marks=pytest.mark.gpu)]


def plan(a, b, M, N, K, bf16, ptr):
    """Kernel name, grid, block: VEC = the largest of 8, 4, 2, 1 elements that divides K and N,
    with both operands aligned to 2*VEC bytes (then no chunk straddles a matrix edge)."""
    vec = next(v for v in (8, 4, 2, 1)
               if K % v == 0 and N % v == 0 and ptr(a) % (2 * v) == 0 and ptr(b) % (2 * v) == 0)
    name = f"matmul_tc_forward_kernel<{'true' if bf16 else 'false'}, {vec}>"
    return name, [-(-N // TILE), -(-M // TILE)], [128], vec


def matmul_tc(rt, a, b):
    """C = a @ b with a [M, K], b [K, N] fp16 or bf16 numpy arrays (C-contiguous); fp32 C."""
    M, K = a.shape
    N = b.shape[1]
    bf16 = a.dtype == BF16
    a16, b16 = a.view(np.uint16), b.view(np.uint16)
    if rt in ("sim", "sim-rawkernel"):
        dev_a, dev_b, c = a16, b16, np.zeros((M, N), np.float32)
        ptr = lambda x: x.ctypes.data  # noqa: E731
    else:
        import cupy
        dev_a, dev_b = cupy.asarray(a16), cupy.asarray(b16)
        c = cupy.zeros((M, N), np.float32)
        ptr = lambda x: x.data.ptr  # noqa: E731
    name, grid, block, vec = plan(dev_a, dev_b, M, N, K, bf16, ptr)
    if rt in ("sim", "cuda"):
        ext = _ext.sim() if rt == "sim" else _ext.cuda()
        ext.launch(name, grid, block, 0, 0, [("ptr", ptr(dev_a)), ("ptr", ptr(dev_b)),
                                             ("ptr", ptr(c)), ("i64", M), ("i64", N), ("i64", K)])
    else:
        if rt == "sim-rawkernel":
            module_cls = rk.SimRawModule
        else:
            import cupy
            module_cls = cupy.RawModule
        fn = rk.module("matmul_tc.cuh", module_cls).get_function(name)
        fn(tuple(grid), tuple(block), (dev_a, dev_b, c, np.int64(M), np.int64(N), np.int64(K)))
    return (c if isinstance(c, np.ndarray) else c.get()), vec


def torch_lowp(a, b):
    """The same product computed by torch in the input precision (its output in that type)."""
    torch = pytest.importorskip("torch")
    if a.dtype == BF16:
        ta = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        tb = torch.from_numpy(b.view(np.int16).copy()).view(torch.bfloat16)
    else:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return (ta @ tb).to(torch.float64).numpy()


def check(rt, a, b, c):
    ref = a.astype(np.float64) @ b.astype(np.float64)
    err = np.abs(c.astype(np.float64) - ref)
    u = 2.0 ** -24 if rt.startswith("sim") else 2.0 ** -23
    bound = (a.shape[1] + 2) * u * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
    assert (err <= bound).all(), f"elementwise fp32 bound: worst excess {np.max(err - bound)}"
    lowp = np.abs(torch_lowp(a, b) - ref).max()
    ulp = float(np.spacing(np.float32(np.abs(ref).max())))
    assert err.max() <= 2 * lowp + ulp, (err.max(), lowp, ulp)


SHAPES = [(1, 1, 1), (17, 31, 33), (33, 40, 48), (64, 64, 64), (65, 66, 70), (31, 36, 100),
          (129, 8, 96), (20, 72, 200)]
VECS = {(1, 1, 1): 1, (17, 31, 33): 1, (33, 40, 48): 8, (64, 64, 64): 8, (65, 66, 70): 2,
        (31, 36, 100): 4, (129, 8, 96): 8, (20, 72, 200): 8}


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("rt", RUNTIMES[:1] + RUNTIMES[2:3])
def test_matmul_tc_shapes(rt, M, N, K, dtype):
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    c, vec = matmul_tc(rt, a, b)
    assert vec == VECS[(M, N, K)]
    check(rt, a, b, c)


@pytest.mark.parametrize("M,N,K", [(17, 31, 33), (20, 72, 200)])
@pytest.mark.parametrize("rt", RUNTIMES[1:2] + RUNTIMES[3:])
def test_matmul_tc_rawkernel_path(rt, M, N, K):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((M, K)).astype(np.float16)
    b = rng.standard_normal((K, N)).astype(np.float16)
    c, _ = matmul_tc(rt, a, b)
    check(rt, a, b, c)


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("M,N,K", [(67, 45, 131), (40, 72, 96)])
@pytest.mark.parametrize("rt", RUNTIMES)
def test_matmul_tc_small_integers_exact(rt, M, N, K, dtype):
    rng = np.random.default_rng(K)
    a = rng.integers(-8, 9, (M, K)).astype(dtype)
    b = rng.integers(-8, 9, (K, N)).astype(dtype)
    c, _ = matmul_tc(rt, a, b)
    expect = a.astype(np.int64) @ b.astype(np.int64)
    np.testing.assert_array_equal(c, expect.astype(np.float32))


@pytest.mark.parametrize("rt", RUNTIMES[:1] + RUNTIMES[2:3])
def test_matmul_tc_unaligned_operand_falls_back_to_plain_loads(rt):
    """K and N are multiples of 8, but A starts 2 bytes into its buffer: the 16-byte copies would
    be misaligned, so the plan must pick VEC = 1 (the simulator raises on a misaligned cp.async,
    as the GPU would fault)."""
    M, N, K = 24, 16, 40
    rng = np.random.default_rng(11)
    base = rng.integers(-8, 9, M * K + 1).astype(np.float16)
    a = base[1:].reshape(M, K)
    b = rng.integers(-8, 9, (K, N)).astype(np.float16)
    if rt != "sim":
        pytest.skip("the unaligned view is made contiguous when moved to the GPU")
    c, vec = matmul_tc(rt, a, b)
    assert vec == 1
    np.testing.assert_array_equal(c, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32))


@pytest.mark.sim
def test_matmul_tc_misaligned_launch_is_an_error():
    """Forcing the 16-byte variant on a misaligned operand is reported, not misread."""
    M, N, K = 16, 16, 16
    base = np.zeros(M * K + 1, np.float16)
    a = base[1:].reshape(M, K)
    b = np.zeros((K, N), np.float16)
    c = np.zeros((M, N), np.float32)
    with pytest.raises(RuntimeError, match=r"cp.async.cg of 16 bytes: global \(src\) address"):
        _ext.sim().launch("matmul_tc_forward_kernel<false, 8>", [1, 1], [128], 0, 0,
                          [("ptr", a.ctypes.data), ("ptr", b.ctypes.data), ("ptr", c.ctypes.data),
                           ("i64", M), ("i64", N), ("i64", K)])


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_matmul_tc_compiles_under_nvrtc(arch):
    """NVRTC with the rawkernel backend's options, for both targets the nvcc build embeds
    (test_nvrtc_compile.py covers every source for sm_90)."""
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    code = (rk.kernels_dir() / "matmul_tc.cuh").read_text().encode()
    err, prog = nvrtc.nvrtcCreateProgram(code, b"matmul_tc.cuh", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    names = rk.name_expressions("matmul_tc.cuh")
    assert len(names) == 8, names
    for n in names:
        nvrtc.nvrtcAddNameExpression(prog, n.encode())
    opts = [o.encode() for o in rk.nvrtc_options()] + [f"--gpu-architecture={arch}".encode()]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    for n in names:
        err, lowered = nvrtc.nvrtcGetLoweredName(prog, n.encode())
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS and lowered.startswith(b"_Z"), n
    nvrtc.nvrtcDestroyProgram(prog)
