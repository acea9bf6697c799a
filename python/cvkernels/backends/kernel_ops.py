"""Kernel-backed ops, with the references' signatures, registered with the sim, cuda and
rawkernel backends.

An op is written once against a *runtime*, which knows the array module, how to get a pointer,
and how to launch:

* ``ExtRuntime``: the pybind11 launchers (``_cudasim`` on numpy arrays, ``_cuda`` on CuPy arrays).
  Grid/block/shared memory come from the C++ plans inside the launcher.
* ``RawRuntime``: CuPy ``RawModule`` (NVRTC at run time), launched from Python with the same C++
  plans (``plan_<op>_<dir>`` exposed by the extension). With ``SimRawModule`` standing in for
  CuPy's RawModule it runs on the simulator, so CI runs this launch code too.

The kernels are fp32; other dtypes raise TypeError on these backends.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import _ext
from .._checks import check_dim
from ..reference.matmul import _check_linear, _check_matmul, _unbroadcast, promote_1d
from . import get

# ---- runtimes ---------------------------------------------------------------------------------
class ExtRuntime:
    """Launch through a pybind11 extension's typed launchers."""

    def __init__(self, name, ext, xp):
        self.name, self.ext, self.xp = name, ext, xp

    def ptr(self, a) -> int:
        return 0 if a is None else (a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr)

    def stream(self) -> int:
        return 0 if self.xp is np else self.xp.cuda.get_current_stream().ptr

    def matmul(self, a, b, bias, c, batch, M, N, K, sa, sb, ta, tb):
        self.ext.launch_matmul_forward(self.ptr(a), self.ptr(b), self.ptr(bias), self.ptr(c),
                                       batch, M, N, K, sa, sb, ta, tb, self.stream())

    def softmax_forward(self, x, y, rows, cols, log):
        self.ext.launch_softmax_forward(self.ptr(x), self.ptr(y), rows, cols, log, self.stream())

    def softmax_backward(self, g, y, dx, rows, cols, log):
        self.ext.launch_softmax_backward(self.ptr(g), self.ptr(y), self.ptr(dx), rows, cols, log,
                                         self.stream())


class RawRuntime:
    """Launch through CuPy's RawModule (or a stand-in with its calling convention)."""

    def __init__(self, name, xp, module_cls):
        self.name, self.xp, self.module_cls = name, xp, module_cls

    @staticmethod
    def plans():
        ext = _ext.cuda() or _ext.sim()  # plans are the same C++ in both extensions
        if ext is None:
            raise RuntimeError("rawkernel: the launch plans come from cvkernels' extension, "
                               "which is not built; reinstall cvkernels")
        return ext

    def ptr(self, a) -> int:
        return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr

    def _launch(self, plan, *args):
        from . import rawkernel
        fn = rawkernel.module(plan.source, self.module_cls).get_function(plan.kernel)
        fn(plan.grid, plan.block, args, shared_mem=plan.smem)  # CuPy: on its current stream

    def matmul(self, a, b, bias, c, batch, M, N, K, sa, sb, ta, tb):
        plan = self.plans().plan_matmul_forward(batch, M, N, K, ta, tb, bias is not None)
        i64 = np.int64
        self._launch(plan, a, b, c if bias is None else bias, c, i64(batch), i64(M), i64(N),
                     i64(K), i64(sa), i64(sb))

    def _aligned(self, *arrays):
        return all(self.ptr(a) % 16 == 0 for a in arrays)

    def softmax_forward(self, x, y, rows, cols, log):
        plan = self.plans().plan_softmax_forward(rows, cols, log, self._aligned(x, y))
        self._launch(plan, x, y, np.int64(rows), np.int64(cols))

    def softmax_backward(self, g, y, dx, rows, cols, log):
        plan = self.plans().plan_softmax_backward(rows, cols, log, self._aligned(g, y, dx))
        self._launch(plan, g, y, dx, np.int64(rows), np.int64(cols))


# ---- ops --------------------------------------------------------------------------------------
def _need_f32(rt, fn, **arrays):
    for name, a in arrays.items():
        if a is not None and a.dtype != np.float32:
            raise TypeError(f"{fn}: backend {rt.name!r} runs float32 kernels; {name} has dtype "
                            f"{a.dtype} (use the 'cpu' backend for other dtypes)")


