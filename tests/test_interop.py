"""GPU arrays from other frameworks through the functional API: CuPy arrays, and torch CUDA
tensors (torch out, on torch's current stream, memory from torch's allocator)."""
import numpy as np
import pytest

import cvkernels as cvk
import cvkernels.functional as F
from cvkernels import reference as ref
from helpers import assert_close, to_numpy

GPU_BACKENDS = ["cuda", "rawkernel"]
from cvkernels.numerics import U32


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_cupy_arrays(name):
    cupy = pytest.importorskip("cupy")
    x = np.random.default_rng(0).standard_normal((33, 1025)).astype(np.float32)
    with cvk.backend(name):
        y = F.softmax(cupy.asarray(x), dim=-1)
    assert isinstance(y, cupy.ndarray)
    assert_close(y, ref.softmax_forward(x.astype(np.float64)).astype(np.float32), atol=0,
                 rtol=1033 * U32)


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_torch_cuda_tensors_on_a_side_stream(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    xn = rng.standard_normal((65, 129)).astype(np.float32)
    wn = rng.standard_normal((31, 129)).astype(np.float32)
    x, w = torch.from_numpy(xn).cuda(), torch.from_numpy(wn).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    before = torch.cuda.memory_allocated()
    with torch.cuda.stream(side), cvk.backend(name):
        y = F.log_softmax(x, dim=0)
        z = F.linear(x, w)
        assert torch.cuda.memory_allocated() > before   # outputs came from torch's allocator
    side.synchronize()
    assert isinstance(y, torch.Tensor) and y.is_cuda and isinstance(z, torch.Tensor)
    assert_close(to_numpy(y), ref.log_softmax_forward(xn.astype(np.float64), 0).astype(np.float32),
                 atol=73 * U32, rtol=4 * U32)
    bound = 131 * U32 * (np.abs(xn.astype(np.float64)) @ np.abs(wn.astype(np.float64)).T)
    assert_close(to_numpy(z), ref.linear_forward(xn, wn), atol=bound, rtol=0)
