"""The argument-checking layer at the boundary: one set of rules for every op's arguments.

Every op of ``functional`` and ``ops`` reaches ``_dispatch.forward`` with its arguments by name;
before any backend sees them, :func:`check_call` checks each one against the op's signature,
which is the signature of ``reference.<op>_forward`` (the single source of parameter names and
defaults). Nothing here is written per op: the kind of a parameter comes from its name and its
default, by these rules (torch's choices for types):

* **arrays**: the parameters named in :data:`ARRAY_NAMES` or ending in ``_weight``/``_bias``
  (unless their default is a bool, e.g. ``use_separate_proj_weight``; and except where
  :data:`KIND_IN_OP` says otherwise, e.g. ``pad``'s scalar ``value``).
  They must be arrays: numpy ``ndarray``, CuPy, torch tensors, anything with
  ``__cuda_array_interface__``/DLPack, or ``cvkernels.Tensor``. A list, a tuple, a Python
  scalar, a string, or None where the parameter is required is an :class:`ArgumentTypeError`
  (a TypeError) naming the function and the argument. None is allowed where the default is
  None, and for the running statistics. ``boxes`` may also be a list of arrays
  (torchvision's per-image form of RoI boxes).

  - ``np.matrix`` is viewed as a plain 2-D ``ndarray`` (``np.asarray``) on every backend, so
    ``matmul`` follows ndarray/torch rules rather than matrix rules.
  - masked arrays are refused (the backends would not agree about the mask).
  - torch tensors the library cannot take are refused by name: meta tensors, sparse layouts,
    conjugate or negative-bit views, complex dtypes; and a tensor with ``requires_grad=True``
    while torch records gradients, because its gradient would be dropped silently (the error
    points to :class:`cvkernels.Tensor`, which keeps gradients).

* **in-place writes**: an array that a true flag makes the op write in place (``input`` with
  ``inplace=True``; the running statistics with ``training=True``, see :data:`WRITTEN_WHEN`)
  must be writeable, else :class:`ArgumentError` naming it (not numpy's "assignment
  destination is read-only" from deep inside a backend).

* **non-array parameters**, by default value: a bool default takes a bool; an int default
  takes an int (``dim=1.0``, ``ignore_index=1.5`` are TypeErrors), or, for the size-like
  parameters in :data:`SIZE_NAMES`, an int or a sequence of ints; a float default takes a real
  number (not a bool or a string); a str default takes a str. Parameters whose default does not
  tell (None or no default) take their kind from :data:`KIND_OF`. Values are checked further
  (ranges, shapes) by the reference's own checks, which every backend shares.
"""
from __future__ import annotations

import functools
import inspect
import numbers

import numpy as np

from ._arrays import _is_torch, kind_of
from .errors import ArgumentError, ArgumentTypeError

ARRAY_NAMES = frozenset({
    "input", "other", "weight", "bias", "target", "query", "key", "value", "attn_mask",
    "boxes", "boxes1", "boxes2", "scores", "idxs", "running_mean", "running_var",
    "num_batches_tracked", "grad_out", "output", "mask", "indices", "argmax", "residual",
    "key_padding_mask", "bias_k", "bias_v", "static_k", "static_v"})
ARRAY_SUFFIXES = ("_weight", "_bias")
OPTIONAL_ARRAYS = frozenset({"running_mean", "running_var",    # None: batch statistics only
                             "bias_k", "bias_v"})               # torch's positional Nones
# None accepted where the default does not say so; the reference decides when it is valid
# (batched_nms: every argument but boxes may be None when there are no boxes, as torchvision)
NONE_OK_IN_OP = frozenset({("batched_nms", "scores"), ("batched_nms", "idxs"),
                           ("batched_nms", "iou_threshold")})
LIST_OF_ARRAYS_OK = frozenset({"boxes"})
SIZE_NAMES = frozenset({"kernel_size", "stride", "padding", "dilation", "output_padding",
                        "output_size", "normalized_shape"})
