"""A NumPy model of the PTX ISA's warp-level fragment layouts, written from the ISA's tables
(not from kernels/include/cvk/mma.cuh), used to pack inputs for and unpack outputs of the
tensor-core wrappers.

Sections (PTX ISA): "Matrix Fragments for mma.m16n8k16 with floating point type",
"Matrix Fragments for mma.m16n8k8" (.tf32), "Warp-level matrix load instruction: ldmatrix".
In every table ``groupID = laneid >> 2`` and ``threadID_in_group = laneid % 4``; a ``.f16x2``
register holds elements ``a[2r]`` (low 16 bits) and ``a[2r+1]`` (high 16 bits).

Registers are returned as ``uint32`` arrays of shape ``[32, nregs]`` (lane-major), matrices of
16-bit elements as their ``uint16`` bit patterns.
"""
from __future__ import annotations

import numpy as np


def _lane_ids(lane):
    return lane >> 2, lane % 4  # groupID, threadID_in_group


# ---- m16n8k16, .f16/.bf16 A and B, .f32 C/D ---------------------------------------------------
def a_m16n8k16_pos(lane, i):
    """(row, col) of element a_i (i = 0..7) of lane's A fragment (16 x 16)."""
    g, t = _lane_ids(lane)
    row = g if (0 <= i < 2 or 4 <= i < 6) else g + 8
    col = t * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def b_m16n8k16_pos(lane, i):
    """(row, col) of element b_i (i = 0..3) of lane's B fragment (16 x 8, K x N)."""
    g, t = _lane_ids(lane)
    row = t * 2 + (i & 1) + (8 if i >= 2 else 0)
    return row, g


def c_pos(lane, i):
    """(row, col) of c_i / d_i (i = 0..3) in the 16 x 8 accumulator (m16n8k16 and m16n8k8)."""
    g, t = _lane_ids(lane)
    return (g if i < 2 else g + 8), t * 2 + (i & 1)


def _pack_b16(mat_bits, pos, nelem):
    """Registers [32, nelem/2]: element pairs (2r, 2r+1) into (low, high) halves."""
    regs = np.zeros((32, nelem // 2), np.uint32)
    for lane in range(32):
        for i in range(nelem):
            r, c = pos(lane, i)
            regs[lane, i // 2] |= np.uint32(mat_bits[r, c]) << np.uint32(16 * (i & 1))
    return regs


def pack_a_m16n8k16(a_bits):
    """A [16, 16] uint16 bit patterns -> registers [32, 4]."""
    assert a_bits.shape == (16, 16) and a_bits.dtype == np.uint16
    return _pack_b16(a_bits, a_m16n8k16_pos, 8)


def pack_b_m16n8k16(b_bits):
    """B [16, 8] (K x N) uint16 bit patterns -> registers [32, 2]."""
    assert b_bits.shape == (16, 8) and b_bits.dtype == np.uint16
    return _pack_b16(b_bits, b_m16n8k16_pos, 4)


def pack_c(c):
    """C [16, 8] float32 -> [32, 4] float32."""
    out = np.zeros((32, 4), np.float32)
    for lane in range(32):
        for i in range(4):
            out[lane, i] = c[c_pos(lane, i)]
    return out


def unpack_d(d):
    """D fragments [32, 4] float32 -> the 16 x 8 matrix; checks every element is covered once."""
    out = np.full((16, 8), np.nan, np.float32)
    seen = np.zeros((16, 8), int)
    for lane in range(32):
        for i in range(4):
            r, c = c_pos(lane, i)
            out[r, c] = d[lane, i]
            seen[r, c] += 1
    assert (seen == 1).all()
    return out


# ---- m16n8k8, .tf32 A and B -------------------------------------------------------------------
def a_m16n8k8_tf32_pos(lane, i):
    """(row, col) of a_i (i = 0..3) of lane's tf32 A fragment (16 x 8)."""
    g, t = _lane_ids(lane)
    row = g if i in (0, 2) else g + 8
    col = t if i in (0, 1) else t + 4
    return row, col


def b_m16n8k8_tf32_pos(lane, i):
    """(row, col) of b_i (i = 0, 1) of lane's tf32 B fragment (8 x 8, K x N)."""
    g, t = _lane_ids(lane)
    return (t if i == 0 else t + 4), g


def pack_a_m16n8k8_tf32(a):
    """A [16, 8] float32 -> registers [32, 4] (the fp32 bit patterns, one element each)."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return np.array([[bits[a_m16n8k8_tf32_pos(l, i)] for i in range(4)] for l in range(32)],
                    np.uint32)


def pack_b_m16n8k8_tf32(b):
    """B [8, 8] (K x N) float32 -> registers [32, 2]."""
    bits = np.ascontiguousarray(b, np.float32).view(np.uint32)
    return np.array([[bits[b_m16n8k8_tf32_pos(l, i)] for i in range(2)] for l in range(32)],
                    np.uint32)


def tf32_truncate(x):
    """The value the tensor core uses for a .tf32 operand: low 13 mantissa bits ignored."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
    return bits.view(np.float32)


# ---- ldmatrix .m8n8 .b16 ----------------------------------------------------------------------
def ldmatrix(smem_bits, row_offsets, num, trans):
    """Registers [32, num] that ldmatrix.sync.aligned.m8n8.x{num}{.trans}.b16 returns.

    ``smem_bits``: shared memory as uint16; ``row_offsets[l]``: lane l's row address (in
    elements). Threads 8j..8j+7 give the rows of matrix j. Lane t receives in register j the
    elements (row t/4, cols 2*(t%4), 2*(t%4)+1) of matrix j; with .trans the matrix is read in
    column-major order, i.e. those positions of the transpose of the rows as stored.
    """
    regs = np.zeros((32, num), np.uint32)
    for j in range(num):
        rows = np.stack([smem_bits[row_offsets[8 * j + r]:row_offsets[8 * j + r] + 8]
                         for r in range(8)])  # matrix j as stored, 8 x 8
        m = rows.T if trans else rows
        for t in range(32):
            lo, hi = m[t // 4, 2 * (t % 4)], m[t // 4, 2 * (t % 4) + 1]
            regs[t, j] = np.uint32(lo) | (np.uint32(hi) << np.uint32(16))
    return regs


# ---- reference arithmetic ---------------------------------------------------------------------
def mma_exact(a, b, c):
    """A @ B + C in float64 from float64 views of the (already decoded) operands."""
    return a.astype(np.float64) @ b.astype(np.float64) + c.astype(np.float64)


def mma_sequential_fp32(a, b, c):
    """The simulator's documented order: d = c; for k ascending: d = fl32(d + a[m,k]*b[k,n]),
    each product exact. Products of f16/bf16/tf32 values are exact in float64, and the sum in
    float64 is checked to be exact before its single rounding to float32."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = c.astype(np.float32).copy()
    for k in range(a.shape[1]):
        p = np.outer(a64[:, k], b64[k, :])
        d64 = d.astype(np.float64)
        s = d64 + p
        bb = s - d64  # TwoSum (Knuth): err is the exact rounding error of s
        err = (d64 - (s - bb)) + (p - bb)
        assert (err == 0).all(), \
            "model needs exact float64 sums; choose inputs with a narrower exponent range"
        d = s.astype(np.float32)
    return d
