"""bench/bench_ops.py without a GPU: its --dry-run (the CPU simulator at tiny sizes) writes the json
and markdown with the expected keys for every bench case the specs declare, the ratio math
holds, and failures are recorded, not fatal."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_ops.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_ops_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_case_names_come_from_the_specs():
    b = load_bench()
    from cvkernels.spec import families
    names = [c[4] for c in b.cases("dry-run")]
    expect = [b.case_name(bn, d, s) for f in families() for bn in f.benches for d in bn.dtypes
              for s in bn.shapes["dry-run"]]
    assert names == expect and len(names) == len(set(names))
    assert "matmul_fp32_64x64x64" in names and "softmax_bf16_9x1001" in names
    full = {c[4] for c in b.cases("full")}
    assert {x["case"] for x in b.bar_specs()} <= full     # every bar names a real case


def test_dry_run_writes_json_with_expected_keys(dry_run):
    _, rep, _ = dry_run
    b = load_bench()
    assert rep["schema"] == "cvkernels-bench/2" and rep["mode"] == "dry-run"
    assert rep["failures"] == [] and rep["ok"] is True, rep["failures"]
    for key in ("env", "timing", "cases", "bars", "notes", "warnings"):
        assert key in rep, key
    for key in ("date_utc", "gpu_name", "python", "numpy", "torch", "results_dir"):
        assert key in rep["env"], key
    assert rep["timing"]["statistic"] == "median"
    assert [c["name"] for c in rep["cases"]] == [c[4] for c in b.cases("dry-run")]
    for case in rep["cases"]:
        impls = {r["impl"]: r for r in case["results"]}
        assert {"cvk-sim", "cvk-sim-rawkernel"} <= set(impls), impls.keys()
        for name in ("cvk-sim", "cvk-sim-rawkernel"):
            r = impls[name]
            assert r["status"] == "ok", r
            assert len(r["times_ms"]) >= rep["timing"]["reps"]
            assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
            assert r["check"]["ok"] is True
        if case["op"] in ("matmul", "matmul_tc"):
            M, N, K = case["shape"]
            assert case["flop"] == 2 * M * N * K
        if "flop" in case:              # compute-bound cases (matmul, conv) report TFLOP/s
            assert case["flop"] > 0 and "bytes" not in case
            assert all(r["tflops"] > 0 for r in case["results"] if r["status"] == "ok")
        else:
            assert "bytes" in case and "copy" in impls and impls["copy"]["check"]["exact"]
            for r in case["results"]:
                if r["status"] == "ok":
                    assert r["gbps"] == pytest.approx(case["bytes"] / (r["median_ms"] * 1e-3) / 1e9)


def test_dry_run_ratio_math(dry_run):
    pytest.importorskip("torch")     # the peers are torch ops: without torch there is no ratio
    _, rep, _ = dry_run
    checked = 0
    for case in rep["cases"]:
        impls = {r["impl"]: r for r in case["results"]}
        peer = case["peer"]
        if peer is None or impls[peer]["status"] != "ok":
            continue   # e.g. torch on CPU has no bf16 view of an ml_dtypes array
        for r in case["results"]:
            if r["role"] != "ours":
                continue
            checked += 1
            assert r["ratio_vs_peer"] == pytest.approx(impls[peer]["median_ms"] / r["median_ms"])
            if "bytes" in case:
                assert r["frac_copy_bw"] == pytest.approx(impls["copy"]["median_ms"] / r["median_ms"])
    assert checked >= 8


def test_dry_run_markdown(dry_run):
    _, rep, md = dry_run
    assert "| case | impl | median ms |" in md
    for case in rep["cases"]:
        assert case["name"] in md
    assert "cvk-sim-rawkernel" in md and "Bars" in md and "status: **OK**" in md


def test_helpers():
    b = load_bench()
    s = b.stats([3.0, 1.0, 2.0, 10.0, 4.0])
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["max_ms"] == 10.0 and s["n"] == 5
    assert b.ratio(2.0, 1.0) == 2.0 and b.ratio(None, 1.0) is None and b.ratio(1.0, 0) is None
    assert b.tflops(2 * 4096 ** 3, 3.0) == pytest.approx(45.8, rel=1e-2)
    assert b.gbps(2 * 8192 * 8192 * 4, 0.284) == pytest.approx(1890, rel=1e-3)
    assert b.L.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_quick_mode_reaches_the_128x128_matmul_tile():
    """--quick must exercise the tile the full-size run uses (issue: it never did)."""
    b = load_bench()
    from cvkernels.device import H100
    from cvkernels.spec import FLOAT32
    from cvkernels.specs.matmul import plan_forward
    quick = [c[3] for c in b.cases("quick") if c[1].op == "matmul"]
    tiles = {plan_forward(H100, FLOAT32, 1, M, N, K, False, False, False).values[1]
             for M, N, K in quick}
    assert (128, 128, 8, 8, 8) in tiles and (64, 64, 8, 4, 4) in tiles


def test_failures_are_recorded_not_fatal(tmp_path, monkeypatch):
    """A path that raises and a result over tolerance: both recorded, the run goes on, exit 1."""
    b = load_bench()
    real = b.cvk_runtimes

    def broken(dev):
        def boom():
            raise RuntimeError("planted launch failure")
        return real(dev)[:1] + [("cvk-broken", boom)]
    monkeypatch.setattr(b, "cvk_runtimes", broken)
    monkeypatch.setattr(b, "fp32_tolerance", lambda bench, shape: {"rel_err": 0.0,
                                                                    "max_rel_err": 0.0})
    rc = b.main(["--dry-run", "--no-torch", "--out", str(tmp_path), "--only",
                 "matmul_fp32_33x47x29"])
    assert rc == 1
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert rep["ok"] is False
    (case,) = rep["cases"]
    res = {r["impl"]: r for r in case["results"]}
    assert res["cvk-broken"]["status"] == "error"
    assert "planted launch failure" in res["cvk-broken"]["error"]
    assert res["cvk-sim"]["status"] == "check_failed" and res["cvk-sim"]["median_ms"] > 0
    assert case["peer"] is None                      # --no-torch: no peer, no ratio
    assert any("--no-torch" in n for n in rep["notes"])
    assert len(rep["failures"]) == 2
    md = (tmp_path / "bench.md").read_text()
    assert "FAILED" in md and "planted launch failure" in md
