"""Optimisers with ``torch.optim``'s update formulas (the single-tensor, non-fused variants).

Parameters are updated in place on their arrays (numpy or CuPy), outside the autograd graph.
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from ..autograd import Tensor, array_module
from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]


class Optimizer:
    """Base class: ``param_groups`` (list of dicts holding ``params`` and hyper-parameters),
    ``state`` (per parameter), ``zero_grad()``, ``step()``, ``state_dict()``."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for g in params:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; hyper-parameters it leaves out take the optimiser's defaults."""
        group = dict(param_group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__}: can only optimise Tensors that require "
                                f"grad, got {type(p).__name__}")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter (to None by default, as torch)."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = Tensor(array_module(p.data).zeros_like(p.data))

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` re-evaluates the loss."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state.setdefault(p, {})
                self._update(p, p.grad.data, st, group)
        return loss

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    def state_dict(self) -> dict:
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}`` (copies)."""
        index, groups = {}, []
        for g in self.param_groups:
            gd = {k: v for k, v in g.items() if k != "params"}
            gd["params"] = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                gd["params"].append(index[id(p)])
            groups.append(gd)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: (v.copy() if hasattr(v, "copy") else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and per-parameter state saved by :meth:`state_dict`."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("load_state_dict: the saved groups do not match this optimiser's")
        params = [p for g in self.param_groups for p in g["params"]]
        for saved, group in zip(groups, self.param_groups):
            group.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            xp = array_module(p.data)
            self.state[p] = {k: (xp.asarray(v).copy() if hasattr(v, "shape") and v.ndim else v)
                             for k, v in st.items()}

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _check(name, value, low=0.0):
    """A hyper-parameter: a real number (not a bool), not NaN, at least ``low``
    (torch checks only ``value < low``, which lets NaN through)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"Invalid {name}: {value!r} (must be a real number)")
    if math.isnan(value) or value < low:
        raise ArgumentError(f"Invalid {name}: {value}")


class SGD(Optimizer):
    """Stochastic gradient descent, torch's formula:
    ``d = g + wd*p``; ``buf = d`` (first step) else ``momentum*buf + (1-dampening)*d``;
    ``d = d + momentum*buf`` (Nesterov) or ``buf``; ``p -= lr*d``."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        _check("learning rate", lr)
        _check("momentum value", momentum)
        _check("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _update(self, p, grad, state, group):
        d = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            d = d + group["weight_decay"] * p.data
        mom = group["momentum"]
        if mom:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = d.copy()
            else:
                buf = buf * mom + (1 - group["dampening"]) * d
            state["momentum_buffer"] = buf
            d = d + mom * buf if group["nesterov"] else buf
        p.data -= (group["lr"] * d).astype(p.dtype, copy=False)


class Adagrad(Optimizer):
    """Adagrad, torch's formula: ``sum += g^2``; ``p -= lr/(1+(t-1)*lr_decay) * g/(sqrt(sum)+eps)``."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False):
        _check("learning rate", lr)
        _check("lr_decay value", lr_decay)
        _check("weight_decay value", weight_decay)
        _check("epsilon value", eps)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))

    def _update(self, p, grad, state, group):
        xp = array_module(p.data)
        if not state:
            state["step"] = 0
            state["sum"] = xp.full_like(p.data, group["initial_accumulator_value"])
        state["step"] += 1
        g = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] = state["sum"] + g * g
        p.data -= (clr * g / (xp.sqrt(state["sum"]) + group["eps"])).astype(p.dtype, copy=False)


class RMSprop(Optimizer):
    """RMSprop, torch's formula (``square_avg = alpha*sq + (1-alpha)*g^2``; optional centering
    and momentum)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        _check("momentum value", momentum)
        _check("weight_decay value", weight_decay)
        _check("alpha value", alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _update(self, p, grad, state, group):
        xp = array_module(p.data)
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        g = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        a = group["alpha"]
        sq = state["square_avg"] = a * state["square_avg"] + (1 - a) * g * g
        if group["centered"]:
            ga = state["grad_avg"] = state["grad_avg"] + (1 - a) * (g - state["grad_avg"])
            avg = xp.sqrt(sq - ga * ga) + group["eps"]
        else:
            avg = xp.sqrt(sq) + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"] = group["momentum"] * state["momentum_buffer"] + g / avg
            p.data -= (group["lr"] * buf).astype(p.dtype, copy=False)
        else:
            p.data -= (group["lr"] * g / avg).astype(p.dtype, copy=False)


class Adam(Optimizer):
    """Adam with bias correction, torch's formula:
    ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g^2``;
    ``p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`` (``amsgrad``: max of v)."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        _check("weight_decay value", weight_decay)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _update(self, p, grad, state, group):
        xp = array_module(p.data)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, (b1, b2), lr = state["step"], group["betas"], group["lr"]
        g = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            if self._decoupled:
                p.data *= p.dtype.type(1 - lr * group["weight_decay"])
            else:
                g = g + group["weight_decay"] * p.data
        m = state["exp_avg"] = state["exp_avg"] + (1 - b1) * (g - state["exp_avg"])
        v = state["exp_avg_sq"] = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
        step_size = lr / (1 - b1 ** t)
        bc2_sqrt = math.sqrt(1 - b2 ** t)
        if group["amsgrad"]:
            v = state["max_exp_avg_sq"] = xp.maximum(state["max_exp_avg_sq"], v)
        denom = xp.sqrt(v) / bc2_sqrt + group["eps"]
        p.data -= (step_size * m / denom).astype(p.dtype, copy=False)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr*wd`` before the Adam step (default
    ``weight_decay=1e-2``, as torch)."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
