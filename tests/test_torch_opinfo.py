"""torch's own OpInfo and ModuleInfo samples, run through cvkernels (backend 'cpu') and compared
with torch: values, gradients, and for error inputs that an error of a type torch's test accepts
is raised.

Which ops: every OpInfo of ``torch.testing._internal.common_methods_invocations.op_db`` named
``<name>`` or ``nn.functional.<name>`` where ``cvkernels.functional`` has ``<name>`` (its
``__all__`` or any op that exists, e.g. through a reference pair), and every ModuleInfo of
``common_modules.module_db`` whose class name ``cvkernels.nn`` has. Ops added to the library
later are covered once they exist. Samples are float64 on both sides, so the tolerance only
covers different summation orders (atol 1e-10, rtol 1e-9). Gradients: a random cotangent on the
first output (the value; indices and attention weights are not differentiated), compared for
every tensor that requires grad.

Every sample that is not compared is listed in ``SKIPS`` with its reason and reported by pytest
as a skip naming that reason; ``SUBSAMPLE`` thins the largest sample sets (CI time).
The ``sim`` subset runs the ops that have kernels (matmul, linear, softmax, log_softmax) on
the CUDA simulator in float32, with bounds from the products' rounding.
"""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")           # torch.testing._internal needs it

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402

import cvkernels  # noqa: E402
from cvkernels import backends, nn  # noqa: E402
from cvkernels import functional as F  # noqa: E402
from cvkernels.autograd import Tensor  # noqa: E402

ATOL, RTOL = 1e-10, 1e-9
ALWAYS = None

#: (where, kind, predicate or ALWAYS, reason). ``where`` is an OpInfo name (variant after '|')
#: or a module class name; kind is 'sample', 'error' or 'grad'. A matching item is skipped
#: with the reason; nothing else is left out.
def _dropout_p(s, index):
    """A sample's dropout probability, passed by keyword or at position ``index`` of args."""
    return s.kwargs.get("dropout_p", s.args[index] if len(s.args) > index else 0.0)


SKIPS = [
    # random: torch's random stream is not reproduced (statistics are tested instead)
    ("nn.functional.scaled_dot_product_attention", "sample", lambda s: _dropout_p(s, 3) > 0,
     ("dropout_p > 0 is random and torch's random stream is not reproduced; dropout "
      "statistics, reproducibility and its backward are tested in test_parity.py")),
    ("nn.functional.multi_head_attention_forward", "sample",
     lambda s: _dropout_p(s, 9) > 0 and s.kwargs.get("training", True),
     ("dropout in training is random (torch's stream is not reproduced); test_parity.py "
      "tests MHA dropout by reproducibility")),
    ("MultiheadAttention", "sample",
     lambda m: m.constructor_input.kwargs.get("dropout", 0.0) > 0,
     "dropout in training is random (torch's stream is not reproduced)"),
]

#: OpInfos whose sample sets are thinned to every k-th sample (CI time).
SUBSAMPLE = {"nn.functional.max_pool2d": 20, "nn.functional.pad|constant": 2,
             "CrossEntropyLoss": 5}


# --------------------------------------------------------------------------------- conversion
_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16,
           torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_,
           torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16}


def _convert(x, pairs, grads=True):
    """torch -> cvkernels: tensors become numpy arrays, or Tensors requiring grad (recorded in
    ``pairs``) where the torch tensor requires grad; dtypes and sizes become numpy's/tuples."""
    if isinstance(x, torch.Tensor):
        a = x.detach().numpy().copy()
        if grads and x.requires_grad:
            t = Tensor(a, requires_grad=True)
            pairs.append((t, x))
            return t
        return a
    if isinstance(x, torch.dtype):
        return _DTYPES[x]
    if isinstance(x, torch.Size):
        return tuple(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_convert(v, pairs, grads) for v in x)
    if isinstance(x, dict):
        return {k: _convert(v, pairs, grads) for k, v in x.items()}
    return x


