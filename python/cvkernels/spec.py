"""Kernel specs: one declaration per kernel family, the single source of truth.

A family (``python/cvkernels/specs/<family>.py``) declares, in one place:

* its source file under ``kernels/`` and its kernels, each with its template parameter space
  (dtype included) and its typed argument schema (:class:`Kernel`);
* its plans: Python functions of the device and the problem that return a :class:`Plan`
  (template values, grid, block, dynamic shared memory, workspace bytes);
* whether the simulator can run it (``sim=False`` marks a GPU-only family);
* its ops (``@family.op(name, direction)``): validate, allocate, plan, ``rt.launch``;
* its test, check and bench cases, with their tolerance model (:class:`Case`, :class:`Bench`);
  the reference of op ``x`` in direction ``d`` is ``cvkernels.reference.x_d``.

Everything else is derived from the specs: the explicit instantiations (one generated
translation unit per family and dtype, ``pyext/gen_instantiations.py``), the registry names and
NVRTC's name expressions (one formatter, :meth:`Kernel.expr`), the launch on every path
(``Runtime.launch(plan, **args)``, arguments bound by name from the schema), ``cvk check``, the
bench cases, the test matrix and the sanitizer stage. See CONTRIBUTING.md.

This module imports only the standard library and ``cvkernels.numerics`` (numpy), so the build
can load the specs without the rest of the package.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

from .numerics import U16, U32, UBF16

# ---- element types ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DType:
    """An element type as every layer names it."""
    name: str         # numpy / torch spelling: float32, float16, bfloat16
    ctype: str        # the kernel's C++ type
    short: str        # in bench case names: fp32, fp16, bf16
    unit_roundoff: float

    @property
    def np(self):
        """The numpy dtype (bfloat16 from ml_dtypes, as JAX and CuPy use)."""
        import numpy as np
        if self.name == "bfloat16":
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.name)


FLOAT32 = DType("float32", "float", "fp32", U32)
FLOAT16 = DType("float16", "__half", "fp16", U16)
BFLOAT16 = DType("bfloat16", "__nv_bfloat16", "bf16", UBF16)
DTYPES = {d.name: d for d in (FLOAT32, FLOAT16, BFLOAT16)}
ALL_DTYPES = (FLOAT32, FLOAT16, BFLOAT16)


def dtype_of(array_dtype) -> DType | None:
    """The :class:`DType` of a numpy/CuPy dtype, or None if the kernels don't take it."""
    return DTYPES.get(str(array_dtype))


# ---- template parameters and the argument schema ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Param:
    """A template parameter (or a group of them, when its values are tuples)."""
    name: str
    values: tuple

    def render(self, v) -> str:
        if isinstance(v, DType):
            return v.ctype
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, tuple):
            return ", ".join(self.render(x) for x in v)
        if isinstance(v, int):
            return str(v)
        raise TypeError(f"template parameter {self.name}: cannot render {v!r}")


def dtype_param(name: str = "T") -> Param:
    """The element-type parameter; a family's ``dtypes`` restrict it."""
    return Param(name, ALL_DTYPES)


def bool_param(name: str) -> Param:
    return Param(name, (False, True))


@dataclasses.dataclass(frozen=True)
class Arg:
    """One kernel parameter: its name, its kind (``ptr``, ``i32``, ``i64``, ``f32``, ``f64``)
    and, for pointers, its element type: the name of a dtype parameter (``"T"``), a fixed dtype
    name (``"float32"``, ``"int64"``), or None (any); ``out`` marks a written tensor,
    ``optional`` a pointer that may be null."""
    name: str
    kind: str
    elem: str | None = None
    out: bool = False
    optional: bool = False

    def __post_init__(self):
        if self.kind not in ("ptr", "i32", "i64", "f32", "f64"):
            raise ValueError(f"Arg {self.name}: unknown kind {self.kind!r}")


