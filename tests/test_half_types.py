"""The element-type layer (cvk/dtype.cuh, cvk/sim_half.h) bit for bit, through the test kernels
of kernels/testing/half_checks.cuh: on the simulator always, and on a GPU (marker `gpu`) against
the same expectations.

- half/bf16 -> float: all 65536 bit patterns, against numpy float16 / ml_dtypes.bfloat16.
- float -> half/bf16 (round to nearest even): every rounding boundary of each type (every
  midpoint between neighbours and its float32 neighbours), subnormals, the overflow threshold,
  inf, NaN, and random float32 bit patterns, against numpy's astype(float16) and ml_dtypes.
  One difference by design: the GPU turns every NaN into the canonical 0x7fff (cvt.rn.f16.f32 /
  cvt.rn.bf16.f32, and cuda_fp16.hpp's host path), where numpy and ml_dtypes keep sign and
  payload. The simulator follows the GPU; the tests check 0x7fff and that numpy differs.
- __hadd/__hsub/__hmul/__hdiv/__hfma and the operators, against an exact model (Fractions,
  rounded once to nearest even), on random and adversarial pairs; comparisons against float64.

Half and bf16 data travel as uint16 bit patterns, so CuPy needs no bfloat16 support.
"""
import math
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from helpers import run_test_kernel

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [pytest.param("sim", marks=pytest.mark.sim), pytest.param("gpu", marks=pytest.mark.gpu)]
BF16 = ml_dtypes.bfloat16
# name in the kernel registry, numpy dtype, exponent bits, stored mantissa bits
TYPES = {"half": ("__half", np.float16, 5, 10), "bf16": ("__nv_bfloat16", BF16, 8, 7)}
CANONICAL_NAN = 0x7FFF


