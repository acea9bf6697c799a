"""Negative controls: the sanitizer builds of the simulator must report planted bugs.

.ci/run rebuilds ``_cudasim`` with -fsanitize=thread and with -fsanitize=address,undefined and
runs the kernel tests under each, with CVK_SANITIZER, CVK_SIM_PATH and LD_PRELOAD set. These
tests then launch the test-only kernels of kernels/testing/sanitizer_controls.cuh in child
processes (which inherit that environment) and pass only if the sanitizer reports the planted
fault in every run, and reports nothing for the correct twin kernel in any. The first report of
each control is printed, so the CI log (pytest -rA) keeps it. Without a sanitizer build they skip.
"""
import os
import subprocess
import sys
import textwrap

import pytest

SANITIZER = os.environ.get("CVK_SANITIZER")
pytestmark = [
    pytest.mark.sanitizer,
    pytest.mark.skipif(not SANITIZER or not os.environ.get("CVK_SIM_PATH"),
                       reason="needs a sanitizer build of _cudasim (run by .ci/run)"),
]

LAUNCH = textwrap.dedent("""
    import sys
    import numpy as np
    from cvkernels import _ext
    kernel, threads = sys.argv[1], int(sys.argv[2])
    n = 1000
    x = np.arange(n, dtype=np.float32)
    y = np.zeros(n, dtype=np.float32)
    _ext.sim_testing().launch(kernel, [1], [threads], 0, 0,
                      [("ptr", x.ctypes.data), ("ptr", y.ctypes.data), ("i64", n)])
    print("finished", kernel)
""")


def launch(kernel, threads):
    return subprocess.run([sys.executable, "-c", LAUNCH, kernel, str(threads)],
                          capture_output=True, text=True, timeout=300)


# Each control runs in this many fresh processes (a sanitizer reports a given race once per
# process): 3 in CI, 20 for the record (CVK_SANITIZER_REPEATS=20 .ci/sanitizers.sh).
REPEATS = int(os.environ.get("CVK_SANITIZER_REPEATS", "3"))

# (sanitizer, correct twin, planted bug, threads, what the report must say, where)
CONTROLS = [
    ("thread", "reverse_kernel", "reverse_racy_kernel", 1000,
     "WARNING: ThreadSanitizer: data race", "reverse_through_smem<false>"),  # shared buffer race
    ("thread", "warp_swap_kernel", "warp_swap_racy_kernel", 1024,
     "WARNING: ThreadSanitizer: data race", "warp_swap_through_smem<false>"),  # lanes of a warp
    ("address", "copy_kernel", "copy_oob_kernel", 1024,
     "ERROR: AddressSanitizer: heap-buffer-overflow", "copy_oob_kernel"),
]


def report_excerpt(stderr, marker, lines=40):
    """The sanitizer's report from `marker` on, for the test log."""
    i = stderr.find(marker)
    return "\n".join(stderr[i:].splitlines()[:lines]) if i >= 0 else stderr[-3000:]


@pytest.mark.parametrize("sanitizer,good_kernel,bad_kernel,threads,report,where", CONTROLS,
                         ids=["tsan-missing-syncthreads", "tsan-missing-syncwarp",
                              "asan-out-of-bounds-store"])
def test_sanitizer_reports_planted_bug(sanitizer, good_kernel, bad_kernel, threads, report,
                                       where):
    if SANITIZER != sanitizer:
        pytest.skip(f"{sanitizer} sanitizer control; this build is {SANITIZER}")
    caught, clean, first = 0, 0, None
    for _ in range(REPEATS):
        good = launch(good_kernel, threads)
        assert good.returncode == 0 and "Sanitizer" not in good.stderr, good.stderr[-3000:]
        assert f"finished {good_kernel}" in good.stdout
        clean += 1
        bad = launch(bad_kernel, threads)
        assert report in bad.stderr, bad.stderr[-3000:]
        assert where in bad.stderr, report_excerpt(bad.stderr, report)
        assert bad.returncode != 0
        caught += 1
        first = first or report_excerpt(bad.stderr, report)
    print(f"{bad_kernel}: reported in {caught}/{REPEATS} runs; "
          f"{good_kernel}: clean in {clean}/{REPEATS} runs. First report:\n{first}")
