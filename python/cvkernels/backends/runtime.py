"""Runtimes: one generic launch, ``rt.launch(plan, **args)``, on every path.

A runtime knows its array module, its device descriptor, how to take a pointer and how to start
a kernel. The kernel's schema (``cvkernels.spec.Kernel.args``) binds every argument by name, with
its C type: arrays become pointers (their dtype checked against the kernel's element type),
``None`` a null pointer where the schema allows it, scalars numpy scalars of the exact type.

* ``ExtRuntime``: through a pybind11 extension's generic ``launch`` (``_cudasim`` on numpy
  arrays, ``_cuda`` on CuPy arrays, on CuPy's current stream).
* ``RawRuntime``: through CuPy's ``RawModule`` (NVRTC at run time), one module per
  instantiation a plan picks, ``RawKernel`` objects cached by name. With ``SimRawModule`` standing in for CuPy's
  class it runs on the simulator, so CI runs this launch code too.

Both paths receive identical argument lists and refuse what the device refuses: dynamic shared
memory above 48 KiB is opted into through the kernel attribute (``cudaFuncSetAttribute`` in the
extension, ``max_dynamic_shared_size_bytes`` in CuPy), and above the device's opt-in limit the
launch fails as ``cudaFuncSetAttribute`` would. Workspaces (``plan.workspace_bytes``) are
allocated here with the caller's allocator (numpy, or CuPy's current allocator, which is torch's
for torch callers) and bound to the schema's ``workspace`` argument.
"""
from __future__ import annotations

from ..errors import KernelError

import functools

import numpy as np

from .. import _ext
from .._arrays import data_ptr
from ..device import gpu_device, sim_device

#: Every way a kernel can run, in the order tests and checks list them.
RUNTIMES = ("sim", "sim-rawkernel", "cuda", "rawkernel")

_SCALAR = {"i32": np.int32, "i64": np.int64, "f32": np.float32, "f64": np.float64}


class LaunchError(KernelError):
    """A launch the device refuses (the message carries CUDA's own error text)."""


def bind(plan, args: dict, ptr):
    """[(kind, value)] in schema order, from ``args`` by name; arrays through ``ptr(a)``."""
    kernel = plan.kernel
    schema_names = [a.name for a in kernel.args]
    extra = sorted(set(args) - set(schema_names))
    if extra:
        raise TypeError(f"{kernel.name}: unknown argument(s) {extra}; the schema has "
                        f"{schema_names}")
    out = []
    for a in kernel.args:
        if a.name not in args:
            raise TypeError(f"{kernel.name}: missing argument {a.name!r}")
        v = args[a.name]
        if a.kind != "ptr":
            if v is None or hasattr(v, "shape") and getattr(v, "ndim", 0):
                raise TypeError(f"{kernel.name}: {a.name} must be a {a.kind} scalar, got "
                                f"{type(v).__name__}")
            out.append((a.kind, _SCALAR[a.kind](v)))
            continue
        if v is None:
            if not a.optional:
                raise TypeError(f"{kernel.name}: {a.name} must be an array, got None")
            out.append(("ptr", None))
            continue
        want = plan.elem_dtype(a)
        if want is not None and np.dtype(v.dtype) != want:
            raise TypeError(f"{kernel.name}: {a.name} must have dtype {want}, got {v.dtype}")
        out.append(("ptr", v))
    return out


class Runtime:
    name: str
    xp = np
    simulator = False

    def device(self):
        raise NotImplementedError

    def ptr(self, a) -> int:
        return data_ptr(a)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def smem_attribute(self, plan) -> int:
        """The kernel's MaxDynamicSharedMemorySize for this launch: the device default unless
        the plan needs more, then the plan's size, refused above the device's opt-in limit."""
        dev = self.device()
        if plan.smem <= dev.smem_per_block:
            return dev.smem_per_block
        if plan.smem > dev.smem_per_block_optin:
            raise LaunchError(
                f"{plan.name}: cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize"
                f", {plan.smem}) failed: invalid argument ({dev.name} allows at most "
                f"{dev.smem_per_block_optin} bytes of dynamic shared memory a block)")
        return plan.smem

    def launch(self, plan, **args):
        """Launch ``plan`` with its kernel's arguments given by name."""
        if self.simulator and not plan.family.sim:
            raise NotImplementedError(f"{plan.name}: the {plan.family.name} family is GPU-only "
                                      f"(its spec says sim=False)")
        if plan.workspace_bytes and "workspace" not in args:
            args["workspace"] = self.xp.empty(plan.workspace_bytes, dtype=np.uint8)
        bound = bind(plan, args, self.ptr)
        self._launch(plan, bound, self.smem_attribute(plan))


