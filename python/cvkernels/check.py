"""``cvk check``: run every kernel on every available kernel backend against the references.

Each case compares the kernel (fp32) with the float64 reference elementwise against a bound
derived from fp32 rounding (gamma_n = n * 2^-24 times the magnitude of the sum), and reports
the normwise relative error max|got - ref| / max|ref|.
"""
from __future__ import annotations

import time

import numpy as np

from . import _ext, reference as ref
from .backends import kernel_ops as K

U32 = 2.0 ** -24


def runtimes():
    """(label, runtime) for every kernel path this machine can run."""
    names = ["sim", "sim-rawkernel"] if _ext.sim() is not None else []
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            names += (["cuda"] if _ext.cuda() is not None else []) + ["rawkernel"]
    except Exception:  # no CuPy, no driver, no device: the GPU paths are simply absent
        pass
    return [(n, K.make_runtime(n)) for n in names]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _cases(rng):
    """(op, shape label, run(rt, put) -> got, expected float64, elementwise bound)."""
    def r(*s):
        return rng.standard_normal(s).astype(np.float32)

    cases = []
    for M, N, Kd in [(1, 1, 1), (33, 17, 1), (129, 127, 31), (64, 96, 128)]:
        a, b = r(M, Kd), r(Kd, N)
        cases.append(("matmul", f"{M}x{Kd} @ {Kd}x{N}",
                      lambda rt, put, a=a, b=b: K.matmul_forward(rt, put(a), put(b)),
                      _f64(a) @ _f64(b), (Kd + 2) * U32 * (np.abs(_f64(a)) @ np.abs(_f64(b)))))
    a, b = r(31, 129), r(31, 17)          # A read transposed in place (TRANS_A)
    cases.append(("matmul (A transposed)", "(31x129)^T @ 31x17",
                  lambda rt, put, a=a, b=b: K.matmul_forward(rt, put(a).T, put(b)),
                  _f64(a).T @ _f64(b), 33 * U32 * (np.abs(_f64(a)).T @ np.abs(_f64(b)))))
    a, b = r(33, 129, 9), r(33, 9, 130)   # 132 tiles: the 128x128 instantiation
    cases.append(("matmul (128x128 tiles)", "33 x (129x9 @ 9x130)",
                  lambda rt, put, a=a, b=b: K.matmul_forward(rt, put(a), put(b)),
                  _f64(a) @ _f64(b), 11 * U32 * (np.abs(_f64(a)) @ np.abs(_f64(b)))))
    x, w, bias = r(3, 37, 45), r(29, 45), r(29)
    cases.append(("linear", "3x37x45, W 29x45, bias",
                  lambda rt, put, x=x, w=w, bias=bias: K.linear_forward(rt, put(x), put(w), put(bias)),
                  ref.linear_forward(_f64(x), _f64(w), _f64(bias)),
                  48 * U32 * (np.abs(_f64(x)) @ np.abs(_f64(w)).T + np.abs(bias))))
    g = r(3, 37, 29)
    cases.append(("linear backward (grad_weight)", "3x37x45, W 29x45",
                  lambda rt, put, g=g, x=x, w=w: K.linear_backward(rt, put(g), put(x), put(w))[1],
                  ref.linear_backward(_f64(g), _f64(x), _f64(w))[1],
                  (2 * 111 + 2) * U32 * (np.abs(_f64(g)).reshape(-1, 29).T
                                         @ np.abs(_f64(x)).reshape(-1, 45))))
    for rows, cols in [(7, 33), (5, 1025), (3, 4100)]:
        x = 3 * r(rows, cols)
        gy = r(rows, cols)
        budget = (cols + 8) * U32
        y64 = ref.softmax_forward(_f64(x))
        cases.append(("softmax", f"{rows}x{cols}",
                      lambda rt, put, x=x: K.softmax_forward(rt, put(x)), y64, budget * y64))
        ly64 = ref.log_softmax_forward(_f64(x))
        cases.append(("log_softmax", f"{rows}x{cols}",
                      lambda rt, put, x=x: K.log_softmax_forward(rt, put(x)), ly64,
                      budget + 4 * U32 * np.abs(ly64)))
        y32 = y64.astype(np.float32)
        (dx64,) = ref.softmax_backward(_f64(gy), _f64(y32))
        scale = np.abs(gy).sum(1, keepdims=True) * y32 + np.abs(gy)
        cases.append(("softmax backward", f"{rows}x{cols}",
                      lambda rt, put, gy=gy, y32=y32: K.softmax_backward(rt, put(gy), put(y32))[0],
                      dx64, budget * scale))
        ly32 = ly64.astype(np.float32)
        (ldx64,) = ref.log_softmax_backward(_f64(gy), _f64(ly32))
        lscale = np.abs(gy).sum(1, keepdims=True) * np.exp(_f64(ly32)) + np.abs(gy)
        cases.append(("log_softmax backward", f"{rows}x{cols}",
                      lambda rt, put, gy=gy, ly32=ly32:
                      K.log_softmax_backward(rt, put(gy), put(ly32))[0],
                      ldx64, budget * lscale))
    return cases


def run_checks(seed: int = 0, verbose: bool = True):
    """Run all cases on all runtimes; return a list of result dicts (and print a table)."""
    rows = []
    paths = runtimes()
    if verbose:
        print(f"{'backend':<14} {'op':<30} {'shape':<26} {'max rel err':>12}  pass")
    for label, rt in paths:
        def put(a, rt=rt):
            return a if rt.xp is np else rt.xp.asarray(a)
        for op, shape, fn, expect, bound in _cases(np.random.default_rng(seed)):
            t0 = time.perf_counter()
            try:
                got = fn(rt, put)
                got = _f64(got.get() if hasattr(got, "get") else got)
                err = np.abs(got - expect)
                ok = got.shape == expect.shape and bool((err <= bound).all())
                rel = float(err.max() / max(np.abs(expect).max(), 1e-300)) if err.size else 0.0
                note = ""
            except Exception as e:  # a crash is a failed check, reported in the table
                ok, rel, note = False, float("nan"), f"{type(e).__name__}: {e}"
            rows.append(dict(backend=label, op=op, shape=shape, max_rel_err=rel, passed=ok,
                             seconds=time.perf_counter() - t0, error=note))
            if verbose:
                print(f"{label:<14} {op:<30} {shape:<26} {rel:>12.2e}  {'yes' if ok else 'NO'}"
                      + (f"  ({note})" if note else ""))
    if verbose:
        n_ok = sum(r["passed"] for r in rows)
        gpu = any(lbl in ("cuda", "rawkernel") for lbl, _ in paths)
        print(f"\n{n_ok}/{len(rows)} checks passed on {len(paths)} kernel paths"
              + ("" if gpu else " (no CUDA device found: the kernels ran on the CPU simulator)"))
        if not gpu:
            print(_ext.cuda_status())
    return rows
