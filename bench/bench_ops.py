#!/usr/bin/env python3
"""Time cvkernels' matmul and softmax kernels beside their peers, in one process, on the same inputs.

    python bench/bench_ops.py [--out DIR]       # full sizes, on a CUDA GPU (CuPy; torch for peers)
    python bench/bench_ops.py --quick           # small sizes, 3 reps: a smoke test of the GPU path
    python bench/bench_ops.py --dry-run         # no GPU: the CPU simulator at tiny sizes

Writes ``bench.json`` (every raw number) and ``bench.md`` (a table) to ``--out`` (default ``$OUT``,
else ``bench/results/``), rewriting both after every case so a run cut short keeps what it did.
Exit status: 0 when every cvkernels result passed its check and nothing errored, else 1.

What is timed (see bench/README.md):

* only the kernel and its thin launcher: the raw launch methods of a cvkernels runtime
  (``rt.matmul(...)``, ``rt.softmax_forward(...)``) on preallocated outputs; the peers likewise
  (``torch.mm(..., out=)``, ``torch.softmax``, ``cudaMemcpyAsync``);
* CUDA events around each call on one stream, after a warm-up; the median of >= 20 calls, taken
  in two interleaved rounds (A B C, A B C) so drift shows as a difference between rounds;
* before every timed call a 256 MB buffer is written: it evicts the 50/60 MB L2 (cold inputs for
  every call, as for memory-bound ops the design asks), and it keeps the GPU busy while the host
  enqueues the next launch, so host launch overhead stays out of the event interval.

Checks, before timing: each output is poisoned with NaN, computed once, and compared with a
float64 reference on the same inputs (``rel_err`` = ||out - ref|| / ||ref||; ``max_rel_err`` =
max|out - ref| / max|ref| for matmul, max |out - ref| / |ref| elementwise for softmax, whose
outputs are positive). Tolerances are in ``TOLERANCES``; a cvkernels result over them is marked
``check_failed``, listed under ``failures`` and makes ``ok`` false (it is still timed). Each
cvkernels result is also compared with the peer's output (``max_rel_err_vs_peer``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "cvkernels-bench/1"

# TF32 off for every cuBLAS call in this process (read when cuBLAS/CuPy load; set before import).
os.environ["CUPY_TF32"] = "0"
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

U32 = 2.0 ** -24

#: Tolerances of a cvkernels result against the float64 reference (see the module docstring).
#: matmul: fp32 accumulation over K <= 4096 lands near 1e-6; TF32 (10-bit mantissa) lands near
#: 3e-4, so a TF32 path fails here on purpose. softmax: the test suite's rounding budget,
#: (cols + 8) * 2^-24 per element, and 2e-5 normwise.
TOLERANCES = {
    "matmul": {"rel_err": 5e-5, "max_rel_err": 1e-4},
    "softmax": {"rel_err": 2e-5, "max_rel_err": "(cols + 8) * 2^-24"},
}

#: The issue's performance bar and the design's goal, checked on the full-size cases.
BARS = [
    {"case": "matmul_fp32_4096x4096x4096", "metric": "ratio_vs_peer", "bar": 0.6, "goal": 0.95,
     "what": "matmul fp32 4096^3 vs cuBLAS (TF32 off)"},
    {"case": "softmax_fp32_8192x8192", "metric": "ratio_vs_peer", "bar": 1.0, "goal": 1.9,
     "what": "softmax fp32 8192x8192 vs torch.softmax"},
    {"case": "softmax_fp32_8192x8192", "metric": "frac_copy_bw", "bar": 0.7, "goal": 0.85,
     "what": "softmax fp32 8192x8192, fraction of copy bandwidth"},
]

SIZES = {
    "full": {"matmul": [(4096, 4096, 4096), (1024, 1024, 1024)],
             "softmax": [(8192, 8192), (65536, 1000)]},
    "quick": {"matmul": [(1024, 1024, 1024), (512, 512, 512)],
              "softmax": [(2048, 2048), (8192, 1000)]},
    # odd sizes on purpose: the tails of the tiles and the row loops run too
    "dry-run": {"matmul": [(64, 64, 64), (33, 47, 29)],
                "softmax": [(16, 256), (9, 1001)]},
}


# ---- small pure helpers (unit-tested in tests/test_bench_script.py) ----------------------------
def stats(times_ms):
    """Summary of a list of times in ms."""
    t = sorted(times_ms)
    n = len(t)

    def q(p):
        return t[min(n - 1, max(0, int(round(p * (n - 1)))))]
    return {"n": n, "median_ms": statistics.median(t), "min_ms": t[0], "max_ms": t[-1],
            "p10_ms": q(0.10), "p90_ms": q(0.90), "mean_ms": statistics.fmean(t)}


def ratio(peer_ms, ours_ms):
    """peer_ms / ours_ms: above 1 means cvkernels is faster."""
    if peer_ms is None or ours_ms is None or ours_ms <= 0:
        return None
    return peer_ms / ours_ms


def tflops(flop, ms):
    return None if ms is None or ms <= 0 else flop / (ms * 1e-3) / 1e12


def gbps(nbytes, ms):
    return None if ms is None or ms <= 0 else nbytes / (ms * 1e-3) / 1e9


def slug(text):
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return s or "unknown"


def case_name(op, shape):
    return f"{op}_fp32_" + "x".join(str(s) for s in shape)


def tolerance(op, shape):
    if op == "matmul":
        return dict(TOLERANCES["matmul"])
    return {"rel_err": TOLERANCES["softmax"]["rel_err"], "max_rel_err": (shape[1] + 8) * U32}


def fmt(v, digits=4):
    if v is None:
        return "–"
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"
    return str(v)


# ---- devices: how to allocate, synchronise, flush and time ------------------------------------
class HostDevice:
    """--dry-run: numpy arrays, the simulator, time.perf_counter (everything is synchronous)."""

    kind = "host"
    min_warmup_calls = 0
    timer = "time.perf_counter (dry run: the simulator on the CPU; the times mean nothing)"

    def __init__(self, args):
        import numpy as np
        self.xp = np
        self.np = np
        self.flush_bytes = 0

    def sync(self):
        pass

    def flush(self):
        pass

    def rand(self, shape, seed, scale=1.0):
        rng = self.np.random.default_rng(seed)
        return (scale * rng.standard_normal(shape)).astype(self.np.float32)

    def time_calls(self, fn, reps):
        times, host = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times.append(dt * 1e3)
            host.append(dt * 1e6)
        return times, host

    def one_call_ms(self, fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def free(self):
        pass


class CudaDevice:
    """The GPU: CuPy arrays on CuPy's current stream, CUDA events, an L2 flush before each call."""

    kind = "cuda"
    min_warmup_calls = 2
    timer = "cupy.cuda.Event pairs on one stream, one call per pair"

    def __init__(self, args):
        import cupy
        import numpy as np
        self.cp = cupy
        self.xp = cupy
        self.np = np
        self.stream = cupy.cuda.get_current_stream()
        self.flush_bytes = int(args.flush_mb) << 20
        self._flush_buf = cupy.empty(self.flush_bytes, dtype=cupy.uint8) if self.flush_bytes else None
        self.flush_ms = None
        if self._flush_buf is not None:   # the flush's own GPU time (the host-overhead margin)
            for _ in range(3):
                self.flush()
            self.flush_ms = statistics.median(self.one_call_ms(self.flush) for _ in range(5))

    def sync(self):
        self.stream.synchronize()

    def flush(self):
        if self._flush_buf is not None:
            self._flush_buf.fill(0)   # cudaMemsetAsync on the current stream

    def rand(self, shape, seed, scale=1.0):
        rs = self.cp.random.RandomState(seed)
        x = rs.standard_normal(shape, dtype=self.cp.float32)
        if scale != 1.0:
            x *= self.cp.float32(scale)
        return x

    def time_calls(self, fn, reps):
        cp = self.cp
        starts = [cp.cuda.Event() for _ in range(reps)]
        ends = [cp.cuda.Event() for _ in range(reps)]
        host = []
        for i in range(reps):
            self.flush()
            starts[i].record(self.stream)
            t0 = time.perf_counter()
            fn()
            host.append((time.perf_counter() - t0) * 1e6)
            ends[i].record(self.stream)
        ends[-1].synchronize()
        return [cp.cuda.get_elapsed_time(s, e) for s, e in zip(starts, ends)], host

    def one_call_ms(self, fn):
        s, e = self.cp.cuda.Event(), self.cp.cuda.Event()
        s.record(self.stream)
        fn()
        e.record(self.stream)
        e.synchronize()
        return self.cp.cuda.get_elapsed_time(s, e)

    def free(self):
        self.sync()
        self.cp.get_default_memory_pool().free_all_blocks()


