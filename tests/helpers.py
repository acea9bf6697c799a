"""The one comparison helper and the finite-difference gradient check used by every test."""
from __future__ import annotations

import numpy as np

from cvkernels.numerics import unit_roundoff


def to_numpy(a):
    """Bring a numpy/CuPy/torch array (or a cvkernels.Tensor) to a numpy array."""
    if a is None:
        return None
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        if hasattr(a, "detach"):          # torch
            a = a.detach().cpu()
        return np.asarray(a.numpy())
    if hasattr(a, "get"):                 # CuPy
        return a.get()
    return np.asarray(a)


def assert_close(actual, expected, *, atol: float, rtol: float, name: str = "result",
                 check_dtype: bool = True) -> float:
    """Assert shape, dtype and |actual - expected| <= atol + rtol*|expected| elementwise.

    Returns the max relative error so callers may report it. NaNs must match position-wise.
    """
    a, e = to_numpy(actual), to_numpy(expected)
    assert a is not None, f"{name}: got None"
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    if check_dtype:
        assert a.dtype == e.dtype, f"{name}: dtype {a.dtype} != expected {e.dtype}"
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    assert np.array_equal(nan_a, nan_e), f"{name}: NaN positions differ"
    inf_e = np.isinf(e64)
    assert np.array_equal(a64[inf_e], e64[inf_e]), f"{name}: infinities differ"
    a64, e64 = np.where(nan_a | inf_e, 0, a64), np.where(nan_e | inf_e, 0, e64)
    err = np.abs(a64 - e64)
    bound = atol + rtol * np.abs(e64)
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{err.size} elements out of tolerance "
            f"(atol={atol}, rtol={rtol}); worst at {i}: got {a64[i]!r}, expected {e64[i]!r}")
    return float((err / np.maximum(np.abs(e64), 1e-30)).max()) if err.size else 0.0


def numerical_grad(f, inputs, grad_out, eps: float = 1e-6):
    """Central-difference gradients of sum(f(*inputs) * grad_out) w.r.t. each float64 input.

    ``inputs`` is a list of float64 arrays (or None, which yields None). ``f`` returns one array.
    """
    grads = []
    for k, x in enumerate(inputs):
        if x is None:
            grads.append(None)
            continue
        assert x.dtype == np.float64, "finite differences need float64 inputs"
        g = np.zeros_like(x)
        flat, gflat = x.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = np.sum(f(*inputs) * grad_out)
            flat[i] = old - eps
            minus = np.sum(f(*inputs) * grad_out)
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def check_grads(f, backward, inputs, *, seed: int = 0, atol: float = 1e-6, rtol: float = 1e-5,
                names=None):
    """Compare ``backward(grad_out)`` (a tuple of gradients) with central differences of ``f``.

    The random upstream gradient makes the check sensitive to every output element.
    """
    rng = np.random.default_rng(seed)
    out = f(*inputs)
    grad_out = rng.standard_normal(out.shape)
    analytic = backward(grad_out)
    numeric = numerical_grad(f, inputs, grad_out)
    names = names or [f"grad[{i}]" for i in range(len(inputs))]
    for name, a, n in zip(names, analytic, numeric):
        if n is None:
            continue
        assert_close(a, n, atol=atol, rtol=rtol, name=name)


def rounding_tol(dtype, expected) -> dict:
    """atol/rtol for a result that is the float64 ``expected`` rounded once to ``dtype``
    (rtol = 2^-p), plus float64 differences in the order of operations (1e-12 of the largest
    magnitude, for sums of < 1e3 terms); float16 subnormals round to 2^-25 absolute."""
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
    dt = np.dtype(dtype)
    rtol = unit_roundoff(dt) if dt != np.float64 else 1e-12
    return dict(atol=1e-12 * scale + (2.0**-25 if dt == np.float16 else 0.0), rtol=rtol)


def assert_rounded(actual, ref64, dtype, name):
    """``actual`` has ``dtype`` and is the float64 reference ``ref64`` rounded once (compared with
    the unrounded reference: rounding both sides could split a tie by one ulp)."""
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype} != {np.dtype(dtype)}"
    assert_close(actual, ref64, check_dtype=False, **rounding_tol(dtype, ref64), name=name)


def run_test_kernel(target, kernel, grid, block, smem, arrays, scalars=()):
    """Launch a test-only kernel (kernels/testing/) by name on numpy arrays, on the simulator
    (``target="sim"``: _cudasim_testing) or a GPU (``"gpu"``: _cuda_testing, the arrays moved
    there and back); returns the arrays after the launch."""
    from cvkernels import _ext
    if target == "sim":
        ext, dev = _ext.sim_testing(), arrays
        ptr = lambda a: a.ctypes.data  # noqa: E731
    else:
        import cupy
        ext, dev = _ext.cuda_testing(), [cupy.asarray(a) for a in arrays]
        ptr = lambda a: a.data.ptr  # noqa: E731
    args = [("ptr", ptr(a)) for a in dev] + list(scalars)
    ext.launch(kernel, list(grid), list(block), smem, 0, args)
    return [a if target == "sim" else a.get() for a in dev]
