"""``cvk demo digits``: train a small ConvNet end to end with the cvkernels autograd API.

The data is scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn: no
download), split 75/25 stratified with a fixed seed. The network is
conv(1->16, 3x3) - batchnorm - relu - maxpool(2), conv(16->32, 3x3) - batchnorm - relu -
maxpool(2), linear(128->10), trained with Adam and a cosine learning-rate schedule.

``--dtype bf16`` (or fp16) trains with mixed precision: fp32 master weights, updated by the
optimiser, and :func:`cvkernels.autocast` running the convolutions and the linear layer in 16 bits
(the other ops take what they are given; the loss is computed in fp32).

``--backend`` picks where the operators run: ``cpu`` (NumPy references) or ``sim`` (the CUDA
kernels on the CPU simulator) on numpy arrays, ``cuda`` or ``rawkernel`` on CuPy arrays. When an
operator has no kernel on the chosen backend the demo says so in one line and exits with code 2;
it never moves data to another device behind your back.

Entry points: ``cvkernels.demo.main(argv) -> exit code`` (what ``cvk demo digits`` calls) and
``cvkernels.demo.run_digits(...) -> dict`` for use from Python.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time

import numpy as np

from . import functional as F
from . import nn, optim
from ._backend import BACKENDS, DEVICE_OF, backend as _backend_ctx
from .amp import autocast
from .autograd import Tensor, no_grad
from .errors import ArgumentError

__all__ = ["DigitsNet", "load_digits_split", "run_digits", "main", "BackendUnavailable"]


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here, or lacks a kernel the demo needs."""


class DigitsNet(nn.Module):
    """conv-bn-relu-pool twice, then linear: ``[N, 1, 8, 8] -> [N, 10]`` logits."""

    def __init__(self, width=16, generator=None):
        super().__init__()
        g = generator
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, generator=g), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, generator=g), nn.BatchNorm2d(2 * width),
            nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(2 * width * 2 * 2, 10, generator=g)

    def forward(self, x):
        """Logits of a batch of 8x8 images."""
        return self.classifier(self.flatten(self.features(x)))