# ---- torch, as the peer -----------------------------------------------------------------------
class Torch:
    """torch on the same memory and stream as CuPy (or on numpy memory, in a dry run)."""

    def __init__(self, dev):
        import torch
        self.torch = torch
        self.dev = dev
        self.device = "cuda" if dev.kind == "cuda" else "cpu"
        self.flags = {}
        for path, value in [("backends.cuda.matmul.allow_tf32", False),
                            ("backends.cudnn.allow_tf32", False)]:
            with contextlib.suppress(Exception):
                obj = torch
                *parents, leaf = path.split(".")
                for p in parents:
                    obj = getattr(obj, p)
                setattr(obj, leaf, value)
                self.flags[path] = getattr(obj, leaf)
        with contextlib.suppress(Exception):
            torch.set_float32_matmul_precision("highest")
            self.flags["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        self.same_stream = True
        self._stream = None
        if self.device == "cuda":
            ptr = dev.stream.ptr
            if torch.cuda.current_stream().cuda_stream != ptr:
                self.same_stream = False
                self._stream = torch.cuda.ExternalStream(ptr)

    def ctx(self):
        if self._stream is None:
            return contextlib.nullcontext()
        return self.torch.cuda.stream(self._stream)

    def wrap(self, a):
        """A torch tensor on the same memory as the CuPy/numpy array ``a`` (no copy)."""
        t = self.torch.as_tensor(a, device=self.device)
        ptr = a.data.ptr if self.device == "cuda" else a.ctypes.data
        if t.data_ptr() != ptr:
            raise RuntimeError("torch.as_tensor copied the array instead of sharing its memory")
        return t

    def unwrap(self, t):
        if self.device == "cuda":
            return self.dev.cp.asarray(t)
        return t.numpy()

    def versions(self):
        torch = self.torch
        v = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "torch_flags": self.flags,
             "torch_same_stream_as_cupy": self.same_stream}
        with contextlib.suppress(Exception):
            v["cudnn"] = torch.backends.cudnn.version()
        return v


