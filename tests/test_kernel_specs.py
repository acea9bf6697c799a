"""The base tester: every case of every kernel family's spec, on every runtime, in every dtype
the family has, contiguous and strided, against its float64 reference (cvkernels.testing).

Nothing here names a family: a new spec in python/cvkernels/specs/ is tested by this module,
checked by `cvk check` and run under the sanitizers (which select the `sim` marker) without
edits. Family-specific tests (edge cases, plan choices, error messages) live in
tests/test_kernels_<family>.py.
"""
import numpy as np
import pytest

from cvkernels import reference, spec
from cvkernels.testing import LAYOUTS, Result, case_dtypes, compare, run_case
from runtimes import rt  # noqa: F401  (fixture)

FAMILIES = spec.families()
CASES = [pytest.param(f, c, d, id=f"{f.name}-{c.op}-{c.direction}-{c.label}-{d.short}")
         for f in FAMILIES for c in f.cases for d in case_dtypes(f, c)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family,case,dtype", CASES)
def test_case_matches_reference(rt, family, case, dtype, layout):
    if rt.simulator and not family.sim:
        pytest.skip(f"{family.name} is GPU-only (spec: sim=False)")
    r = run_case(rt, family, case, dtype, layout, seed=len(case.label))
    assert isinstance(r, Result)
    assert r.ok, f"{case.op} {case.direction} {case.label} {dtype.name} {layout}: {r.detail}"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_spec_is_complete(family):
    """Every declared op has its reference pair and at least one case in each direction; the
    source exists; every instantiation has a unique name."""
    from cvkernels.backends.rawkernel import kernels_dir
    assert (kernels_dir() / family.source).is_file(), family.source
    assert family.ops or (family.cases and all(c.call for c in family.cases)), \
        f"{family.name} declares no ops (nor `call` cases of plain functions)"
    for op, direction in family.ops:
        assert callable(getattr(reference, f"{op}_{direction}", None)), \
            f"reference.{op}_{direction} is missing"
        assert any(c.op == op and c.direction == direction for c in family.cases), \
            f"{family.name}: no test case for {op} {direction}"
    names = family.names()
    assert len(names) == len(set(names))
    for c in family.cases:
        assert (c.op, c.direction) in family.ops or c.call, \
            f"case for undeclared op {c.op} {c.direction}"
        assert callable(getattr(reference, f"{c.op}_{c.direction}", None))


@pytest.mark.sim
def test_extension_matches_specs():
    """The built simulator extension registers exactly the specs' instantiations, with the
    schema's argument kinds (a stale build is an import error, not a launch error)."""
    from cvkernels import _ext
    from cvkernels.backends import runtime
    ext = _ext.sim()
    if ext is None:
        pytest.skip("_cudasim not built")
    runtime._verify(ext, [f for f in FAMILIES if f.sim], "_cudasim")
    registered = set(ext.kernel_names())
    assert {n for f in FAMILIES if f.sim for n in f.names()} == registered
    # and the check can fail: a schema that disagrees with the C++ parameters is caught
    fam = FAMILIES[0]
    k = fam.kernels[0]
    other = spec.I64 if k.args[-1].kind == "f32" else spec.F32   # a kind the C++ lacks there
    bad = spec.Kernel(k.name, k.params, k.args[:-1] + (other(k.args[-1].name),))
    wrong = spec.Family(fam.name, fam.source, [bad], dtypes=fam.dtypes)
    with pytest.raises(ImportError, match="C\\+\\+ parameters"):
        runtime._verify(ext, [wrong], "_cudasim")
    missing = spec.Family("ghost", fam.source,
                          [spec.Kernel("ghost_kernel", (), (spec.I64("n"),))])
    with pytest.raises(ImportError, match="ghost_kernel is not registered"):
        runtime._verify(ext, [missing], "_cudasim")


def test_name_formatter():
    k = spec.Kernel("k", (spec.dtype_param(), spec.Param("TILE", ((64, 64, 8),)),
                          spec.bool_param("B")), ())
    assert k.expr((spec.BFLOAT16, (64, 64, 8), True)) == "k<__nv_bfloat16, 64, 64, 8, true>"
    with pytest.raises(ValueError):
        k.expr((spec.FLOAT32,))


def test_plan_refuses_values_outside_the_declared_space():
    fam = spec.family("matmul")
    k = fam.kernels[0]
    good = dict(T=spec.FLOAT32, TILE=k.params[1].values[0], TRANS_A=False, TRANS_B=False,
                HAS_BIAS=False)
    assert fam.plan(k, good, (1,), (256,)).grid == (1, 1, 1)
    with pytest.raises(ValueError, match="not instantiated"):
        fam.plan(k, dict(good, TILE=(32, 32, 8, 2, 2)), (1,), (64,))
    with pytest.raises(ValueError, match="missing"):
        fam.plan(k, {"T": spec.FLOAT32}, (1,), (64,))


def test_bind_checks_names_kinds_and_dtypes():
    from cvkernels.backends.runtime import bind
    fam = spec.family("softmax")
    k = fam.kernels[0]
    p = fam.plan(k, dict(T=spec.FLOAT16, LOG=False, BLOCK=False, VEC16=False), (1,), (128,))
    x, y = np.zeros((2, 3), np.float16), np.zeros((2, 3), np.float16)
    ptr = lambda a: a.ctypes.data  # noqa: E731
    out = bind(p, dict(x=x, y=y, rows=2, cols=3), ptr)
    assert [k for k, _ in out] == ["ptr", "ptr", "i64", "i64"]
    assert out[2][1].dtype == np.int64
    with pytest.raises(TypeError, match="missing argument 'cols'"):
        bind(p, dict(x=x, y=y, rows=2), ptr)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['extra'\]"):
        bind(p, dict(x=x, y=y, rows=2, cols=3, extra=1), ptr)
    with pytest.raises(TypeError, match="y must have dtype float16, got float32"):
        bind(p, dict(x=x, y=y.astype(np.float32), rows=2, cols=3), ptr)
    with pytest.raises(TypeError, match="x must be an array, got None"):
        bind(p, dict(x=None, y=y, rows=2, cols=3), ptr)


def test_compare_can_fail():
    """The error models reject a result just outside them (the checks are not vacuous)."""
    ref = np.array([1.0, 2.0, 3.0])
    ours = ref.astype(np.float32)
    assert compare(ours, ref, spec.FLOAT32, bound=0.0).ok
    assert not compare(ours + np.float32(1e-6), ref, spec.FLOAT32, bound=1e-7).ok
    assert not compare(ours.astype(np.float16), ref, spec.FLOAT32, bound=1.0).ok   # dtype
    assert not compare(ours[:2], ref, spec.FLOAT32, bound=1.0).ok                    # shape
    nan = ours.copy()
    nan[1] = np.nan
    assert not compare(nan, ref, spec.FLOAT32, bound=1.0).ok                          # NaN
    h = ref.astype(np.float16)
    lowp = ref.astype(np.float16).astype(np.float64)          # exact: NumPy's error is 0
    assert compare(h, ref, spec.FLOAT16, lowp=lowp).ok
    off = (h.astype(np.float32) * np.float32(1.01)).astype(np.float16)
    assert not compare(off, ref, spec.FLOAT16, lowp=lowp).ok
