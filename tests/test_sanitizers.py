"""Negative controls: the sanitizer builds of the simulator must report planted bugs.

.ci/run rebuilds ``_cudasim`` with -fsanitize=thread and with -fsanitize=address,undefined and
runs the kernel tests under each, with CVK_SANITIZER, CVK_SIM_PATH and LD_PRELOAD set. These
tests then launch the test-only kernels of kernels/testing/sanitizer_controls.cuh in a child
process (which inherits that environment) and pass only if the sanitizer reports the planted
fault, and reports nothing for the correct twin kernel. Without a sanitizer build they skip.
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


# (sanitizer, correct twin, planted bug, threads, what the report must say, where)
CONTROLS = [
    ("thread", "reverse_kernel", "reverse_racy_kernel", 1000,
     "WARNING: ThreadSanitizer: data race", "reverse_through_smem<false>"),  # shared buffer race
    ("address", "copy_kernel", "copy_oob_kernel", 1024,
     "ERROR: AddressSanitizer: heap-buffer-overflow", "copy_oob_kernel"),
]


@pytest.mark.parametrize("sanitizer,good_kernel,bad_kernel,threads,report,where", CONTROLS,
                         ids=["tsan-missing-syncthreads", "asan-out-of-bounds-store"])
def test_sanitizer_reports_planted_bug(sanitizer, good_kernel, bad_kernel, threads, report,
                                       where):
    if SANITIZER != sanitizer:
        pytest.skip(f"{sanitizer} sanitizer control; this build is {SANITIZER}")
    good = launch(good_kernel, threads)
    assert good.returncode == 0 and "Sanitizer" not in good.stderr, good.stderr[-3000:]
    bad = launch(bad_kernel, threads)
    assert report in bad.stderr, bad.stderr[-3000:]
    assert where in bad.stderr
    assert bad.returncode != 0
