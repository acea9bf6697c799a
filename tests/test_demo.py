"""The end-to-end demo: a short training run, and the one-line refusal of a backend without
the kernels it needs."""
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from cvkernels import backends, demo  # noqa: E402


def test_short_training_run_learns_and_writes_png(tmp_path):
    png = tmp_path / "curves.png"
    lines = []
    res = demo.run_digits(epochs=2, limit=600, out_png=str(png), seed=0, progress=False,
                          log=lines.append)
    h = res["history"]
    # seed 0 reaches 94.7% test / 94.0% train accuracy (seed 1: 93.6% / 94.8%); chance is 10%.
    # No wall-clock bound here: speed is measured by the benchmarks, not by tests.
    assert res["test_acc"] > 0.88, h
    assert res["test_acc"] == h["test_acc"][-1]
    assert h["train_acc"][-1] > 0.85, h
    assert h["train_loss"][1] < 0.6 * h["train_loss"][0], h
    assert h["test_loss"][1] < h["test_loss"][0] and h["test_loss"][1] < 0.8, h
    assert all(len(v) == 2 for v in h.values()), h
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(lines) == 2 and "test acc" in lines[-1]


def test_main_runs_and_returns_zero(tmp_path, capsys):
    png = tmp_path / "m.png"
    rc = demo.main(["--epochs", "1", "--out", str(png), "--no-progress", "--backend", "cpu"])
    assert rc == 0 and png.exists()
    out = capsys.readouterr().out
    assert "epoch  1/1" in out and "test accuracy" in out


def test_backend_without_kernel_stops_with_one_line(tmp_path, capsys, monkeypatch):
    sim = backends.get("sim")
    if not sim.available():
        pytest.skip("the sim backend (_cudasim extension) is not built here")
    from cvkernels.backends import kernel_ops  # noqa: F401  (fills the tables first)
    monkeypatch.setattr(sim, "table", {})      # as if no op had a kernel yet
    rc = demo.main(["--backend", "sim", "--epochs", "1", "--out", str(tmp_path / "x.png"),
                    "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("cvk demo digits: ") and "'sim' has no CUDA kernel" in err
    assert not (tmp_path / "x.png").exists()


def test_unavailable_gpu_backend_stops_with_one_line(capsys):
    if backends.get("rawkernel").available():
        pytest.skip("a GPU is present: rawkernel is available")
    rc = demo.main(["--backend", "rawkernel", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "rawkernel" in err and ("not available" in err or "CuPy" in err)


@pytest.mark.parametrize("argv, needle", [
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
    (["--batch-size", "-5"], "batch_size must be a positive integer"),
    (["--lr", "nan"], "lr must be a positive finite number"),
    (["--lr", "-1"], "lr must be a positive finite number"),
    (["--seed", "-1"], "seed must be an integer"),
    (["--out", "/nonexistent/x.png"], "does not exist"),
    (["--out", "curves.txt"], "must be a .png path"),
])
def test_bad_arguments_stop_before_training_with_one_line(argv, needle, capsys, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("training started before the arguments were checked")
    monkeypatch.setattr(demo, "load_digits_split", no_training)
    rc = demo.main(argv + ["--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cvk demo digits: error: "), err
    assert needle in err, err


def test_bad_cvk_backend_variable_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("CVK_BACKEND", "bogus")
    rc = demo.main(["--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "CVK_BACKEND" in err, err


def test_out_directory_is_refused(tmp_path, capsys):
    rc = demo.main(["--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "out" in err, err


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_digits_trains_on_the_kernels_alone_on_the_simulator(dtype, monkeypatch):
    """The demo's ConvNet on backend 'sim': every forward and backward op runs on a CUDA kernel
    (an op without one would raise NotImplementedError; nothing falls back to 'cpu'), and a
    short run learns. The full run (8 epochs, all 1347 images) reaches 98.0% in both dtypes:
    see bench/results/2026-11-26-digits-demo-sim.md."""
    sim = backends.get("sim")
    if not sim.available():
        pytest.skip("the sim backend (_cudasim extension) is not built here")
    from cvkernels.backends.runtime import Runtime
    launched, launch = set(), Runtime.launch

    def spy(self, plan, **args):
        launched.add(plan.kernel.name)
        return launch(self, plan, **args)
    monkeypatch.setattr(Runtime, "launch", spy)
    res = demo.run_digits(backend="sim", epochs=1, limit=320, out_png=None, seed=0,
                          progress=False, log=lambda _: None, dtype=dtype)
    # seed 0 reaches 48.7% (fp32) after this one short epoch; chance is 10%
    assert res["test_acc"] > 0.35, res["history"]
    families = {name.split("_kernel")[0].split("<")[0] for name in launched}
    for needle in ("conv2d", "batch_norm", "activation", "max_pool2d", "matmul",
                   "cross_entropy"):
        assert any(needle in f for f in families), (needle, sorted(families))
