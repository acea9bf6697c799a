"""Checking a kernel against its reference: the machinery shared by ``cvk check`` and the tests.

One case (``cvkernels.spec.Case``) runs on one runtime, in one dtype and one memory layout:

1. ``case.make(rng)`` gives float64 arrays; they are rounded to the dtype under test, and the
   float64 reference (``cvkernels.reference.<op>_<direction>``) runs on the *rounded* values,
   so the comparison measures the kernel, not the input rounding.
2. The arrays go to the runtime's device, contiguous or as strided views (every other element
   of a base twice as wide; on a GPU the base is moved and the view taken there, so the layout
   survives the move).
3. Every output is compared with the reference: shape, dtype, NaN positions, and the error model:
   * fp32: elementwise, ``|ours - ref| <= bound`` with ``case.bound`` derived from fp32 rounding;
   * fp16/bf16 (flash-attention's rule, design.md): ``max|ours - ref|`` is at most twice the
     error of the same computation done by NumPy in that precision (the reference run in fp32 on
     the rounded inputs, its result rounded to the dtype), plus one unit in the last place of
     ``max|ref|``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .spec import FLOAT32, DType

LAYOUTS = ("contiguous", "strided")


def is_float_array(a) -> bool:
    """A numpy array of a floating dtype, ml_dtypes' bfloat16 included."""
    return isinstance(a, np.ndarray) and (a.dtype.kind == "f" or a.dtype.name == "bfloat16")


def round_to(a, dtype: DType):
    """``a`` rounded to ``dtype`` (numpy; bf16 through ml_dtypes, round to nearest even)."""
    return a.astype(dtype.np) if is_float_array(a) else a


def to_device(rt, a, layout: str):
    """``a`` (numpy) on ``rt``'s device in ``layout``: "contiguous" or "strided"."""
    if not isinstance(a, np.ndarray):
        return a
    xp = rt.xp
    if layout == "contiguous" or a.ndim == 0 or a.size == 0:
        return a.copy() if xp is np else xp.asarray(a)
    base = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    base[..., ::2] = a
    if xp is not np:
        base = xp.asarray(base)   # move the base, then take the view on the device
    return base[..., ::2]


def to_host64(a):
    if a is None:
        return None
    if hasattr(a, "get"):
        a = a.get()
    return np.asarray(a).astype(np.float64)


def ulp(x: float, dtype: DType) -> float:
    """One unit in the last place of ``dtype`` at magnitude ``x``."""
    if x == 0 or not math.isfinite(x):
        return 0.0
    return 2.0 ** math.floor(math.log2(x)) * 2 * dtype.unit_roundoff


@dataclasses.dataclass
class Result:
    ok: bool
    max_abs_err: float = math.nan
    allowed: float = math.nan      # fp16/bf16: the rule's bound; fp32: max of the elementwise bound
    max_rel_err: float = math.nan  # max|ours - ref| / max|ref|
    detail: str = ""


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _lowp_reference(ref_fn, arrays_lp, params, dtype):
    """The same computation by NumPy in ``dtype``: fp32 math on the rounded inputs, the result
    rounded to ``dtype``."""
    a32 = {k: (v.astype(np.float32) if is_float_array(v) else v) for k, v in arrays_lp.items()}
    out = _as_tuple(ref_fn(**a32, **params))
    return tuple(None if o is None else np.asarray(o).astype(dtype.np).astype(np.float64)
                 for o in out)


