"""The autograd engine: grad mode, ``Function`` and its ``Context`` (the graph node), and the
backward pass over the recorded graph.

``run_backward`` walks the graph once in reverse topological order, so each node's backward runs
exactly once with the sum of its outputs' gradients. As in PyTorch, only leaves (tensors created
by the user with ``requires_grad=True``) keep ``.grad``, gradients accumulate across calls until
reset, and the saved arrays are freed after a backward unless ``retain_graph=True``.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .._checks import FLOAT_DTYPES

__all__ = ["Function", "Context", "no_grad", "enable_grad", "is_grad_enabled", "array_module",
           "run_backward"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations on Tensors are currently recorded for backward."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    prev = is_grad_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = prev


def no_grad():
    """Context manager that disables graph recording (evaluation, optimiser updates)."""
    return _grad_mode(False)


def enable_grad():
    """Context manager that re-enables graph recording inside a ``no_grad`` block."""
    return _grad_mode(True)


def array_module(a):
    """numpy for host arrays, cupy for CuPy arrays (imported only in that case)."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def unwrap(x):
    """The raw array of a Tensor; lists and tuples are unwrapped element by element."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v) for v in x)
    return x


def is_float(a) -> bool:
    """Whether ``a`` holds a differentiable type: float, complex or bfloat16 (ml_dtypes)."""
    dt = np.dtype(a.dtype)
    return dt.kind in "fc" or dt in FLOAT_DTYPES


class Context:
    """What a Function's forward hands to its backward (``ctx``); also the graph node.

    Attributes: ``needs_input_grad`` (one bool per positional input of ``forward``),
    ``saved_tensors`` (what ``save_for_backward`` stored), and any attribute the forward sets
    (``ctx.dim = dim``).
    """

    def __init__(self, fn):
        self.needs_input_grad: tuple = ()
        self._saved = ()
        self._freed = False
        self._fn = fn
        self._inputs = ()       # per positional input: the Tensor that wants a gradient, or None
        self._out_meta = ()     # per output: (shape, dtype) if it is differentiable, else None

    @property
    def name(self) -> str:
        """The op's name, for messages and ``repr``."""
        return getattr(self, "op", None) or self._fn.__name__.lstrip("_")

    def save_for_backward(self, *arrays) -> None:
        """Keep ``arrays`` (raw arrays, None, or any value) for the backward; read them back as
        ``saved_tensors``."""
        self._saved = tuple(unwrap(a) for a in arrays)

    @property
    def saved_tensors(self) -> tuple:
        """The arrays given to ``save_for_backward``, in order."""
        if self._freed:
            raise RuntimeError(
                f"{self.name}: trying to backward through the graph a second time; the "
                f"saved arrays were freed. Pass retain_graph=True to the first backward()")
        return self._saved


class Function:
    """Base class of differentiable operations. Subclass it and call ``MyFn.apply(...)``.

    * ``forward(ctx, *args, **kwargs)`` receives the *raw arrays* (Tensor arguments are
      unwrapped) and returns an array or a tuple of arrays; it keeps what the backward needs
      with ``ctx.save_for_backward(...)``.
    * ``backward(ctx, *grads)`` receives one gradient array per floating-point output (a
      missing gradient is passed as zeros; non-float outputs such as indices get None) and
      returns one gradient per positional input of ``forward`` (None for inputs without one).
      ``ctx.needs_input_grad`` says which are wanted.

    Example::

        class Exp(Function):
            @staticmethod
            def forward(ctx, x):
                y = np.exp(x)
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx, grad):
                (y,) = ctx.saved_tensors
                return (grad * y,)

    The operators of ``cvkernels.functional`` and ``cvkernels.ops`` do not subclass Function
    one by one: they are declared on the generic dispatched-op path, ``autograd.op``.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        """Compute the outputs from raw arrays; override in subclasses."""
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        """Return one gradient per positional input of ``forward``; override in subclasses."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on the unwrapped arguments and record the node when grads are needed.

        Positional Tensor arguments are differentiable inputs; keyword arguments are passed
        through (unwrapped) and never receive gradients. Returns a Tensor, or a tuple of Tensors
        when ``forward`` returns a tuple.
        """
        ctx = Context(cls)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        track = is_grad_enabled() and any(ctx.needs_input_grad)
        out = cls.forward(ctx, *[unwrap(a) for a in args],
                          **{k: unwrap(v) for k, v in kwargs.items()})
        multi = isinstance(out, tuple)
        outs = out if multi else (out,)
        if track:
            ctx._inputs = tuple(a if isinstance(a, Tensor) and a.requires_grad else None
                                for a in args)
            ctx._out_meta = tuple((o.shape, o.dtype) if o is not None and is_float(o) else None
                                  for o in outs)
        wrapped = []
        for i, o in enumerate(outs):
            if o is None:
                wrapped.append(None)
                continue
            diff = track and ctx._out_meta[i] is not None
            t = Tensor(o, requires_grad=diff)
            if diff:
                t._grad_fn, t._out_index = ctx, i
            wrapped.append(t)
        return tuple(wrapped) if multi else wrapped[0]


# --------------------------------------------------------------------------------------------
# the backward pass
# --------------------------------------------------------------------------------------------

def run_backward(root, grad, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) * ``grad`` into every leaf's ``.grad`` (``root`` a Tensor,
    ``grad`` a raw array of its shape)."""
    if root._grad_fn is None:
        _accumulate(root, grad)
        return
    xp = array_module(grad)
    order = _topological(root._grad_fn)
    pending = {id(root._grad_fn): [None] * len(root._grad_fn._out_meta)}
    pending[id(root._grad_fn)][root._out_index] = grad
    for node in reversed(order):
        gs = pending.pop(id(node), None)
        if gs is None:
            continue
        gs = [g if g is not None or meta is None else xp.zeros(meta[0], dtype=meta[1])
              for g, meta in zip(gs, node._out_meta)]
        in_grads = node._fn.backward(node, *gs)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if not retain_graph:
            node._freed, node._saved = True, ()
        for inp, g in zip(node._inputs, in_grads):
            if inp is None or g is None:
                continue
            if isinstance(g, np.generic):      # a numpy reduction to 0-d gives a scalar
                g = np.asarray(g)
            if tuple(g.shape) != inp.shape:
                raise RuntimeError(f"{node.name}: backward returned a gradient of shape "
                                   f"{tuple(g.shape)} for an input of shape {inp.shape}")
            if g.dtype != inp.dtype:
                g = g.astype(inp.dtype)
            if inp._grad_fn is None:
                _accumulate(inp, g)
            else:
                slots = pending.setdefault(id(inp._grad_fn),
                                           [None] * len(inp._grad_fn._out_meta))
                k = inp._out_index
                slots[k] = g if slots[k] is None else slots[k] + g


def _accumulate(t, g) -> None:
    # out of place: g may be shared with other inputs of the same node
    t.grad = Tensor(g) if t.grad is None else Tensor(t.grad.data + g)


def _topological(root: Context) -> list:
    """Nodes reachable from ``root`` in post-order: each after every node it depends on."""
    def parents(node):
        return iter([i._grad_fn for i in node._inputs if i is not None and i._grad_fn is not None])
    order, visited, stack = [], {id(root)}, [(root, parents(root))]
    while stack:
        node, it = stack[-1]
        for p in it:
            if id(p) not in visited:
                visited.add(id(p))
                stack.append((p, parents(p)))
                break
        else:
            stack.pop()
            order.append(node)
    return order


# Tensor builds on this module (grad mode, Context); it is imported last to close the cycle.
from .tensor import Tensor  # noqa: E402
