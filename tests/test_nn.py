"""cvkernels.nn: modules against torch.nn with the same weights; state_dict; initialisation."""
import math

import numpy as np
import pytest

from helpers import assert_close

from cvkernels import functional as F
from cvkernels import nn
from cvkernels.autograd import Tensor


def _copy_to_torch(ours, theirs):
    """Load our state_dict into a torch module (same names by construction)."""
    torch = pytest.importorskip("torch")
    sd = {k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(sd)


def _compare_grads(ours, theirs, atol, rtol):
    tp = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(tp), f"parameter names differ: {names} vs {list(tp)}"
    for n, p in ours.named_parameters():
        assert_close(p.grad, tp[n].grad, atol=atol, rtol=rtol, name=f"grad {n}")


def _mlp(lib, **kw):
    return lib.Sequential(lib.Linear(6, 16, **kw), lib.ReLU(), lib.Linear(16, 4, **kw))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_mlp_cross_entropy_grads_match_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = _mlp(nn, generator=rng, dtype=dtype)
    theirs = _mlp(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32)
    _copy_to_torch(ours, theirs)
    x = rng.standard_normal((10, 6)).astype(dtype)
    y = rng.integers(0, 4, 10)
    loss = F.cross_entropy(ours(Tensor(x)), y)
    loss.backward()
    ref = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
    ref.backward()
    assert_close(loss, ref, atol=tol, rtol=tol, name="loss")
    _compare_grads(ours, theirs, atol=tol, rtol=tol)


def _convnet(lib, **kw):
    bn_kw = {"dtype": kw["dtype"]} if "dtype" in kw else {}
    return lib.Sequential(lib.Conv2d(2, 4, 3, padding=1, **kw), lib.BatchNorm2d(4, **bn_kw),
                          lib.ReLU(),
                          lib.MaxPool2d(2), lib.Flatten(), lib.Linear(4 * 3 * 3, 5, **kw))


def test_convnet_grads_and_running_stats_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    ours = _convnet(nn, generator=rng, dtype=np.float64)
    theirs = _convnet(torch.nn).double()
    _copy_to_torch(ours, theirs)
    for step in range(3):               # a few training steps (no update: grads compared)
        x = rng.standard_normal((6, 2, 6, 7))
        y = rng.integers(0, 5, 6)
        ours.zero_grad()
        theirs.zero_grad()
        loss = nn.CrossEntropyLoss(label_smoothing=0.05)(ours(Tensor(x)), y)
        loss.backward()
        ref = torch.nn.CrossEntropyLoss(label_smoothing=0.05)(theirs(torch.tensor(x)),
                                                               torch.tensor(y))
        ref.backward()
        assert_close(loss, ref, atol=1e-12, rtol=1e-12, name=f"loss step {step}")
        _compare_grads(ours, theirs, atol=1e-11, rtol=1e-9)
    tsd = theirs.state_dict()
    for k, v in ours.state_dict().items():   # running stats and num_batches_tracked
        assert_close(v, tsd[k], atol=1e-13, rtol=1e-12, name=k)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((3, 2, 6, 7))
    assert_close(ours(Tensor(x)), theirs(torch.tensor(x)), atol=1e-12, rtol=1e-12, name="eval")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_stats_match_torch(momentum):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    ours = nn.BatchNorm2d(3, momentum=momentum, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    for _ in range(4):
        x = rng.standard_normal((5, 3, 4, 4)) * 3 + 1
        ours(Tensor(x))
        theirs(torch.tensor(x))
    for k, v in ours.state_dict().items():
        assert_close(v, theirs.state_dict()[k], atol=1e-13, rtol=1e-12, name=k)
    assert int(ours.num_batches_tracked) == 4


def test_layers_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 7, 7))
    cases = [
        (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                            dtype=np.float64, generator=rng),
         torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)),
        (nn.Conv2d(4, 4, 3, padding="same", groups=4, bias=False, dtype=np.float64),
         torch.nn.Conv2d(4, 4, 3, padding="same", groups=4, bias=False)),
        (nn.LayerNorm((7, 7), dtype=np.float64), torch.nn.LayerNorm((7, 7))),
        (nn.AvgPool2d(3, 2, 1, ceil_mode=True), torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
        (nn.AdaptiveAvgPool2d(3), torch.nn.AdaptiveAvgPool2d(3)),
        (nn.Sequential(nn.LeakyReLU(0.1), nn.ELU(), nn.GELU(), nn.Sigmoid(), nn.Tanh()),
         torch.nn.Sequential(torch.nn.LeakyReLU(0.1), torch.nn.ELU(), torch.nn.GELU(),
                             torch.nn.Sigmoid(), torch.nn.Tanh())),
    ]
    for ours, theirs in cases:
        theirs = theirs.double()
        _copy_to_torch(ours, theirs)
        t = Tensor(x, requires_grad=True)
        tt = torch.tensor(x, requires_grad=True)
        out, ref = ours(t), theirs(tt)
        g = rng.standard_normal(ref.shape)
        out.backward(g)
        ref.backward(torch.tensor(g))
        name = type(ours).__name__
        assert_close(out, ref, atol=1e-12, rtol=1e-10, name=f"{name} forward")
        assert_close(t.grad, tt.grad, atol=1e-12, rtol=1e-10, name=f"{name} grad_input")
        _compare_grads(ours, theirs, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_matches_torch(batch_first):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    ours = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=np.float64, generator=rng)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first).double()
    _copy_to_torch(ours, theirs)
    L, S, N = 3, 5, 2
    shape = (lambda n: (N, n, 8)) if batch_first else (lambda n: (n, N, 8))
    q, k, v = rng.standard_normal(shape(L)), rng.standard_normal(shape(S)), \
        rng.standard_normal(shape(S))
    kpm = np.zeros((N, S), bool)
    kpm[1, -2:] = True                               # torch convention: True = ignore
    am = np.triu(np.ones((L, S), bool), 1)
    tq = Tensor(q, requires_grad=True)
    out, _ = ours(tq, Tensor(k), Tensor(v), key_padding_mask=kpm, attn_mask=am)
    tq_ref = torch.tensor(q, requires_grad=True)
    ref, _ = theirs(tq_ref, torch.tensor(k), torch.tensor(v),
                    key_padding_mask=torch.tensor(kpm), attn_mask=torch.tensor(am))
    g = rng.standard_normal(ref.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    assert_close(out, ref, atol=1e-12, rtol=1e-10, name="mha forward")
    assert_close(tq.grad, tq_ref.grad, atol=1e-12, rtol=1e-9, name="mha grad_query")
    _compare_grads(ours, theirs, atol=1e-11, rtol=1e-9)


def test_state_dict_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(5)
    a = _convnet(nn, generator=np.random.default_rng(0))
    a(Tensor(rng.standard_normal((4, 2, 6, 6)).astype(np.float32)))   # move running stats
    path = tmp_path / "model.npz"
    np.savez(path, **a.state_dict())
    b = _convnet(nn, generator=np.random.default_rng(1))
    x = Tensor(rng.standard_normal((3, 2, 6, 6)).astype(np.float32))
    a.eval()
    b.eval()
    assert not np.array_equal(a(x).data, b(x).data)
    with np.load(path) as data:
        res = b.load_state_dict(dict(data))
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert_close(b(x), a(x).data, atol=0, rtol=0, name="outputs after load")
    for k, v in a.state_dict().items():
        assert_close(b.state_dict()[k], v, atol=0, rtol=0, name=k)
    with pytest.raises(KeyError, match="missing keys"):
        b.load_state_dict({})
    bad = a.state_dict()
    bad["0.weight"] = np.zeros((1, 1))
    with pytest.raises(ValueError, match="0.weight has shape"):
        b.load_state_dict(bad)


def test_state_dict_keys_match_torch():
    torch = pytest.importorskip("torch")
    assert list(_convnet(nn).state_dict()) == list(_convnet(torch.nn).state_dict())
    assert list(nn.MultiheadAttention(8, 2).state_dict()) == \
        list(torch.nn.MultiheadAttention(8, 2).state_dict())


def test_initialisation_bounds_and_seeding():
    lin = nn.Linear(50, 40, generator=np.random.default_rng(0))
    b = 1 / math.sqrt(50)
    w = lin.weight.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= b and np.abs(w).max() > 0.9 * b
    assert np.abs(lin.bias.numpy()).max() <= b
    conv = nn.Conv2d(3, 8, 5, generator=np.random.default_rng(0))
    assert np.abs(conv.weight.numpy()).max() <= 1 / math.sqrt(3 * 25)
    convt = nn.ConvTranspose2d(6, 4, 3, generator=np.random.default_rng(0))
    assert np.abs(convt.weight.numpy()).max() <= 1 / math.sqrt(4 * 9)   # torch's fan_in: dim 1
    mha = nn.MultiheadAttention(16, 4, generator=np.random.default_rng(0))
    xb = math.sqrt(6 / (16 + 48))
    assert np.abs(mha.in_proj_weight.numpy()).max() <= xb
    assert not mha.in_proj_bias.numpy().any() and not mha.out_proj.bias.numpy().any()
    nn.manual_seed(123)
    w1 = nn.Linear(4, 4).weight.numpy()
    nn.manual_seed(123)
    w2 = nn.Linear(4, 4).weight.numpy()
    assert_close(w1, w2, atol=0, rtol=0, name="manual_seed reproducibility")
    same = [nn.Linear(4, 4, generator=np.random.default_rng(7)).weight.numpy() for _ in range(2)]
    assert_close(same[0], same[1], atol=0, rtol=0, name="generator reproducibility")


def test_module_mechanics():
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5, generator=np.random.default_rng(0)),
                        nn.BatchNorm2d(2), nn.Linear(4, 2, bias=False))
    assert len(list(net.parameters())) == 2 + 2 + 1
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                     "2.bias", "3.weight"]
    assert len(net) == 4 and isinstance(net[0], nn.Linear) and len(net[1:]) == 3
    net.eval()
    assert all(not m.training for m in net.modules())
    x = Tensor(np.ones((5, 4), np.float32))
    assert net[1](x) is x                       # dropout is the identity in eval
    net.train()
    y = net[1](x)
    assert set(np.unique(y.data)) <= {0.0, 2.0} and net[1].training
    lin = net[0]
    F.linear(Tensor(np.ones((2, 3), np.float32)), lin.weight, lin.bias).sum().backward()
    assert lin.weight.grad is not None
    net.zero_grad()
    assert lin.weight.grad is None
    with pytest.raises(TypeError, match="Parameter or None"):
        lin.weight = np.zeros((4, 3))
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(net)
    net.double()
    assert lin.weight.dtype == np.float64 and net[2].running_mean.dtype == np.float64