def compare(ours, ref, dtype: DType, bound=None, lowp=None) -> Result:
    """Compare one output with the float64 reference (see the module docstring)."""
    if ref is None or ours is None:
        ok = ref is None and ours is None
        return Result(ok, 0.0, 0.0, 0.0, "" if ok else f"expected {ref!r}, got {type(ours)}")
    if tuple(ours.shape) != tuple(ref.shape):
        return Result(False, detail=f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    if np.dtype(ours.dtype) != dtype.np:
        return Result(False, detail=f"dtype {ours.dtype} != {dtype.name}")
    o, r = to_host64(ours), np.asarray(ref, dtype=np.float64)
    if o.size == 0:
        return Result(True, 0.0, 0.0, 0.0)
    nan_o, nan_r = np.isnan(o), np.isnan(r)
    if (nan_o != nan_r).any():
        i = np.argwhere(nan_o != nan_r)[0]
        return Result(False, detail=f"NaN mismatch at {tuple(i)}: got {o[tuple(i)]}, "
                                    f"reference {r[tuple(i)]}")
    inf_mismatch = np.isinf(r) & (o != r)
    if inf_mismatch.any():
        i = np.argwhere(inf_mismatch)[0]
        return Result(False, detail=f"inf mismatch at {tuple(i)}: got {o[tuple(i)]}, "
                                    f"reference {r[tuple(i)]}")
    finite = np.isfinite(r)
    err = np.where(finite, np.abs(o - r), 0.0)
    scale = float(np.abs(np.where(finite, r, 0.0)).max())
    max_err = float(err.max())
    rel = max_err / scale if scale else max_err
    if dtype == FLOAT32:
        b = np.broadcast_to(np.asarray(bound, dtype=np.float64), r.shape)
        bad = err > b
        ok = not bad.any()
        detail = ""
        if not ok:
            i = tuple(np.argwhere(bad)[0])
            detail = f"at {i}: got {o[i]!r}, reference {r[i]!r}, error {err[i]:.3g} > bound {b[i]:.3g}"
        return Result(ok, max_err, float(b.max()) if b.size else 0.0, rel, detail)
    lerr = float(np.where(finite, np.abs(lowp - r), 0.0).max())
    allowed = 2 * lerr + ulp(scale, dtype)
    ok = max_err <= allowed
    return Result(ok, max_err, allowed, rel,
                  "" if ok else f"max error {max_err:.3g} > 2 x {lerr:.3g} (NumPy in "
                                f"{dtype.name}) + 1 ulp = {allowed:.3g}")


def run_case(rt, family, case, dtype: DType, layout: str = "contiguous", seed: int = 0):
    """Run ``case`` on runtime ``rt``; returns one :class:`Result` for all outputs together."""
    rng = np.random.default_rng(seed)
    arrays64, params = case.make(rng)
    arrays_lp = {k: round_to(v, dtype) for k, v in arrays64.items()}
    arrays_ref = {k: (v.astype(np.float64) if is_float_array(v) else v)
                  for k, v in arrays_lp.items()}
    ref_fn = family.reference(case.op, case.direction)
    ref = _as_tuple(ref_fn(**arrays_ref, **params))
    dev = {k: to_device(rt, v, layout) for k, v in arrays_lp.items()}
    fn = family.ops.get((case.op, case.direction))   # None: a `call` case of a plain function
    ours = _as_tuple(case.call(fn, rt, dev, params) if case.call else fn(rt, **dev, **params))
    if len(ours) != len(ref):
        return Result(False, detail=f"{len(ours)} outputs, reference has {len(ref)}")
    out_dtype = case.out_dtype or dtype
    bounds = lowps = (None,) * len(ref)
    if out_dtype == FLOAT32:
        bounds = _as_tuple(case.bound(arrays_ref, ref if len(ref) > 1 else ref[0]))
    else:
        lowps = _lowp_reference(ref_fn, arrays_lp, params, dtype)
    results = [compare(o, r, out_dtype, b, lp) for o, r, b, lp in zip(ours, ref, bounds, lowps)]
    bad = [(i, r) for i, r in enumerate(results) if not r.ok]
    worst = max(results, key=lambda r: (r.max_rel_err if r.max_rel_err == r.max_rel_err else -1))
    if bad:
        i, r = bad[0]
        return dataclasses.replace(r, detail=(f"output {i}: " if len(results) > 1 else "")
                                   + r.detail)
    return worst


def case_dtypes(family, case):
    return tuple(d for d in (case.dtypes or family.dtypes) if d in family.dtypes)
