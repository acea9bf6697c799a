"""The CPU simulator's execution model, pinned by test-only kernels (simulator_checks.cuh):
warp_intrinsics_kernel, atomics_kernel, indexing_smem_kernel. The same kernels run on a GPU
where one is found, against the same expected values. The simulator-only API (lane,
alive_lanes, warp_gather, thread_storage), the launch refusals, and sim::launch in both
execution models (fibers, threads) are checked on the simulator only."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cvkernels import _ext
from helpers import run_test_kernel

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [pytest.param("sim", marks=pytest.mark.sim), pytest.param("gpu", marks=pytest.mark.gpu)]


run = run_test_kernel


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


COPY_ARGS = lambda x: [("ptr", x.ctypes.data), ("ptr", x.ctypes.data), ("i64", 4)]  # noqa: E731


@pytest.mark.sim
@pytest.mark.parametrize("grid,block,smem,message", [
    ([1], [2048], 0, "invalid configuration argument"),        # > 1024 threads
    ([1], [1025], 0, "invalid configuration argument"),
    ([1], [512, 4], 0, "invalid configuration argument"),      # 2048 threads over two dims
    ([1], [1, 1, 65], 0, "invalid configuration argument"),    # block z above 64
    ([1], [0], 0, "invalid configuration argument"),
    ([1, 65536], [32], 0, "invalid configuration argument"),   # grid y above 65535
    ([1, 1, 65536], [32], 0, "invalid configuration argument"),
    ([0], [32], 0, "invalid configuration argument"),
    ([1], [32], 48 * 1024 + 1, "invalid argument"),            # dynamic smem above 48 KiB, no opt-in
    ([1], [32], 227 * 1024, "invalid argument"),
])
def test_launch_refuses_what_a_gpu_refuses(grid, block, smem, message):
    """The simulator refuses each launch configuration cudaLaunchKernel refuses, with CUDA's
    own error text, before running anything."""
    x = np.zeros(4, np.float32)
    with pytest.raises(RuntimeError, match=f"copy_kernel: launch failed: {message}$"):
        _ext.sim_testing().launch("copy_kernel", grid, block, smem, 0, COPY_ARGS(x))


def has_symbol_table(path):
    """Whether an ELF64 file keeps its .symtab section (strip removes it)."""
    import struct
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return any(struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] == 2  # SHT_SYMTAB
               for i in range(shnum))


@pytest.mark.sim
def test_static_shared_memory_above_48k_is_refused():
    """ptxas refuses a kernel with more than 48 KiB of static __shared__ storage; the simulator
    counts it per kernel (helpers included) and refuses the launch with ptxas's words."""
    if not has_symbol_table(_ext.sim_testing().__file__):
        pytest.skip("the _cudasim module is stripped (a Release build): the simulator reads "
                    "static __shared__ sizes from its symbol table (see test_launch_in_each_model)")
    out = np.zeros(64, np.float32)
    _ext.sim_testing().launch("static_smem_48k_kernel", [2], [32], 0, 0, [("ptr", out.ctypes.data)])
    np.testing.assert_array_equal(out, np.tile(np.arange(32) + 1, 2))
    with pytest.raises(RuntimeError, match=r"static_smem_50k_kernel: launch failed: uses too "
                                           r"much shared data \(0xc800 bytes, 0xc000 max\)$"):
        _ext.sim_testing().launch("static_smem_50k_kernel", [2], [32], 0, 0, [("ptr", out.ctypes.data)])
    # 48 KiB static leaves no dynamic shared memory without the opt-in attribute
    with pytest.raises(RuntimeError, match=r"static_smem_48k_kernel: launch failed: invalid "
                                           r"argument$"):
        _ext.sim_testing().launch("static_smem_48k_kernel", [2], [32], 4, 0, [("ptr", out.ctypes.data)])


@pytest.mark.sim
@pytest.mark.parametrize("grid,block,smem", [
    ([1], [1024], 48 * 1024), ([1, 65535], [1], 4), ([1, 1, 65535], [1], 4),
    ([1], [1, 1, 64], 64 * 4), ([1], [1, 1024], 1024 * 4)])