# ---- implementations --------------------------------------------------------------------------
# An implementation is (name, role, setup); setup(inputs) returns (run, output): run() launches
# once into preallocated memory; output() is the result to check after one run().

def cvk_runtimes(dev):
    """[(impl name, runtime factory)] for the two cvkernels launch paths on this device."""
    from functools import partial

    from cvkernels.backends.kernel_ops import make_runtime

    names = ["sim", "sim-rawkernel"] if dev.kind == "host" else ["cuda", "rawkernel"]
    return [(f"cvk-{n}", partial(make_runtime, n)) for n in names]


def matmul_impls(dev, torch_peer):
    xp = dev.xp
    impls = []
    for name, make in cvk_runtimes(dev):
        def setup(inp, make=make):
            rt = make()
            a, b = inp["a"], inp["b"]
            M, K = a.shape
            N = b.shape[1]
            c = xp.empty((M, N), dtype=xp.float32)
            return (lambda: rt.matmul(a, b, None, c, 1, M, N, K, 0, 0, False, False)), (lambda: c)
        impls.append((name, "ours", setup))
    if torch_peer is not None:
        def setup_torch(inp):
            T = torch_peer
            ta, tb = T.wrap(inp["a"]), T.wrap(inp["b"])
            M, N = inp["a"].shape[0], inp["b"].shape[1]
            c = xp.empty((M, N), dtype=xp.float32)
            tc = T.wrap(c)

            def run():
                with T.ctx():
                    T.torch.mm(ta, tb, out=tc)
            return run, (lambda: c)
        impls.append(("cublas-torch" if dev.kind == "cuda" else "torch-cpu", "peer", setup_torch))

    def setup_xp(inp):
        a, b = inp["a"], inp["b"]
        c = xp.empty((a.shape[0], b.shape[1]), dtype=xp.float32)
        return (lambda: xp.matmul(a, b, out=c)), (lambda: c)
    impls.append(("cublas-cupy" if dev.kind == "cuda" else "numpy", "peer", setup_xp))
    return impls


