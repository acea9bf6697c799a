"""cvkernels.autocast: torch's autocast policy over the dispatched ops, with fp32 master weights
and gradients cast back to them."""
import numpy as np
import pytest

import cvkernels as cvk
from cvkernels import functional as F
from cvkernels.errors import ArgumentError
from cvkernels.spec import BFLOAT16, FLOAT16


def _params(rng):
    x = cvk.Tensor(rng.standard_normal((6, 5)).astype(np.float32), requires_grad=True)
    w = cvk.Tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    return x, w


@pytest.mark.parametrize("name, dt", [("bf16", BFLOAT16), ("fp16", FLOAT16),
                                      ("bfloat16", BFLOAT16)])
def test_lowp_ops_run_in_16_bits_and_grads_reach_fp32_masters(name, dt):
    rng = np.random.default_rng(0)
    x, w = _params(rng)
    target = np.array([0, 1, 2, 3, 0, 1])
    with cvk.autocast(name):
        y = F.linear(x, w)
        loss = F.cross_entropy(y, target)
    assert y.dtype == dt.np                  # linear: the low-precision list
    assert loss.dtype == np.float32          # cross_entropy: the fp32 list
    loss.backward()
    assert w.grad.dtype == np.float32 and x.grad.dtype == np.float32
    # the gradient is the fp32 computation's, up to bf16/fp16 rounding of the operands
    x2, w2 = (cvk.Tensor(t.data, requires_grad=True) for t in (x, w))
    F.cross_entropy(F.linear(x2, w2), target).backward()
    scale = np.abs(w2.grad.data).max()
    err = np.abs(w.grad.data - w2.grad.data).max()
    assert 0 < err < 16 * dt.unit_roundoff * 10 * scale, (err, scale)


def test_other_ops_keep_their_dtype_and_outside_is_untouched():
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    with cvk.autocast("bf16"):
        assert F.relu(x).dtype == np.float32          # on neither list: as given
        assert F.matmul(x, x.T).dtype == BFLOAT16.np
        with cvk.autocast(enabled=False):
            assert F.matmul(x, x.T).dtype == np.float32
    assert F.matmul(x, x.T).dtype == np.float32
    assert cvk.amp.autocast_dtype() is None


def test_integer_arguments_are_never_cast():
    logits = np.zeros((2, 3), BFLOAT16.np)
    with cvk.autocast("bf16"):
        loss = F.cross_entropy(logits, np.array([0, 2]))
    assert loss.dtype == np.float32 and np.isclose(float(loss), np.log(3), rtol=1e-6)


@pytest.mark.parametrize("bad", ["int8", np.float32, "fp32", None, 3])
def test_bad_dtype_is_refused_by_name(bad):
    with pytest.raises(ArgumentError, match="autocast: dtype"):
        with cvk.autocast(bad):
            pass