NONE_OK = frozenset({"momentum"})     # batch_norm: None = cumulative average, as torch
# arrays written in place when the flag parameter is true (they must be writeable)
WRITTEN_WHEN = {"input": "inplace", "running_mean": "training", "running_var": "training",
                "num_batches_tracked": "training"}
# parameters whose default (None, or none at all) does not tell their kind
KIND_OF = {"iou_threshold": float, "scale": float, "dropout_p": float, "momentum": float,
           "num_heads": int, "divisor_override": int, "kernel_size": "size",
           "output_size": "size", "stride": "size", "normalized_shape": "size",
           "num_groups": int, "embed_dim_to_check": int, "pad": "size", "seed": int,
           "add_zero_attn": bool,
           "offset": int}
# a name that means an array in most ops but a scalar in one: F.pad's fill ``value``
KIND_IN_OP = {("pad", "value"): float}

_ARRAY_DESC = "an array (numpy.ndarray, cupy.ndarray, torch.Tensor or cvkernels.Tensor)"
_NO_DEFAULT = inspect.Parameter.empty


def _type_name(v) -> str:
    return "None" if v is None else type(v).__name__


@functools.lru_cache(maxsize=None)
def _rules(op: str):
    """((name, kind, none_ok), ...) for ``reference.<op>_forward``'s parameters; kind is
    'array', bool, int, float, str, 'size' or None (unchecked)."""
    from . import reference
    fwd = getattr(reference, f"{op}_forward", None)
    if fwd is None:
        return ()
    rules = []
    for p in inspect.signature(fwd).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        d = p.default
        if (op, p.name) in KIND_IN_OP:
            rules.append((p.name, KIND_IN_OP[op, p.name], d is None))
            continue
        if p.name in ARRAY_NAMES and not isinstance(d, bool):
            rules.append((p.name, "array", d is None or p.name in OPTIONAL_ARRAYS
                          or (op, p.name) in NONE_OK_IN_OP))
            continue
        if p.name.endswith(ARRAY_SUFFIXES) and not isinstance(d, bool):
            # projection weights and biases (multi-head attention): torch takes None for each
            # one a module does not have (no bias, separate projections); the reference
            # checks which combinations are complete
            rules.append((p.name, "array", True))
            continue
        if isinstance(d, bool):
            kind = bool
        elif isinstance(d, int):
            kind = "size" if p.name in SIZE_NAMES else int
        elif isinstance(d, float):
            kind = float
        elif isinstance(d, str):
            kind = str
        else:
            kind = KIND_OF.get(p.name)
        rules.append((p.name, kind, d is None or p.name in NONE_OK
                      or (op, p.name) in NONE_OK_IN_OP))
    return tuple(rules)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _check_scalar(fn: str, name: str, kind, v) -> None:
    if kind is bool:
        ok, want = isinstance(v, (bool, np.bool_)), "a bool"
    elif kind is int:
        ok, want = _is_int(v), "an int"
    elif kind is float:
        ok, want = _is_real(v), "a real number"
    elif kind is str:
        ok, want = isinstance(v, str), "a str"
    elif kind == "size":
        ok = _is_int(v) or (isinstance(v, (tuple, list)) and all(
            _is_int(e) or e is None for e in v)) or (name == "padding" and isinstance(v, str))
        want = "an int or a tuple of ints" + (" or a str" if name == "padding" else "")
    else:
        return
    if not ok:
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be {want}, got "
                                f"{_type_name(v)} ({v!r})")
    ints = (v,) if kind is int or _is_int(v) else (
        tuple(e for e in v if _is_int(e)) if isinstance(v, (tuple, list)) else ())
    if any(not -2 ** 63 <= int(e) < 2 ** 63 for e in ints):
        raise ArgumentError(f"{fn}: argument '{name}' is out of the int64 range: {v!r}")