def _operand(rt, x, batch_shape):
    """(array, batch stride, transposed) for a [..., R, C] operand of a batched product.

    Reads a matrix-transposed view in place (the kernel's TRANS flag) and broadcasts a single
    matrix with stride 0; anything else is made contiguous first.
    """
    xp = rt.xp
    R, C = x.shape[-2:]
    single = math.prod(x.shape[:-2]) == 1
    if single:
        x = x.reshape(R, C)
    elif tuple(x.shape[:-2]) != tuple(batch_shape):
        x = xp.broadcast_to(x, tuple(batch_shape) + (R, C))
    if x.flags.c_contiguous:
        return x, (0 if single else R * C), False
    xt = xp.swapaxes(x, -1, -2)
    if xt.flags.c_contiguous:
        return x, (0 if single else R * C), True
    return xp.ascontiguousarray(x), (0 if single else R * C), False


def matmul_forward(rt, input, other):
    """``torch.matmul`` on the tiled SGEMM kernel (see ``reference.matmul_forward``)."""
    _check_matmul("matmul", input, other)
    _need_f32(rt, "matmul", input=input, other=other)
    xp = rt.xp
    a = input[None, :] if input.ndim == 1 else input
    b = other[:, None] if other.ndim == 1 else other
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    batch = math.prod(batch_shape)
    if batch * M * N == 0 or K == 0:
        out = xp.zeros(batch_shape + (M, N), dtype=np.float32)
    else:
        out = xp.empty(batch_shape + (M, N), dtype=np.float32)
        a3, sa, ta = _operand(rt, a, batch_shape)
        b3, sb, tb = _operand(rt, b, batch_shape)
        rt.matmul(a3, b3, None, out, batch, M, N, K, sa, sb, ta, tb)
    if input.ndim == 1:
        out = out[..., 0, :]
    if other.ndim == 1:
        out = out[..., 0]
    return out


def _check_grad_out(fn, grad_out, shape):
    if tuple(grad_out.shape) != tuple(shape):
        raise ValueError(f"{fn}: grad_out must have the output's shape {tuple(shape)}, got "
                         f"{tuple(grad_out.shape)}")


def matmul_backward(rt, grad_out, input, other):
    """``(grad_input, grad_other)`` via two more products; broadcast batch dims are summed."""
    xp = rt.xp
    out_shape = (np.broadcast_shapes(input.shape[:-2], other.shape[:-2])
                 + tuple(input.shape[-2:-1])                     # M, absent for 1-D input
                 + (tuple(other.shape[-1:]) if other.ndim > 1 else ()))  # N, absent for 1-D
    _check_grad_out("matmul_backward", grad_out, out_shape)
    a, b, g = promote_1d(input, other, grad_out, xp)
    ga = matmul_forward(rt, g, xp.swapaxes(b, -1, -2))
    gb = matmul_forward(rt, xp.swapaxes(a, -1, -2), g)
    ga = _unbroadcast(ga, a.shape).reshape(input.shape)
    gb = _unbroadcast(gb, b.shape).reshape(other.shape)
    return xp.ascontiguousarray(ga), xp.ascontiguousarray(gb)


def linear_forward(rt, input, weight, bias=None):
    """``input @ weight.T + bias`` on the SGEMM kernel with the bias fused into its epilogue."""
    _check_linear("linear", input, weight, bias)
    _need_f32(rt, "linear", input=input, weight=weight, bias=bias)
    xp = rt.xp
    out_f, in_f = weight.shape
    rows = math.prod(input.shape[:-1])
    if rows * out_f == 0 or in_f == 0:
        out = xp.zeros((rows, out_f), dtype=np.float32)
        if bias is not None:
            out += bias
        return out.reshape(input.shape[:-1] + (out_f,))
    x2 = xp.ascontiguousarray(input.reshape(rows, in_f))
    wt, _, tb = _operand(rt, weight.T, ())
    out = xp.empty((rows, out_f), dtype=np.float32)
    bias_c = None if bias is None else xp.ascontiguousarray(bias)
    rt.matmul(x2, wt, bias_c, out, 1, rows, out_f, in_f, 0, 0, False, tb)
    return out.reshape(input.shape[:-1] + (out_f,))


def linear_backward(rt, grad_out, input, weight, bias=None):
    """``(grad_input, grad_weight, grad_bias)``: g @ W and g^T @ x on the SGEMM kernel."""
    out_f, in_f = weight.shape
    _check_grad_out("linear_backward", grad_out, tuple(input.shape[:-1]) + (out_f,))
    rows = math.prod(input.shape[:-1])
    g2 = grad_out.reshape(rows, out_f)
    gx = matmul_forward(rt, g2, weight).reshape(input.shape)
    gw = matmul_forward(rt, g2.T, input.reshape(rows, in_f))
    gb = None if bias is None else g2.sum(axis=0).astype(np.float32)
    return gx, gw, gb


