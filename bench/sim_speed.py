"""Simulator speed, old design against new, in one run (issue 7's table).

The new design is this checkout's built ``_cudasim`` (build it first:
``CVK_NO_CUDA=1 python setup.py -q build_ext --inplace``). The old design is commit 497c268
(one host thread per CUDA thread, created at each launch), extracted with ``git archive`` into a
temporary directory and built there, unless ``--old-dir`` names such a build already.

Each design runs in its own subprocess, through ``cvkernels.functional`` under
``with cvk.backend("sim")``, on the same inputs: one warm-up call, then the median of
``--reps`` calls (the old design gets ``--old-reps``, default 1: it takes seconds a call).
The ratio needs a quiet machine: where other processes compete for the cores, the old design's
hundreds of OS threads win a larger share of them than the new one's one worker per core,
and the measured ratio shrinks (uptime's load average is printed with the table).
Outputs of both must be bit-identical (the same kernel code), so a fast wrong answer fails.

    python bench/sim_speed.py                      # prints the table, writes nothing
    python bench/sim_speed.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "497c268"

WORKLOADS = [  # (name, op, shapes, elements or flops for the rate)
    ("softmax 1024x1024", "softmax", [(1024, 1024)], ("M elements/s", 1024 * 1024)),
    ("softmax 4096x1024", "softmax", [(4096, 1024)], ("M elements/s", 4096 * 1024)),
    ("matmul 256^3", "matmul", [(256, 256), (256, 256)], ("MFLOP/s", 2 * 256 ** 3)),
    ("one small launch (softmax 9x1001)", "softmax", [(9, 1001)], ("M elements/s", 9 * 1001)),
]

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import cvkernels as cvk
import cvkernels.functional as F
workloads, reps, out_path = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
res, outs = {}, {}
for name, op, shapes in workloads:
    rng = np.random.default_rng(0)
    if op == "matmul":  # small integers: exact in fp32, so both designs must agree bit for bit
        args = [rng.integers(-4, 5, s).astype(np.float32) for s in shapes]
        fn = lambda: F.matmul(*args)
    else:
        args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        fn = lambda: F.softmax(args[0], dim=-1)
    with cvk.backend("sim"):
        y = fn()  # warm-up (and the output compared between designs)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    res[name] = statistics.median(times)
    outs[name] = np.asarray(y)
np.savez(out_path, **{str(i): outs[w[0]] for i, w in enumerate(workloads)})
print(json.dumps(res))
"""


def build_old(dest: Path) -> Path:
    subprocess.run(f"git -C {ROOT} archive {OLD_COMMIT} | tar -x -C {dest}", shell=True,
                   check=True)
    env = dict(os.environ, CVK_NO_CUDA="1")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=dest,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return dest


def run(tree: Path, reps: int, tmp: Path, tag: str):
    env = dict(os.environ, PYTHONPATH=str(tree / "python"))
    env.pop("CVK_SIM_PATH", None)
    spec = [[w[0], w[1], w[2]] for w in WORKLOADS]
    out = tmp / f"{tag}.npz"
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), str(reps), str(out)],
                          env=env, capture_output=True, text=True, check=True)
    import numpy as np
    data = np.load(out)
    return json.loads(proc.stdout.strip().splitlines()[-1]), [data[str(i)] for i in
                                                               range(len(WORKLOADS))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--old-reps", type=int, default=1)
    ap.add_argument("--old-dir", type=Path, help="a built checkout of the old design")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    import numpy as np
    with tempfile.TemporaryDirectory(prefix="cvk-sim-speed-") as td:
        tmp = Path(td)
        old_tree = a.old_dir or build_old(Path(tempfile.mkdtemp(prefix="cvk-old-", dir=td)))
        new, new_out = run(ROOT, a.reps, tmp, "new")
        old, old_out = run(old_tree, a.old_reps, tmp, "old")
    rows = []
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
          f" (1 min); old = {OLD_COMMIT} (thread per CUDA thread), new = this checkout (fibers "
          f"on a worker pool)")
    print(f"{'workload':36s} {'old':>10s} {'new':>10s} {'speed-up':>9s}  rate old -> new")
    for (name, op, _, (unit, work)), o_out, n_out in zip(WORKLOADS, old_out, new_out):
        np.testing.assert_array_equal(n_out, o_out)  # the same kernel code, bit for bit
        t_old, t_new = old[name], new[name]
        rate = lambda t: work / t / 1e6  # noqa: E731
        print(f"{name:36s} {t_old * 1e3:8.1f}ms {t_new * 1e3:8.2f}ms {t_old / t_new:8.1f}x  "
              f"{rate(t_old):.2f} -> {rate(t_new):.2f} {unit}")
        rows.append({"workload": name, "old_s": t_old, "new_s": t_new,
                     "speedup": t_old / t_new})
    if a.json:
        a.json.write_text(json.dumps({"old": OLD_COMMIT, "cpus": os.cpu_count(), "rows": rows},
                                     indent=1))


if __name__ == "__main__":
    main()
