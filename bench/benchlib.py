"""The bench's machinery, independent of any op: devices (allocation, L2 flush, CUDA-event
timing), torch as the peer, statistics, the environment record, and the json/markdown report.
bench/bench_ops.py drives it from the kernel specs."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "cvkernels-bench/2"


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
        self._flush_buf = None
        if self.flush_bytes:   # a buffer larger than L2, read (not written) before each call
            self._flush_buf = cupy.ones(self.flush_bytes // 4, dtype=cupy.float32)
            self._flush_out = cupy.empty((), dtype=cupy.float32)
        self.flush_ms = None
        if self._flush_buf is not None:   # the flush's own GPU time (the host-overhead margin)
            for _ in range(3):
                self.flush()
            self.flush_ms = statistics.median(self.one_call_ms(self.flush) for _ in range(5))

    def sync(self):
        self.stream.synchronize()

    def flush(self):
        # A read: a memset would leave dirty lines that are written back inside the next timed
        # call. The sum's result is discarded; its one-element write is negligible.
        if self._flush_buf is not None:
            self._flush_buf.sum(out=self._flush_out)

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
        """A torch tensor on the same memory as the CuPy/numpy array ``a`` (no copy); bf16
        (ml_dtypes) goes through its bits, which torch can view."""
        bf16 = str(a.dtype) == "bfloat16"
        t = self.torch.as_tensor(a.view(self.dev.np.int16) if bf16 else a, device=self.device)
        if bf16:
            t = t.view(self.torch.bfloat16)
        ptr = a.data.ptr if self.device == "cuda" else a.ctypes.data
        if t.data_ptr() != ptr:
            raise RuntimeError("torch.as_tensor copied the array instead of sharing its memory")
        return t

    def unwrap(self, t):
        bf16 = t.dtype == self.torch.bfloat16
        if bf16:
            import ml_dtypes
            t = t.view(self.torch.int16)
        out = self.dev.cp.asarray(t) if self.device == "cuda" else t.numpy()
        return out.view(ml_dtypes.bfloat16) if bf16 else out

    def versions(self):
        torch = self.torch
        v = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "torch_flags": self.flags,
             "torch_same_stream_as_cupy": self.same_stream}
        with contextlib.suppress(Exception):
            v["cudnn"] = torch.backends.cudnn.version()
        return v


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
def evaluate_bars(cases, bars):
    """Each bar (case name, metric, bar, goal, what) against the cvkernels results of its case."""
    out = []
    by = {c["name"]: c for c in cases}
    for bar in bars:
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
    report["bars"] = evaluate_bars(report["cases"], report.get("bar_specs", []))


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
                 "(fraction of the device-to-device copy bandwidth); GB/s counts the bytes the "
                 "op must move, TFLOP/s the op's FLOPs (both in each case's json)")
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
            if "flop" in c:
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
                f"{vs} | {fmt(r.get('frac_copy_bw'), 3) if 'bytes' in c else '–'} | "
                f"{fmt(ck.get('rel_err'), 2)} | {fmt(ck.get('max_rel_err'), 2)} | {status} |")
    lines += ["", "## Bars and goals (design.md)", "",
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


