#!/usr/bin/env python3
"""Time every kernel family's bench cases beside their peers, in one process, on the same inputs.

    python bench/bench_ops.py [--out DIR]       # full sizes, on a CUDA GPU (CuPy; torch peers)
    python bench/bench_ops.py --quick           # small sizes, 3 reps: a smoke test of the GPU path
    python bench/bench_ops.py --dry-run         # no GPU: the CPU simulator at tiny sizes
    python bench/bench_ops.py --list            # the case names, from the specs

The cases come from the kernel specs (``Bench`` in ``python/cvkernels/specs/<family>.py``): op,
shapes per mode, dtypes, work (FLOPs or bytes), peer and device reference. A new family appears
here without edits. Writes ``bench.json`` and ``bench.md`` to ``--out`` (default ``$OUT``, else
``bench/results/``), rewritten after every case so a run cut short keeps what it did. Exit
status: 0 when every cvkernels result passed its check and nothing errored, else 1.

What is timed (see bench/README.md):

* the op as a user calls it on the kernel runtime (``family.ops[(op, dir)](rt, ...)``: checks,
  plan, output allocation from the pool, launch); the peer likewise (a torch call on tensors
  sharing the same memory), and for memory-bound ops a device-to-device copy of the input;
* CUDA events around each call on one stream, after a warm-up; the median of >= 20 calls in two
  interleaved rounds (A B C, A B C), so drift shows as a difference between rounds;
* before every timed call a 256 MB buffer is *read* (a sum): it evicts the 50-60 MB L2 without
  leaving dirty lines to be written back inside the timed call, and keeps the GPU busy while the
  host enqueues the launch, so host overhead stays outside the event interval.

Checks, before timing: each output is compared with a float64 reference computed on the device
from the same (rounded) inputs. ``rel_err`` = ||out - ref|| / ||ref||, ``max_rel_err`` =
max|out - ref| / max|ref|. fp32 uses the spec's fixed tolerances; fp16/bf16 use the design's
rule against the peer: our max error at most twice the peer's (the same op in that precision)
plus one ulp of max|ref|.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# TF32 off for every cuBLAS call in this process (read when cuBLAS/CuPy load; set before import).
os.environ["CUPY_TF32"] = "0"
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import benchlib as L  # noqa: E402
from benchlib import fmt, gbps, ratio, stats, tflops  # noqa: E402,F401  (re-exported for tests)

MODES = ("full", "quick", "dry-run")


def _import_cvkernels():
    try:
        import cvkernels  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "python"))


def case_name(bench, dtype, shape) -> str:
    """``<op>[_backward]_<dtype>_<shape>``, e.g. ``matmul_fp32_4096x4096x4096``."""
    d = "" if bench.direction == "forward" else "_backward"
    return f"{bench.op}{d}_{dtype.short}_" + "x".join(str(s) for s in shape)


def cases(mode: str):
    """(family, bench, dtype, shape, name) for every bench case of every spec, in ``mode``."""
    _import_cvkernels()
    from cvkernels.spec import families
    out = []
    for fam in families():
        for b in fam.benches:
            for dtype in b.dtypes:
                if dtype not in fam.dtypes:
                    continue
                for shape in b.shapes.get(mode, ()):
                    out.append((fam, b, dtype, tuple(shape), case_name(b, dtype, shape)))
    return out


def bar_specs():
    """Every bar the specs declare, as the report evaluates them."""
    _import_cvkernels()
    from cvkernels.spec import DTYPES, families
    out = []
    for fam in families():
        for b in fam.benches:
            for dname, shape, metric, bar, goal, what in b.bars:
                out.append({"case": case_name(b, DTYPES[dname], shape), "metric": metric,
                            "bar": bar, "goal": goal, "what": what})
    return out


def fp32_tolerance(bench, shape):
    """fp32 tolerances: matmul-like (flop) ops accumulate over K, memory-bound ops over a row."""
    from cvkernels.numerics import U32
    k = shape[-1]
    return {"rel_err": max(5e-5, 4 * math.sqrt(k) * U32), "max_rel_err": (k + 8) * U32 * 8}


def cvk_runtimes(dev):
    """[(impl name, runtime factory)] for the two cvkernels launch paths on this device."""
    from functools import partial

    from cvkernels.backends.runtime import make_runtime
    names = ["sim", "sim-rawkernel"] if dev.kind == "host" else ["cuda", "rawkernel"]
    return [(f"cvk-{n}", partial(make_runtime, n)) for n in names]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _errors(xp, out, ref):
    o = out.astype(xp.float64)
    finite = bool(xp.isfinite(o).all())
    if not finite:
        return math.inf, math.inf, math.inf, False
    d = xp.abs(o - ref)
    nref = float(xp.linalg.norm(ref))
    rel = float(xp.linalg.norm(d)) / nref if nref else float(xp.linalg.norm(d))
    m = float(xp.abs(ref).max())
    maxd = float(d.max())
    return rel, (maxd / m if m else maxd), maxd, True


def run_case(dev, fam, bench, dtype, shape, name, args, log, torch_peer):
    from cvkernels.testing import ulp
    xp = dev.xp
    case = {"name": name, "family": fam.name, "op": bench.op, "direction": bench.direction,
            "dtype": dtype.name, "shape": list(shape), "results": [], "notes": []}
    case.update(bench.work(shape, dtype.np.itemsize))
    log(f"== {name}")
    arrays, params = bench.make(xp, shape, dtype, args.seed + sum(shape))
    fn = fam.ops[(bench.op, bench.direction)]

    impls = []   # (name, role, run) with run() -> output
    for impl, make in cvk_runtimes(dev):
        def setup(make=make):
            rt = make()
            if bench.call is not None:
                return lambda: _first(bench.call(fn, rt, arrays, params))
            return lambda: _first(fn(rt, **arrays, **params))
        impls.append((impl, "ours", setup))
    peer_name = None
    if torch_peer is not None and bench.peer is not None:
        peer_name = ("torch-cpu: " if dev.kind == "host" else "") + bench.peer_name

        def setup_peer():
            targs = {k: torch_peer.wrap(v) for k, v in arrays.items()}

            def run():
                with torch_peer.ctx():
                    return torch_peer.unwrap(bench.peer(torch_peer.torch, targs, params))
            return run
        impls.append((peer_name, "peer", setup_peer))
    if "bytes" in case:
        x = next(iter(arrays.values()))

        def setup_copy():
            y = xp.empty_like(x)
            if dev.kind == "cuda":
                rtm = dev.cp.cuda.runtime
                n, dst, src, sptr = x.nbytes, y.data.ptr, x.data.ptr, dev.stream.ptr

                def run():
                    rtm.memcpyAsync(dst, src, n, rtm.memcpyDeviceToDevice, sptr)
                    return y
            else:
                def run():
                    xp.copyto(y, x)
                    return y
            return run
        impls.append(("copy", "copy", setup_copy))

    ref = None
    if bench.device_ref is not None:
        a64 = {k: v.astype(xp.float64) for k, v in arrays.items()}
        ref = bench.device_ref(xp, a64, params)
        del a64
    tol = fp32_tolerance(bench, shape) if dtype.name == "float32" else None
    case["tolerance"] = tol or "fp16/bf16: max error <= 2 x the peer's + 1 ulp of max|ref|"
    case["peer"] = peer_name

    ready, peer_maxd, checks = [], None, {}
    for impl, role, setup in impls:
        res = {"impl": impl, "role": role, "status": "ok", "error": None}
        case["results"].append(res)
        try:
            run = setup()
            out = run()
            dev.sync()
            if role == "copy":
                exact = bool((out == x).all())
                res["check"] = {"exact": exact, "ok": exact}
                res["status"] = "ok" if exact else "check_failed"
            elif ref is not None:
                rel, maxrel, maxd, finite = _errors(xp, out, ref)
                res["check"] = {"rel_err": rel, "max_rel_err": maxrel, "max_abs_err": maxd,
                                "all_finite": finite}
                checks[impl] = res
                if role == "peer":
                    peer_maxd = maxd
            ready.append((res, run))
        except Exception as e:   # record and go on
            res["status"], res["error"] = "error", f"{type(e).__name__}: {e}"
            res["traceback"] = traceback.format_exc(limit=6)
            log(f"   {impl:<24} ERROR {res['error']}")
    scale = float(xp.abs(ref).max()) if ref is not None else 0.0
    for impl, res in checks.items():
        ck = res["check"]
        if tol is not None:
            ok = ck["all_finite"] and ck["rel_err"] <= tol["rel_err"] and \
                ck["max_rel_err"] <= tol["max_rel_err"]
        elif res["role"] == "peer":
            ok = ck["all_finite"]
        elif peer_maxd is not None:
            ck["allowed_abs_err"] = 2 * peer_maxd + ulp(scale, dtype)
            ok = ck["all_finite"] and ck["max_abs_err"] <= ck["allowed_abs_err"]
        else:   # no peer to measure the precision's own error: a fixed 4-ulp budget
            ck["allowed_abs_err"] = 4 * ulp(scale, dtype)
            ok = ck["all_finite"] and ck["max_abs_err"] <= ck["allowed_abs_err"]
            case["notes"].append(f"{impl}: no peer; checked against 4 ulp of max|ref|")
        ck["ok"] = ok
        if not ok:
            res["status"] = "check_failed"
    del ref

    _time(dev, case, ready, args)
    by = {r["impl"]: r for r in case["results"]}

    def med(impl):
        r = by.get(impl)
        return None if r is None or r["status"] == "error" else r.get("median_ms")
    if peer_name is None or med(peer_name) is None:
        case["notes"].append("no peer timed (torch missing or the peer errored): ratio columns "
                             "are empty")
    for res in case["results"]:
        ms = med(res["impl"])
        if ms is None:
            continue
        if "flop" in case:
            res["tflops"] = tflops(case["flop"], ms)
        else:
            res["gbps"] = gbps(case["bytes"], ms)
        if res["role"] == "ours":
            res["ratio_vs_peer"] = ratio(med(peer_name), ms) if peer_name else None
            if "bytes" in case:
                res["frac_copy_bw"] = ratio(med("copy"), ms)
    for res in case["results"]:
        ck = res.get("check") or {}
        log(f"   {res['impl']:<24} {res['status']:<12} median {fmt(res.get('median_ms'))} ms"
            f"  {'TFLOP/s ' + fmt(res.get('tflops')) if 'flop' in case else 'GB/s ' + fmt(res.get('gbps'))}"
            f"  vs peer {fmt(res.get('ratio_vs_peer'))}"
            + (f"  of copy {fmt(res.get('frac_copy_bw'))}" if "bytes" in case else "")
            + (f"  max_rel_err {fmt(ck.get('max_rel_err'), 2)}" if "max_rel_err" in ck else ""))
    dev.free()
    return case


def _time(dev, case, ready, args):
    """Warm up each path, then time them in interleaved rounds; fills the stats in place."""
    times = {id(res): [] for res, _ in ready}
    host = {id(res): [] for res, _ in ready}
    reps = args.reps
    rounds = 2 if reps >= 2 else 1
    per_round = {id(res): math.ceil(reps / rounds) for res, _ in ready}
    for res, run in ready:
        try:
            one = dev.one_call_ms(run)   # also the first warm-up call
            t0, n = time.perf_counter(), 0
            while n < dev.min_warmup_calls or (time.perf_counter() - t0 < args.warmup_s
                                               and n < 200):
                run()
                n += 1
            dev.sync()
            res["warmup_calls"] = n + 1
            if one * reps > args.max_impl_s * 1e3:   # a pathological slow path: stay in budget
                cut = max(5, int(args.max_impl_s * 1e3 / max(one, 1e-9)))
                per_round[id(res)] = math.ceil(cut / rounds)
                res["note"] = (f"reps cut to {per_round[id(res)] * rounds}: one call took "
                               f"{one:.1f} ms (--max-impl-s {args.max_impl_s})")
        except Exception as e:
            res["status"], res["error"] = "error", f"{type(e).__name__}: {e}"
    for _ in range(rounds):
        for res, run in ready:
            if res["status"] == "error":
                continue
            try:
                t, h = dev.time_calls(run, per_round[id(res)])
                times[id(res)].append(t)
                host[id(res)].extend(h)
            except Exception as e:
                res["status"], res["error"] = "error", f"{type(e).__name__}: {e}"
    for res, _ in ready:
        rounds_t = times[id(res)]
        if res["status"] == "error" or not rounds_t:
            continue
        flat = [x for r in rounds_t for x in r]
        res["times_ms"] = flat
        res.update(stats(flat))
        res["round_median_ms"] = [statistics.median(r) for r in rounds_t]
        res["host_enqueue_us_median"] = statistics.median(host[id(res)])
        if (dev.flush_bytes and getattr(dev, "flush_ms", None)
                and res["host_enqueue_us_median"] > 0.8 * dev.flush_ms * 1e3):
            case["notes"].append(f"{res['impl']}: host enqueue ({res['host_enqueue_us_median']:.0f}"
                                 f" us) is near the flush's GPU time ({dev.flush_ms * 1e3:.0f} us):"
                                 " its events may include host launch overhead")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else bench/results/)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, 3 reps (GPU smoke test)")
    g.add_argument("--dry-run", action="store_true",
                   help="no GPU: the CPU simulator at tiny sizes, perf_counter timing")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--reps", type=int, default=None,
                   help="timed calls per implementation (default 30; quick/dry-run 3)")
    p.add_argument("--warmup-s", type=float, default=None,
                   help="warm-up seconds per implementation (default 0.2; quick 0.05; dry 0)")
    p.add_argument("--flush-mb", type=int, default=256, help="L2 flush buffer, MB (0: none)")
    p.add_argument("--max-impl-s", type=float, default=15.0,
                   help="cut the reps of a path whose reps would take longer than this")
    p.add_argument("--only", default=None, help="run only cases whose name contains this")
    p.add_argument("--no-torch", action="store_true", help="act as if torch were missing")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    args.mode = "dry-run" if args.dry_run else ("quick" if args.quick else "full")
    if args.reps is None:
        args.reps = 30 if args.mode == "full" else 3
    if args.mode == "full" and args.reps < 20:
        p.error("--reps must be at least 20 for a full run (design.md: median of >= 20)")
    if args.warmup_s is None:
        args.warmup_s = {"full": 0.2, "quick": 0.05, "dry-run": 0.0}[args.mode]
    if args.out is None:
        args.out = os.environ.get("OUT") or str(ROOT / "bench" / "results")
    return args


def main(argv=None):
    args = parse_args(argv)
    todo = [c for c in cases(args.mode) if not args.only or args.only in c[4]]
    if args.list:
        print("\n".join(c[4] for c in todo))
        return 0
    out = Path(args.out)

    def log(msg):
        print(msg, flush=True)

    report = {"schema": L.SCHEMA, "mode": args.mode, "ok": False, "cases": [], "notes": [],
              "failures": [], "warnings": [], "bars": [], "bar_specs": bar_specs()}
    dev = L.HostDevice(args) if args.mode == "dry-run" else L.CudaDevice(args)
    torch_peer = None
    if args.no_torch:
        report["notes"].append("--no-torch: torch peers skipped")
    else:
        try:
            torch_peer = L.Torch(dev)
        except Exception as e:
            report["notes"].append(f"torch unavailable ({type(e).__name__}: {e}): peer columns "
                                   "skipped")
    if dev.kind == "host":
        report["notes"].append("dry run: the cvkernels paths run on the CPU simulator and the "
                               "times are host wall-clock; only the script's logic is exercised")
    report["timing"] = {"timer": dev.timer, "statistic": "median", "reps": args.reps,
                        "rounds": 2 if args.reps >= 2 else 1, "warmup_s": args.warmup_s,
                        "l2_flush_bytes": dev.flush_bytes,
                        "l2_flush_ms": getattr(dev, "flush_ms", None),
                        "per_call": "flush (a read); event; one call; event"}
    try:
        report["env"] = L.environment(dev, torch_peer, args.mode)
    except Exception as e:
        report["env"] = {"error": f"{type(e).__name__}: {e}", "gpu_name": "unknown"}
    log(f"cvkernels bench ({args.mode}) on {report['env'].get('gpu_name')} -> {out}")
    for fam, bench, dtype, shape, name in todo:
        try:
            report["cases"].append(run_case(dev, fam, bench, dtype, shape, name, args, log,
                                            torch_peer))
        except Exception as e:
            report["cases"].append({"name": name, "op": bench.op, "results": [],
                                    "error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc(limit=8)})
            log(f"== {name}: ERROR {type(e).__name__}: {e}")
            with contextlib.suppress(Exception):
                dev.free()
        L.write(report, out)
    L.write(report, out)
    log("")
    log(L.markdown(report))
    log(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
