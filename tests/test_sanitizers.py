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
    _ext.sim().launch(kernel, [1], [threads], 0, 0,
                      [("ptr", x.ctypes.data), ("ptr", y.ctypes.data), ("i64", n)])
    print("finished", kernel)
""")


def launch(kernel, threads):
    return subprocess.run([sys.executable, "-c", LAUNCH, kernel, str(threads)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(SANITIZER != "thread", reason="ThreadSanitizer control")
def test_tsan_reports_missing_syncthreads():
    good = launch("reverse_kernel", 1000)
    assert good.returncode == 0 and "ThreadSanitizer" not in good.stderr, good.stderr[-3000:]
    bad = launch("reverse_racy_kernel", 1000)
    assert "WARNING: ThreadSanitizer: data race" in bad.stderr, bad.stderr[-3000:]
    assert "reverse_through_smem<false>" in bad.stderr  # the race is in the kernel's shared buffer
    assert bad.returncode != 0


@pytest.mark.skipif(SANITIZER != "address", reason="AddressSanitizer control")
def test_asan_reports_out_of_bounds_store():
    good = launch("copy_kernel", 1024)
    assert good.returncode == 0 and "AddressSanitizer" not in good.stderr, good.stderr[-3000:]
    bad = launch("copy_oob_kernel", 1024)
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in bad.stderr, bad.stderr[-3000:]
    assert "copy_oob_kernel" in bad.stderr
    assert bad.returncode != 0 and "finished" not in bad.stdout
