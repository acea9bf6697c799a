"""The generic dispatched op: how every operator of ``functional`` and ``ops`` (and ``Tensor @``)
runs, on raw arrays and on Tensors, through ``cvkernels._dispatch.forward/backward``.

An operator is declared once, by an :class:`Op`, which says only what differs from the default
convention::

    _softmax = Op("softmax", saves=("output", "dim"))       # the backward wants y, not x
    _batch_norm = Op("batch_norm", grads=("input", "weight", "bias"),
                     copy=("running_mean", "running_var"))
    y = _softmax(input=x, dim=1)                            # arguments by name, in order

**The default convention** (``Op("name")`` with no options, and the ``functional.<name>``
fallback for any reference pair): the op's arguments are those of
``reference.<name>_forward(...)``, in order; the backward is called as
``<name>_backward(grad_out, *same arguments as the forward)`` and returns a tuple with one
gradient per argument of the forward, in order (None where there is none, e.g. for a non-array
argument; trailing entries may be left off). When the forward's array arguments come first, as
in every reference, that is one gradient per array argument.

Raw arrays in (no Tensor among the arguments) -> ``_dispatch.forward`` and raw arrays out, no
bookkeeping. Any Tensor among them -> Tensors out, recorded by autograd when an input requires
grad: the node keeps exactly what ``saves`` names, and its backward is ``_dispatch.backward``
on the same backend.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Mapping

from .. import _dispatch
from ..amp import cast_args
from .engine import Function, is_grad_enabled, unwrap
from .tensor import Tensor

__all__ = ["Op", "Dispatched", "has_tensor", "fallback"]

ALL = "*"


def has_tensor(values) -> bool:
    """Whether a Tensor is among ``values`` (looking inside lists and tuples)."""
    for v in values:
        if isinstance(v, Tensor):
            return True
        if isinstance(v, (list, tuple)) and has_tensor(v):
            return True
    return False


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
    """The declaration of one dispatched op; call it with the forward's arguments by name.

    name     the op, as ``_dispatch`` and ``reference.<name>_forward/_backward`` know it.
    saves    what the backward is called with after ``grad_out``, by keyword, and hence all
             that the graph node keeps. Each entry is a forward argument, ``"*"`` (every
             forward argument, in order), an output name (see ``outputs``), or
             ``"<argument>_shape"`` (that array's shape). Default: ``("*",)``.
    grads    which forward arguments the backward's returned gradients belong to, in order.
             Default: every argument of the forward, in order.
    outputs  names of the forward's results. More than one means the forward is asked for
             auxiliary results (indices, masks) with ``extra``; the first result is the op's
             value and the only differentiable one, and the call returns them all.
    extra    keyword arguments added to every forward call, e.g. ``{"return_indices": True}``.
    copy     arguments saved as copies because the caller mutates them in place later
             (running statistics).
    differentiable  False for ops without a backward (NMS, IoU): Tensors in give Tensors out,
             outside the graph.
    """

    name: str
    saves: tuple = (ALL,)
    grads: tuple | None = None
    outputs: tuple = ("output",)
    extra: Mapping = dataclasses.field(default_factory=dict)
    copy: tuple = ()
    differentiable: bool = True

    def __post_init__(self):
        _DECLARED.setdefault(self.name, self)     # the library's own declaration wins

    def __call__(self, /, **args):
        """Run the op; ``args`` are the forward's arguments by name, in the forward's order."""
        args = cast_args(self.name, args)      # cvkernels.autocast's policy; a no-op outside
        if not has_tensor(args.values()):
            return _dispatch.forward(self.name, **args, **self.extra)
        if not self.differentiable:
            out = _dispatch.forward(self.name, **{k: unwrap(v) for k, v in args.items()},
                                    **self.extra)
            return tuple(Tensor(o) for o in out) if isinstance(out, tuple) else Tensor(out)
        return Dispatched.apply(*args.values(), op=self, names=tuple(args))

    def _saved_keys(self, names) -> list:
        keys = []
        for k in self.saves:
            keys.extend(names if k == ALL else (k,))
        return keys

    def _resolve(self, key, args, outs):
        if key in args:
            v = args[key]
            return v.copy() if key in self.copy and v is not None else v
        if key in self.outputs:
            return outs[self.outputs.index(key)]
        if key.endswith("_shape") and key[:-6] in args:
            return tuple(args[key[:-6]].shape)
        raise TypeError(f"{self.name}: Op(saves=...) names {key!r}, which is neither an argument "
                        f"({', '.join(args)}), an output ({', '.join(self.outputs)}) nor "
                        f"'<argument>_shape'")


_DECLARED: dict[str, Op] = {}


class Dispatched(Function):
    """The one Function of every dispatched op: forward and backward are ``_dispatch`` calls,
    and the op's :class:`Op` says what to keep and where the gradients go."""

    @staticmethod
    def forward(ctx, *values, op: Op, names: tuple):
        args = dict(zip(names, values))
        out = _dispatch.forward(op.name, **args, **op.extra)
        ctx.op, ctx.spec, ctx.names = op.name, op, names
        if is_grad_enabled() and any(ctx.needs_input_grad):
            outs = out if isinstance(out, tuple) else (out,)
            ctx.keys = op._saved_keys(names)
            ctx.save_for_backward(*[op._resolve(k, args, outs) for k in ctx.keys])
        return out

    @staticmethod
    def backward(ctx, grad, *aux_grads):
        op, names = ctx.spec, ctx.names
        grads = _dispatch.backward(op.name, grad, **dict(zip(ctx.keys, ctx.saved_tensors)))
        if not isinstance(grads, tuple):
            grads = (grads,)
        result = [None] * len(names)
        for target, g in zip(op.grads or names, grads):
            i = names.index(target)
            if ctx.needs_input_grad[i]:
                result[i] = g
        return tuple(result)


_fallbacks: dict = {}


def fallback(name: str):
    """``functional.<name>`` for an op that is not written out there: the generic op over
    ``reference.<name>_forward``/``_backward``, with the forward's signature and docstring and
    the default convention (or the op's :class:`Op`, where one was declared). Raises
    AttributeError when the reference pair does not exist."""
    from .. import reference
    fwd = getattr(reference, f"{name}_forward", None)
    bwd = getattr(reference, f"{name}_backward", None)
    if fwd is None or bwd is None:
        raise AttributeError(f"module 'cvkernels.functional' has no attribute {name!r} (and "
                             f"cvkernels.reference has no {name}_forward/{name}_backward pair)")
    hit = _fallbacks.get(name)
    if hit is not None and hit[0] is fwd and hit[1] is bwd:
        return hit[2]
    sig = inspect.signature(fwd)
    if any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values()):
        raise TypeError(f"{name}: the generic op needs named parameters; "
                        f"reference.{name}_forward takes *args")
    op = _DECLARED.get(name) or Op(name)

    def call(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return op(**bound.arguments)

    call.__name__ = call.__qualname__ = name
    call.__module__ = "cvkernels.functional"
    call.__doc__ = fwd.__doc__
    call.__signature__ = sig
    _fallbacks[name] = (fwd, bwd, call)
    return call