def _verify(ext, families, what: str):
    """Every instantiation the specs name is registered, with the schema's argument kinds: a
    stale or mismatched extension is an import error, not a launch-time surprise."""
    names = set(ext.kernel_names())
    problems = []
    for fam in families:
        for kernel, values in fam.instances():
            n = kernel.expr(values)
            if n not in names:
                problems.append(f"{n} is not registered")
            elif list(ext.kernel_signature(n)) != kernel.kinds():
                problems.append(f"{n}: C++ parameters {list(ext.kernel_signature(n))} != schema "
                                f"{kernel.kinds()}")
    if problems:
        raise ImportError(f"cvkernels.{what} does not match the kernel specs (rebuild with "
                          f"`pip install -e .`):\n  " + "\n  ".join(problems[:20]))


class ExtRuntime(Runtime):
    """Launch through a pybind11 extension's generic ``launch``."""

    def __init__(self, name, ext, xp, simulator: bool, families=None):
        from ..spec import families as all_families
        self.name, self.ext, self.xp, self.simulator = name, ext, xp, simulator
        fams = [f for f in (all_families() if families is None else families)
                if f.sim or not simulator]
        _verify(ext, fams, ext.__name__)

    def device(self):
        return sim_device() if self.simulator else gpu_device()

    def _launch(self, plan, bound, max_dyn):
        stream = 0 if self.xp is np else self.xp.cuda.get_current_stream().ptr
        typed = [(k, 0 if v is None else self.ptr(v)) if k == "ptr" else (k, v.item())
                 for k, v in bound]
        self.ext.launch(plan.name, list(plan.grid), list(plan.block), plan.smem, stream, typed,
                        max_dyn)


class RawRuntime(Runtime):
    """Launch through CuPy's RawModule (or a stand-in with its calling convention)."""

    def __init__(self, name, xp, module_cls, simulator: bool):
        self.name, self.xp, self.module_cls, self.simulator = name, xp, module_cls, simulator
        self._functions = {}

    def device(self):
        return sim_device() if self.simulator else gpu_device()

    def function(self, plan):
        """The cached ``RawKernel`` of ``plan``'s instantiation."""
        fn = self._functions.get(plan.name)
        if fn is None:
            from . import rawkernel
            mod = rawkernel.module(plan.family, plan.name, self.module_cls)
            fn = self._functions[plan.name] = mod.get_function(plan.name)
        return fn

    def _launch(self, plan, bound, max_dyn):
        fn = self.function(plan)
        if max_dyn > self.device().smem_per_block or \
                getattr(fn, "max_dynamic_shared_size_bytes", 0) > max_dyn:
            fn.max_dynamic_shared_size_bytes = max_dyn
        # CuPy passes numpy scalars by value with their own size; a null pointer is a uint64 0
        args = [np.uint64(0) if (k == "ptr" and v is None) else v for k, v in bound]
        fn(plan.grid, plan.block, tuple(args), shared_mem=plan.smem)  # CuPy: its current stream


def make_runtime(name: str) -> Runtime:
    """The runtime called ``name``: ``sim`` and ``sim-rawkernel`` (numpy arrays, the simulator,
    through the pybind11 extension resp. the rawkernel launch code), ``cuda`` and ``rawkernel``
    (CuPy arrays, a GPU)."""
    return _make_runtime(name)


@functools.cache
def _make_runtime(name):
    if name == "sim":
        if _ext.sim() is None:
            raise RuntimeError("cvkernels._cudasim is not built (pip install -e .)")
        return ExtRuntime("sim", _ext.sim(), np, simulator=True)
    if name == "sim-rawkernel":
        from .rawkernel import SimRawModule
        if _ext.sim() is None:
            raise RuntimeError("cvkernels._cudasim is not built (pip install -e .)")
        return RawRuntime("sim-rawkernel", np, SimRawModule, simulator=True)
    if name not in RUNTIMES:
        raise ValueError(f"make_runtime: unknown runtime {name!r} (one of {RUNTIMES})")
    import cupy
    if name == "cuda":
        if _ext.cuda() is None:
            raise RuntimeError(_ext.cuda_status())
        return ExtRuntime("cuda", _ext.cuda(), cupy, simulator=False)
    return RawRuntime("rawkernel", cupy, cupy.RawModule, simulator=False)


def gpu_count() -> int:
    """CUDA devices visible through CuPy (0 without CuPy, a driver or a device)."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def available_runtimes() -> list[str]:
    """The runtimes this machine can run: THE list (cvk check, the bench and tests use it)."""
    names = ["sim", "sim-rawkernel"] if _ext.sim() is not None else []
    if gpu_count() > 0:
        names += (["cuda"] if _ext.cuda() is not None else []) + ["rawkernel"]
    return names
