"""Build cvkernels: setup.py drives CMake for the two extensions.

* ``_cudasim`` (g++, the CPU simulator) is always built.
* ``_cuda`` (nvcc) is built when a CUDA toolkit is found: ``CUDA_HOME``, ``/usr/local/cuda`` or
  ``nvcc`` on PATH. ``CVK_CUDA_ARCHS`` overrides the architectures (default ``80;90``).
* ``CVK_SANITIZE=thread|address`` builds the simulator extension under that sanitizer.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def find_nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self):
        import pybind11

        out_dir = Path(self.get_ext_fullpath("cvkernels._cudasim")).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        nvcc = None if os.environ.get("CVK_NO_CUDA") else find_nvcc()
        args = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCVK_OUTPUT_DIR={out_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCVK_SANITIZE={os.environ.get('CVK_SANITIZE', '')}",
        ]
        if nvcc:
            args += ["-DCVK_WITH_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
        else:
            print("cvkernels: no CUDA toolkit found (CUDA_HOME, /usr/local/cuda, nvcc on PATH); "
                  "the CUDA extension _cuda was skipped, the simulator extension is built")
        subprocess.check_call(args)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", jobs])


class BuildPyWithKernels(build_py):
    """Ship kernels/ inside the package (the rawkernel backend compiles it at run time). An
    editable install reads it from the checkout instead."""

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            shutil.copytree(ROOT / "kernels", Path(self.build_lib) / "cvkernels" / "kernels",
                            dirs_exist_ok=True)


setup(
    ext_modules=[CMakeExtension("cvkernels._cudasim")],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithKernels},
)