def _np(x):
    if x is None:
        return None
    if isinstance(x, Tensor):
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _compare(ours, theirs, what):
    o, t = _outputs(ours), _outputs(theirs)
    assert len(o) == len(t), f"{what}: {len(o)} outputs, torch gives {len(t)}"
    for i, (a, b) in enumerate(zip(o, t)):
        if b is None:
            assert a is None, f"{what}[{i}]: torch gives None"
            continue
        a, b = _np(a), _np(b)
        assert a.shape == b.shape, f"{what}[{i}]: shape {a.shape} != torch {b.shape}"
        if b.dtype.kind != "f":
            np.testing.assert_array_equal(a, b, err_msg=f"{what}[{i}]")
            continue
        np.testing.assert_allclose(a.astype(np.float64), b, atol=ATOL, rtol=RTOL,
                                   equal_nan=True, err_msg=f"{what}[{i}]")


def _backward_both(ours, theirs, pairs, what):
    """A random cotangent on the first output of each; compare every input gradient."""
    t0 = _outputs(theirs)[0]
    o0 = _outputs(ours)[0]
    leaves = [t for _, t in pairs]
    if not leaves or not isinstance(t0, torch.Tensor) or not t0.requires_grad:
        return
    g = torch.tensor(np.random.default_rng(0).standard_normal(tuple(t0.shape)),
                     dtype=t0.dtype)
    want = torch.autograd.grad(t0, leaves, g, allow_unused=True)
    assert isinstance(o0, Tensor), f"{what}: output is not a Tensor, gradients are lost"
    o0.backward(Tensor(g.numpy()))
    for k, ((ours_leaf, _), w) in enumerate(zip(pairs, want)):
        if w is None:
            continue
        assert ours_leaf.grad is not None, f"{what}: no gradient for input {k}"
        np.testing.assert_allclose(_np(ours_leaf.grad), w.numpy(), atol=ATOL, rtol=RTOL,
                                   equal_nan=True, err_msg=f"{what}: grad of input {k}")


def _skip_reason(where, kind, item):
    for w, k, pred, reason in SKIPS:
        if w == where and k == kind and (pred is ALWAYS or pred(item)):
            return reason
    return None


# ------------------------------------------------------------------------------ the op table
def _our_name(opinfo):
    """The cvkernels.functional name an OpInfo maps to, or None."""
    for prefix in ("nn.functional.", ""):
        if opinfo.name.startswith(prefix) and "." not in opinfo.name[len(prefix):]:
            name = opinfo.name[len(prefix):]
            if name in F.__all__ or hasattr(F, name):
                return name
    return None


OPS = [(o, _our_name(o)) for o in op_db if _our_name(o) is not None]
MODULES = [m for m in module_db if hasattr(nn, m.module_cls.__name__)]


def _key(o):
    return o.name + (f"|{o.variant_test_name}" if o.variant_test_name else "")


def _param(where, kind, item, values, id):
    """A pytest.param, skipped with its reason when ``SKIPS`` lists it."""
    reason = _skip_reason(where, kind, item)
    marks = (pytest.mark.skip(reason=f"{where}: {reason}"),) if reason else ()
    return pytest.param(*values, id=id, marks=marks)


def _op_samples():
    params = []
    for o, name in OPS:
        k = SUBSAMPLE.get(_key(o), 1)
        samples = list(o.sample_inputs("cpu", torch.float64, requires_grad=True))
        params += [_param(_key(o), "sample", s, (o, name, s), f"{_key(o)}-{i}")
                   for i, s in enumerate(samples[::k])]
    return params


def _op_errors():
    return [_param(_key(o), "error", e, (o, name, e), f"{_key(o)}-err{i}")
            for o, name in OPS if o.error_inputs_func is not None
            for i, e in enumerate(o.error_inputs("cpu"))]


def _call_ours(name, s, pairs, grads=True):
    fn = getattr(F, name)
    return fn(_convert(s.input, pairs, grads), *_convert(s.args, pairs, grads),
              **_convert(s.kwargs, pairs, grads))


