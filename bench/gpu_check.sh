#!/usr/bin/env bash
# bench/gpu_check.sh: on a CUDA GPU machine (no network needed), build cvkernels in place, run the
# GPU tests, and time every bench case the kernel specs declare beside its peer
# (bench/bench_ops.py). See bench/README.md.
#
#   bash bench/gpu_check.sh            # full sizes
#   bash bench/gpu_check.sh --quick    # small sizes, 3 reps; extra arguments go to bench_ops.py
#
# Output in $OUT, or bench/results/<date>-<gpu>/ when OUT is unset (at most 7 files, all flat):
#   env.txt  build.log  gpu_tests.log  bench.log  bench.json  bench.md  summary.txt
# Every stage runs even when an earlier one fails; summary.txt has each stage's exit code and
# seconds. The script exits 0 when all three stages did, else 1. It stays under 6 minutes:
# each stage has a time limit (CVK_BUILD_LIMIT_S, CVK_TEST_LIMIT_S, CVK_BENCH_LIMIT_S) and the
# bench gets what is left of CVK_TOTAL_LIMIT_S (default 340 s), at least 60 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)

PY="${PYTHON:-python3}"
# the interpreter's own bin/ first: cmake and ninja may be installed only there (pip packages)
PYBIN="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null || true)"
if [[ -n "$PYBIN" ]]; then export PATH="$PYBIN:$PATH"; fi
export PYTHONUNBUFFERED=1
export CVK_CUDA_ARCHS="${CVK_CUDA_ARCHS:-90}"        # Hopper only: halves the nvcc time
export NVIDIA_TF32_OVERRIDE="${NVIDIA_TF32_OVERRIDE:-0}"   # cuBLAS peers: no TF32
export CUPY_TF32=0
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 8)}"
# no make on the image? then Ninja (the CUDA image ships it as a pip package)
if [[ -z "${CMAKE_GENERATOR:-}" ]] && ! command -v make >/dev/null 2>&1 \
    && command -v ninja >/dev/null 2>&1; then
  export CMAKE_GENERATOR=Ninja
fi
# the editable install is also put first on the path, in case pip's editable hook is not seen
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"

BUILD_LIMIT="${CVK_BUILD_LIMIT_S:-150}"
TEST_LIMIT="${CVK_TEST_LIMIT_S:-120}"
TOTAL_LIMIT="${CVK_TOTAL_LIMIT_S:-340}"

if [[ -z "${OUT:-}" ]]; then
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)"
  gpu="$(printf '%s' "${gpu:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' \
         | sed 's/^-*//; s/-*$//')"
  OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d)-${gpu:-unknown-gpu}"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