def test_launch_limits_are_inclusive(grid, block, smem):
    """Each limit itself is accepted (and the launch runs every block, each on its own outputs)."""
    nb, nt = int(np.prod(grid)), int(np.prod(block))
    x = np.arange(nb * nt, dtype=np.float32)
    out = np.zeros_like(x)
    _ext.sim_testing().launch("indexing_smem_kernel", grid, block, smem, 0,
                      [("ptr", x.ctypes.data), ("ptr", out.ctypes.data)])
    expect = x.reshape(nb, nt)[:, ::-1] + 1000.0 * np.arange(nb, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(out.reshape(nb, nt), expect)


@pytest.mark.sim
def test_bad_arguments_raise():
    x = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="argument 2 must be i64, got f64"):
        _ext.sim_testing().launch("copy_kernel", [1], [4], 0, 0,
                          [("ptr", x.ctypes.data), ("ptr", x.ctypes.data), ("f64", 4.0)])
    with pytest.raises(ValueError, match="no kernel registered as 'nope'"):
        _ext.sim_testing().launch("nope", [1], [4], 0, 0, [])


@pytest.mark.sim
def test_warp_swap_control_twin_is_correct():
    """The correct twin of the missing-__syncwarp sanitizer control computes what it says."""
    n, threads = 1000, 1024
    x = np.arange(n, dtype=np.float32) + 1
    y = np.zeros(n, np.float32)
    _ext.sim_testing().launch("warp_swap_kernel", [1], [threads], 0, 0,
                      [("ptr", x.ctypes.data), ("ptr", y.ctypes.data), ("i64", n)])
    src = (np.arange(n) ^ 1) ^ 2
    np.testing.assert_array_equal(y, np.where(src < n, x[np.minimum(src, n - 1)], 0))


@pytest.mark.sim
def test_sim_api_lane_alive_gather_thread_storage():
    """cvk::sim::lane, alive_lanes, warp_gather (a 12-byte type, full and partial masks) and
    thread_storage (value-initialised per block, one slot per type)."""
    blocks, threads = 2, 64
    v = np.random.default_rng(3).integers(-50, 50, blocks * threads).astype(np.int32)
    out = np.full(blocks * threads * 9, -7, np.int32)
    _ext.sim_testing().launch("sim_api_kernel", [blocks], [threads], 0, 0,
                      [("ptr", v.ctypes.data), ("ptr", out.ctypes.data)])
    out = out.reshape(blocks, threads, 9)
    for b in range(blocks):
        for t in range(threads):
            if t >= 56:
                assert out[b, t].tolist() == [-7] * 9
                continue
            lane, w0 = t % 32, t - t % 32
            alive = 0xffffffff if t < 32 else 0x00ffffff
            members = [w0 + l for l in range(32) if alive >> l & 1]
            vals = v[b * threads + np.array(members)]
            expect = [lane, np.uint32(alive).view(np.int32), int(vals.sum()),
                      int(vals.sum()), sum(members), t + 1, 0, 99,
                      v[b * threads + (t ^ 1)] if lane < 16 else -7]
            assert out[b, t].tolist() == [int(e) for e in expect], f"block {b} thread {t}"


@pytest.mark.sim
@pytest.mark.parametrize("kernel,message", [
    ("gather_exited_lane_kernel", r"warp_gather: lanes 0xffff0000 of its mask have exited"),
    ("gather_outside_mask_kernel", "called a warp intrinsic whose mask does not include it"),
])
def test_warp_gather_misuse_is_an_error(kernel, message):
    v, out = np.zeros(32, np.int32), np.zeros(32, np.int32)
    with pytest.raises(RuntimeError, match=message):
        _ext.sim_testing().launch(kernel, [1], [32], 0, 0,
                          [("ptr", v.ctypes.data), ("ptr", out.ctypes.data)])


