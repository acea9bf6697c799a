"""``Module`` and ``Parameter``: the PyTorch-style container for layers and their state."""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import Tensor, array_module

__all__ = ["Module", "Parameter"]

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A leaf Tensor that a Module registers as trainable (``requires_grad=True`` by default)."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _to_device(a, device):
    if device is None:
        return a
    if device == "cpu":
        return a if isinstance(a, np.ndarray) else a.get()
    if device in ("cuda", "gpu"):
        import cupy
        return cupy.asarray(a)
    raise ValueError(f"Module.to: device must be 'cpu' or 'cuda', got {device!r}")


class Module:
    """Base class of layers. Assigning a Parameter or a Module as an attribute registers it;
    ``register_buffer`` registers a raw array (running statistics) that ``state_dict`` saves.

    Subclasses call ``super().__init__()`` first and implement ``forward``; calling the module
    runs ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ---------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes")
        params, bufs, mods = self._parameters, self._buffers, self._modules
        if isinstance(value, (Parameter, Module)):
            for d in (params, bufs, mods):
                d.pop(name, None)
            self.__dict__.pop(name, None)
            (params if isinstance(value, Parameter) else mods)[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(Parameter or None expected)")
            params[name] = None
        elif name in bufs:
            bufs[name] = value
        elif name in mods:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"{name!r} (Module or None expected)")
            mods[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for d in (self._parameters, self._buffers, self._modules):
            if name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array) -> None:
        """Register a raw array (or None) saved in ``state_dict`` but not trained."""
        if name in self.__dict__:
            object.__delattr__(self, name)
        self._buffers[name] = array

    def register_parameter(self, name: str, param) -> None:
        """Register a Parameter (or None, meaning 'absent', e.g. ``bias=False``)."""
        if param is None:
            self._parameters[name] = None
        elif not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name} must be a Parameter or None, "
                            f"got {type(param).__name__}")
        else:
            self._parameters[name] = param

    def add_module(self, name: str, module) -> None:
        """Register a child module under ``name``."""
        self._modules[name] = module

    # -- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo=None):
        """Yield ``(name, module)`` for this module and every descendant, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        """Every module in the tree, this one first."""
        return (m for _, m in self.named_modules())

    def named_children(self):
        """Yield ``(name, child)`` for the direct children."""
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        """The direct children."""
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """Yield ``(dotted_name, Parameter)``, each parameter once."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for n, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{n}" if mname else n), p

    def parameters(self, recurse: bool = True):
        """The trainable parameters (a generator, as torch)."""
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        """Yield ``(dotted_name, array)`` for registered buffers that are not None."""
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for n, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{n}" if mname else n), b

    def buffers(self, recurse: bool = True):
        """The buffers' arrays."""
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant and this module; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- modes and state ------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Set training mode (BatchNorm batch statistics, Dropout active) recursively."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor(array_module(p.data).zeros_like(p.data))

    def state_dict(self, prefix: str = "") -> OrderedDict:
        """Parameters and buffers by dotted name, as *copies* of their arrays (numpy or CuPy)."""
        out = OrderedDict()
        for mname, m in self.named_modules(prefix.rstrip(".")):
            pre = f"{mname}." if mname else ""
            for n, p in m._parameters.items():
                if p is not None:
                    out[pre + n] = p.data.copy()
            for n, b in m._buffers.items():
                if b is not None:
                    out[pre + n] = b.copy()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values from ``state_dict`` into the parameters and buffers (in place, so that
        references to buffers stay valid). Shapes must match. With ``strict`` missing or
        unexpected keys raise KeyError; returns ``(missing_keys, unexpected_keys)``."""
        own = {}
        for mname, m in self.named_modules():
            pre = f"{mname}." if mname else ""
            for n, p in m._parameters.items():
                if p is not None:
                    own[pre + n] = ("param", m, n)
            for n, b in m._buffers.items():
                if b is not None:
                    own[pre + n] = ("buffer", m, n)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys "
                           f"{unexpected}")
        for k, (kind, m, n) in own.items():
            if k not in state_dict:
                continue
            value = state_dict[k]
            value = value.data if isinstance(value, Tensor) else value
            cur = m._parameters[n].data if kind == "param" else m._buffers[n]
            if tuple(np.shape(value)) != tuple(cur.shape):
                raise ValueError(f"load_state_dict: {k} has shape {tuple(np.shape(value))}, "
                                 f"expected {tuple(cur.shape)}")
            xp = array_module(cur)
            if kind == "param":
                m._parameters[n].data = xp.array(value, dtype=cur.dtype)
            else:
                cur[...] = xp.asarray(value, dtype=cur.dtype)
        return _IncompatibleKeys(missing, unexpected)

    def to(self, device=None, dtype=None):
        """Move parameters and buffers to ``'cpu'`` (numpy) or ``'cuda'`` (CuPy), and/or cast
        floating ones to ``dtype``. ``module.to(np.float64)`` works too. Returns self."""
        if device is not None and not isinstance(device, str):
            device, dtype = None, device
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    d = _to_device(p.data, device)
                    if dtype is not None:
                        d = d.astype(dtype)
                    p.data, p.grad = d, None
            for n, b in m._buffers.items():
                if b is not None:
                    b = _to_device(b, device)
                    if dtype is not None and b.dtype.kind == "f":
                        b = b.astype(dtype)
                    m._buffers[n] = b
        return self

    def cuda(self):
        """``to('cuda')``."""
        return self.to("cuda")

    def cpu(self):
        """``to('cpu')``."""
        return self.to("cpu")

    def double(self):
        """Cast floating parameters and buffers to float64."""
        return self.to(dtype=np.float64)

    def float(self):
        """Cast floating parameters and buffers to float32."""
        return self.to(dtype=np.float32)

    # -- calling --------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """Compute the module's output; subclasses override."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """Text shown inside the module's repr; subclasses override."""
        return ""

    def __repr__(self):
        lines = [f"({n}): " + repr(m).replace("\n", "\n  ") for n, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
