"""Philox4x32-10 in NumPy: the twin of ``kernels/include/cvk/philox.cuh``, bit for bit.

Philox4x32-10 (Salmon et al., SC'11; the Random123 library, as curand and torch's CUDA
generator use it) maps a 128-bit counter and a 64-bit key to 128 random bits. Being a pure
function of (counter, key), a kernel and this reference draw the same bits for the same
element, and a backward pass regenerates a dropout mask instead of storing it.

The cvkernels stream of ``seed`` (a uint64): draw number ``d`` (a 64-bit count of 32-bit
draws) is word ``d % 4`` of ``philox4x32_10([lo(d // 4), hi(d // 4), 0, 0],
[lo(seed), hi(seed)])``. ``numpy.random.Philox`` is Philox4x64-10 (64-bit words, other
multipliers), so its raw output cannot be compared with this generator; the tests use
Random123's published known-answer vectors instead.
"""
from __future__ import annotations

import numpy as np

__all__ = ["philox4x32_10", "philox_draws", "as_seed"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LO = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def philox4x32_10(counter, key, xp=np):
    """Philox4x32-10 of ``counter`` (uint32 array ``[..., 4]``) under ``key`` (two uint32 words,
    the same for all counters): a uint32 array ``[..., 4]``. Vectorised over the counters; the
    32x32->64 products are exact in uint64. ``xp``: numpy, or CuPy to run it on a GPU."""
    c = xp.asarray(counter, dtype=np.uint32).astype(np.uint64)
    x, y, z, w = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(10):
        p0, p1 = _M0 * x, _M1 * z
        x, y, z, w = ((p1 >> _SHIFT) ^ y ^ np.uint64(k0), p1 & _LO,
                      (p0 >> _SHIFT) ^ w ^ np.uint64(k1), p0 & _LO)
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return xp.stack([x, y, z, w], axis=-1).astype(np.uint32)


def as_seed(seed) -> int:
    """A Python int seed as the uint64 the generator keys on (two's complement for negatives)."""
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def philox_draws(seed, offset: int, n: int, xp=np):
    """The draws ``offset .. offset + n - 1`` of the stream of ``seed``: uint32 ``[n]``."""
    if n == 0:
        return xp.zeros(0, np.uint32)
    s = as_seed(seed)
    first, last = offset // 4, (offset + n - 1) // 4
    blocks = xp.arange(first, last + 1, dtype=np.uint64)
    ctr = xp.zeros((blocks.size, 4), np.uint32)
    ctr[:, 0], ctr[:, 1] = (blocks & _LO).astype(np.uint32), (blocks >> _SHIFT).astype(np.uint32)
    words = philox4x32_10(ctr, (s & 0xFFFFFFFF, s >> 32), xp).reshape(-1)
    start = offset - 4 * first
    return words[start:start + n]