def _check_torch(fn: str, name: str, t) -> None:
    import torch
    where = f"{fn}: argument '{name}'"
    if t.is_meta:
        raise ArgumentError(f"{where} is a meta tensor (no data); pass a tensor on cpu or cuda")
    if t.layout != torch.strided:
        raise ArgumentTypeError(f"{where} has layout {t.layout}; only dense (strided) tensors "
                                f"are supported: call .to_dense() first")
    if t.is_complex():
        raise ArgumentTypeError(f"{where} has complex dtype {t.dtype}, which no kernel takes")
    if t.is_conj() or t.is_neg():
        bit = "conjugate" if t.is_conj() else "negative"
        fix = "resolve_conj" if t.is_conj() else "resolve_neg"
        raise ArgumentError(f"{where} is a lazy {bit} view; call .{fix}() first")
    if t.requires_grad and torch.is_grad_enabled():
        raise ArgumentError(
            f"{where} is a torch tensor with requires_grad=True: cvkernels ops are not recorded "
            f"by torch's autograd, so its gradient would be silently dropped. For gradients, "
            f"use cvkernels' autograd (wrap the data in cvkernels.Tensor(..., "
            f"requires_grad=True)); otherwise pass {name}.detach() or call under "
            f"torch.no_grad()")


def check_array(fn: str, name: str, v, none_ok: bool = False):
    """Check one array argument; returns it (an ``np.matrix`` as a plain ndarray)."""
    if v is None:
        if none_ok:
            return v
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be {_ARRAY_DESC}, got None")
    if isinstance(v, np.ndarray):
        if isinstance(v, np.ma.MaskedArray):
            raise ArgumentTypeError(
                f"{fn}: argument '{name}' is a masked array, which is not supported (the mask "
                f"would be ignored); pass np.ma.filled({name}, fill_value) or {name}.data")
        if isinstance(v, np.matrix):
            return np.asarray(v)
        return v
    from .autograd.tensor import Tensor
    if isinstance(v, Tensor):
        return v
    if (isinstance(v, (list, tuple)) and name in LIST_OF_ARRAYS_OK and
            all(kind_of(e) is not None or isinstance(e, Tensor) for e in v)):
        return type(v)(check_array(fn, f"{name}[{i}]", e) for i, e in enumerate(v))
    if _is_torch(v):
        _check_torch(fn, name, v)
        return v
    if kind_of(v) is None or isinstance(v, (list, tuple)):
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be {_ARRAY_DESC}, got "
                                f"{_type_name(v)}")
    return v


def check_call(op: str, named: dict) -> dict:
    """Check ``op``'s arguments (by name) against its signature's rules; returns them, with
    arrays normalised (``np.matrix`` -> ndarray). Unknown ops and names pass through."""
    out = dict(named)
    for name, kind, none_ok in _rules(op):
        if name not in named:
            continue
        v = named[name]
        if kind == "array":
            out[name] = check_array(op, name, v, none_ok)
        elif not (v is None and none_ok):
            _check_scalar(op, name, kind, v)
    for name, flag in WRITTEN_WHEN.items():
        v = out.get(name)
        if named.get(flag) is True and isinstance(v, np.ndarray) and not v.flags.writeable:
            raise ArgumentError(
                f"{op}: argument '{name}' is read-only (a broadcast view or a read-only buffer) "
                f"but {flag}=True writes it in place; pass a writeable array, e.g. "
                f"{name}.copy()")
    return out


def torch_dtype_to_numpy(fn: str, dtype):
    """A numpy dtype for a ``dtype=`` argument given as a torch dtype, a numpy dtype or a name;
    ArgumentTypeError naming ``fn`` for anything else."""
    if type(dtype).__module__ == "torch":          # torch.float32 etc.
        dtype = str(dtype).replace("torch.", "")
    if dtype == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(dtype)
    except TypeError:
        raise ArgumentTypeError(f"{fn}: argument 'dtype' must be a dtype (numpy, torch or a "
                                f"name), got {dtype!r}") from None