def softmax_impls(dev, torch_peer):
    xp = dev.xp
    impls = []
    for name, make in cvk_runtimes(dev):
        def setup(inp, make=make):
            rt = make()
            x = inp["x"]
            y = xp.empty_like(x)
            rows, cols = x.shape
            return (lambda: rt.softmax_forward(x, y, rows, cols, False)), (lambda: y)
        impls.append((name, "ours", setup))
    if torch_peer is not None:
        def setup_torch(inp):
            T = torch_peer
            tx = T.wrap(inp["x"])
            box = {}

            def run():
                with T.ctx():
                    box["y"] = T.torch.softmax(tx, dim=-1)
            # torch allocates its output: nothing to poison before the first run
            return run, (lambda: T.unwrap(box["y"]) if "y" in box else None)
        impls.append(("torch" if dev.kind == "cuda" else "torch-cpu", "peer", setup_torch))

    def setup_copy(inp):
        x = inp["x"]
        y = xp.empty_like(x)
        if dev.kind == "cuda":
            rtm = dev.cp.cuda.runtime
            n, dst, src, sptr = x.nbytes, y.data.ptr, x.data.ptr, dev.stream.ptr
            kind = rtm.memcpyDeviceToDevice

            def run():
                rtm.memcpyAsync(dst, src, n, kind, sptr)
        else:
            def run():
                dev.np.copyto(y, x)
        return run, (lambda: y)
    impls.append(("copy", "copy", setup_copy))
    return impls


# ---- inputs, references, checks ---------------------------------------------------------------
def make_inputs(dev, op, shape, seed):
    xp = dev.xp
    if op == "matmul":
        M, N, K = shape
        a, b = dev.rand((M, K), seed), dev.rand((K, N), seed + 1)
        ref = xp.matmul(a.astype(xp.float64), b.astype(xp.float64))
        return {"a": a, "b": b}, ref
    rows, cols = shape
    x = dev.rand((rows, cols), seed, scale=2.0)
    x64 = x.astype(xp.float64)
    e = xp.exp(x64 - x64.max(axis=1, keepdims=True))
    ref = e / e.sum(axis=1, keepdims=True)
    return {"x": x}, ref


def compare(xp, op, out, ref):
    """(rel_err, max_rel_err, all_finite) of ``out`` against ``ref`` (see the module docstring)."""
    o = out.astype(xp.float64)
    finite = bool(xp.isfinite(o).all())
    if not finite:
        return math.inf, math.inf, False
    d = xp.abs(o - ref)
    nref = float(xp.linalg.norm(ref))
    rel = float(xp.linalg.norm(d)) / nref if nref else float(xp.linalg.norm(d))
    if op == "matmul":
        m = float(xp.abs(ref).max())
        maxrel = float(d.max()) / m if m else float(d.max())
    else:
        maxrel = float((d / xp.maximum(xp.abs(ref), 1e-300)).max())
    return rel, maxrel, True


def poison(xp, a):
    if a.dtype.kind == "f":
        a.fill(xp.nan)