def test_opinfo_sample(opinfo, name, sample):
    theirs = opinfo(sample.input, *sample.args, **sample.kwargs)
    pairs = []
    with cvkernels.backend("cpu"):
        if name == "dropout":        # random: each element is 0 or x / (1 - p), as torch's
            out = _np(_call_ours(name, sample, pairs, grads=False))
            x = sample.input.detach().numpy()
            p = sample.kwargs.get("p", 0.5)
            if not sample.kwargs.get("training", True) or p == 0:
                np.testing.assert_array_equal(out, x)
            else:
                scaled = x / (1 - p) if p < 1 else np.zeros_like(x)
                assert np.all((out == 0) | np.isclose(out, scaled, rtol=1e-12, atol=0))
            return
        ours = _call_ours(name, sample, pairs)
        _compare(ours, theirs, _key(opinfo))
        _backward_both(ours, theirs, pairs, _key(opinfo))


def test_opinfo_error_input(opinfo, name, error):
    s = error.sample_input
    with pytest.raises(error.error_type):      # torch's test asserts the type (and a message)
        opinfo(s.input, *s.args, **s.kwargs)
    with cvkernels.backend("cpu"), pytest.raises(error.error_type):
        _call_ours(name, s, [], grads=False)


# -------------------------------------------------------------------------------- modules
def _make_modules(minfo, mi, to64=True):
    """(ours, torch's) modules from one ModuleInfo input; ``to64``: torch's in float64, as the
    samples are (error inputs keep their dtypes: a dtype mismatch can be the error)."""
    cls = getattr(nn, minfo.module_cls.__name__)
    pairs = []
    args = _convert(mi.constructor_input.args, pairs, grads=False)
    kwargs = _convert(mi.constructor_input.kwargs, pairs, grads=False)
    if "dtype" in inspect.signature(cls).parameters:
        kwargs = {**kwargs, "dtype": np.float64}
    theirs = minfo.module_cls(*mi.constructor_input.args, **mi.constructor_input.kwargs)
    if to64:
        theirs = theirs.to(torch.float64)
    ours = cls(*args, **kwargs)
    sd = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    res = ours.load_state_dict(sd)
    assert not res.missing_keys and not res.unexpected_keys, res
    return ours, theirs


def _module_samples():
    params = []
    for m in MODULES:
        name = m.module_cls.__name__
        k = SUBSAMPLE.get(name, 1)
        modes = (True, False) if m.train_and_eval_differ else (False,)
        for training in modes:
            inputs = m.module_inputs_func(m, device="cpu", dtype=torch.float64,
                                          requires_grad=True, training=training)
            for i, mi in enumerate(inputs[::k]):
                if mi.forward_input is not None:
                    params.append(_param(name, "sample", mi, (m, mi, training),
                                         f"{name}-{'train' if training else 'eval'}-{i}"))
    return params


def _module_errors():
    params = []
    for m in MODULES:
        if m.module_error_inputs_func is None:
            continue
        name = m.module_cls.__name__
        errs = m.module_error_inputs_func(m, device="cpu", dtype=torch.float64,
                                          requires_grad=False, training=True)
        params += [_param(name, "error", e, (m, e), f"{name}-err{i}")
                   for i, e in enumerate(errs)]
    return params


def test_moduleinfo_sample(minfo, minput, training):
    name = minfo.module_cls.__name__
    ours, theirs = _make_modules(minfo, minput)
    ours.train(training)
    theirs.train(training)
    fi = minput.forward_input
    pairs = []
    with cvkernels.backend("cpu"):
        out = ours(*_convert(fi.args, pairs), **_convert(fi.kwargs, pairs))
    ref = theirs(*fi.args, **fi.kwargs)
    _compare(out, ref, name)
    for n, b in theirs.named_buffers():           # running statistics after the call
        _compare(getattr(ours, n.split(".")[-1]) if "." not in n else ours.state_dict()[n],
                 b, f"{name} buffer {n}")
    params = [(p, tp) for (_, p), (_, tp) in zip(ours.named_parameters(),
                                                 theirs.named_parameters())]
    with cvkernels.backend("cpu"):
        _backward_both(out, ref, pairs + params, name)


def test_moduleinfo_error_input(minfo, error):
    mi = error.module_error_input
    fi = mi.forward_input
    if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        with pytest.raises(error.error_type):
            _make_modules(minfo, mi, to64=False)
        return
    ours, theirs = _make_modules(minfo, mi, to64=False)
    with pytest.raises(error.error_type):
        theirs(*fi.args, **fi.kwargs)
    with cvkernels.backend("cpu"), pytest.raises(error.error_type):
        ours(*_convert(fi.args, [], grads=False), **_convert(fi.kwargs, [], grads=False))


