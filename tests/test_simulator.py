"""The CPU simulator's execution model, pinned by test-only kernels (simulator_checks.cuh):
warp_intrinsics_kernel, atomics_kernel, indexing_smem_kernel. The same kernels run on a GPU
where one is found, against the same expected values."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cvkernels import _ext

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [pytest.param("sim", marks=pytest.mark.sim), pytest.param("gpu", marks=pytest.mark.gpu)]


def run(target, kernel, grid, block, smem, arrays, scalars=()):
    """Launch a registered kernel by name on numpy arrays; returns the arrays after the launch."""
    if target == "sim":
        ext, dev = _ext.sim_testing(), arrays
        ptr = lambda a: a.ctypes.data  # noqa: E731
    else:
        import cupy
        ext, dev = _ext.cuda_testing(), [cupy.asarray(a) for a in arrays]
        ptr = lambda a: a.data.ptr  # noqa: E731
    args = [("ptr", ptr(a)) for a in dev] + list(scalars)
    ext.launch(kernel, list(grid), list(block), smem, 0, args)
    return [a if target == "sim" else a.get() for a in dev]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("nthreads", [32, 96])
def test_warp_intrinsics(target, nthreads):
    rng = np.random.default_rng(nthreads)
    v = rng.integers(0, 50, nthreads).astype(np.int32)
    v[::11] = 7
    out = np.zeros(nthreads * 8, np.int32)
    _, out = run(target, "warp_intrinsics_kernel", [1], [nthreads], 0, [v, out])
    out = out.reshape(nthreads, 8)
    for t in range(nthreads):
        w0, lane = t - t % 32, t % 32
        warp = v[w0:w0 + 32]
        seg = lane - lane % 8
        ballot = sum(1 << i for i in range(32) if warp[i] % 3 == 0)
        expect = [warp[(lane + 3) % 32], warp[lane ^ 5],
                  warp[lane + 4] if lane + 4 < 32 else warp[lane],
                  warp[lane - 4] if lane >= 4 else warp[lane],
                  np.int32(np.uint32(ballot).view(np.int32)), int((warp == 7).any()),
                  int((warp >= 0).all()), warp[lane + 1] if lane + 1 < seg + 8 else warp[lane]]
        assert out[t].tolist() == [int(e) for e in expect], f"thread {t}"


@pytest.mark.parametrize("target", TARGETS)
def test_warp_intrinsics_with_partial_masks(target):
    """Divergent lane groups, each with its own mask, while other lanes have returned: valid
    CUDA since Volta, and the simulator must neither hang nor mix the groups."""
    n = 64
    v = np.random.default_rng(5).integers(0, 8, n).astype(np.int32)
    out = np.full(n * 2, -7, np.int32)
    _, out = run(target, "warp_partial_mask_kernel", [1], [n], 0, [v, out])
    out = out.reshape(n, 2)
    for t in range(n):
        w0, lane = t - t % 32, t % 32
        warp = v[w0:w0 + 32]
        if lane < 16:
            ballot = sum(1 << i for i in range(16) if warp[i] & 1)
            assert out[t].tolist() == [warp[lane ^ 1], ballot], f"thread {t}"
        elif lane < 24:
            src = lane + 2 if lane + 2 < 24 else lane
            assert out[t].tolist() == [warp[src], int((warp[16:24] == 3).any())], f"thread {t}"
        else:
            assert out[t].tolist() == [-7, -7], f"thread {t}"


@pytest.mark.sim
def test_lane_outside_its_own_mask_is_an_error():
    """A lane passing a mask without its own bit is a bug; the simulator reports it as an error
    of the launch (not a hang, not a crash)."""
    v, out = np.zeros(32, np.int32), np.zeros(32, np.int32)
    with pytest.raises(RuntimeError, match="called a warp intrinsic whose mask does not include"):
        run("sim", "warp_mask_misuse_kernel", [1], [32], 0, [v, out])


@pytest.mark.parametrize("target", TARGETS)
def test_atomics(target):
    blocks, threads = 3, 64
    n = blocks * threads
    f = np.array([0.0, -1e30, 1e30, 0.0], np.float32)
    i = np.array([0, -(2 ** 31), 2 ** 31 - 1, 0], np.int32)
    f, i = run(target, "atomics_kernel", [blocks], [threads], 0, [f, i])
    assert f.tolist() == [float(n), float(n - 1), float(-(n - 1)), 0.5 * n]
    assert i.tolist() == [n, n - 1, -(n - 1), 2 * n]


@pytest.mark.parametrize("target", TARGETS)
def test_3d_indexing_and_dynamic_shared_memory(target):
    grid, block = (2, 3, 2), (4, 2, 3)
    nb, nt = int(np.prod(grid)), int(np.prod(block))
    x = np.arange(nb * nt, dtype=np.float32)
    out = np.zeros_like(x)
    _, out = run(target, "indexing_smem_kernel", grid, block, nt * 4, [x, out])
    expect = x.reshape(nb, nt)[:, ::-1] + 1000.0 * np.arange(nb)[:, None]
    np.testing.assert_array_equal(out.reshape(nb, nt), expect)


@pytest.mark.sim
def test_bad_launch_configuration_raises():
    x = np.zeros(4, np.float32)
    with pytest.raises(RuntimeError, match="invalid block dimensions"):
        _ext.sim_testing().launch("copy_kernel", [1], [2048], 0, 0,
                          [("ptr", x.ctypes.data), ("ptr", x.ctypes.data), ("i64", 4)])
    with pytest.raises(ValueError, match="argument 2 must be i64, got f64"):
        _ext.sim_testing().launch("copy_kernel", [1], [4], 0, 0,
                          [("ptr", x.ctypes.data), ("ptr", x.ctypes.data), ("f64", 4.0)])
    with pytest.raises(ValueError, match="no kernel registered as 'nope'"):
        _ext.sim_testing().launch("nope", [1], [4], 0, 0, [])


@pytest.mark.sim
@pytest.mark.parametrize("snippet,missing", [
    ("__syncthreads_count(1);", "__syncthreads_count"),
    ("unsigned m = __activemask(); (void)m;", "__activemask"),
    ('asm volatile("bar.sync 0;");', "CVK_SIM_CANNOT_RUN_INLINE_PTX"),
])
def test_unsupported_intrinsics_fail_to_compile(tmp_path, snippet, missing):
    src = tmp_path / "k.cpp"
    src.write_text(f'#include "cvk/common.cuh"\n__global__ void k() {{ {snippet} }}\n'
                   "int main() { k(); }\n")
    proc = subprocess.run(["g++", "-std=c++20", "-DCVK_SIM", f"-I{ROOT / 'kernels/include'}",
                           "-fsyntax-only", str(src)], capture_output=True, text=True)
    assert proc.returncode != 0, f"{missing} compiled under the simulator"
    assert missing in proc.stderr, proc.stderr[-2000:]
