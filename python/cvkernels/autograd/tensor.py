"""``Tensor``: an array plus the autograd bookkeeping (``requires_grad``, ``grad``,
``backward()``).

Elementwise Tensor arithmetic (``+ - * / **`` and friends), reductions and shape ops are the
Functions of ``autograd.functions`` and use the array module of the data: numpy for host arrays,
CuPy for GPU arrays (imported only when the data already is a CuPy array). ``@``/``matmul`` is the
dispatched op ``functional.matmul``, so it runs on whichever backend the arrays select.
"""
from __future__ import annotations

import numpy as np

from .._arrays import kind_of, to_native
from .engine import Context, array_module, is_float, run_backward, unwrap

__all__ = ["Tensor", "tensor"]


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
        if requires_grad and not is_float(data):
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
        """The Function class that produced this tensor (for dispatched ops the generic
        ``autograd.op.DispatchedOp``; its name is in ``repr``), or None for leaves."""
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
        return self if device == self.device else _fn._ToDevice.apply(self, device=device)

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
            extra.append(f"grad_fn=<{self._grad_fn.name}>")
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
            grad = unwrap(grad)
            if kind_of(grad) is None:
                grad = xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)}, expected "
                                 f"{self.shape}")
        run_backward(self, grad, retain_graph)

    # -- shape ops ------------------------------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        """Reshape (one ``-1`` allowed); ``t.reshape(2, 3)`` or ``t.reshape((2, 3))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _fn._Reshape.apply(self, shape=tuple(shape))

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
        return _fn._Permute.apply(self, dims=tuple(d % max(self.ndim, 1) for d in dims))

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
        return _fn._GetItem.apply(self, index=unwrap(index))

    # -- reductions -----------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False) -> "Tensor":
        """Sum over ``dim`` (an int, a tuple, or None for all)."""
        return _fn._Sum.apply(self, dim=dim, keepdim=keepdim, mean=False)

    def mean(self, dim=None, keepdim: bool = False) -> "Tensor":
        """Mean over ``dim`` (an int, a tuple, or None for all)."""
        return _fn._Sum.apply(self, dim=dim, keepdim=keepdim, mean=True)

    def argmax(self, dim=None) -> "Tensor":
        """Indices of the maxima (not differentiable)."""
        xp = array_module(self.data)
        return Tensor(xp.argmax(self.data, axis=dim))

    # -- elementwise ----------------------------------------------------------------------------
    def exp(self) -> "Tensor":
        """Elementwise exp."""
        return _fn._Exp.apply(self)

    def log(self) -> "Tensor":
        """Elementwise natural log."""
        return _fn._Log.apply(self)

    def sqrt(self) -> "Tensor":
        """Elementwise square root."""
        return self ** 0.5

    def abs(self) -> "Tensor":
        """Elementwise absolute value (gradient sign(x), 0 at 0)."""
        return _fn._Abs.apply(self)

    def astype(self, dtype) -> "Tensor":
        """Cast to ``dtype``; the gradient is cast back."""
        return _fn._Cast.apply(self, dtype=np.dtype(dtype))

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
        return _fn._Add.apply(self, _operand(o, self))

    def __radd__(self, o):
        return _fn._Add.apply(_operand(o, self), self)

    def __sub__(self, o):
        return _fn._Sub.apply(self, _operand(o, self))

    def __rsub__(self, o):
        return _fn._Sub.apply(_operand(o, self), self)

    def __mul__(self, o):
        return _fn._Mul.apply(self, _operand(o, self))

    def __rmul__(self, o):
        return _fn._Mul.apply(_operand(o, self), self)

    def __truediv__(self, o):
        return _fn._Div.apply(self, _operand(o, self))

    def __rtruediv__(self, o):
        return _fn._Div.apply(_operand(o, self), self)

    def __neg__(self):
        return _fn._Neg.apply(self)

    def __pos__(self):
        return self

    def __pow__(self, o):
        if isinstance(o, (int, float, np.integer, np.floating)):
            return _fn._PowScalar.apply(self, exponent=float(o))
        return _fn._Pow.apply(self, _operand(o, self))

    def __rpow__(self, o):
        return _fn._Pow.apply(_operand(o, self), self)

    def matmul(self, other) -> "Tensor":
        """``self @ other``: the dispatched op :func:`cvkernels.functional.matmul`."""
        from ..functional import matmul
        return matmul(self, _operand(other, self))

    def __matmul__(self, o):
        return self.matmul(o)

    def __rmatmul__(self, o):
        from ..functional import matmul
        return matmul(_operand(o, self), self)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Create a leaf Tensor from an array, a scalar or a nested list (``torch.tensor`` style)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


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


# The Functions subclass engine.Function; imported last, as Tensor's methods only use them at
# call time.
from . import functions as _fn  # noqa: E402
