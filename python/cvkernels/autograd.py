"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``no_grad``.

A :class:`Tensor` wraps one array: a numpy array (host) or a CuPy array (GPU; torch tensors and
other GPU arrays are viewed as CuPy without a copy). Every differentiable operation is a
:class:`Function` with a ``forward(ctx, ...)`` and a ``backward(ctx, *grads)``:

* ``forward`` receives the *raw arrays* (Tensor arguments are unwrapped) and returns an array or
  a tuple of arrays; it keeps what the backward needs with ``ctx.save_for_backward(...)``.
* ``backward`` receives one gradient array per output (``None`` never reaches it: a missing
  gradient is passed as zeros) and returns one gradient per positional input of ``forward``
  (``None`` for inputs without one). ``ctx.needs_input_grad`` says which are wanted.

The operators (``cvkernels.functional``) call ``cvkernels._dispatch.forward/backward`` inside
their Functions, so whatever backend the arrays select runs both directions. Elementwise Tensor
arithmetic (``+ - * / ** @`` and friends) uses the array module of the data: numpy for host
arrays, CuPy for GPU arrays; CuPy is imported only when the data already is a CuPy array.

``Tensor.backward()`` walks the graph once in reverse topological order, so each node's backward
runs exactly once with the sum of its outputs' gradients. As in PyTorch, only leaves
(tensors created by the user with ``requires_grad=True``) keep ``.grad``, gradients accumulate
across calls until reset, and the saved arrays are freed after a backward unless
``retain_graph=True``.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from ._arrays import kind_of, to_native