# ---- one case ---------------------------------------------------------------------------------
def run_case(dev, op, shape, impls, args, log):
    xp = dev.xp
    name = case_name(op, shape)
    case = {"name": name, "op": op, "dtype": "float32", "results": [], "notes": []}
    if op == "matmul":
        M, N, K = shape
        case["shape"] = {"M": M, "N": N, "K": K}
        case["flop"] = 2 * M * N * K
        case["min_bytes"] = 4 * (M * K + K * N + M * N)
    else:
        rows, cols = shape
        case["shape"] = {"rows": rows, "cols": cols}
        case["bytes"] = 2 * rows * cols * 4   # read x once, write y once
    tol = tolerance(op, shape)
    case["tolerance"] = tol
    peers = [n for n, role, _ in impls if role == "peer"]
    log(f"== {name}")

    inputs, ref = make_inputs(dev, op, shape, seed=args.seed + len(op) * 1000 + sum(shape))
    ready = []       # (result dict, run)
    peer_out = None
    outputs = {}
    for impl, role, setup in impls:
        res = {"impl": impl, "role": role, "status": "ok", "error": None}
        case["results"].append(res)
        try:
            run, output = setup(inputs)
            out = output()
            if out is not None:
                poison(xp, out)
            run()
            dev.sync()
            out = output()
            if role == "copy":
                exact = bool((out == inputs["x"]).all())
                res["check"] = {"exact": exact, "ok": exact}
                if not exact:
                    res["status"] = "check_failed"
            else:
                rel, maxrel, finite = compare(xp, op, out, ref)
                ok = finite and rel <= tol["rel_err"] and maxrel <= tol["max_rel_err"]
                res["check"] = {"rel_err": rel, "max_rel_err": maxrel, "all_finite": finite,
                                "ok": ok}
                if not ok:
                    res["status"] = "check_failed"
                if role == "peer" and peer_out is None and res["status"] == "ok":
                    peer_out = (impl, out.astype(xp.float64))
                if role == "ours":
                    outputs[impl] = out
            ready.append((res, run))
        except Exception as e:   # record and go on
            res["status"] = "error"
            res["error"] = f"{type(e).__name__}: {e}"
            res["traceback"] = traceback.format_exc(limit=6)
            log(f"   {impl:<18} ERROR {res['error']}")
    if peer_out is not None:
        pname, p64 = peer_out
        for res in case["results"]:
            if res["impl"] in outputs:
                d = float(xp.abs(outputs[res["impl"]].astype(xp.float64) - p64).max())
                den = float(xp.abs(p64).max()) or 1.0
                res["check"]["max_rel_err_vs_peer"] = d / den
                res["check"]["peer"] = pname
    outputs.clear()
    peer_out = None
    del ref

    # timing: warm-up, then two interleaved rounds
    times = {id(res): [] for res, _ in ready}
    host = {id(res): [] for res, _ in ready}
    reps = args.reps
    rounds = 2 if reps >= 2 else 1
    per_round = {id(res): math.ceil(reps / rounds) for res, _ in ready}
    for res, run in ready:
        try:
            one = dev.one_call_ms(run)   # also the first warm-up call
            t0 = time.perf_counter()
            n = 0
            while n < dev.min_warmup_calls or (time.perf_counter() - t0 < args.warmup_s and n < 200):
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
            res["traceback"] = traceback.format_exc(limit=6)
    for r in range(rounds):
        for res, run in ready:
            if res["status"] == "error":
                continue
            try:
                t, h = dev.time_calls(run, per_round[id(res)])
                times[id(res)].append(t)
                host[id(res)].extend(h)
            except Exception as e:
                res["status"], res["error"] = "error", f"{type(e).__name__}: {e}"
                res["traceback"] = traceback.format_exc(limit=6)
    for res, _ in ready:
        rounds_t = times[id(res)]
        if res["status"] == "error" or not rounds_t:
            continue
        flat = [x for rt in rounds_t for x in rt]
        res["times_ms"] = flat
        res.update(stats(flat))
        res["round_median_ms"] = [statistics.median(rt) for rt in rounds_t]
        res["host_enqueue_us_median"] = statistics.median(host[id(res)])
        ms = res["median_ms"]
        if op == "matmul":
            res["tflops"] = tflops(case["flop"], ms)
        else:
            res["gbps"] = gbps(case["bytes"], ms)
        if (dev.flush_bytes and getattr(dev, "flush_ms", None)
                and res["host_enqueue_us_median"] > 0.8 * dev.flush_ms * 1e3):
            case["notes"].append(f"{res['impl']}: host enqueue ({res['host_enqueue_us_median']:.0f}"
                                 f" us) is near the flush's GPU time ({dev.flush_ms * 1e3:.0f} us):"
                                 " its events may include host launch overhead")

    # ratios
    by = {res["impl"]: res for res in case["results"]}

    def med(impl):
        r = by.get(impl)
        return None if r is None or r["status"] == "error" else r.get("median_ms")
    primary = next((p for p in peers if med(p) is not None), None)
    case["peer"] = primary
    if primary is None:
        case["notes"].append("no peer timed (torch missing or the peer errored): ratio columns "
                             "are empty")
    elif peers and primary != peers[0]:
        case["notes"].append(f"the first-choice peer {peers[0]} was not timed; ratios are "
                             f"against {primary}")
    copy_ms = med("copy")
    for res in case["results"]:
        ms = med(res["impl"])
        if ms is None or res["role"] == "copy":
            continue
        res["ratio_vs"] = {p: ratio(med(p), ms) for p in peers
                           if p != res["impl"] and med(p) is not None}
        if res["role"] == "ours":
            res["ratio_vs_peer"] = ratio(med(primary), ms) if primary else None
        if op == "softmax":
            res["frac_copy_bw"] = ratio(copy_ms, ms)
    for res in case["results"]:
        check = res.get("check") or {}
        err = check.get("rel_err")
        log(f"   {res['impl']:<18} {res['status']:<12} median {fmt(res.get('median_ms'))} ms"
            f"  {'TFLOP/s ' + fmt(res.get('tflops')) if op == 'matmul' else 'GB/s ' + fmt(res.get('gbps'))}"
            f"  vs peer {fmt(res.get('ratio_vs_peer'))}"
            + (f"  of copy {fmt(res.get('frac_copy_bw'))}" if op == "softmax" else "")
            + (f"  rel_err {fmt(err, 2)} max_rel_err {fmt(check.get('max_rel_err'), 2)}"
               if err is not None else "")
            + (f"  vs-peer max_rel_err {fmt(check.get('max_rel_err_vs_peer'), 2)}"
               if "max_rel_err_vs_peer" in check else ""))
    del inputs, ready
    dev.free()
    return case


