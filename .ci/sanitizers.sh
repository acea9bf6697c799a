#!/usr/bin/env bash
# Rebuild the simulator extension under ThreadSanitizer and under Address+UndefinedBehavior
# Sanitizer, then run the simulator kernel tests and the negative controls under each.
# Needs an environment where cvkernels is installed (pybind11, numpy, pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# Every test that runs kernels on the simulator (marker `sim`, which the runtime fixtures and the
# spec matrix carry) plus the negative controls (marker `sanitizer`): no hand-written list, so a
# new kernel family is run under both sanitizers without edits here.
SAN_TESTS="tests/"
# OpenBLAS's own threads synchronise in uninstrumented code: keep numpy single-threaded.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

build() {  # build <thread|address> <dir>
  cmake -S "$ROOT" -B "$2/cmake" -DPython_EXECUTABLE="$(command -v python)" \
    -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DCVK_OUTPUT_DIR="$2" \
    -DCVK_SANITIZE="$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$2/cmake" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" >/dev/null
}

run() {  # run <thread|address> <dir> <preload>
  local rc=0
  CVK_SANITIZER="$1" CVK_SIM_PATH="$2" LD_PRELOAD="$3" \
    TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1" \
    ASAN_OPTIONS="detect_leaks=0" UBSAN_OPTIONS="print_stacktrace=1" \
    python -m pytest -q -rA -p no:cacheprovider -m "sim or sanitizer" $SAN_TESTS || rc=$?
  if [ "$rc" -eq 5 ]; then echo "sanitizers: pytest collected no tests" >&2; return 1; fi
  if [ "$rc" -eq 66 ]; then echo "sanitizers: ThreadSanitizer reported a race (exit 66)" >&2; fi
  return "$rc"
}

echo "-- ThreadSanitizer build"
build thread "$ROOT/build/tsan"
run thread "$ROOT/build/tsan" "$(g++ -print-file-name=libtsan.so)"
echo "-- AddressSanitizer + UndefinedBehaviorSanitizer build"
build address "$ROOT/build/asan"
# libstdc++ preloaded too, so ASan can intercept C++ exceptions thrown from the extension
run address "$ROOT/build/asan" "$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)"