def run(target, kernel, n_threads, arrays, scalars=(), block=256):
    """Launch a registered kernel over `n_threads` threads (1-D) on numpy arrays; returns the
    arrays after the launch."""
    grid = [max(1, -(-n_threads // block))]
    return run_test_kernel(target, kernel, grid, [block], 0, arrays, scalars)


def bits_to_float64(bits, t):
    with np.errstate(invalid="ignore"):  # NaN patterns
        return bits.view(TYPES[t][1]).astype(np.float64)


# ---- an exact model: round a rational once to nearest even ------------------------------------
def round_exact(x: Fraction, negative: bool, ebits: int, mbits: int) -> int:
    """The bit pattern of x (>= 0, sign given separately) rounded to nearest even, with gradual
    underflow and overflow to inf. Independent of the C++ code on purpose."""
    bias = (1 << (ebits - 1)) - 1
    emin = 1 - bias
    sign = (1 << (ebits + mbits)) if negative else 0
    inf = ((1 << ebits) - 1) << mbits
    if x == 0:
        return sign
    n, d = x.numerator, x.denominator
    e = n.bit_length() - d.bit_length()  # 2^e <= x < 2^(e+2)
    if Fraction(2) ** e > x:
        e -= 1
    if Fraction(2) ** (e + 1) <= x:
        e += 1
    qexp = max(e, emin) - mbits
    num, den = n * 2 ** max(-qexp, 0), d * 2 ** max(qexp, 0)
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
    if q >= 2 << mbits:
        q >>= 1
        qexp += 1
    if q < 1 << mbits:
        return sign | q
    field = qexp + mbits + bias
    if field >= (1 << ebits) - 1:
        return sign | inf
    return sign | (field << mbits) | (q - (1 << mbits))


def model_op(op, a, b, c, ebits, mbits):
    """Bits of op(a, b[, c]) on float64 operands holding exact half/bf16 values, rounded once;
    None for a NaN result. Specials and signed zeros follow IEEE (float64 gets them right: its
    special cases and zero signs are the same for any format)."""
    with np.errstate(all="ignore"):
        f = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
             "div": lambda: np.float64(a) / np.float64(b),
             "fma": lambda: np.float64(a) * np.float64(b) + np.float64(c)}[op]()
    if math.isnan(f):
        return None
    operands = (a, b, c) if op == "fma" else (a, b)
    if not all(math.isfinite(v) for v in operands) or (op == "div" and b == 0):
        return round_exact(Fraction(0), f < 0, ebits, mbits) if f == 0 else (
            (((1 << ebits) - 1) << mbits) | ((1 << (ebits + mbits)) if f < 0 else 0))
    A, B, C = Fraction(a), Fraction(b), Fraction(c if op == "fma" else 0.0)
    exact = {"add": A + B, "sub": A - B, "mul": A * B, "div": A / B if b else None,
             "fma": A * B + C}[op]
    if exact == 0:  # the sign of an exact zero: float64 computed it exactly
        return round_exact(Fraction(0), math.copysign(1.0, f) < 0, ebits, mbits)
    return round_exact(abs(exact), exact < 0, ebits, mbits)


# ---- half/bf16 -> float ---------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", ["half", "bf16"])
def test_to_float_all_bit_patterns(target, t):
    name, dt, _, _ = TYPES[t]
    n = 65536
    bits = np.arange(n, dtype=np.uint16)
    out = np.full(2 * n, np.nan, np.float32)
    _, out = run(target, f"half_to_float_kernel<{name}>", n, [bits, out], [("i64", n)])
    ref = bits.view(dt).astype(np.float32)
    nan = np.isnan(ref)
    assert nan.sum() == (2046 if t == "half" else 254)
    for k, what in enumerate(["cvk::to_float", "operator float"]):
        got = out[k * n:(k + 1) * n]
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=what)
        bad = np.flatnonzero(got.view(np.uint32)[~nan] != ref.view(np.uint32)[~nan])
        assert bad.size == 0, f"{what}: {t} bits {bits[~nan][bad[:8]]} -> {got[~nan][bad[:8]]}"
        if t == "bf16":  # a bf16 is the top half of a float32: NaN payloads survive, as on a GPU
            np.testing.assert_array_equal(got.view(np.uint32), bits.astype(np.uint32) << 16)
        elif target == "sim":  # half NaN -> 0x7fffffff, as cuda_fp16.hpp's host __half2float
            assert np.all(got.view(np.uint32)[nan] == 0x7FFFFFFF)


# ---- float -> half/bf16 ---------------------------------------------------------------------------
def rounding_boundaries(t):
    """float32 inputs at and around every rounding decision of type t."""
    _, dt, ebits, mbits = TYPES[t]
    finite = np.arange(0, (((1 << ebits) - 1) << mbits), dtype=np.uint16)  # +0 .. max finite
    v = finite.view(dt).astype(np.float64)
    nxt = np.append(v[1:], 2.0 ** ((1 << (ebits - 1)) - 1 + 1))  # past max: the next power of 2
    mid = (v + nxt) / 2  # exact in float64, and in float32 (one bit more than the type)
    assert np.array_equal(mid.astype(np.float32).astype(np.float64), mid)
    pts = np.concatenate([v, mid]).astype(np.float32)
    up = np.nextafter(pts, np.float32(np.inf))
    down = np.nextafter(pts, np.float32(-np.inf))
    pts = np.concatenate([pts, up, down])
    f32 = np.finfo(np.float32)
    special = np.array([np.inf, f32.max, f32.tiny, f32.smallest_subnormal, 2.0 ** -149 * 3,
                        f32.tiny * 0.75, 1.0e-30, 1e30, 65504, 65520, 65519.996, 65536,
                        2.0 ** -24, 2.0 ** -25, 2.0 ** -26, 2.0 ** -25 * 1.0000001, 2.0 ** -133,
                        2.0 ** -134, 2.0 ** -134 * 1.0000001, 2.0 ** -126], np.float32)
    rnd = np.random.default_rng(1).integers(0, 2 ** 32, 200_000, dtype=np.uint64)
    rnd = rnd.astype(np.uint32).view(np.float32)
    rnd = rnd[~np.isnan(rnd)]
    pts = np.concatenate([pts, special, rnd])
    pts = np.concatenate([pts, -pts])
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000,
                     0x7F802000], np.uint32).view(np.float32)
    return np.concatenate([pts, nans])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", ["half", "bf16"])
def test_from_float_rounds_to_nearest_even(target, t):
    name, dt, _, _ = TYPES[t]
    x = rounding_boundaries(t)
    n = x.size
    out = np.zeros(3 * n, np.uint16)
    _, out = run(target, f"float_to_half_kernel<{name}>", n, [x, out], [("i64", n)])
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(dt).view(np.uint16)
    nan = np.isnan(x)
    rn = "__float2half_rn" if t == "half" else "__float2bfloat16_rn"
    for k, what in enumerate(["cvk::from_float", rn, "converting constructor"]):
        got = out[k * n:(k + 1) * n]
        bad = np.flatnonzero(got[~nan] != ref[~nan])
        assert bad.size == 0, (f"{what}: float32 {x[~nan][bad[:6]]!r} -> "
                               f"{[hex(b) for b in got[~nan][bad[:6]]]}, numpy "
                               f"{[hex(b) for b in ref[~nan][bad[:6]]]}")
        # NaN: the GPU's canonical 0x7fff, sign and payload dropped
        assert np.all(got[nan] == CANONICAL_NAN), [hex(b) for b in got[nan]]
    # ... where numpy / ml_dtypes keep them: the one difference, by design
    assert not np.all(ref[nan] == CANONICAL_NAN)


