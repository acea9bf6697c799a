#!/usr/bin/env python3
"""Host overhead of one launch on the simulator path, split into its parts.

    python bench/launch_overhead.py [--reps N]

For a tiny softmax (1 x 32, one warp: the kernel itself is a few microseconds on the
simulator) it times, per call, median of N:
  plan    the Python plan function (device descriptor in, Plan out)
  bind    binding the arguments by name from the schema (types checked, pointers taken)
  launch  ext.launch with the bound arguments (pybind11, registry lookup, simulator launch)
  op      the whole op as the sim backend runs it (checks, views, allocation, plan, bind, launch)
  rawop   the same op through the rawkernel launch code (SimRawModule stand-in)
and, for scale, an empty launch of a test-only kernel. Prints microseconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))


def timeit(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=2000)
    args = p.parse_args(argv)
    import numpy as np

    from cvkernels.backends.runtime import bind, make_runtime
    from cvkernels.spec import FLOAT32
    from cvkernels.specs import softmax as S

    rt, raw = make_runtime("sim"), make_runtime("sim-rawkernel")
    x = np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)
    y = np.empty_like(x)
    dev = rt.device()
    plan = S.plan(dev, S.FORWARD, FLOAT32, 1, 32, False, True)
    bound = bind(plan, dict(x=x, y=y, rows=1, cols=32), rt.ptr)
    typed = [(k, v.item()) if k != "ptr" else (k, rt.ptr(v)) for k, v in bound]
    rows = {
        "plan": timeit(lambda: S.plan(dev, S.FORWARD, FLOAT32, 1, 32, False, True), args.reps),
        "bind": timeit(lambda: bind(plan, dict(x=x, y=y, rows=1, cols=32), rt.ptr), args.reps),
        "launch": timeit(lambda: rt.ext.launch(plan.name, list(plan.grid), list(plan.block), 0,
                                               0, typed), args.reps),
        "op": timeit(lambda: S.softmax_forward(rt, x), args.reps),
        "rawop": timeit(lambda: S.softmax_forward(raw, x), args.reps),
    }
    from cvkernels import _ext
    t = _ext.sim_testing()
    if t is not None:
        a = np.zeros(1, np.float32)
        rows["empty copy_kernel launch (1 thread)"] = timeit(
            lambda: t.launch("copy_kernel", [1], [1], 0, 0,
                             [("ptr", a.ctypes.data), ("ptr", a.ctypes.data), ("i64", 0)]),
            args.reps)
    print(f"host overhead per call on the simulator path, median of {args.reps} (us):")
    for k, v in rows.items():
        print(f"  {k:<38} {v:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
