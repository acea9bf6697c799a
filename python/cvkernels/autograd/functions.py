"""The Functions behind Tensor's own methods: elementwise arithmetic, reductions, shape ops,
casts and device moves, plus ``cat``/``stack``. They compute with the array module of the data
(numpy or CuPy) and need no backend.

The operators with references and kernels (``functional``, ``ops``, and ``Tensor @``) are not
here: they all go through the one generic dispatched op, ``autograd.op``.
"""
from __future__ import annotations

import numpy as np

from .._arrays import kind_of
from ..numerics import unbroadcast as _unbroadcast
from .engine import Function, array_module

__all__ = ["cat", "stack"]


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
        # a copy, not a view (the caller may accumulate into it); ascontiguousarray would turn a
        # 0-d gradient into shape (1,)
        return (xp.broadcast_to(g, ctx.in_shape).copy(),)


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


def cat(tensors, dim: int = 0):
    """Concatenate Tensors along an existing dimension (differentiable)."""
    return _Cat.apply(*tensors, dim=dim, stack=False)


def stack(tensors, dim: int = 0):
    """Stack Tensors along a new dimension (differentiable)."""
    return _Cat.apply(*tensors, dim=dim, stack=True)