def load_digits_split(seed: int = 0, test_size: float = 0.25):
    """``(x_train, y_train, x_test, y_test)``: float32 ``[N, 1, 8, 8]`` images scaled to [0, 1]
    and int64 labels, stratified split with ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed,
                                          stratify=y)
    return xtr, ytr, xte, yte


def _array_module(backend):
    if backend is not None and DEVICE_OF[backend] == "gpu":
        try:
            import cupy
        except ImportError:
            raise BackendUnavailable(f"backend {backend!r} needs CuPy, which is not installed") \
                from None
        return cupy
    return np


def _check_backend(backend):
    if backend is None:
        return
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from . import backends
    if not backends.get(backend).available():
        avail = ", ".join(b for b in BACKENDS if backends.get(b).available())
        raise BackendUnavailable(f"backend {backend!r} is not available here "
                                 f"(available: {avail})")


DTYPES = ("fp32", "bf16", "fp16")


def _check_args(*, epochs, batch_size, lr, seed, out_png, dtype):
    """Refuse bad settings before any work (a full epoch must not run before a bad ``--out``
    is found). Raises ArgumentError naming the argument."""
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) \
            or not math.isfinite(lr) or lr <= 0:
        raise ArgumentError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ArgumentError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if dtype not in DTYPES:
        raise ArgumentError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if out_png is not None:
        out = os.fspath(out_png)
        if not out.lower().endswith(".png"):
            raise ArgumentError(f"out must be a .png path (the curves are a PNG image), got {out!r}")
        folder = os.path.dirname(os.path.abspath(out))
        if os.path.isdir(out):
            raise ArgumentError(f"out is a directory: {out!r}")
        if not os.path.isdir(folder):
            raise ArgumentError(f"out: directory {folder!r} does not exist")
        if not os.access(folder, os.W_OK):
            raise ArgumentError(f"out: directory {folder!r} is not writable")
    from ._backend import chosen
    try:
        chosen()            # a bad CVK_BACKEND is reported now, not at the first op
    except ValueError as e:
        raise ArgumentError(str(e)) from None


def _evaluate(model, x, y, batch_size):
    model.eval()
    loss_sum, correct = 0.0, 0
    with no_grad():
        for i in range(0, len(y), batch_size):
            xb, yb = Tensor(x[i:i + batch_size]), y[i:i + batch_size]
            logits = model(xb)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum").item())
            correct += int((logits.data.argmax(axis=1) == yb).sum())
    model.train()
    return loss_sum / len(y), correct / len(y)


def _plot(history, out_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = np.arange(1, len(history["train_loss"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, history["train_loss"], "o-", label="train")
    a.plot(ep, history["test_loss"], "s-", label="test")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.set_title("loss")
    a.legend()
    b.plot(ep, np.array(history["train_acc"]) * 100, "o-", label="train")
    b.plot(ep, np.array(history["test_acc"]) * 100, "s-", label="test")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy (%)")
    b.set_title("accuracy")
    b.legend()
    fig.suptitle("cvkernels: ConvNet on sklearn digits")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def run_digits(backend=None, epochs: int = 8, out_png: str | None = "digits_demo.png",
               seed: int = 0, batch_size: int = 32, lr: float = 0.01, limit: int | None = None,
               progress: bool = True, log=print, dtype: str = "fp32") -> dict:
    """Train :class:`DigitsNet` on the digits and return its history.

    ``backend``: None (automatic), 'cpu', 'sim', 'cuda' or 'rawkernel'. ``limit`` trains on the
    first ``limit`` training images only (quick checks). ``out_png``: where to write the loss and
    accuracy curves (None: no plot). ``log`` receives one line per epoch. ``dtype``: 'fp32', or
    'bf16' / 'fp16' for mixed precision (fp32 master weights, :func:`cvkernels.autocast`).

    Returns ``{'history': {...}, 'test_acc': float, 'seconds': float, 'png': path or None}``.
    Raises :class:`BackendUnavailable` when the backend cannot run here, and NotImplementedError
    (from the backend) when an operator has no kernel there.
    """
    _check_args(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out_png=out_png,
                dtype=dtype)
    _check_backend(backend)
    xp = _array_module(backend)
    xtr, ytr, xte, yte = load_digits_split(seed)
    if limit is not None:
        xtr, ytr = xtr[:limit], ytr[:limit]
    xtr, ytr, xte, yte = (xp.asarray(a) for a in (xtr, ytr, xte, yte))
    rng = np.random.default_rng(seed)
    model = DigitsNet(generator=np.random.default_rng(seed))
    if xp is not np:
        model.to("cuda")
    opt = optim.Adam(model.parameters(), lr=lr)
    steps = -(-len(ytr) // batch_size)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs * steps)
    history = {k: [] for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr")}
    try:
        from tqdm import tqdm
    except ImportError:      # progress bar is a nicety
        tqdm = None
    ctx = _backend_ctx(backend) if backend is not None else contextlib.nullcontext()
    amp = (lambda: autocast(dtype)) if dtype != "fp32" else contextlib.nullcontext
    t0 = time.perf_counter()
    with ctx:
        for epoch in range(1, epochs + 1):
            order = xp.asarray(rng.permutation(len(ytr)))
            batches = range(steps)
            bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", leave=False, unit="batch",
                       disable=not progress, file=sys.stderr) if tqdm else batches
            loss_sum, correct = 0.0, 0
            for i in bar:
                idx = order[i * batch_size:(i + 1) * batch_size]
                xb, yb = Tensor(xtr[idx]), ytr[idx]
                with amp():
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.item()) * len(idx)
                correct += int((logits.data.argmax(axis=1) == yb).sum())
                if tqdm and progress:
                    bar.set_postfix(loss=f"{float(loss.item()):.3f}")
            with amp():
                te_loss, te_acc = _evaluate(model, xte, yte, 256)
            history["train_loss"].append(loss_sum / len(ytr))
            history["train_acc"].append(correct / len(ytr))
            history["test_loss"].append(te_loss)
            history["test_acc"].append(te_acc)
            history["lr"].append(sched.get_last_lr()[0])
            log(f"epoch {epoch:2d}/{epochs}  train loss {history['train_loss'][-1]:.4f}  "
                f"train acc {100 * history['train_acc'][-1]:5.1f}%  test loss {te_loss:.4f}  "
                f"test acc {100 * te_acc:5.1f}%  ({time.perf_counter() - t0:.1f} s)")
    seconds = time.perf_counter() - t0
    if out_png:
        _plot(history, out_png)
    return {"history": history, "test_acc": history["test_acc"][-1], "seconds": seconds,
            "png": out_png}


def build_parser(parser=None):
    """The argparse parser of ``cvk demo digits`` (pass a sub-parser to fill it in)."""
    p = parser or argparse.ArgumentParser(
        prog="cvk demo digits",
        description="Train a small ConvNet on scikit-learn's 8x8 digits with cvkernels' "
                    "autograd; prints each epoch and writes a PNG of the curves.")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="where operators run (default: cpu for numpy data)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="fp32, or bf16/fp16 mixed precision with fp32 master weights")
    p.add_argument("--out", default="digits_demo.png", help="PNG of loss/accuracy curves")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv=None) -> int:
    """Run the demo from command-line arguments; returns the exit code: 0 ok; 1 training
    diverged (a non-finite loss); 2 a bad argument, or the backend cannot run it (one line on
    stderr, as argparse does)."""
    args = build_parser().parse_args(argv)
    settings = dict(epochs=args.epochs, out_png=args.out, seed=args.seed,
                    batch_size=args.batch_size, lr=args.lr, dtype=args.dtype)
    try:
        _check_args(**settings)
        res = run_digits(backend=args.backend, progress=not args.no_progress, **settings)
    except (NotImplementedError, BackendUnavailable, ArgumentError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"cvk demo digits: error: {msg}", file=sys.stderr)
        return 2
    if not math.isfinite(res["history"]["train_loss"][-1]):
        print(f"cvk demo digits: error: training diverged (loss "
              f"{res['history']['train_loss'][-1]}); try a smaller --lr", file=sys.stderr)
        return 1
    print(f"test accuracy {100 * res['test_acc']:.2f}% after {args.epochs} epochs "
          f"({args.dtype}, backend {args.backend or 'cpu'}) in {res['seconds']:.1f} s; "
          f"curves written to {res['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