# ---- environment ------------------------------------------------------------------------------
def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                              cwd=ROOT).stdout.strip() or None
    except Exception:
        return None


def environment(dev, torch_peer, mode):
    import numpy as np
    env = {"date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "mode": mode, "python": platform.python_version(), "numpy": np.__version__,
           "host": platform.node(), "machine": platform.machine(),
           "git_commit": _run(["git", "rev-parse", "HEAD"]),
           "git_dirty": (lambda s: None if s is None else bool(s))(
               _run(["git", "status", "--porcelain", "--untracked-files=no"])),
           "env": {k: os.environ.get(k) for k in ("CUPY_TF32", "NVIDIA_TF32_OVERRIDE",
                                                  "CVK_CUDA_ARCHS", "CUDA_VISIBLE_DEVICES")}}
    try:
        import cvkernels
        env["cvkernels"] = getattr(cvkernels, "__version__", None)
        env["cvkernels_path"] = str(Path(cvkernels.__file__).parent)
    except Exception as e:
        env["cvkernels"] = f"import failed: {e}"
    if dev.kind == "cuda":
        cp = dev.cp
        rtm = cp.cuda.runtime
        env["cupy"] = cp.__version__
        dev_id = cp.cuda.Device().id
        props = rtm.getDeviceProperties(dev_id)
        name = props.get("name", "unknown GPU")
        env["gpu_name"] = name.decode() if isinstance(name, bytes) else str(name)
        env["compute_capability"] = f"{props.get('major')}.{props.get('minor')}"
        env["sm_count"] = props.get("multiProcessorCount")
        env["l2_bytes"] = props.get("l2CacheSize")
        env["gpu_memory_bytes"] = props.get("totalGlobalMem")
        env["cuda_runtime_version"] = rtm.runtimeGetVersion()
        env["cuda_driver_api_version"] = rtm.driverGetVersion()
        smi = _run(["nvidia-smi", f"--id={dev_id}", "--query-gpu=driver_version,clocks.sm,"
                    "clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit",
                    "--format=csv,noheader"])
        if smi:
            keys = ["driver", "clock_sm", "clock_sm_max", "clock_mem", "temperature",
                    "power_draw", "power_limit"]
            env.update({("nvidia_smi_" + k if k != "driver" else k): v.strip()
                        for k, v in zip(keys, smi.splitlines()[0].split(","))})
        env["l2_flush_bytes"] = dev.flush_bytes
        env["l2_flush_ms"] = dev.flush_ms
        with contextlib.suppress(Exception):
            from cupy.cuda import cudnn   # noqa: F401  (optional in CuPy)
            env["cupy_cudnn"] = cudnn.getVersion()
    else:
        env["gpu_name"] = "none (dry run: CPU simulator)"
    if torch_peer is not None:
        env.update(torch_peer.versions())
    else:
        env["torch"] = None
    env["results_dir"] = f"{env['date_utc'][:10]}-{slug(env['gpu_name'].split(' (')[0])}"
    return env