__all__ = ["Tensor", "Function", "Context", "no_grad", "enable_grad", "is_grad_enabled",
           "tensor", "cat", "stack", "array_module"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations on Tensors are currently recorded for backward."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Context manager that disables graph recording (evaluation, optimiser updates)."""
    prev = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = prev


@contextlib.contextmanager
def enable_grad():
    """Context manager that re-enables graph recording inside a ``no_grad`` block."""
    prev = is_grad_enabled()
    _state.enabled = True
    try:
        yield
    finally:
        _state.enabled = prev


def array_module(a):
    """numpy for host arrays, cupy for CuPy arrays (imported only in that case)."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def _unwrap(x):
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _is_float(a) -> bool:
    return np.dtype(a.dtype).kind in "fc"


# --------------------------------------------------------------------------------------------
# Function and its context
# --------------------------------------------------------------------------------------------

class Context:
    """What a Function's forward hands to its backward (``ctx``); also the graph node.

    Attributes: ``needs_input_grad`` (one bool per positional input of ``forward``),
    ``saved_tensors`` (what ``save_for_backward`` stored), and any attribute the forward sets
    (``ctx.dim = dim``).
    """

    def __init__(self):
        self.needs_input_grad: tuple = ()
        self._saved = ()
        self._freed = False
        self._fn = None
        self._inputs = ()
        self._out_meta = ()
        self._non_diff: set = set()

    def save_for_backward(self, *arrays) -> None:
        """Keep ``arrays`` (raw arrays, or None) for the backward; read them as ``saved_tensors``."""
        self._saved = tuple(_unwrap(a) for a in arrays)

    @property
    def saved_tensors(self) -> tuple:
        """The arrays given to ``save_for_backward``, in order."""
        if self._freed:
            raise RuntimeError(
                f"{self._fn.__name__}: trying to backward through the graph a second time; the "
                f"saved arrays were freed. Pass retain_graph=True to the first backward()")
        return self._saved

    def mark_non_differentiable(self, *arrays) -> None:
        """Declare outputs (by identity) that never carry a gradient, e.g. indices."""
        self._non_diff.update(id(a) for a in arrays)


class Function:
    """Base class of differentiable operations. Subclass it and call ``MyFn.apply(...)``.

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
        ctx = Context()
        ctx._fn = cls
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        track = is_grad_enabled() and any(ctx.needs_input_grad)
        out = cls.forward(ctx, *[_unwrap(a) for a in args],
                          **{k: _unwrap(v) for k, v in kwargs.items()})
        multi = isinstance(out, tuple)
        outs = out if multi else (out,)
        if track:
            ctx._inputs = tuple(a if isinstance(a, Tensor) and a.requires_grad else None
                                for a in args)
            ctx._out_meta = tuple((o.shape, o.dtype) if o is not None else None for o in outs)
        wrapped = []
        for i, o in enumerate(outs):
            if o is None:
                wrapped.append(None)
                continue
            diff = track and _is_float(o) and id(o) not in ctx._non_diff
            t = Tensor(o, requires_grad=diff)
            if diff:
                t._grad_fn, t._out_index = ctx, i
            wrapped.append(t)
        return tuple(wrapped) if multi else wrapped[0]


# --------------------------------------------------------------------------------------------
# Tensor
# --------------------------------------------------------------------------------------------

class Tensor:
    """An array plus the autograd bookkeeping: ``requires_grad``, ``grad``, ``backward()``.

    ``data`` may be a numpy array, a CuPy array, a torch tensor (viewed as numpy/CuPy), a Python
    scalar or a nested list (converted with ``np.asarray``; pass ``dtype`` to choose). The array
    is kept as is, without a copy.
    """

    __array_ufunc__ = None      # make numpy defer to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if kind_of(data) is None or isinstance(data, (list, tuple)):
            data = np.asarray(data, dtype=dtype)
        else:
            data = to_native(data)
            if dtype is not None and data.dtype != np.dtype(dtype):
                data = data.astype(dtype)
        if requires_grad and not _is_float(data):
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, "
                            f"got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._grad_fn: Context | None = None
        self._out_index = 0

    # -- basic properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The shape, a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def dtype(self):
        """The numpy dtype of the data."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded operation."""
        return self._grad_fn is None

    @property
    def grad_fn(self):
        """The Function class that produced this tensor, or None for leaves."""
        return None if self._grad_fn is None else self._grad_fn._fn

    @property
    def device(self) -> str:
        """``'cpu'`` for host data, ``'cuda'`` for GPU data."""
        return "cuda" if kind_of(self.data) == "gpu" else "cpu"

    def size(self, dim=None):
        """The shape (``dim=None``) or the length of dimension ``dim``."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        """Number of elements."""
        return int(self.data.size)

    def __len__(self):
        return self.shape[0]

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """The data as a numpy array (copied from the GPU when the data lives there)."""
        if isinstance(self.data, np.ndarray):
            return self.data
        return self.data.get() if hasattr(self.data, "get") else np.asarray(self.data)

    def to(self, device: str) -> "Tensor":
        """Copy to ``'cpu'`` (numpy) or ``'cuda'`` (CuPy); differentiable. Same device: self."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"Tensor.to: device must be 'cpu' or 'cuda', got {device!r}")
        return self if device == self.device else _ToDevice.apply(self, device=device)

    def cpu(self) -> "Tensor":
        """``to('cpu')``."""
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        """``to('cuda')`` (needs CuPy)."""
        return self.to("cuda")

    def detach(self) -> "Tensor":
        """A new leaf Tensor sharing this data, outside the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place (leaves only) and return self."""
        if not self.is_leaf and not flag:
            raise RuntimeError("requires_grad_: cannot clear requires_grad of a non-leaf tensor; "
                               "use detach()")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        """Drop the accumulated gradient."""
        self.grad = None

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", threshold=50)
        extra = [f"dtype={self.dtype}"]
        if self.device != "cpu":
            extra.append(f"device='{self.device}'")
        if self._grad_fn is not None:
            name = getattr(self._grad_fn, "op", None) or self._grad_fn._fn.__name__.lstrip("_")
            extra.append(f"grad_fn=<{name}>")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return f"tensor({body}, {', '.join(extra)})"

    # -- backward -------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad``.

        ``grad`` defaults to ones for a one-element tensor and is required otherwise.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad and has no grad_fn")
        xp = array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be implicitly created only for "
                                   f"one-element outputs, got shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = _unwrap(grad)
            if kind_of(grad) is None:
                grad = xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)}, expected "
                                 f"{self.shape}")
        if self._grad_fn is None:
            _accumulate(self, grad)
            return
        order = _topological(self._grad_fn)
        pending = {id(self._grad_fn): [None] * len(self._grad_fn._out_meta)}
        pending[id(self._grad_fn)][self._out_index] = grad
        for node in reversed(order):
            gs = pending.pop(id(node), None)
            if gs is None:
                continue
            gs = [g if g is not None else _zeros_like_meta(meta, grad)
                  for g, meta in zip(gs, node._out_meta)]
            in_grads = node._fn.backward(node, *gs)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if not retain_graph:
                node._freed, node._saved = True, ()
            for inp, g in zip(node._inputs, in_grads):
                if inp is None or g is None:
                    continue
                if tuple(g.shape) != inp.shape:
                    raise RuntimeError(f"{node._fn.__name__}.backward returned a gradient of "
                                       f"shape {tuple(g.shape)} for an input of shape "
                                       f"{inp.shape}")
                if g.dtype != inp.dtype:
                    g = g.astype(inp.dtype)
                if inp._grad_fn is None:
                    _accumulate(inp, g)
                else:
                    slots = pending.setdefault(id(inp._grad_fn),
                                               [None] * len(inp._grad_fn._out_meta))
                    k = inp._out_index
                    slots[k] = g if slots[k] is None else slots[k] + g

    # -- shape ops ------------------------------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        """Reshape (one ``-1`` allowed); ``t.reshape(2, 3)`` or ``t.reshape((2, 3))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _Reshape.apply(self, shape=tuple(shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        """Merge dims ``start_dim..end_dim`` into one."""
        s = self.shape
        if not s:
            return self.reshape(1)
        a, b = start_dim % len(s), end_dim % len(s)
        return self.reshape(s[:a] + (-1,) + s[b + 1:])

    def permute(self, *dims) -> "Tensor":
        """Reorder dimensions."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return _Permute.apply(self, dims=tuple(d % max(self.ndim, 1) for d in dims))

    def transpose(self, dim0: int, dim1: int) -> "Tensor":
        """Swap two dimensions."""
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(dims)

    @property
    def T(self) -> "Tensor":
        """All dimensions reversed (the matrix transpose for 2-D)."""
        return self.permute(tuple(range(self.ndim))[::-1])

    def __getitem__(self, index) -> "Tensor":
        return _GetItem.apply(self, index=_unwrap(index))

    # -- reductions -----------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False) -> "Tensor":
        """Sum over ``dim`` (an int, a tuple, or None for all)."""
        return _Sum.apply(self, dim=dim, keepdim=keepdim, mean=False)

    def mean(self, dim=None, keepdim: bool = False) -> "Tensor":
        """Mean over ``dim`` (an int, a tuple, or None for all)."""
        return _Sum.apply(self, dim=dim, keepdim=keepdim, mean=True)

    def argmax(self, dim=None) -> "Tensor":
        """Indices of the maxima (not differentiable)."""
        xp = array_module(self.data)
        return Tensor(xp.argmax(self.data, axis=dim))

    # -- elementwise ----------------------------------------------------------------------------
    def exp(self) -> "Tensor":
        """Elementwise exp."""
        return _Exp.apply(self)

    def log(self) -> "Tensor":
        """Elementwise natural log."""
        return _Log.apply(self)

    def sqrt(self) -> "Tensor":
        """Elementwise square root."""
        return self ** 0.5

    def abs(self) -> "Tensor":
        """Elementwise absolute value (gradient sign(x), 0 at 0)."""
        return _Abs.apply(self)

    def astype(self, dtype) -> "Tensor":
        """Cast to ``dtype``; the gradient is cast back."""
        return _Cast.apply(self, dtype=np.dtype(dtype))

    def float(self) -> "Tensor":
        """Cast to float32."""
        return self.astype(np.float32)

    def double(self) -> "Tensor":
        """Cast to float64."""
        return self.astype(np.float64)

    # comparisons give non-differentiable boolean Tensors (hashing stays by identity)
    __hash__ = object.__hash__

    def _compare(self, o, op):
        other = o.data if isinstance(o, Tensor) else o
        return Tensor(op(self.data, other))

    def __eq__(self, o):
        return self._compare(o, lambda a, b: a == b)

    def __ne__(self, o):
        return self._compare(o, lambda a, b: a != b)

    def __lt__(self, o):
        return self._compare(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._compare(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._compare(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._compare(o, lambda a, b: a >= b)

    def __bool__(self):
        return bool(self.data)

    def __add__(self, o):
        return _Add.apply(self, _operand(o, self))

    def __radd__(self, o):
        return _Add.apply(_operand(o, self), self)

    def __sub__(self, o):
        return _Sub.apply(self, _operand(o, self))

    def __rsub__(self, o):
        return _Sub.apply(_operand(o, self), self)

    def __mul__(self, o):
        return _Mul.apply(self, _operand(o, self))

    def __rmul__(self, o):
        return _Mul.apply(_operand(o, self), self)

    def __truediv__(self, o):
        return _Div.apply(self, _operand(o, self))

    def __rtruediv__(self, o):
        return _Div.apply(_operand(o, self), self)

    def __neg__(self):
        return _Neg.apply(self)

    def __pos__(self):
        return self

    def __pow__(self, o):
        if isinstance(o, (int, float, np.integer, np.floating)):
            return _PowScalar.apply(self, exponent=float(o))
        return _Pow.apply(self, _operand(o, self))

    def __rpow__(self, o):
        return _Pow.apply(_operand(o, self), self)

    def __matmul__(self, o):
        return _MatMul.apply(self, _operand(o, self))

    def __rmatmul__(self, o):
        return _MatMul.apply(_operand(o, self), self)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Create a leaf Tensor from an array, a scalar or a nested list (``torch.tensor`` style)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# --------------------------------------------------------------------------------------------
# backward helpers
# --------------------------------------------------------------------------------------------

def _accumulate(t: Tensor, g) -> None:
    # out of place: g may be shared with other inputs of the same node
    t.grad = Tensor(g) if t.grad is None else Tensor(t.grad.data + g)


def _zeros_like_meta(meta, example):
    shape, dtype = meta
    return array_module(example).zeros(shape, dtype=dtype)


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


def _operand(o, like: Tensor) -> Tensor:
    """Turn the other operand of an arithmetic operator into a Tensor on ``like``'s device.

    Python scalars take ``like``'s dtype (as in PyTorch); arrays must live on the same device.
    """
    if isinstance(o, Tensor):
        other = o
    elif kind_of(o) is None or isinstance(o, np.generic):
        return Tensor(array_module(like.data).asarray(o, dtype=like.dtype))
    else:
        other = Tensor(o)
    if kind_of(other.data) != kind_of(like.data):
        raise ValueError("Tensor arithmetic: operands live on different devices (host and GPU); "
                         "move them to one device")
    return other


def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``: the adjoint of numpy broadcasting."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    xp = array_module(g)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and g.shape[i + lead] != 1)
    return xp.sum(g, axis=axes).reshape(shape) if axes else g.reshape(shape)


class _Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return _unbroadcast(g, sa), _unbroadcast(g, sb)


class _Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return _unbroadcast(g, sa), (_unbroadcast(-g, sb) if ctx.needs_input_grad[1] else None)


class _Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                              b if ctx.needs_input_grad[0] else None)
        ctx.shapes = (a.shape, b.shape)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = _unbroadcast(g * b, sa) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(g * a, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        ctx.save_for_backward(b, out if ctx.needs_input_grad[1] else None)
        ctx.shapes = (a.shape, b.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        b, out = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = _unbroadcast(g / b, sa) if ctx.needs_input_grad[0] else None
        gb = _unbroadcast(-g * out / b, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return (-g,)


class _PowScalar(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        p = exponent
        return a ** (int(p) if p.is_integer() else a.dtype.type(p))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        p = ctx.exponent
        if p == 0.0:
            return (g * 0,)
        q = p - 1.0
        return (g * a.dtype.type(p) * a ** (int(q) if q.is_integer() else a.dtype.type(q)),)


class _Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        ctx.shapes = (a.shape, b.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        xp = array_module(g)
        sa, sb = ctx.shapes
        ga = _unbroadcast(g * b * a ** (b - 1), sa) if ctx.needs_input_grad[0] else None
        gb = None
        if ctx.needs_input_grad[1]:
            # d(a^b)/db = a^b log a, taken as 0 where a == 0 (as PyTorch does)
            with np.errstate(divide="ignore", invalid="ignore"):
                la = xp.where(a == 0, 0, xp.log(xp.where(a == 0, 1, a)))
            gb = _unbroadcast(g * out * la, sb)
        return ga, gb


class _Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.saved_tensors[0],)


class _Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).log(a)

    @staticmethod
    def backward(ctx, g):
        return (g / ctx.saved_tensors[0],)


class _Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).abs(a)

    @staticmethod
    def backward(ctx, g):
        return (g * array_module(g).sign(ctx.saved_tensors[0]),)


class _Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.src = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return (g.astype(ctx.src),)


def _move(a, device):
    if device == "cpu":
        return a.get() if hasattr(a, "get") else np.asarray(a)
    import cupy
    return cupy.asarray(a)


class _ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.src = "cuda" if kind_of(a) == "gpu" else "cpu"
        return _move(a, device)

    @staticmethod
    def backward(ctx, g):
        return (_move(g, ctx.src),)


class _MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        from . import _dispatch
        ctx.save_for_backward(a, b)
        return _dispatch.forward("matmul", a, b)

    @staticmethod
    def backward(ctx, g):
        from . import _dispatch
        return _dispatch.backward("matmul", g, *ctx.saved_tensors)


class _Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return (g.reshape(ctx.in_shape),)


class _Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return a.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        inv = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inv[d] = i
        return (g.transpose(inv),)


class _GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.index, ctx.in_shape, ctx.dtype = index, a.shape, a.dtype
        return a[index]

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        out = xp.zeros(ctx.in_shape, dtype=ctx.dtype)
        if xp is np:
            np.add.at(out, ctx.index, g)
        else:
            import cupyx
            cupyx.scatter_add(out, ctx.index, g)
        return (out,)


class _Sum(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim, mean):
        xp = array_module(a)
        axes = tuple(range(a.ndim)) if dim is None else \
            tuple(d % max(a.ndim, 1) for d in ((dim,) if isinstance(dim, int) else dim))
        ctx.axes, ctx.keepdim, ctx.in_shape = axes, keepdim, a.shape
        ctx.scale = None
        out = xp.sum(a, axis=axes, keepdims=keepdim)
        if mean:
            n = int(np.prod([a.shape[d] for d in axes])) if axes else 1
            ctx.scale = a.dtype.type(1.0 / n) if n else a.dtype.type(np.nan)
            out = out * ctx.scale
        return xp.asarray(out, dtype=a.dtype)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        if not ctx.keepdim:
            g = g.reshape([1 if i in ctx.axes else s for i, s in enumerate(ctx.in_shape)])
        if ctx.scale is not None:
            g = g * ctx.scale
        return (xp.ascontiguousarray(xp.broadcast_to(g, ctx.in_shape)),)


class _Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, dim=0, stack=False):
        xp = array_module(arrays[0])
        ctx.dim, ctx.stack = dim, stack
        ctx.sizes = [1 if stack else a.shape[dim] for a in arrays]
        return xp.stack(arrays, axis=dim) if stack else xp.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        cuts = np.cumsum(ctx.sizes)[:-1].tolist()
        parts = xp.split(g, cuts, axis=ctx.dim)
        if ctx.stack:
            parts = [p.squeeze(ctx.dim) for p in parts]
        return tuple(parts)


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate Tensors along an existing dimension (differentiable)."""
    return _Cat.apply(*tensors, dim=dim, stack=False)


def stack(tensors, dim: int = 0) -> Tensor:
    """Stack Tensors along a new dimension (differentiable)."""
    return _Cat.apply(*tensors, dim=dim, stack=True)