say() { printf '[gpu_check %3ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
record() {  # stage rc seconds
  printf '%-10s rc=%-4s %4ss\n' "$1" "$2" "$3" | tee -a "$SUMMARY"
}

# ---- 0. what machine is this (read-only queries) ---------------------------------------------
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
  echo "CVK_CUDA_ARCHS=$CVK_CUDA_ARCHS NVIDIA_TF32_OVERRIDE=$NVIDIA_TF32_OVERRIDE" \
       "CMAKE_GENERATOR=${CMAKE_GENERATOR:-default}"
  echo "--- nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "--- nvcc"; (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 || echo "no nvcc"
  echo "--- cmake"; cmake --version 2>&1 | head -n1 || echo "no cmake"
  echo "--- python packages"
  "$PY" - <<'EOF' 2>&1 || true
import importlib
for name in ("numpy", "cupy", "torch", "pybind11", "setuptools", "pytest", "numba"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" cuda={m.version.cuda} cudnn={m.backends.cudnn.version()} " \
                    f"gpu={m.cuda.is_available() and m.cuda.get_device_name(0)}"
        print(f"{name} {getattr(m, '__version__', '?')}{extra}")
    except Exception as e:
        print(f"{name}: not importable ({type(e).__name__}: {e})")
EOF
} > "$OUT/env.txt" 2>&1 || true
say "output in $OUT; GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1 || echo none found)"

# ---- 0b. what the offline machine lacks, from wheels sent along in .whl/ ---------------------
# (bf16 host arrays are ml_dtypes.bfloat16; fetch it here with
#  pip download --python-version 3.12 --only-binary=:all: --no-deps -d .whl ml_dtypes)
if ! "$PY" -c "import ml_dtypes" 2>/dev/null; then
  if ls "$ROOT"/.whl/ml_dtypes-*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --find-links "$ROOT/.whl" ml_dtypes \
      >> "$OUT/env.txt" 2>&1 || say "installing ml_dtypes from .whl/ failed"
  else
    say "ml_dtypes is missing and no wheel is in .whl/: bf16 cases will fail"
  fi
fi

# ---- 1. build in place -----------------------------------------------------------------------
say "1/3 build: pip install --no-build-isolation --no-deps -e . (CVK_CUDA_ARCHS=$CVK_CUDA_ARCHS)"
s=$(date +%s)
set +e
timeout "$BUILD_LIMIT" "$PY" -m pip install --no-build-isolation --no-deps -e . \
  > "$OUT/build.log" 2>&1
build_rc=$?
set -e
record build "$build_rc" "$(( $(date +%s) - s ))"
if [[ $build_rc -ne 0 ]]; then
  say "build FAILED (rc=$build_rc; 124 = over ${BUILD_LIMIT}s); last lines of build.log:"
  tail -n 30 "$OUT/build.log" || true
fi
set +e
"$PY" -c 'from cvkernels import _ext; c = _ext.cuda(); s = _ext.sim()
t = _ext.cuda_testing()
print("cvkernels extensions: _cuda", "OK" if c else "MISSING", "| _cuda_testing", "OK" if t else "MISSING", "| _cudasim", "OK" if s else "MISSING")' \
  2>&1 | tee -a "$OUT/build.log"
set -e

# ---- 2. GPU tests ----------------------------------------------------------------------------
left=$(( TOTAL_LIMIT - ($(date +%s) - T0) - 60 ))     # keep >= 60 s for the bench
limit=$(( left < TEST_LIMIT ? left : TEST_LIMIT ))
if (( limit < 20 )); then limit=20; fi
say "2/3 tests: pytest -m gpu (limit ${limit}s)"
s=$(date +%s)
set +e
timeout "$limit" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests/ 2>&1 \
  | tee "$OUT/gpu_tests.log"
test_rc=${PIPESTATUS[0]}
set -e
record tests "$test_rc" "$(( $(date +%s) - s ))"

# ---- 3. bench --------------------------------------------------------------------------------
left=$(( TOTAL_LIMIT - ($(date +%s) - T0) - 5 ))
limit="${CVK_BENCH_LIMIT_S:-$(( left < 60 ? 60 : left ))}"
say "3/3 bench: bench/bench_ops.py $* (limit ${limit}s)"
s=$(date +%s)
set +e
timeout "$limit" "$PY" bench/bench_ops.py --out "$OUT" "$@" > "$OUT/bench.log" 2>&1
bench_rc=$?
set -e
record bench "$bench_rc" "$(( $(date +%s) - s ))"
if [[ $bench_rc -ne 0 && $bench_rc -ne 1 ]]; then   # 1 = a check failed; the table says which
  say "bench stopped (rc=$bench_rc; 124 = over ${limit}s); last lines of bench.log:"
  tail -n 30 "$OUT/bench.log" || true
fi

# ---- summary (printed last: it is what a remote caller sees) ---------------------------------
record total "-" "$(( $(date +%s) - T0 ))"
echo
echo "===== gpu_tests (tail)"
tail -n 4 "$OUT/gpu_tests.log" 2>/dev/null || true
echo
if [[ -f "$OUT/bench.md" ]]; then
  echo "===== bench.md"
  cat "$OUT/bench.md"
else
  echo "===== no bench.md was written; bench.log tail:"
  tail -n 30 "$OUT/bench.log" 2>/dev/null || true
fi
echo
echo "===== summary ($OUT)"
cat "$SUMMARY"
if [[ $build_rc -eq 0 && $test_rc -eq 0 && $bench_rc -eq 0 ]]; then
  echo "gpu_check: all stages passed"
  exit 0
fi
echo "gpu_check: some stage failed (build=$build_rc tests=$test_rc bench=$bench_rc)"
exit 1
