// module.cpp: the pybind11 module, built twice: _cuda (kernels from nvcc) and _cudasim (the
// same kernels on the CPU simulator). CVK_MODULE_NAME picks the name.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#include "launchers.h"
#include "plans.h"
#include "registry.h"

namespace py = pybind11;
using cvk::Arg;
using cvk::Plan;

namespace {

py::tuple dim_tuple(const cvk::Dim& d) { return py::make_tuple(d.x, d.y, d.z); }

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
std::vector<Arg> to_args(const std::vector<std::tuple<std::string, py::object>>& raw) {
  std::vector<Arg> out;
  for (const auto& [kind, v] : raw) {
    if (kind == "ptr") out.push_back(Arg::ptr(v.cast<std::uintptr_t>()));
    else if (kind == "i64") out.push_back(Arg::i64(v.cast<long long>()));
    else if (kind == "i32") out.push_back(Arg::i32(v.cast<int>()));
    else if (kind == "f32") out.push_back(Arg::f32(v.cast<float>()));
    else if (kind == "f64") out.push_back(Arg::f64(v.cast<double>()));
    else throw std::invalid_argument("launch: unknown argument kind '" + kind + "'");
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(CVK_MODULE_NAME, m) {
  m.doc() = "cvkernels launchers (" CVK_BACKEND_DOC ")";
  m.attr("SIMULATOR") = py::bool_(CVK_IS_SIM);

  py::class_<Plan>(m, "Plan", py::module_local(), "Launch plan: kernel name expression, source file, grid, block, "
                              "dynamic shared memory bytes.")
      .def_readonly("kernel", &Plan::kernel)
      .def_readonly("source", &Plan::source)
      .def_property_readonly("grid", [](const Plan& p) { return dim_tuple(p.grid); })
      .def_property_readonly("block", [](const Plan& p) { return dim_tuple(p.block); })
      .def_readonly("smem", &Plan::smem)
      .def("__repr__", [](const Plan& p) {
        return "Plan(" + p.kernel + ", grid=(" + std::to_string(p.grid.x) + "," +
               std::to_string(p.grid.y) + "," + std::to_string(p.grid.z) + "), block=(" +
               std::to_string(p.block.x) + "," + std::to_string(p.block.y) + "," +
               std::to_string(p.block.z) + "), smem=" + std::to_string(p.smem) + ")";
      });

  m.def("plan_matmul_forward", &cvk::plan_matmul_forward, py::arg("batch"), py::arg("M"),
        py::arg("N"), py::arg("K"), py::arg("trans_a"), py::arg("trans_b"), py::arg("has_bias"));
  m.def("plan_softmax_forward", &cvk::plan_softmax_forward, py::arg("rows"), py::arg("cols"),
        py::arg("log"), py::arg("aligned16"));
  m.def("plan_softmax_backward", &cvk::plan_softmax_backward, py::arg("rows"), py::arg("cols"),
        py::arg("log"), py::arg("aligned16"));

  m.def("kernel_names", [] {
    std::vector<std::string> names;
    for (const auto& kv : cvk::registry()) names.push_back(kv.first);
    return names;
  }, "Every registered kernel instantiation, by name expression.");

  m.def("launch", [](const std::string& kernel, const std::vector<unsigned>& grid,
                     const std::vector<unsigned>& block, std::size_t smem, std::uintptr_t stream,
                     const std::vector<std::tuple<std::string, py::object>>& args) {
    Plan p;
    p.kernel = kernel;
    p.grid = to_dim(grid, "grid");
    p.block = to_dim(block, "block");
    p.smem = smem;
    auto a = to_args(args);
    py::gil_scoped_release release;
    cvk::launch_by_name(kernel, p, stream, a);
  }, py::arg("kernel"), py::arg("grid"), py::arg("block"), py::arg("smem"), py::arg("stream"),
     py::arg("args"), "Launch a registered kernel by name with typed (kind, value) arguments.");

  m.def("launch_matmul_forward", [](std::uintptr_t a, std::uintptr_t b, std::uintptr_t bias,
                                    std::uintptr_t c, long long batch, long long M, long long N,
                                    long long K, long long stride_a, long long stride_b,
                                    bool trans_a, bool trans_b, std::uintptr_t stream) {
    py::gil_scoped_release release;
    cvk::launch_matmul_forward(a, b, bias, c, batch, M, N, K, stride_a, stride_b, trans_a,
                               trans_b, stream);
  }, py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("c"), py::arg("batch"), py::arg("M"),
     py::arg("N"), py::arg("K"), py::arg("stride_a"), py::arg("stride_b"), py::arg("trans_a"),
     py::arg("trans_b"), py::arg("stream") = 0);
  m.def("launch_softmax_forward", [](std::uintptr_t x, std::uintptr_t y, long long rows,
                                     long long cols, bool log, std::uintptr_t stream) {
    py::gil_scoped_release release;
    cvk::launch_softmax_forward(x, y, rows, cols, log, stream);
  }, py::arg("x"), py::arg("y"), py::arg("rows"), py::arg("cols"), py::arg("log"),
     py::arg("stream") = 0);
  m.def("launch_softmax_backward", [](std::uintptr_t g, std::uintptr_t y, std::uintptr_t dx,
                                      long long rows, long long cols, bool log,
                                      std::uintptr_t stream) {
    py::gil_scoped_release release;
    cvk::launch_softmax_backward(g, y, dx, rows, cols, log, stream);
  }, py::arg("grad_out"), py::arg("y"), py::arg("grad_in"), py::arg("rows"), py::arg("cols"),
     py::arg("log"), py::arg("stream") = 0);
}
