"""matmul_tc: fp16/bf16 C = A @ B on tensor cores, fp32 out (kernels/matmul_tc.cuh): a cp.async
pipeline, ldmatrix and mma.sync m16n8k16. The correctness vehicle of cvk/mma.cuh and
cvk/cp_async.cuh: it runs on the simulator exactly as the PTX ISA defines the instructions."""
from __future__ import annotations

import numpy as np

from ..spec import (BFLOAT16, FLOAT16, FLOAT32, Bench, Case, Family, I64, In, Kernel, Out,
                    Param, ceil_div, dtype_param)
from .._arrays import data_ptr
from ._common import need_dtype

U = FLOAT32.unit_roundoff
TILE, THREADS = 64, 128     # matmul_tc::BM = BN, THREADS in the kernel
VECS = (8, 4, 2, 1)

FORWARD = Kernel("matmul_tc_forward_kernel", (dtype_param(), Param("VEC", VECS)),
                 (In("A"), In("B"), Out("C", elem="float32"), I64("M"), I64("N"), I64("K")))
FAMILY = Family("matmul_tc", "matmul_tc.cuh", [FORWARD], dtypes=(FLOAT16, BFLOAT16),
                doc="fp16/bf16 GEMM on mma.sync, fp32 out")


def plan(dev, dtype, M, N, K, a, b):
    """VEC: the largest of 8, 4, 2, 1 elements dividing K and N with both operands aligned to
    2*VEC bytes, so a cp.async chunk is wholly inside the matrix or wholly outside."""
    vec = next(v for v in VECS if K % v == 0 and N % v == 0
               and data_ptr(a) % (2 * v) == 0 and data_ptr(b) % (2 * v) == 0)
    if ceil_div(M, TILE) > dev.max_grid[1]:
        raise ValueError("matmul_tc: M too large for one launch")
    return FAMILY.plan(FORWARD, dict(T=dtype, VEC=vec), grid=(ceil_div(N, TILE),
                                                               ceil_div(M, TILE)),
                       block=(THREADS,))


@FAMILY.op("matmul_tc", "forward")
def matmul_tc_forward(rt, input, other):
    """``input @ other`` for 2-D fp16/bf16 matrices on tensor cores; an fp32 result."""
    from ..reference.matmul import _check_matmul
    _check_matmul("matmul_tc", input, other)
    if input.ndim != 2 or other.ndim != 2:
        raise ValueError(f"matmul_tc: input and other must be 2-D, got shapes "
                         f"{tuple(input.shape)} and {tuple(other.shape)}")
    dtype = need_dtype(rt, "matmul_tc", FAMILY, input=input, other=other)
    (M, K), N = input.shape, other.shape[1]
    a, b = rt.xp.ascontiguousarray(input), rt.xp.ascontiguousarray(other)
    c = rt.xp.zeros((M, N), dtype=np.float32)
    if M and N and K:
        rt.launch(plan(rt.device(), dtype, M, N, K, a, b), A=a, B=b, C=c, M=M, N=N, K=K)
    return c


def _case(M, N, K, check=True):
    def make(rng):
        return {"input": rng.standard_normal((M, K)), "other": rng.standard_normal((K, N))}, {}

    def bound(a, r):   # 2u: a GPU's tensor cores may truncate where the simulator rounds
        return (K + 2) * 2 * U * (np.abs(a["input"]) @ np.abs(a["other"]))
    return Case("matmul_tc", "forward", f"{M}x{K} @ {K}x{N}", make, bound, check=check,
                out_dtype=FLOAT32)


FAMILY.case(_case(1, 1, 1), _case(17, 31, 33), _case(65, 66, 70), _case(20, 72, 200),
            _case(64, 64, 64, check=False))


def _bench_make(xp, shape, dtype, seed):
    M, N, K = shape
    rs = np.random.default_rng(seed)
    return ({"input": xp.asarray(rs.standard_normal((M, K), dtype=np.float32).astype(dtype.np)),
             "other": xp.asarray(rs.standard_normal((K, N), dtype=np.float32).astype(dtype.np))},
            {})


FAMILY.bench(Bench(
    "matmul_tc", "forward",
    shapes={"full": [(4096, 4096, 4096)], "quick": [(2048, 2048, 2048)],
            "dry-run": [(64, 64, 64)]},
    make=_bench_make,
    work=lambda shape, itemsize: {"flop": 2 * shape[0] * shape[1] * shape[2]},
    peer_name="cublas (torch.matmul, fp32 out)",
    peer=lambda torch, t, p: torch.matmul(t["input"], t["other"]).float(),
    device_ref=lambda xp, a, p: xp.matmul(a["input"], a["other"]),
    dtypes=(FLOAT16, BFLOAT16),
    bars=(("float16", (4096, 4096, 4096), "ratio_vs_peer", 0.5, 0.9,
           "matmul fp16 4096^3 on mma.sync vs cuBLAS"),)))