def In(name, elem="T", optional=False):  # noqa: N802  (schema constructors read as types)
    return Arg(name, "ptr", elem, False, optional)


def Out(name, elem="T", optional=False):  # noqa: N802
    return Arg(name, "ptr", elem, True, optional)


def I64(name):  # noqa: N802
    return Arg(name, "i64")


def I32(name):  # noqa: N802
    return Arg(name, "i32")


def F32(name):  # noqa: N802
    return Arg(name, "f32")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A ``__global__`` template: name, template parameters in order, and argument schema."""
    name: str
    params: tuple
    args: tuple

    def expr(self, values: tuple) -> str:
        """THE name formatter: registry name, NVRTC name expression and generated
        instantiation all come from here."""
        if len(values) != len(self.params):
            raise ValueError(f"{self.name}: {len(self.params)} template values expected, got "
                             f"{len(values)}")
        if not self.params:
            return self.name
        return f"{self.name}<{', '.join(p.render(v) for p, v in zip(self.params, values))}>"

    def kinds(self) -> list[str]:
        return [a.kind for a in self.args]

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


# ---- plans ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one launch runs: which instantiation, grid, block, dynamic shared memory, workspace."""
    family: "Family"
    kernel: Kernel
    values: tuple
    grid: tuple
    block: tuple
    smem: int = 0
    workspace_bytes: int = 0

    @property
    def name(self) -> str:
        return self.kernel.expr(self.values)

    @property
    def dtype(self) -> DType | None:
        for p, v in zip(self.kernel.params, self.values):
            if isinstance(v, DType):
                return v
        return None

    def elem_dtype(self, arg: Arg):
        """The numpy dtype an array bound to ``arg`` must have (None: any)."""
        if arg.elem is None:
            return None
        for p, v in zip(self.kernel.params, self.values):
            if p.name == arg.elem:
                return v.np
        import numpy as np
        return np.dtype(arg.elem)

    def __repr__(self):
        return (f"Plan({self.name}, grid={self.grid}, block={self.block}, smem={self.smem}, "
                f"workspace={self.workspace_bytes})")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---- test, check and bench cases ------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One test/check case of an op, compared with ``reference.<op>_<direction>``.

    ``make(rng)`` returns ``(arrays, params)``: float64 arrays (the tester rounds them to the
    dtype under test and gives the reference the rounded values) and other arguments.
    ``bound(arrays, ref)`` returns the fp32 elementwise error bound (one per output when the op
    returns a tuple), derived from rounding; fp16/bf16 outputs use the low-precision rule of
    design.md (see ``cvkernels.testing``); ``out_dtype=FLOAT32`` marks an op whose outputs are
    fp32 whatever its inputs (then the fp32 bound applies). ``check`` puts the case in
    ``cvk check``.
    """
    op: str
    direction: str
    label: str
    make: Callable
    bound: Callable
    check: bool = True
    dtypes: tuple | None = None
    call: Callable | None = None   # call(fn, rt, arrays, params) -> outputs; default
    # fn(rt, **arrays, **params). A family may so test plain functions for an op it does not
    # own: fn is then None.
    out_dtype: "DType | None" = None   # the outputs' dtype when it is not the inputs' (fp32)


@dataclasses.dataclass
class Bench:
    """One bench case family: op, shapes per mode, work, and the peer to time beside it.

    ``make(xp, shape, dtype, seed)`` returns ``(arrays, params)`` on the device;
    ``work(shape, itemsize)`` returns ``{"flop": ...}`` (compute-bound) or ``{"bytes": ...}``
    (memory-bound, also timed beside a device copy of ``copy_bytes``);
    ``peer(torch, arrays, params)`` runs the peer once (torch tensors sharing the memory);
    ``device_ref(xp, arrays64, params)`` computes the float64 reference on the device.
    """
    op: str
    direction: str
    shapes: dict
    make: Callable
    work: Callable
    peer_name: str | None = None
    peer: Callable | None = None
    device_ref: Callable | None = None
    dtypes: tuple = (FLOAT32,)
    bars: tuple = ()   # (dtype name, shape, metric, bar, goal, what)
    call: Callable | None = None   # call(fn, rt, arrays, params) -> outputs; default fn(**a, **p)
    # False when the peer draws its own random numbers (dropout): its output is then only
    # checked to be finite, and does not set the fp16/bf16 error allowance of ours
    peer_same_output: bool = True


# ---- the family -------------------------------------------------------------------------------


class Family:
    """A kernel family: see the module docstring."""

    def __init__(self, name: str, source: str, kernels, *, dtypes=ALL_DTYPES, sim: bool = True,
                 doc: str = ""):
        self.name, self.source, self.kernels = name, source, tuple(kernels)
        self.dtypes, self.sim, self.doc = tuple(dtypes), sim, doc
        self.ops: dict[tuple[str, str], Callable] = {}
        self.cases: list[Case] = []
        self.benches: list[Bench] = []

    def __repr__(self):
        return f"Family({self.name!r}, {self.source!r})"

    # -- declarations
    def op(self, name: str, direction: str):
        """Decorator: ``fn(rt, *args, **kwargs)`` implements ``reference.<name>_<direction>``'s
        signature on runtime ``rt``."""
        def deco(fn):
            key = (name, direction)
            if key in self.ops:
                raise ValueError(f"{self.name}: op {key} declared twice")
            self.ops[key] = fn
            return fn
        return deco

    def case(self, *cases: Case):
        self.cases.extend(cases)

    def bench(self, *benches: Bench):
        self.benches.extend(benches)

    def plan(self, kernel: Kernel, values: dict, grid, block, smem: int = 0,
             workspace_bytes: int = 0) -> Plan:
        """A :class:`Plan` for ``kernel`` with template ``values`` given by parameter name."""
        missing = [p.name for p in kernel.params if p.name not in values]
        extra = set(values) - {p.name for p in kernel.params}
        if missing or extra:
            raise ValueError(f"{kernel.name}: template values missing {missing}, unknown "
                             f"{sorted(extra)}")
        vals = tuple(values[p.name] for p in kernel.params)
        for p, v in zip(kernel.params, vals):
            if v not in p.values:
                raise ValueError(f"{kernel.name}: {p.name}={v!r} is not instantiated "
                                 f"(declared: {p.values})")
            if isinstance(v, DType) and v not in self.dtypes:
                raise TypeError(f"{self.name}: no {v.name} kernels (have "
                                f"{', '.join(d.name for d in self.dtypes)})")

        def dim(d):
            d = tuple(int(x) for x in (d if isinstance(d, (tuple, list)) else (d,)))
            return d + (1,) * (3 - len(d))
        return Plan(self, kernel, vals, dim(grid), dim(block), int(smem), int(workspace_bytes))

    # -- derived
    def instances(self, dtype: DType | None = None):
        """Every (kernel, template values) the family instantiates, optionally of one dtype."""
        out = []
        for k in self.kernels:
            spaces = []
            for p in k.params:
                vals = p.values
                if vals and isinstance(vals[0], DType):
                    vals = tuple(v for v in vals if v in self.dtypes
                                 and (dtype is None or v == dtype))
                spaces.append(vals)
            out += [(k, vals) for vals in itertools.product(*spaces)]
        return out

    def names(self, dtype: DType | None = None) -> list[str]:
        return [k.expr(v) for k, v in self.instances(dtype)]

    def reference(self, op: str, direction: str):
        from . import reference
        return getattr(reference, f"{op}_{direction}")


def families() -> list[Family]:
    """Every declared family (importing ``cvkernels.specs``)."""
    from .specs import FAMILIES
    return list(FAMILIES)


def family(name: str) -> Family:
    for f in families():
        if f.name == name:
            return f
    raise KeyError(f"no kernel family {name!r}")

