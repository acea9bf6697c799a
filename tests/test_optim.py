"""cvkernels.optim: optimiser steps and lr schedules against torch.optim on the same gradients."""
import numpy as np
import pytest

from helpers import assert_close

from cvkernels import optim
from cvkernels.autograd import Tensor
from cvkernels.nn import Parameter

OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in
                                                      enumerate(OPTIMIZERS)])
def test_optimizer_steps_match_torch(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    inits = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ours = [Parameter(a.copy()) for a in inits]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in inits]
    opt = getattr(optim, name)(ours, **kw)
    topt = getattr(torch.optim, name)(theirs, **kw)
    for step in range(6):
        grads = [rng.standard_normal(a.shape) for a in inits]
        for p, tp, g in zip(ours, theirs, grads):
            p.grad = Tensor(g.copy())
            tp.grad = torch.tensor(g.copy())
        if step == 3:                      # a parameter without a gradient is skipped
            ours[1].grad, theirs[1].grad = None, None
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(ours, theirs)):
            assert_close(p, tp.detach(), atol=1e-13, rtol=1e-12, name=f"{name} step {step} p{i}")


def test_param_groups_and_zero_grad_and_state_dict():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a0, b0 = rng.standard_normal(3), rng.standard_normal(2)
    a, b = Parameter(a0.copy()), Parameter(b0.copy())
    ta, tb = (torch.tensor(v.copy(), requires_grad=True) for v in (a0, b0))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": [ta]}, {"params": [tb], "lr": 0.5}], lr=0.1, momentum=0.9)
    for _ in range(2):
        for p, tp in ((a, ta), (b, tb)):
            g = rng.standard_normal(p.shape)
            p.grad, tp.grad = Tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
    assert_close(a, ta.detach(), atol=1e-14, rtol=1e-13, name="group 0")
    assert_close(b, tb.detach(), atol=1e-14, rtol=1e-13, name="group 1")
    sd = opt.state_dict()
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][1]["params"] == [1]
    opt2 = optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0, momentum=0.9)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[1]["lr"] == 0.5
    assert_close(opt2.state[a]["momentum_buffer"], opt.state[a]["momentum_buffer"], atol=0,
                 rtol=0, name="momentum buffer")
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([a], lr=0.1, nesterov=True)


def _lr_sequence(lib, make, steps=25):
    p = Parameter(np.zeros(1)) if lib is optim else __import__("torch").zeros(1,
                                                                             requires_grad=True)
    opt = lib.SGD([p], lr=0.5)
    sched = make(lib, opt)
    seq = [sched.get_last_lr()[0]]
    for _ in range(steps):
        opt.step()
        sched.step()
        seq.append(sched.get_last_lr()[0])
    return np.array(seq)


def _sched(lib):
    return lib.lr_scheduler


SCHEDULES = {
    "step": lambda lib, o: _sched(lib).StepLR(o, step_size=4, gamma=0.5),
    "cosine": lambda lib, o: _sched(lib).CosineAnnealingLR(o, T_max=10, eta_min=0.01),
    "linear": lambda lib, o: _sched(lib).LinearLR(o, start_factor=0.25, end_factor=0.9,
                                                  total_iters=6),
    "linear_decay": lambda lib, o: _sched(lib).LinearLR(o, start_factor=1.0, end_factor=0.1,
                                                        total_iters=10),
    "warmup_cosine": lambda lib, o: _sched(lib).SequentialLR(
        o, [_sched(lib).LinearLR(o, start_factor=0.1, total_iters=5),
            _sched(lib).CosineAnnealingLR(o, T_max=15)], milestones=[5]),
    "warmup_step": lambda lib, o: _sched(lib).SequentialLR(
        o, [_sched(lib).LinearLR(o, start_factor=0.5, total_iters=3),
            _sched(lib).StepLR(o, step_size=5, gamma=0.3)], milestones=[4]),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lr_schedules_match_torch(name):
    torch = pytest.importorskip("torch")
    ours = _lr_sequence(optim, SCHEDULES[name])
    theirs = _lr_sequence(torch.optim, SCHEDULES[name])
    assert_close(ours, theirs, atol=1e-15, rtol=1e-12, name=f"{name} lr sequence")
