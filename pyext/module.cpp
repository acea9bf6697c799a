// module.cpp: the pybind11 module over one kernel registry. Built four times, by CMake:
//   _cudasim           the library's kernels on the CPU simulator (g++ -DCVK_SIM)
//   _cuda              the same kernels from nvcc
//   _cudasim_testing   test-only kernels (kernels/testing/) on the simulator
//   _cuda_testing      the same from nvcc
// CVK_MODULE_NAME picks the name. Everything here is generic: kernels are registered by the
// generated instantiation files (pyext/gen_instantiations.py), and launched by name with a plan
// (grid, block, shared memory) computed in Python from the kernel's spec.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#include "registry.h"

namespace py = pybind11;

namespace {

cvk::Dim to_dim(const std::vector<unsigned>& v, const char* what) {
  if (v.empty() || v.size() > 3)
    throw std::invalid_argument(std::string("launch: ") + what + " must have 1 to 3 entries");
  cvk::Dim d;
  d.x = v[0];
  if (v.size() > 1) d.y = v[1];
  if (v.size() > 2) d.z = v[2];
  return d;
}

// Arguments arrive as (kind, value) pairs, kind in {"ptr", "i32", "i64", "f32", "f64"}.
std::vector<cvk::Arg> to_args(const std::vector<std::tuple<std::string, py::object>>& raw) {
  std::vector<cvk::Arg> out;
  out.reserve(raw.size());
  for (const auto& [kind, v] : raw) {
    if (kind == "ptr") out.push_back(cvk::Arg::ptr(v.cast<std::uintptr_t>()));
    else if (kind == "i64") out.push_back(cvk::Arg::i64(v.cast<long long>()));
    else if (kind == "i32") out.push_back(cvk::Arg::i32(v.cast<int>()));
    else if (kind == "f32") out.push_back(cvk::Arg::f32(v.cast<float>()));
    else if (kind == "f64") out.push_back(cvk::Arg::f64(v.cast<double>()));
    else throw std::invalid_argument("launch: unknown argument kind '" + kind + "'");
  }
  return out;
}

#if CVK_IS_SIM
// Runs Python's pending signal handlers (main thread only, as Python does); true when one
// raised, its exception then being set on this thread.
bool poll_signals() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}
#endif

}  // namespace

PYBIND11_MODULE(CVK_MODULE_NAME, m) {
  m.doc() = "cvkernels kernel registry (" CVK_BACKEND_DOC "): launch a registered kernel by name";
  m.attr("SIMULATOR") = py::bool_(CVK_IS_SIM);

  m.def("kernel_names", [] {
    std::vector<std::string> names;
    for (const auto& kv : cvk::registry()) names.push_back(kv.first);
    return names;
  }, "Every registered kernel instantiation, by name expression.");

  m.def("kernel_signature", [](const std::string& name) {
    return cvk::find_kernel(name).signature;
  }, py::arg("name"), "The argument kinds of a registered kernel, from its C++ parameter types.");

  m.def("launch", [](const std::string& kernel, const std::vector<unsigned>& grid,
                     const std::vector<unsigned>& block, std::size_t smem, std::uintptr_t stream,
                     const std::vector<std::tuple<std::string, py::object>>& args,
                     std::size_t max_dynamic_smem) {
    cvk::LaunchConfig c;
    c.grid = to_dim(grid, "grid");
    c.block = to_dim(block, "block");
    c.smem = smem;
    c.max_dynamic_smem = max_dynamic_smem;
    auto a = to_args(args);
    const auto& entry = cvk::find_kernel(kernel);
#if CVK_IS_SIM
    // Ctrl-C: the simulator polls between blocks; a pending signal's handler runs (with the
    // GIL) and its exception (KeyboardInterrupt) stops the launch and is raised here.
    bool interrupted = false;
    {
      py::gil_scoped_release release;
      cvk::sim::t_launch_poll = &poll_signals;
      try {
        entry.launch(c, stream, a);
      } catch (const cvk::sim::Interrupted&) {
        interrupted = true;
      } catch (...) {
        cvk::sim::t_launch_poll = nullptr;
        throw;
      }
      cvk::sim::t_launch_poll = nullptr;
    }
    if (interrupted) {
      if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
      throw py::error_already_set();
    }
#else
    py::gil_scoped_release release;
    entry.launch(c, stream, a);
#endif
  }, py::arg("kernel"), py::arg("grid"), py::arg("block"), py::arg("smem"), py::arg("stream"),
     py::arg("args"), py::arg("max_dynamic_smem") = 48 * 1024,
     "Launch a registered kernel by name with typed (kind, value) arguments on `stream`. "
     "max_dynamic_smem is the kernel's MaxDynamicSharedMemorySize attribute (the opt-in).");
}