@pytest.mark.parametrize("target", TARGETS)
def test_from_float_overflow_threshold(target):
    """65520 = the midpoint of 65504 (max half, odd mantissa) and 2^16 ties to even: inf."""
    x = np.array([65504, 65519.996, 65520, -65520, 3.4e38, np.inf], np.float32)
    out = np.zeros(3 * x.size, np.uint16)
    _, out = run(target, "float_to_half_kernel<__half>", x.size, [x, out], [("i64", x.size)])
    assert [hex(b) for b in out[:x.size]] == ["0x7bff", "0x7bff", "0x7c00", "0xfc00", "0x7c00",
                                              "0x7c00"]


# ---- arithmetic and comparisons ---------------------------------------------------------------
OPS = ["add", "sub", "mul", "div", "fma"]


def arith_operands(t, n=6000, seed=0):
    """Uniform random bit patterns (every class: zeros, subnormals, normals, inf, NaN), pairs
    with close exponents (ties and cancellation), and for half, quotients near a rounding
    midpoint."""
    _, dt, ebits, mbits = TYPES[t]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 65536, n, dtype=np.uint32).astype(np.uint16)
    b = rng.integers(0, 65536, n, dtype=np.uint32).astype(np.uint16)
    c = rng.integers(0, 65536, n, dtype=np.uint32).astype(np.uint16)
    # close pairs: b a few units of a away (a +/- b cancels, ties in the sum)
    m = n // 3
    delta = rng.integers(-40, 41, m).astype(np.int32)
    b[:m] = ((a[:m].astype(np.int32) + delta) & 0xFFFF).astype(np.uint16)
    # moderate exponents for a third, so products and fma addends interact
    mid_lo = (((1 << (ebits - 1)) - 1 - 4) << mbits)
    mid_hi = (((1 << (ebits - 1)) - 1 + 4) << mbits)
    a[m:2 * m] = rng.integers(mid_lo, mid_hi, m) | (rng.integers(0, 2, m) << 15)
    b[m:2 * m] = rng.integers(mid_lo, mid_hi, m) | (rng.integers(0, 2, m) << 15)
    c[m:2 * m] = rng.integers(mid_lo - (8 << mbits), mid_hi + (4 << mbits), m) | (
        rng.integers(0, 2, m) << 15)
    extra_a, extra_b = [], []
    if t == "half":
        extra_a, extra_b = near_midpoint_quotients()
    a = np.concatenate([a, np.array(extra_a, np.uint16)])
    b = np.concatenate([b, np.array(extra_b, np.uint16)])
    c = np.concatenate([c, np.zeros(len(extra_a), np.uint16)])
    return a, b, c


def near_midpoint_quotients(limit=2.0 ** -22):
    """Half pairs (a, b) whose quotient lies within `limit` (relative) of a rounding midpoint:
    where an approximate reciprocal could round the other way."""
    A = np.arange(1024, 2048, dtype=np.float64)[:, None]
    B = np.arange(1024, 2048, dtype=np.float64)[None, :]
    q = A / B
    qs = np.where(q < 1, q * 2, q)  # in [1, 2): midpoints at odd multiples of 2^-11
    mid = (np.floor(qs * 1024) * 2 + 1) / 2048
    ia, ib = np.nonzero(np.abs(qs - mid) / qs < limit)
    # significands 1024..2047 as halves in [1, 2): bits 0x3c00 | (m - 1024)
    return list(0x3C00 | ia), list(0x3C00 | ib)


def expected_arith(t, a, b, c):
    _, _, ebits, mbits = TYPES[t]
    fa, fb, fc = (bits_to_float64(x, t) for x in (a, b, c))
    exp = {}
    for op in OPS:
        exp[op] = [model_op(op, fa[i], fb[i], fc[i], ebits, mbits) for i in range(a.size)]
    return exp


def check_bits(got, expect, what, a, b, allow=None):
    """Bitwise against the model; None in `expect` means NaN (NaN-ness only). `allow[i]`, where
    given, is a second acceptable pattern."""
    bad = []
    for i, (g, e) in enumerate(zip(got.tolist(), expect)):
        if e is None:
            ok = (g & 0x7FFF) > 0x7C00 if what.endswith("half") else (g & 0x7FFF) > 0x7F80
        else:
            alt = None if allow is None else allow[i]
            ok = g == e or alt == "any" or (alt is not None and g == alt)
        if not ok:
            bad.append((hex(int(a[i])), hex(int(b[i])), hex(g), None if e is None else hex(e)))
    assert not bad, f"{what}: {len(bad)} wrong, first (a, b, got, expected): {bad[:6]}"


