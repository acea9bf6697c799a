"""The tensor-core and async-copy wrappers (kernels/include/cvk/mma.cuh, cp_async.cuh) against the
PTX ISA's fragment layouts as modelled in tests/mma_layouts.py, through the test-only kernels of
kernels/testing/mma_checks.cuh and cp_async_controls.cuh. Each runs on the simulator (``sim``)
and, where a GPU is found, on it (``gpu``) against the same model.

Tolerances: small-integer inputs must match exactly. Random inputs: |d - exact| <=
(K + 1) * u * (|C| + |A| @ |B|), the bound of K + 1 rounded fp32 additions of exact products,
with u = 2^-24 (round to nearest) on the simulator and u = 2^-23 on a GPU, whose tensor cores may
truncate; the simulator must also equal its documented order (mma.cuh) bit for bit.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import mma_layouts as L
from helpers import run_test_kernel

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [pytest.param("sim", marks=pytest.mark.sim), pytest.param("gpu", marks=pytest.mark.gpu)]
ASAN = os.environ.get("CVK_SANITIZER") == "address"
BF16 = ml_dtypes.bfloat16


run = run_test_kernel


def unit(target):
    return 2.0 ** -24 if target == "sim" else 2.0 ** -23


# ---- mma.sync m16n8k16 (f16, bf16) ------------------------------------------------------------
def b16(x, dtype):
    """float values -> (bit patterns uint16, the exact values as float64)."""
    v = np.asarray(x).astype(dtype)
    return v.view(np.uint16), v.astype(np.float64)


def run_m16n8k16(target, dtype, As, Bs, Cs, block=32):
    """One m16n8k16 per warp; As [W,16,16], Bs [W,16,8] (values exactly representable in dtype),
    Cs [W,16,8] float32. Returns D [W,16,8] float32 unpacked through the ISA's layout."""
    W = len(As)
    a = np.concatenate([L.pack_a_m16n8k16(b16(A, dtype)[0]) for A in As]).reshape(-1)
    b = np.concatenate([L.pack_b_m16n8k16(b16(B, dtype)[0]) for B in Bs]).reshape(-1)
    c = np.concatenate([L.pack_c(C) for C in Cs]).reshape(-1)
    d = np.zeros(W * 32 * 4, np.float32)
    name = f"mma_m16n8k16_check_kernel<{'true' if dtype is BF16 else 'false'}>"
    *_, d = run(target, name, [W * 32 // block], [block], 0, [a, b, c, d])
    return np.stack([L.unpack_d(dw) for dw in d.reshape(W, 32, 4)])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_mma_m16n8k16_small_integers_exact(target, dtype):
    rng = np.random.default_rng(1)
    W = 4  # two blocks of two warps, each warp its own problem
    A = rng.integers(-8, 9, (W, 16, 16)).astype(np.float32)
    B = rng.integers(-8, 9, (W, 16, 8)).astype(np.float32)
    C = rng.integers(-100, 101, (W, 16, 8)).astype(np.float32)
    D = run_m16n8k16(target, dtype, A, B, C, block=64)
    expect = np.einsum("wmk,wkn->wmn", A.astype(np.int64), B.astype(np.int64)) + C.astype(np.int64)
    np.testing.assert_array_equal(D, expect.astype(np.float32))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=["f16", "bf16"])
def test_mma_m16n8k16_random_within_fp32_accumulation(target, dtype):
    rng = np.random.default_rng(2)
    W = 3
    A = [b16(rng.standard_normal((16, 16)), dtype)[1] for _ in range(W)]
    B = [b16(rng.standard_normal((16, 8)), dtype)[1] for _ in range(W)]
    C = rng.standard_normal((W, 16, 8)).astype(np.float32)
    D = run_m16n8k16(target, dtype, A, B, C, block=96)
    for w in range(W):
        exact = L.mma_exact(A[w], B[w], C[w])
        bound = 17 * unit(target) * (np.abs(C[w]) + np.abs(A[w]) @ np.abs(B[w]))
        assert (np.abs(D[w] - exact) <= bound).all(), f"warp {w}"
        if target == "sim":
            np.testing.assert_array_equal(D[w], L.mma_sequential_fp32(A[w], B[w], C[w]))


@pytest.mark.parametrize("target", TARGETS)
def test_mma_f16_subnormal_and_special_inputs(target):
    """f16 subnormals multiply exactly (2^-24 * 2^-24 is a normal fp32 number); inf and NaN
    propagate to exactly the outputs whose row or column they enter."""
    rng = np.random.default_rng(3)
    A = rng.integers(-3, 4, (16, 16)) * 2.0 ** -24  # f16 subnormals (and zeros)
    B = rng.integers(-3, 4, (16, 8)) * 2.0 ** -20
    C = np.zeros((16, 8), np.float32)
    D = run_m16n8k16(target, np.float16, [A], [B], [C])[0]
    np.testing.assert_array_equal(D, (A @ B).astype(np.float32))  # all exact in fp32

    A = rng.integers(1, 4, (16, 16)).astype(np.float64)
    B = rng.integers(1, 4, (16, 8)).astype(np.float64)
    A[3, 5], A[9, 0] = np.inf, np.nan
    D = run_m16n8k16(target, np.float16, [A], [B], [C])[0]
    assert np.isposinf(D[3]).all() and np.isnan(D[9]).all()
    rest = np.delete(np.arange(16), [3, 9])
    np.testing.assert_array_equal(D[rest], (A[rest] @ B).astype(np.float32))


# ---- mma.sync m16n8k8 .tf32 -------------------------------------------------------------------
def run_tf32(target, As, Bs, Cs):
    W = len(As)
    a = np.concatenate([L.pack_a_m16n8k8_tf32(A) for A in As]).reshape(-1)
    b = np.concatenate([L.pack_b_m16n8k8_tf32(B) for B in Bs]).reshape(-1)
    c = np.concatenate([L.pack_c(C) for C in Cs]).reshape(-1)
    d = np.zeros(W * 32 * 4, np.float32)
    *_, d = run(target, "mma_m16n8k8_tf32_check_kernel", [W], [32], 0, [a, b, c, d])
    return np.stack([L.unpack_d(dw) for dw in d.reshape(W, 32, 4)])


@pytest.mark.parametrize("target", TARGETS)
def test_mma_tf32_small_integers_exact(target):
    rng = np.random.default_rng(4)
    A = rng.integers(-8, 9, (2, 16, 8)).astype(np.float32)
    B = rng.integers(-8, 9, (2, 8, 8)).astype(np.float32)
    C = rng.integers(-100, 101, (2, 16, 8)).astype(np.float32)
    D = run_tf32(target, A, B, C)
    np.testing.assert_array_equal(D, (A @ B + C).astype(np.float32))


@pytest.mark.parametrize("target", TARGETS)
def test_mma_tf32_random_within_fp32_accumulation(target):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((2, 16, 8)).astype(np.float32)
    B = rng.standard_normal((2, 8, 8)).astype(np.float32)
    C = rng.standard_normal((2, 16, 8)).astype(np.float32)
    D = run_tf32(target, A, B, C)
    for w in range(2):
        At, Bt = L.tf32_truncate(A[w]), L.tf32_truncate(B[w])
        exact = L.mma_exact(At, Bt, C[w])
        bound = 9 * unit(target) * (np.abs(C[w]) + np.abs(At) @ np.abs(Bt))
        assert (np.abs(D[w] - exact) <= bound).all()
        if target == "sim":
            np.testing.assert_array_equal(D[w], L.mma_sequential_fp32(At, Bt, C[w]))
    # the low 13 mantissa bits matter: the untruncated inputs give a different product
    assert not np.array_equal(D[0], L.mma_exact(A[0], B[0], C[0]).astype(np.float32))


@pytest.mark.parametrize("target", TARGETS)
def test_mma_tf32_ignores_low_13_mantissa_bits(target):
    """Inputs that differ from exact tf32 values only in the low 13 bits give the same result
    as those tf32 values."""
    rng = np.random.default_rng(6)
    A = L.tf32_truncate(rng.standard_normal((16, 8)).astype(np.float32))
    B = L.tf32_truncate(rng.standard_normal((8, 8)).astype(np.float32))
    C = rng.standard_normal((16, 8)).astype(np.float32)
    noise = lambda x: (x.view(np.uint32) | rng.integers(1, 2 ** 13, x.shape,  # noqa: E731
                                                           dtype=np.uint32)).view(np.float32)
    An, Bn = noise(A), noise(B)
    assert (An != A).all() and (Bn != B).all()
    D = run_tf32(target, [A, An], [B, Bn], [C, C])
    np.testing.assert_array_equal(D[1], D[0])


# ---- ldmatrix ---------------------------------------------------------------------------------
LDM = [(num, trans) for num in (1, 2, 4) for trans in (False, True)]


def run_ldmatrix(target, num, trans, smem, offsets):
    out = np.zeros(len(offsets) * num, np.uint32)
    name = f"ldmatrix_check_kernel<{num}, {'true' if trans else 'false'}>"
    *_, out = run(target, name, [1], [len(offsets)], smem.nbytes,
                  [smem, offsets.astype(np.int32), out], [("i32", smem.size)])
    return out.reshape(len(offsets), num)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("num,trans", LDM)
def test_ldmatrix_layout(target, num, trans):
    """Two warps; rows are scattered 16-byte rows of shared memory, in a random order (the ISA:
    consecutive rows need not be contiguous); lanes past 8*num give addresses that are unused."""
    rng = np.random.default_rng(10 * num + trans)
    nrows = 80
    smem = rng.integers(0, 2 ** 16, nrows * 8, dtype=np.uint16)
    offsets = np.zeros(64, np.int64)
    for w in range(2):
        offsets[32 * w:32 * w + 32] = 8 * rng.permutation(nrows)[:32]
    got = run_ldmatrix(target, num, trans, smem, offsets)
    for w in range(2):
        expect = L.ldmatrix(smem, offsets[32 * w:32 * w + 32], num, trans)
        np.testing.assert_array_equal(got[32 * w:32 * w + 32], expect, err_msg=f"warp {w}")


@pytest.mark.sim
@pytest.mark.parametrize("num,trans", LDM)
def test_ldmatrix_misaligned_row_is_an_error(num, trans):
    smem = np.arange(64 * 8, dtype=np.uint16)
    offsets = 8 * np.arange(32)
    offsets[8 * num - 1] += 4  # 8-byte aligned only
    with pytest.raises(RuntimeError, match=rf"ldmatrix.m8n8(.trans)?.x{num}: lane {8 * num - 1}'s "
                       "row address .* is not 16-byte aligned"):
        run_ldmatrix("sim", num, trans, smem, offsets)


@pytest.mark.sim
def test_ldmatrix_ignores_unused_lanes_addresses():
    smem = np.arange(64 * 8, dtype=np.uint16)
    offsets = 8 * np.arange(32)
    offsets[8:] += 3  # misaligned, but .x1 uses lanes 0-7 only
    got = run_ldmatrix("sim", 1, False, smem, offsets)
    np.testing.assert_array_equal(got, L.ldmatrix(smem, offsets, 1, False))


# ---- misuse: collectives need the whole warp --------------------------------------------------
@pytest.mark.sim
@pytest.mark.parametrize("active", [16, 31])
def test_mma_with_exited_lanes_is_an_error(active):
    a, d = np.zeros(4, np.uint32), np.zeros(32, np.float32)
    with pytest.raises(RuntimeError, match="mma.sync.m16n8k16.f16 needs all 32 lanes"):
        run("sim", "mma_partial_warp_kernel", [1], [32], 0, [a, d], [("i32", active)])


@pytest.mark.sim
def test_collectives_in_a_partial_warp_are_errors():
    """A block of 48 threads: its second warp has 16 lanes, which cannot run a .sync.aligned
    warp collective."""
    z = lambda n, t=np.uint32: np.zeros(n, t)  # noqa: E731
    with pytest.raises(RuntimeError, match="mma.sync.m16n8k16.bf16 needs all 32 lanes"):
        run("sim", "mma_m16n8k16_check_kernel<true>", [1], [48], 0,
            [z(48 * 4), z(48 * 2), z(48 * 4, np.float32), z(48 * 4, np.float32)])
    with pytest.raises(RuntimeError, match="mma.sync.m16n8k8.tf32 needs all 32 lanes"):
        run("sim", "mma_m16n8k8_tf32_check_kernel", [1], [16], 0,
            [z(64), z(32), z(64, np.float32), z(64, np.float32)])
    smem = np.zeros(48 * 8, np.uint16)
    with pytest.raises(RuntimeError, match=r"ldmatrix.m8n8.trans needs all 32 lanes"):
        run_ldmatrix("sim", 4, True, smem, 8 * np.arange(48))


# ---- cp.async ---------------------------------------------------------------------------------
CP = [(4, False), (8, False), (16, False), (16, True)]


def run_groups(target, nbytes, cg, src_bytes):
    rng = np.random.default_rng(nbytes + cg)
    src = rng.integers(0, 200, 4 * 32 * nbytes, dtype=np.uint8)  # never 0xFF
    out = np.full(5 * 4 * 32 * nbytes, 0x5A, np.uint8)
    name = f"cp_async_groups_kernel<{nbytes}, {'true' if cg else 'false'}>"
    _, out = run(target, name, [1], [32], src.nbytes, [src, out], [("i32", src_bytes)])
    landed = src.reshape(4, 32, nbytes).copy()
    landed[:, :, src_bytes:] = 0  # zero-filled past src-size
    return out.reshape(5, 4, 32, nbytes), landed


@pytest.mark.sim
@pytest.mark.skipif(ASAN, reason="reads pending copies on purpose (ASan reports them)")
@pytest.mark.parametrize("nbytes,cg", CP, ids=[f"{'cg' if c else 'ca'}{n}" for n, c in CP])
@pytest.mark.parametrize("partial", [False, True], ids=["full", "zero-fill"])
def test_cp_async_is_deferred_until_its_group_is_waited(nbytes, cg, partial):
    """Groups 0-2 committed, group 3 not: before any wait every destination holds the poison
    pattern; wait_group 2/1/0 land groups 0, 0-1, 0-2 (never the uncommitted one); wait_all lands
    everything."""
    src_bytes = nbytes // 2 if partial else nbytes
    out, landed = run_groups("sim", nbytes, cg, src_bytes)
    poison = np.full((32, nbytes), 0xFF, np.uint8)
    for stage in range(5):
        for g in range(4):
            visible = g < stage if g < 3 else stage == 4
            np.testing.assert_array_equal(out[stage, g], landed[g] if visible else poison,
                                          err_msg=f"stage {stage} group {g}")


@pytest.mark.gpu
@pytest.mark.parametrize("nbytes,cg", CP, ids=[f"{'cg' if c else 'ca'}{n}" for n, c in CP])
def test_cp_async_lands_on_gpu(nbytes, cg):
    """On a GPU a pending copy may land at any time: only the stages after the waits that cover
    the copies are defined."""
    out, landed = run_groups("gpu", nbytes, cg, nbytes - 4 if nbytes > 4 else nbytes)
    np.testing.assert_array_equal(out[3, :3], landed[:3])
    np.testing.assert_array_equal(out[4], landed)


def misuse(src_off, dst_off, src_bytes):
    src = np.zeros(64, np.uint8)
    run("sim", "cp_async_misuse_kernel", [1], [32], 64, [src],
        [("i64", src_off), ("i64", dst_off), ("i32", src_bytes)])


@pytest.mark.sim
def test_cp_async_misuse_is_an_error():
    misuse(16, 32, 16)  # fine
    misuse(0, 0, 0)     # fine: pure zero-fill
    with pytest.raises(RuntimeError, match=r"cp.async.cg of 16 bytes: global \(src\) address .* "
                       "is not 16-byte aligned"):
        misuse(8, 0, 16)
    with pytest.raises(RuntimeError, match=r"cp.async.cg of 16 bytes: shared \(dst\) address .* "
                       "is not 16-byte aligned"):
        misuse(0, 4, 16)
    for bad in (17, -1):
        with pytest.raises(RuntimeError, match=rf"src-size {bad} outside 0..16"):
            misuse(0, 0, bad)


@pytest.mark.sim
@pytest.mark.parametrize("snippet,message", [
    ("cvk::cp_async_ca<2>(d, s);", "cp.async.ca copies 4, 8 or 16 bytes"),
    ("cvk::cp_async_ca<32>(d, s);", "cp.async.ca copies 4, 8 or 16 bytes"),
    ("cvk::cp_async_cg<8>(d, s);", "cp.async.cg copies 16 bytes only"),
    ("unsigned r[3]; cvk::ldmatrix<3>(r, d);", "ldmatrix loads 1, 2 or 4 matrices"),
])
def test_unsupported_sizes_fail_to_compile(tmp_path, snippet, message):
    """cp-size and the matrix count are PTX immediates: an unsupported one is rejected when the
    kernel is compiled, on the simulator as under nvcc."""
    src = tmp_path / "k.cpp"
    src.write_text('#include "cvk/cp_async.cuh"\n#include "cvk/mma.cuh"\n'
                   f"__global__ void k(char* d, const char* s) {{ {snippet} }}\n"
                   "int main() { k(nullptr, nullptr); }\n")
    proc = subprocess.run(["g++", "-std=c++20", "-DCVK_SIM", f"-I{ROOT / 'kernels/include'}",
                           "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert proc.returncode != 0, f"{snippet} compiled"
    assert message in proc.stderr, proc.stderr[-2000:]


# ---- the early-read control -------------------------------------------------------------------
def run_stages(kernel):
    x = np.arange(256, dtype=np.float32)
    y = np.zeros(256, np.float32)
    _, y = run("sim", kernel, [1], [32], 1024, [x, y])
    expect = np.concatenate([np.roll(x[:128], -4), np.roll(x[128:], -4)])
    return y, expect


@pytest.mark.sim
@pytest.mark.skipif(ASAN, reason="the early read is reported by ASan: see the sanitizer test")
def test_early_cp_async_read_sees_poison():
    """Without a sanitizer the simulator still shows the bug: the stage read one wait too early
    holds the poison pattern (0xFFFFFFFF, a NaN), the stage read after its wait holds the data."""
    y, expect = run_stages("cp_async_stages_kernel")
    np.testing.assert_array_equal(y, expect)
    y, expect = run_stages("cp_async_early_read_kernel")
    np.testing.assert_array_equal(y[:128], expect[:128])
    assert (y[128:].view(np.uint32) == 0xFFFFFFFF).all()


LAUNCH = textwrap.dedent("""
    import sys
    import numpy as np
    from cvkernels import _ext
    x = np.arange(256, dtype=np.float32)
    y = np.zeros(256, dtype=np.float32)
    _ext.sim_testing().launch(sys.argv[1], [1], [32], 1024, 0, [("ptr", x.ctypes.data),
                                                          ("ptr", y.ctypes.data)])
    print("finished", sys.argv[1])
""")

RUNS = 20


@pytest.mark.sanitizer
@pytest.mark.skipif(not ASAN or not os.environ.get("CVK_SIM_PATH"),
                    reason="needs the ASan build of _cudasim (CVK_SANITIZER=address, CVK_SIM_PATH)")
def test_asan_reports_early_cp_async_read():
    """ASan poisons a cp.async destination until its wait: the early read is reported in every
    one of RUNS runs, the correct twin in none."""
    def launch(kernel):
        return subprocess.run([sys.executable, "-c", LAUNCH, kernel], capture_output=True,
                              text=True, timeout=300)
    caught = 0
    for _ in range(RUNS):
        good = launch("cp_async_stages_kernel")
        assert good.returncode == 0 and "Sanitizer" not in good.stderr, good.stderr[-3000:]
        bad = launch("cp_async_early_read_kernel")
        if ("ERROR: AddressSanitizer: use-after-poison" in bad.stderr
                and "two_stage_copy<true>" in bad.stderr and bad.returncode != 0):
            caught += 1
        last = bad.stderr
    print(f"early cp.async read caught {caught}/{RUNS}; last report:\n{last[:2500]}")
    assert caught == RUNS, last[-3000:]
