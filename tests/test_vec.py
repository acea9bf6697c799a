"""cvk/vec.cuh: Packed128 and load128/store128 (plain and streaming) for float, half and bf16,
through vec_copy_kernel and vec_add_kernel (kernels/testing/half_checks.cuh), on the simulator
and on a GPU (marker `gpu`). A misaligned vector access is an error on the simulator, as it is
on a GPU (there a sticky one, so that test is simulator-only)."""
import ml_dtypes
import numpy as np
import pytest

from test_half_types import TARGETS, run

from cvkernels import _ext

# kernel template argument, numpy dtype of the values, elements per Packed128
VTYPES = {"float": ("float", np.float32, 4), "half": ("__half", np.float16, 8),
          "bf16": ("__nv_bfloat16", ml_dtypes.bfloat16, 8)}


def aligned(n, dtype, offset_bytes=0):
    """A zeroed 1-D array of n elements whose data starts `offset_bytes` past a 64-byte
    boundary (a view into a larger buffer, which must stay alive with it)."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n * item + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset_bytes
    return raw[start:start + n * item].view(dtype)


def bits(a):
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", list(VTYPES))
@pytest.mark.parametrize("nvec", [1, 37, 1000])
def test_vec_copy(target, t, nvec):
    name, dt, V = VTYPES[t]
    n = nvec * V
    x = aligned(n, dt)
    x[:] = np.random.default_rng(nvec).standard_normal(n).astype(np.float32).astype(dt)
    x[::7] = np.array(-0.0, np.float32).astype(dt)  # signed zeros must survive bitwise
    out = aligned(n, dt)
    _, got = run(target, f"vec_copy_kernel<{name}>", nvec, [bits(x), bits(out)], [("i64", n)],
                 128)
    np.testing.assert_array_equal(got, bits(x))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", list(VTYPES))
def test_vec_add_accumulates_in_fp32(target, t):
    """out = round(float(a) + float(b)): for half and bf16 the fp32 sum rounded once to nearest
    even, which numpy computes the same way, so the comparison is bitwise (inf on overflow
    included)."""
    name, dt, V = VTYPES[t]
    nvec = 257
    n = nvec * V
    rng = np.random.default_rng(7)
    a, b = aligned(n, dt), aligned(n, dt)
    a[:] = (rng.standard_normal(n) * 100).astype(np.float32).astype(dt)
    b[:] = (rng.standard_normal(n) * 100).astype(np.float32).astype(dt)
    big = np.float32(65504 if t == "half" else 3.0e38)
    a[:V], b[:V] = np.array(big).astype(dt), np.array(big).astype(dt)  # overflows to inf
    out = aligned(n, dt)
    *_, got = run(target, f"vec_add_kernel<{name}>", nvec, [bits(a), bits(b), bits(out)],
                  [("i64", n)], 64)
    got = got.view(dt)
    with np.errstate(over="ignore"):
        ref = (a.astype(np.float32) + b.astype(np.float32)).astype(dt)
    np.testing.assert_array_equal(bits(got), bits(ref))
    assert np.isinf(got[:V].astype(np.float32)).all()


@pytest.mark.sim
@pytest.mark.parametrize("t", list(VTYPES))
@pytest.mark.parametrize("kernel,which", [("vec_copy_kernel", "load"), ("vec_copy_kernel", "store"),
                                          ("vec_add_kernel", "load"), ("vec_add_kernel", "store")])
def test_misaligned_vector_access_is_an_error(t, kernel, which):
    name, dt, V = VTYPES[t]
    n = 4 * V
    item = np.dtype(dt).itemsize
    good = [aligned(n, dt) for _ in range(3)]
    off = aligned(n, dt, item)  # one element past a 16-byte boundary
    nin = 1 if kernel == "vec_copy_kernel" else 2
    arrays = good[:nin + 1]
    if which == "load":
        arrays[nin - 1] = off
    else:
        arrays[nin] = off
    what = {("vec_copy_kernel", "load"): "load128", ("vec_copy_kernel", "store"): "store128",
            ("vec_add_kernel", "load"): "load128cs", ("vec_add_kernel", "store"): "store128cs"}
    args = [("ptr", a.ctypes.data) for a in arrays] + [("i64", n)]
    with pytest.raises(RuntimeError, match=f"{what[kernel, which]}: misaligned address"):
        _ext.sim_testing().launch(f"{kernel}<{name}>", [1], [4], 0, 0, args)


@pytest.mark.sim
def test_packed128_layout():
    """Packed128<T> is 16 bytes, 16-aligned, with 16 / sizeof(T) elements (compile-time facts,
    checked by compiling them)."""
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    src = ('#include "cvk/vec.cuh"\n'
           "template <class T> constexpr bool ok = sizeof(cvk::Packed128<T>) == 16 &&\n"
           "  alignof(cvk::Packed128<T>) == 16 && cvk::Packed128<T>::size * sizeof(T) == 16;\n"
           "static_assert(ok<float> && ok<__half> && ok<__nv_bfloat16>);\n"
           "static_assert(cvk::Packed128<__half>::size == 8 && cvk::Packed128<float>::size == 4);\n"
           "static_assert(sizeof(__half) == 2 && alignof(__half) == 2);\n"
           "static_assert(sizeof(__nv_bfloat16) == 2 && alignof(__nv_bfloat16) == 2);\n"
           "static_assert(std::is_trivially_copyable_v<__half> &&\n"
           "              std::is_trivially_copyable_v<__nv_bfloat16>);\n"
           "static_assert(std::is_same_v<cvk::acc_t<__half>, float> &&\n"
           "              std::is_same_v<cvk::acc_t<__nv_bfloat16>, float> &&\n"
           "              std::is_same_v<cvk::acc_t<double>, double>);\n")
    proc = subprocess.run(["g++", "-std=c++20", "-DCVK_SIM", f"-I{root / 'kernels/include'}",
                           "-fsyntax-only", "-x", "c++", "-"], input=src, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
