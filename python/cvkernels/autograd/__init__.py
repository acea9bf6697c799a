"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``no_grad``.

A :class:`Tensor` wraps one array: a numpy array (host) or a CuPy array (GPU; torch tensors and
other GPU arrays are viewed as CuPy without a copy). Every differentiable operation is a node of
the graph that ``Tensor.backward()`` walks once, in reverse topological order.

The package, in reading order:

* ``engine``    grad mode (``no_grad``), ``Function`` and its ``Context``, the backward pass;
* ``tensor``    ``Tensor``;
* ``functions`` the Functions behind Tensor's own methods (``+ - * / **``, ``sum``, ``reshape``,
                indexing, ``cat``/``stack``), computed with numpy or CuPy directly;
* ``op``        the generic dispatched op: every operator of ``functional`` and ``ops`` (and
                ``Tensor @``) is an :class:`~cvkernels.autograd.op.Op` declaration whose forward
                and backward are ``cvkernels._dispatch`` calls on the backend the arrays select.
"""
from .engine import Context, Function, array_module, enable_grad, is_grad_enabled, no_grad
from .tensor import Tensor, tensor
from .functions import cat, stack
from .op import Op

__all__ = ["Tensor", "Function", "Context", "Op", "no_grad", "enable_grad", "is_grad_enabled",
           "tensor", "cat", "stack", "array_module"]