# sim::launch itself, in both execution models, from a small C++ program: the opt-in dynamic
# shared memory attribute, exceptions as launch errors, a deadlock as an error (fibers only; the
# thread model would hang), blocks in parallel, and that the pool survives many launches.
LAUNCH_CHECKS = r"""
#include "cvk/common.cuh"
#include <cstdio>
using namespace cvk::sim;
static void expect(const char* what, const std::function<void()>& f, const char* want) {
  std::string got = "ok";
  try { f(); } catch (const std::exception& e) { got = e.what(); }
  std::printf("%s: %s\n", what, got.c_str());
  if (got.find(want) == std::string::npos) { std::printf("FAIL %s: want %s\n", what, want); std::exit(1); }
}
__global__ void fill(unsigned char* p, int n) {
  CVK_EXTERN_SHARED(unsigned char, s);
  for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = static_cast<unsigned char>(i);
  __syncthreads();
  if (threadIdx.x == 0) for (int i = 0; i < n; ++i) p[blockIdx.x * n + i] = s[n - 1 - i];
}
__global__ void smem_48k(float* out) {
  __shared__ float s[12288];
  s[threadIdx.x] = 1.f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x ^ 1];
}
__device__ __forceinline__ void smem_1k_more() { __shared__ float t[256]; t[threadIdx.x] = 0.f; }
__global__ void smem_49k(float* out) {
  smem_48k(out);
  smem_1k_more();
}
int main() {
  std::vector<unsigned char> buf(4 * 100 * 1024);
  std::vector<float> fo(128);
  expect("static smem 48 KiB", [&] { launch(2, 64, 0, 48 * 1024, [&] { smem_48k(fo.data()); }); }, "ok");
  expect("static 48 KiB + dynamic 16 B", [&] { launch(2, 64, 16, 48 * 1024, [&] { smem_48k(fo.data()); }); },
         "invalid argument");
  expect("static 48 KiB + opt-in 179 KiB", [&] { launch(2, 64, 16, 179 * 1024, [&] { smem_48k(fo.data()); }); }, "ok");
  expect("static 48 KiB + opt-in 180 KiB", [&] { launch(2, 64, 16, 180 * 1024, [&] { smem_48k(fo.data()); }); },
         "invalid argument");
  expect("static smem 49 KiB", [&] { launch(2, 64, 0, 48 * 1024, [&] { smem_49k(fo.data()); }); },
         "uses too much shared data (0xc400 bytes, 0xc000 max)");
  expect("opt-in 100 KiB", [&] { launch(4, 64, 100 * 1024, 100 * 1024, [&] { fill(buf.data(), 100 * 1024); }); }, "ok");
  for (int b = 0; b < 4; ++b) for (int i = 0; i < 100 * 1024; ++i)
    if (buf[b * 100 * 1024 + i] != static_cast<unsigned char>(100 * 1024 - 1 - i)) { std::printf("FAIL smem\n"); return 1; }
  expect("no opt-in", [&] { launch(1, 32, 100 * 1024, 48 * 1024, [] {}); }, "invalid argument");
  expect("opt-in above 227 KiB", [&] { launch(1, 32, 1024, 228 * 1024, [] {}); }, "invalid argument");
  expect("no dynamic smem", [&] { launch(1, 32, 0, 48 * 1024, [&] { fill(buf.data(), 4); }); }, "0 bytes launched");
  expect("throw in one thread", [&] { launch(3, 64, 0, 48 * 1024, [] {
    __syncthreads();
    if (blockIdx.x == 1 && threadIdx.x == 7) throw UsageError("boom");
    __syncthreads(); }); }, "cvk sim: boom");
  std::atomic<int> count{0};
  expect("many launches", [&] { for (int i = 0; i < 300; ++i) launch(dim3(5, 2), dim3(33, 3), 0, 48 * 1024, [&] {
    __syncthreads(); count.fetch_add(1, std::memory_order_relaxed); __syncwarp(); }); }, "ok");
  if (count.load() != 300 * 10 * 99) { std::printf("FAIL count %d\n", count.load()); return 1; }
#if CVK_SIM_MODEL == CVK_SIM_FIBERS
  expect("deadlock", [&] { launch(2, 64, 0, 48 * 1024, [] {
    if (threadIdx.x == 0) __syncwarp(0x3u); else if (threadIdx.x == 1) __syncthreads(); }); }, "deadlock");
  expect("after a deadlock", [&] { launch(2, 64, 0, 48 * 1024, [] { __syncthreads(); }); }, "ok");
#endif
  std::printf("all ok\n");
}
"""


@pytest.mark.sim
@pytest.mark.parametrize("model", ["CVK_SIM_FIBERS", "CVK_SIM_THREADS"])
def test_launch_in_each_model(tmp_path, model):
    src = tmp_path / "launch_checks.cpp"
    src.write_text(LAUNCH_CHECKS)
    exe = tmp_path / "launch_checks"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # sanitizer CI sets it
    subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-DCVK_SIM", f"-DCVK_SIM_MODEL={model}",
                    f"-I{ROOT / 'kernels/include'}", str(src), "-o", str(exe)], check=True, env=env)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)
    print(proc.stdout)
    assert proc.returncode == 0 and "all ok" in proc.stdout, proc.stdout + proc.stderr


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
