"""``cvk check``: every kernel family's check cases, on every runtime this machine can run, in
every dtype the family has, against the float64 references.

The rows come from the specs (``Case(check=True)`` in ``cvkernels/specs/``): a new family
appears here without edits. Each row reports the normwise relative error
``max|got - ref| / max|ref|`` and whether the case passed its error model (fp32: elementwise
rounding bounds; fp16/bf16: at most twice NumPy's error in that precision plus one ulp; see
``cvkernels.testing``).
"""
from __future__ import annotations

import time

from . import _ext
from .spec import families
from .testing import case_dtypes, run_case


def runtimes():
    """(label, runtime) for every kernel path this machine can run."""
    from .backends.runtime import available_runtimes, make_runtime
    return [(n, make_runtime(n)) for n in available_runtimes()]


def run_checks(seed: int = 0, verbose: bool = True, dtypes=None):
    """Run every check case on every runtime; return a list of result dicts (and print a table).
    ``dtypes`` (names) restricts the element types."""
    rows = []
    paths = runtimes()
    if verbose:
        print(f"{'backend':<14} {'op':<22} {'dtype':<9} {'shape':<34} {'max rel err':>11}  pass")
    for label, rt in paths:
        for fam in families():
            if rt.simulator and not fam.sim:
                continue
            for case in fam.cases:
                if not case.check:
                    continue
                for dt in case_dtypes(fam, case):
                    if dtypes and dt.name not in dtypes:
                        continue
                    op = case.op + (" backward" if case.direction == "backward" else "")
                    t0 = time.perf_counter()
                    try:
                        r = run_case(rt, fam, case, dt, seed=seed)
                        ok, rel, note = r.ok, r.max_rel_err, r.detail
                    except Exception as e:  # a crash is a failed check, reported in the table
                        ok, rel, note = False, float("nan"), f"{type(e).__name__}: {e}"
                    rows.append(dict(backend=label, family=fam.name, op=op, dtype=dt.name,
                                     shape=case.label, max_rel_err=rel, passed=ok,
                                     seconds=time.perf_counter() - t0, error=note))
                    if verbose:
                        print(f"{label:<14} {op:<22} {dt.name:<9} {case.label[:34]:<34} "
                              f"{rel:>11.2e}  {'yes' if ok else 'NO'}"
                              + (f"  ({note})" if note and not ok else ""))
    if verbose:
        n_ok = sum(r["passed"] for r in rows)
        gpu = any(lbl in ("cuda", "rawkernel") for lbl, _ in paths)
        print(f"\n{n_ok}/{len(rows)} checks passed on {len(paths)} kernel paths"
              + ("" if gpu else " (no CUDA device found: the kernels ran on the CPU simulator)"))
        if not gpu:
            print(_ext.cuda_status())
    return rows
