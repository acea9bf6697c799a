"""matmul_tc_forward_kernel (kernels/matmul_tc.cuh): fp16/bf16 C = A @ B on tensor cores, fp32
accumulate and output. tests/test_kernel_specs.py runs the spec's cases on every runtime; this
file adds what only this kernel knows, on the simulator through both launch paths and, where a
GPU is found, on it through the same two.

Tolerance (design.md): the error against float64 must be at most 2x that of the same product
computed by torch in the input precision, plus 1 ulp (fp32, at the largest |C|); and, elementwise,
within the fp32 accumulation bound (K + 2) * u * (|A| @ |B|) (u = 2^-24; 2^-23 on a GPU, whose
tensor cores may truncate). Small integers must be exact.
"""
import ml_dtypes
import numpy as np
import pytest

from cvkernels import _ext, spec
from cvkernels.backends import rawkernel as rk
from cvkernels.specs import matmul_tc as K
from runtimes import put, rt  # noqa: F401  (fixture)

BF16 = ml_dtypes.bfloat16


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


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
    u = 2.0 ** -24 if rt.simulator else 2.0 ** -23
    bound = (a.shape[1] + 2) * u * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
    assert (err <= bound).all(), f"elementwise fp32 bound: worst excess {np.max(err - bound)}"
    lowp = np.abs(torch_lowp(a, b) - ref).max()
    ulp = float(np.spacing(np.float32(np.abs(ref).max())))
    assert err.max() <= 2 * lowp + ulp, (err.max(), lowp, ulp)


SHAPES = {(1, 1, 1): 1, (17, 31, 33): 1, (33, 40, 48): 8, (64, 64, 64): 8, (65, 66, 70): 2,
          (31, 36, 100): 4, (129, 8, 96): 8, (20, 72, 200): 8}


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("M,N,Kd", list(SHAPES))
def test_matmul_tc_shapes_and_vector_width(rt, M, N, Kd, dtype):
    rng = np.random.default_rng(M * 10007 + N * 101 + Kd)
    a = rng.standard_normal((M, Kd)).astype(dtype)
    b = rng.standard_normal((Kd, N)).astype(dtype)
    da, db = put(rt, a), put(rt, b)
    p = K.plan(rt.device(), spec.dtype_of(a.dtype), M, N, Kd, da, db)
    assert p.values[1] == SHAPES[(M, N, Kd)], p.name
    check(rt, a, b, host(K.matmul_tc_forward(rt, da, db)))


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("M,N,Kd", [(67, 45, 131), (40, 72, 96)])
def test_matmul_tc_small_integers_exact(rt, M, N, Kd, dtype):
    rng = np.random.default_rng(Kd)
    a = rng.integers(-8, 9, (M, Kd)).astype(dtype)
    b = rng.integers(-8, 9, (Kd, N)).astype(dtype)
    c = host(K.matmul_tc_forward(rt, put(rt, a), put(rt, b)))
    np.testing.assert_array_equal(c, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32))


@pytest.mark.sim
def test_matmul_tc_unaligned_operand_falls_back_to_plain_loads():
    """K and N are multiples of 8, but A starts 2 bytes into its buffer: the 16-byte copies would
    be misaligned, so the plan must pick VEC = 1 (the simulator raises on a misaligned cp.async,
    as the GPU would fault)."""
    from cvkernels.backends.runtime import make_runtime
    rt = make_runtime("sim")
    M, N, Kd = 24, 16, 40
    rng = np.random.default_rng(11)
    base = rng.integers(-8, 9, M * Kd + 1).astype(np.float16)
    a = base[1:].reshape(M, Kd)
    b = rng.integers(-8, 9, (Kd, N)).astype(np.float16)
    assert K.plan(rt.device(), spec.FLOAT16, M, N, Kd, a, b).values[1] == 1
    c = K.matmul_tc_forward(rt, a, b)
    np.testing.assert_array_equal(c, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32))


@pytest.mark.sim
def test_matmul_tc_misaligned_launch_is_an_error():
    """Forcing the 16-byte variant on a misaligned operand is reported, not misread."""
    M, N, Kd = 16, 16, 16
    base = np.zeros(M * Kd + 1, np.float16)
    a = base[1:].reshape(M, Kd)
    b = np.zeros((Kd, N), np.float16)
    c = np.zeros((M, N), np.float32)
    with pytest.raises(RuntimeError, match=r"cp.async.cg of 16 bytes: global \(src\) address"):
        _ext.sim().launch("matmul_tc_forward_kernel<__half, 8>", [1, 1], [128], 0, 0,
                          [("ptr", a.ctypes.data), ("ptr", b.ctypes.data), ("ptr", c.ctypes.data),
                           ("i64", M), ("i64", N), ("i64", Kd)])


def test_matmul_tc_rejects_what_it_cannot_do(rt):
    with pytest.raises(TypeError, match="matmul_tc: backend .* runs float16, bfloat16 kernels; "
                                        "input has dtype float32"):
        K.matmul_tc_forward(rt, put(rt, np.zeros((2, 3), np.float32)),
                            put(rt, np.zeros((3, 2), np.float32)))
    with pytest.raises(ValueError, match="matmul_tc: input and other must be 2-D"):
        K.matmul_tc_forward(rt, put(rt, np.zeros((2, 2, 3), np.float16)),
                            put(rt, np.zeros((3, 2), np.float16)))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_matmul_tc_compiles_under_nvrtc(arch):
    """NVRTC with the rawkernel backend's options, for both targets the nvcc build embeds
    (test_nvrtc_compile.py covers every family for sm_90)."""
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    err, prog = nvrtc.nvrtcCreateProgram(rk.source_text(K.FAMILY).encode(), b"tc_module.cu", 0,
                                         [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    names = K.FAMILY.names()
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