@pytest.fixture(scope="module")
def arith_cases():
    cases = {}
    for t in TYPES:
        a, b, c = arith_operands(t)
        cases[t] = (a, b, c, expected_arith(t, a, b, c))
    return cases


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", ["half", "bf16"])
def test_arithmetic_rounds_once(target, t, arith_cases):
    name = TYPES[t][0]
    a, b, c, exp = arith_cases[t]
    n = a.size
    out = np.zeros(10 * n, np.uint16)
    cmp = np.full(6 * n, -1, np.int32)
    *_, out, cmp = run(target, f"half_arith_kernel<{name}>", n, [a, b, c, out, cmp],
                       [("i64", n)])
    out = out.reshape(10, n)
    allow_div = None
    if target == "gpu" and t == "half":
        # cuda_fp16.hpp's device __hdiv multiplies by rcp.approx.ftz.f32: within 2^-22 of a
        # midpoint (a derived bound, not a fudge) it may take the other neighbour.
        fa, fb = bits_to_float64(a, t), bits_to_float64(b, t)
        allow_div = [None] * n
        for i in range(n):
            e = exp["div"][i]
            if e is None or not (math.isfinite(fa[i]) and math.isfinite(fb[i]) and fb[i]):
                continue
            q = abs(Fraction(fa[i]) / Fraction(fb[i]))
            if q * 2 ** 24 < 143:  # the device path refines results below 0x008f
                continue
            mag = e & 0x7FFF
            if mag >= 0x7C00:
                continue
            val = lambda m: Fraction(float(np.array([m], np.uint16).view(np.float16)[0]))  # noqa
            here = val(mag)
            # the other neighbour of the exact quotient (magnitudes: sign bit left alone)
            alt = mag + 1 if q > here else mag - 1
            if alt < 0 or alt >= 0x7C00:
                continue
            if abs(q - (here + val(alt)) / 2) < q * Fraction(1, 2 ** 22):
                allow_div[i] = (e & 0x8000) | alt
    if target == "gpu" and t == "bf16":
        # cuda_bf16.hpp's device __hdiv is div.approx.f32, specified for |b| in [2^-126, 2^128)
        # (it rescales |b| >= 2^126): a subnormal divisor is outside its documented range.
        fb = np.abs(bits_to_float64(b, t))
        allow_div = ["any" if 0 < fb[i] < 2.0 ** -126 else None for i in range(n)]
    for k, (op, label) in enumerate(zip(OPS, ["__hadd", "__hsub", "__hmul", "__hdiv", "__hfma"])):
        check_bits(out[k], exp[op], f"{label} {t}", a, b, allow_div if op == "div" else None)
    for k, (op, label) in enumerate(zip(OPS[:4], ["+", "-", "*", "/"])):
        check_bits(out[5 + k], exp[op], f"operator{label} {t}", a, b,
                   allow_div if op == "div" else None)
    a_nan = np.isnan(bits_to_float64(a, t))
    ok = (out[9] == (a ^ 0x8000)) | (a_nan & np.isnan(bits_to_float64(out[9], t)))
    assert ok.all(), f"unary minus {t}: {a[~ok][:6]} -> {out[9][~ok][:6]}"
    if target == "sim":  # NaN results are the canonical 0x7fff on the simulator
        for k in range(9):
            nan = np.isnan(out[k].view(TYPES[t][1]).astype(np.float32))
            assert np.all(out[k][nan] == CANONICAL_NAN), (k, out[k][nan][:6])
    fa, fb = bits_to_float64(a, t), bits_to_float64(b, t)
    expect_cmp = [fa == fb, ~(fa == fb), fa < fb, fa <= fb, fa > fb, fa >= fb]
    for k, label in enumerate(["==", "!= (unordered)", "<", "<=", ">", ">="]):
        np.testing.assert_array_equal(cmp[k * n:(k + 1) * n], expect_cmp[k].astype(np.int32),
                                      err_msg=f"operator{label} {t}")