# --------------------------------------------------------------------------- the sim subset
SIM_OPS = ("matmul", "nn.functional.linear", "softmax", "log_softmax")
U32 = 2.0 ** -24


def _sim_samples():
    out = []
    for o, name in OPS:
        if o.name in SIM_OPS and not o.variant_test_name:
            for i, s in enumerate(list(o.sample_inputs("cpu", torch.float32))[:6]):
                out.append(pytest.param(o, name, s, id=f"{o.name}-{i}"))
    return out


@pytest.mark.sim
@pytest.mark.skipif(not backends.get("sim").available(), reason="_cudasim not built")
def test_opinfo_sample_on_sim(opinfo, name, sample):
    """float32 kernels on the simulator against torch in float64. Bound: a length-K fp32 dot
    product errs by at most ~K u sum|a_i b_i| (plus one rounding of the result), so matmul/linear
    use (K + 2) u (|A| |B| + |bias|); softmax/log_softmax use (n + 4) u (|y| + 1)."""
    args = [sample.input, *sample.args]
    ref = opinfo(*(a.double() if isinstance(a, torch.Tensor) else a for a in args),
                 **sample.kwargs).numpy()
    with cvkernels.backend("sim"):
        out = _np(_call_ours(name, sample, [], grads=False))
    assert out.dtype == np.float32
    if name in ("matmul", "linear"):
        absargs = [a.double().abs() if isinstance(a, torch.Tensor) else a for a in args]
        scale = opinfo(*absargs, **{k: v.double().abs() if isinstance(v, torch.Tensor) else v
                                    for k, v in sample.kwargs.items()}).numpy()
        K = sample.input.shape[-1]
        bound = (K + 2) * U32 * scale
    else:
        dim = sample.kwargs.get("dim", sample.args[0] if sample.args else -1)
        n = sample.input.shape[dim] if sample.input.ndim else 1
        bound = (n + 4) * U32 * (np.abs(ref) + 1)
    assert np.all(np.abs(out - ref) <= bound + 1e-300), (np.abs(out - ref) - bound).max()


#: test function -> (its parameters, the generator of its samples). Samples are made in
#: pytest_generate_tests, only for tests the -m expression selects: the sanitizer stage
#: (``-m "sim or sanitizer"``) then pays nothing for the cpu samples.
_PARAMS = {
    "test_opinfo_sample": ("opinfo,name,sample", _op_samples),
    "test_opinfo_error_input": ("opinfo,name,error", _op_errors),
    "test_moduleinfo_sample": ("minfo,minput,training", _module_samples),
    "test_moduleinfo_error_input": ("minfo,error", _module_errors),
    "test_opinfo_sample_on_sim": ("opinfo,name,sample", _sim_samples),
}


def _selected(metafunc) -> bool:
    expr = metafunc.config.getoption("markexpr")
    if not expr:
        return True
    try:
        from _pytest.mark.expression import Expression
    except ImportError:                                  # pragma: no cover
        return True
    own = {m.name for m in metafunc.definition.iter_markers()}
    return Expression.compile(expr).evaluate(lambda name, **kw: name in own)


def pytest_generate_tests(metafunc):
    """Parametrize each sample test with its samples (see ``_PARAMS``)."""
    entry = _PARAMS.get(metafunc.function.__name__)
    if entry is not None:
        names, make = entry
        metafunc.parametrize(names, make() if _selected(metafunc) else [])


def test_every_library_op_has_samples():
    """The mapping finds torch's samples for the library's core ops (guards the name map)."""
    found = {name for _, name in OPS}
    for core in ("matmul", "linear", "softmax", "conv2d", "max_pool2d", "batch_norm",
                 "group_norm", "pad", "scaled_dot_product_attention",
                 "multi_head_attention_forward", "cross_entropy"):
        assert core in found, core
    assert {m.module_cls.__name__ for m in MODULES} >= {"Conv2d", "GroupNorm",
                                                         "MultiheadAttention", "BatchNorm2d"}
    assert all(re.fullmatch(r"[\w.|]+", _key(o)) for o, _ in OPS)