# ---- report -----------------------------------------------------------------------------------
def evaluate_bars(cases):
    out = []
    by = {c["name"]: c for c in cases}
    for bar in BARS:
        c = by.get(bar["case"])
        for res in (c["results"] if c else []):
            if res["role"] != "ours":
                continue
            v = res.get(bar["metric"])
            out.append({**bar, "impl": res["impl"], "value": v,
                        "meets_bar": None if v is None else v >= bar["bar"],
                        "meets_goal": None if v is None else v >= bar["goal"]})
        if not c:
            out.append({**bar, "impl": None, "value": None, "meets_bar": None,
                        "meets_goal": None, "note": "case not run (quick or dry run?)"})
    return out


def summarize(report):
    failures, warnings = [], []
    for c in report["cases"]:
        if c.get("error"):
            failures.append(f"{c['name']}: case error: {c['error']}")
        for r in c.get("results", []):
            tag = f"{c['name']} {r['impl']}"
            if r["status"] == "error":
                (failures if r["role"] == "ours" else warnings).append(f"{tag}: {r['error']}")
            elif r["status"] == "check_failed":
                ck = r.get("check", {})
                msg = (f"{tag}: check failed (rel_err {fmt(ck.get('rel_err'), 3)}, max_rel_err "
                       f"{fmt(ck.get('max_rel_err'), 3)}, tolerance {c.get('tolerance')})"
                       if "rel_err" in ck else f"{tag}: check failed ({ck})")
                (failures if r["role"] == "ours" else warnings).append(msg)
    report["failures"], report["warnings"] = failures, warnings
    report["ok"] = not failures
    report["bars"] = evaluate_bars(report["cases"])