@pytest.mark.parametrize("target", TARGETS)
def test_fma_is_not_float32_then_round(target):
    """__hfma rounds once: a*b = 2^-11 (1 - 2^-20) added to c = 1 + 2^-10 lies just below the
    midpoint 1 + 3*2^-11, so the result is c (0x3c01). Through float32 the 2^-31 is lost, the
    tie goes to even, and the answer would be 0x3c02."""
    a, b, c = np.float16(2.0 ** -11 * (1 + 2.0 ** -10)), np.float16(1 - 2.0 ** -10), np.float16(
        1 + 2.0 ** -10)
    assert float(a) * float(b) == 2.0 ** -11 * (1 - 2.0 ** -20)
    via_f32 = np.float16(np.float32(a) * np.float32(b) + np.float32(c)).view(np.uint16)
    exact = model_op("fma", float(a), float(b), float(c), 5, 10)
    assert exact == 0x3C01 and via_f32 == 0x3C02
    bits = [np.array([v], np.float16).view(np.uint16) for v in (a, b, c)]
    out, cmp = np.zeros(10, np.uint16), np.zeros(6, np.int32)
    *_, out, _ = run(target, "half_arith_kernel<__half>", 1, bits + [out, cmp], [("i64", 1)])
    assert int(out[4]) == exact


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", ["half", "bf16"])
def test_atomic_add(target, t):
    name, dt, _, _ = TYPES[t]
    acc = np.array([3.0, 100.0], np.float32).astype(dt).view(np.uint16)
    blocks, threads = 3, 64
    ext_grid = blocks * threads
    (acc,) = run(target, f"half_atomic_add_kernel<{name}>", ext_grid, [acc], (), threads)
    np.testing.assert_array_equal(acc.view(dt).astype(np.float32),
                                  [3.0 + ext_grid, 100.0 - 0.5 * ext_grid])


# ---- NVRTC and nvcc compile checks ----------------------------------------------------------
def nvrtc_compile(source, with_cuda_include, arch="sm_90"):
    """Compile kernels/<source> with the rawkernel backend's options (optionally without the
    CUDA include directory) and the kernels its registration block names."""
    import re
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings not installed")
    from cvkernels.backends import rawkernel as rk
    text = (rk.kernels_dir() / source).read_text()
    names = re.findall(r"^CVK_REGISTER\((.+)\)\s*$", text, flags=re.M)
    err, prog = nvrtc.nvrtcCreateProgram(f'#include "{source}"\n'.encode(), b"half_module.cu",
                                         0, [], [])
    for n in names:
        nvrtc.nvrtcAddNameExpression(prog, n.encode())
    inc = f"-I{rk.cuda_include_dir()}"
    opts = [o.encode() for o in rk.nvrtc_options() if with_cuda_include or o != inc]
    opts.append(f"--gpu-architecture={arch}".encode())
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    lowered = []
    if err == nvrtc.nvrtcResult.NVRTC_SUCCESS:
        lowered = [nvrtc.nvrtcGetLoweredName(prog, n.encode())[1] for n in names]
    nvrtc.nvrtcDestroyProgram(prog)
    return err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace"), names, lowered


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvrtc_compiles_half_checks(arch):
    from cvkernels.backends.rawkernel import cuda_include_dir
    if cuda_include_dir() is None:
        pytest.skip("no CUDA include directory with cuda_fp16.h found")
    ok, log, names, lowered = nvrtc_compile("testing/half_checks.cuh", True, arch)
    assert ok, log
    assert len(names) == 14 and all(m.startswith(b"_Z") for m in lowered), (names, lowered)


def test_nvrtc_without_cuda_include_says_why():
    """NVRTC 13 has no built-in cuda_fp16.h: without -I<CUDA include dir> the compile fails with
    dtype.cuh's own message, not an obscure one (or succeeds, if a later NVRTC builds it in)."""
    ok, log, _, _ = nvrtc_compile("testing/half_checks.cuh", False)
    assert ok or "pass -I<CUDA include dir>" in log, log


@pytest.mark.parametrize("arch", ["80", "90"])
def test_nvcc_compiles_half_checks(tmp_path, arch):
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        pytest.skip("nvcc not found")
    src = tmp_path / "half_checks.cu"
    src.write_text('#include "registry.h"\n#define CVK_REGISTER_TEST_KERNELS\n'
                   '#include "testing/half_checks.cuh"\n')
    obj = tmp_path / "half_checks.o"
    proc = subprocess.run([nvcc, f"-arch=sm_{arch}", "-std=c++17", f"-I{ROOT / 'pyext'}",
                           f"-I{ROOT / 'kernels'}", f"-I{ROOT / 'kernels/include'}", "-c",
                           str(src), "-o", str(obj)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tool = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if os.path.exists(tool):  # Packed128 moves 16 bytes per instruction
        sass = subprocess.run([tool, "-sass", str(obj)], capture_output=True, text=True).stdout
        assert "LDG.E.128" in sass and "STG.E.128" in sass, sass[-2000:]
        assert "LDG.E.EF.128" in sass and "STG.E.EF.128" in sass, "no streaming (__ldcs/__stcs)"