def _rows_view(rt, x, dim, fn):
    """(x with `dim` moved last, contiguous, as [rows, cols]; the normalised dim)."""
    d = check_dim(fn, "dim", dim, x.ndim)  # 0-d: dim in [-1, 0], as torch
    xm = rt.xp.moveaxis(x, d, -1) if x.ndim else x.reshape(1)
    xm = rt.xp.ascontiguousarray(xm)
    cols = xm.shape[-1] if xm.ndim else 1
    return xm, d, cols


def _from_rows(rt, ym, d, like):
    if like.ndim == 0:
        return ym.reshape(())
    return rt.xp.ascontiguousarray(rt.xp.moveaxis(ym, -1, d))


def _softmax_forward(rt, input, dim, log):
    fn = "log_softmax" if log else "softmax"
    _need_f32(rt, fn, input=input)
    xm, d, cols = _rows_view(rt, input, dim, fn)
    ym = rt.xp.empty_like(xm)
    if xm.size:
        rt.softmax_forward(xm, ym, xm.size // cols, cols, log)
    return _from_rows(rt, ym, d, input)


def _softmax_backward(rt, grad_out, output, dim, log):
    fn = "log_softmax_backward" if log else "softmax_backward"
    _need_f32(rt, fn, grad_out=grad_out, output=output)
    if tuple(grad_out.shape) != tuple(output.shape):
        raise ValueError(f"{fn}: grad_out shape {tuple(grad_out.shape)} != output shape "
                         f"{tuple(output.shape)}")
    gm, d, cols = _rows_view(rt, grad_out, dim, fn)
    ym, _, _ = _rows_view(rt, output, dim, fn)
    dx = rt.xp.empty_like(gm)
    if gm.size:
        rt.softmax_backward(gm, ym, dx, gm.size // cols, cols, log)
    return (_from_rows(rt, dx, d, output),)


def softmax_forward(rt, input, dim=-1):
    """Softmax over ``dim`` on the warp-/block-per-row kernel."""
    return _softmax_forward(rt, input, dim, False)


def log_softmax_forward(rt, input, dim=-1):
    """Log-softmax over ``dim`` on the warp-/block-per-row kernel."""
    return _softmax_forward(rt, input, dim, True)


def softmax_backward(rt, grad_out, output, dim=-1):
    """``(grad_input,)`` of softmax from its output."""
    return _softmax_backward(rt, grad_out, output, dim, False)


def log_softmax_backward(rt, grad_out, output, dim=-1):
    """``(grad_input,)`` of log_softmax from its output."""
    return _softmax_backward(rt, grad_out, output, dim, True)


OPS = {
    ("matmul", "forward"): matmul_forward, ("matmul", "backward"): matmul_backward,
    ("linear", "forward"): linear_forward, ("linear", "backward"): linear_backward,
    ("softmax", "forward"): softmax_forward, ("softmax", "backward"): softmax_backward,
    ("log_softmax", "forward"): log_softmax_forward,
    ("log_softmax", "backward"): log_softmax_backward,
}


# ---- runtimes by name, and registration ------------------------------------------------------
def make_runtime(name: str):
    """The runtime called ``name``: ``sim`` and ``sim-rawkernel`` (numpy arrays, the simulator,
    through the pybind11 launchers resp. the rawkernel launch code), ``cuda`` and ``rawkernel``
    (CuPy arrays, a GPU)."""
    if name == "sim":
        if _ext.sim() is None:
            raise RuntimeError("cvkernels._cudasim is not built (pip install -e .)")
        return ExtRuntime("sim", _ext.sim(), np)
    if name == "sim-rawkernel":
        from .rawkernel import SimRawModule
        return RawRuntime("sim-rawkernel", np, SimRawModule)
    import cupy
    if name == "cuda":
        if _ext.cuda() is None:
            raise RuntimeError(_ext.cuda_status())
        return ExtRuntime("cuda", _ext.cuda(), cupy)
    if name == "rawkernel":
        return RawRuntime("rawkernel", cupy, cupy.RawModule)
    raise ValueError(f"make_runtime: unknown runtime {name!r}")


def _bind(op_fn, make_rt):
    rt_cache = functools.cache(make_rt)

    @functools.wraps(op_fn)
    def impl(*args, **kwargs):
        return op_fn(rt_cache(), *args, **kwargs)
    return impl


for _name in ("sim", "cuda", "rawkernel"):
    for (_op, _dir), _fn in OPS.items():
        get(_name).register(_op, _dir, _bind(_fn, functools.partial(make_runtime, _name)))