def markdown(report):
    env = report["env"]
    lines = [f"# cvkernels bench: {env.get('gpu_name')} ({report['mode']})", ""]
    lines.append(f"- date (UTC): {env.get('date_utc')}; commit {env.get('git_commit')}"
                 f"{' (dirty)' if env.get('git_dirty') else ''}")
    lines.append(f"- GPU: {env.get('gpu_name')}, cc {env.get('compute_capability', '–')}, "
                 f"{env.get('sm_count', '–')} SMs, L2 {env.get('l2_bytes', '–')} B; driver "
                 f"{env.get('driver', '–')}; CUDA runtime {env.get('cuda_runtime_version', '–')}"
                 f" (driver API {env.get('cuda_driver_api_version', '–')})")
    lines.append(f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda', '–')}, cuDNN "
                 f"{env.get('cudnn', '–')}); CuPy {env.get('cupy', '–')}; numpy "
                 f"{env.get('numpy')}; python {env.get('python')}")
    t = report["timing"]
    lines.append(f"- timing: {t['timer']}; median of {t['reps']} calls in {t['rounds']} "
                 f"interleaved rounds after {t['warmup_s']} s warm-up; L2 flush "
                 f"{t['l2_flush_bytes'] >> 20} MB before every call")
    lines.append("- ratio = peer ms / ours ms (> 1: cvkernels faster); of copy = copy ms / ms "
                 "(fraction of the device-to-device copy bandwidth); GB/s counts "
                 "2*rows*cols*4 bytes; TFLOP/s counts 2*M*N*K")
    lines.append(f"- status: **{'OK' if report['ok'] else 'FAILED'}**")
    lines += ["", "| case | impl | median ms | p10–p90 ms | TFLOP/s or GB/s | vs peer | "
              "of copy BW | rel err | max rel err | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["cases"]:
        if c.get("error"):
            lines.append(f"| {c['name']} | – | – | – | – | – | – | – | – | error: "
                         f"{c['error']} |")
            continue
        for r in c["results"]:
            ck = r.get("check") or {}
            if c["op"] == "matmul":
                rate = f"{fmt(r.get('tflops'))} TFLOP/s" if r.get("tflops") else "–"
            else:
                rate = f"{fmt(r.get('gbps'))} GB/s" if r.get("gbps") else "–"
            if r["role"] == "ours":
                vs = f"{fmt(r.get('ratio_vs_peer'), 3)}x" if r.get("ratio_vs_peer") else "–"
            elif r["impl"] == c.get("peer"):
                vs = "(peer)"
            else:
                vs = "–"
            spread = (f"{fmt(r.get('p10_ms'))}–{fmt(r.get('p90_ms'))}"
                      if r.get("p10_ms") is not None else "–")
            status = r["status"] if r["status"] != "error" else f"error: {r['error']}"
            status = status.replace("|", "/").replace("\n", " ")[:160]
            lines.append(
                f"| {c['name']} | {r['impl']} | {fmt(r.get('median_ms'))} | {spread} | {rate} | "
                f"{vs} | {fmt(r.get('frac_copy_bw'), 3) if c['op'] == 'softmax' else '–'} | "
                f"{fmt(ck.get('rel_err'), 2)} | {fmt(ck.get('max_rel_err'), 2)} | {status} |")
    lines += ["", "## Bars (issue 2) and goals (design.md)", "",
              "| what | impl | value | bar | meets bar | goal | meets goal |",
              "|---|---|---|---|---|---|---|"]
    for b in report["bars"]:
        yn = {True: "yes", False: "**no**", None: "–"}
        lines.append(f"| {b['what']} | {b['impl'] or '–'} | {fmt(b['value'], 3)} | {b['bar']} | "
                     f"{yn[b['meets_bar']]} | {b['goal']} | {yn[b['meets_goal']]} |")
    notes = list(report.get("notes", []))
    for c in report["cases"]:
        notes += [f"{c['name']}: {n}" for n in c.get("notes", [])]
        notes += [f"{c['name']} {r['impl']}: {r['note']}" for r in c.get("results", [])
                  if r.get("note")]
    for title, items in (("Failures", report["failures"]), ("Warnings", report["warnings"]),
                         ("Notes", notes)):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {x}" for x in items]
    return "\n".join(lines) + "\n"


def write(report, out: Path):
    summarize(report)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str, allow_nan=True))
    tmp.replace(out / "bench.json")
    (out / "bench.md").write_text(markdown(report))


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="output folder (default: $OUT, else bench/results/)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, 3 reps (GPU smoke test)")
    g.add_argument("--dry-run", action="store_true",
                   help="no GPU: the CPU simulator at tiny sizes, perf_counter timing")
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
    out = Path(args.out)

    def log(msg):
        print(msg, flush=True)

    try:
        import cvkernels  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "python"))

    report = {"schema": SCHEMA, "mode": args.mode, "ok": False, "cases": [], "notes": [],
              "tolerances": TOLERANCES, "failures": [], "warnings": [], "bars": []}
    dev = HostDevice(args) if args.mode == "dry-run" else CudaDevice(args)
    torch_peer = None
    if args.no_torch:
        report["notes"].append("--no-torch: torch peers skipped")
    else:
        try:
            torch_peer = Torch(dev)
        except Exception as e:
            report["notes"].append(f"torch unavailable ({type(e).__name__}: {e}): torch peer "
                                   "columns skipped; matmul falls back to the next peer")
    if dev.kind == "host":
        report["notes"].append("dry run: the cvkernels paths run on the CPU simulator and the "
                               "times are host wall-clock; only the script's logic is exercised")
    report["timing"] = {"timer": dev.timer, "statistic": "median", "reps": args.reps,
                        "rounds": 2 if args.reps >= 2 else 1, "warmup_s": args.warmup_s,
                        "l2_flush_bytes": dev.flush_bytes,
                        "l2_flush_ms": getattr(dev, "flush_ms", None),
                        "per_call": "flush; event; one launch; event"}
    try:
        report["env"] = environment(dev, torch_peer, args.mode)
    except Exception as e:
        report["env"] = {"error": f"{type(e).__name__}: {e}", "gpu_name": "unknown"}
    log(f"cvkernels bench ({args.mode}) on {report['env'].get('gpu_name')} -> {out}")

    makers = {"matmul": matmul_impls, "softmax": softmax_impls}
    for op in ("matmul", "softmax"):
        for shape in SIZES[args.mode][op]:
            name = case_name(op, shape)
            if args.only and args.only not in name:
                continue
            try:
                impls = makers[op](dev, torch_peer)
                report["cases"].append(run_case(dev, op, shape, impls, args, log))
            except Exception as e:
                report["cases"].append({"name": name, "op": op, "results": [],
                                        "error": f"{type(e).__name__}: {e}",
                                        "traceback": traceback.format_exc(limit=8)})
                log(f"== {name}: ERROR {type(e).__name__}: {e}")
                with contextlib.suppress(Exception):
                    dev.free()
            write(report, out)
    write(report, out)
    log("")
    log(markdown(report))
    log(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
