// fastrnn._core: the compiled backend. The module registers its areas
// (register_recurrent.cc: the cells' kernels and their workspace;
// register_training.cc: Adam and the classifier head) and, here, what
// describes the build and the threads.
// Each entry point converts and checks its arguments with the shared checker
// (checks.h), allocates the outputs, releases the GIL and calls the kernels of
// the ISA path chosen by dispatch.cc. The kernel contract is the one written
// at the top of fastrnn/_reference.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "checks.h"
#include "dispatch.h"
#include "gemm_int8.h"
#include "memory.h"
#include "parallel.h"

namespace py = pybind11;

#ifndef FASTRNN_VERSION
#define FASTRNN_VERSION "unknown"
#endif

namespace fastrnn {
namespace {

py::dict build_info() {
  py::dict d;
  d["version"] = FASTRNN_VERSION;
#if defined(__clang__)
  d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = "gcc " __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
  d["kernel_path"] = kernels().isa;
  // precision "bf16": vdpbf16ps, or the portable products of the same operands
  d["bf16_path"] = kernels().bf16_products;
  // int8 models (fastrnn.frozen): vpdpbusd, vpmaddubsw or portable
  d["int8_products"] = int8_kernels().path;
  d["isa_supported"] = supported_isas();
  d["isa_compiled"] = compiled_isas();
  d["cpu_features"] = cpu_features();
  d["threads"] = get_pool_threads();
  return d;
}

void set_num_threads(py::object n) {
  if (py::isinstance<py::bool_>(n) || !py::isinstance<py::int_>(n))
    throw py::type_error("number of threads must be an int, got " +
                         std::string(py::str(py::type::of(n).attr("__name__"))));
  const long long value = n.cast<long long>();
  if (value < 1 || value > kMaxThreads)
    throw py::value_error("number of threads must be between 1 and " +
                          std::to_string(kMaxThreads) + ", got " + std::to_string(value));
  set_pool_threads(static_cast<int>(value));
}

}  // namespace
}  // namespace fastrnn

PYBIND11_MODULE(_core, m) {
  using namespace fastrnn;
  m.doc() = "fastrnn compiled backend: RNN, LSTM and GRU forward and BPTT kernels";
  // FASTRNN_ISA asking for an unknown path or more than the CPU has fails the
  // import, never a silent fallback. pybind11 turns any error here into an
  // ImportError; its __cause__ is this ValueError, which _backends re-raises.
  try {
    select_isa_from_environment();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    throw py::error_already_set();
  }

  m.attr("name") = "cpp";
  register_recurrent(m);
  register_training(m);
  register_frozen(m);
  m.attr("max_threads") = kMaxThreads;
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        ("Threads the kernels use (1 to " + std::to_string(kMaxThreads) + ").").c_str());
  m.def("get_num_threads", &get_pool_threads);
  m.def("build_info", &build_info, "Facts about this build and the kernel path chosen.");
  m.def("release_cached_memory", &release_cached_memory,
        "Return the freed large buffers kept for reuse to the system; the bytes released.");
  m.def("_use_openmp_runtime",
        [](std::uintptr_t parallel, std::uintptr_t thread_num, std::uintptr_t num_threads) {
          OpenMPRuntime openmp;
          if (parallel != 0 && thread_num != 0 && num_threads != 0) {
            openmp.parallel = reinterpret_cast<decltype(openmp.parallel)>(parallel);
            openmp.thread_num = reinterpret_cast<decltype(openmp.thread_num)>(thread_num);
            openmp.num_threads = reinterpret_cast<decltype(openmp.num_threads)>(num_threads);
          }
          use_openmp_runtime(openmp);
        },
        py::arg("parallel"), py::arg("thread_num"), py::arg("num_threads"),
        "fastrnn.torch only: the addresses of a loaded OpenMP runtime's GOMP_parallel, "
        "omp_get_thread_num and omp_get_num_threads, whose team then runs the kernels' "
        "jobs (0, 0, 0: the pool's own threads again).");
  m.def("_set_isa", [](const std::string& name) { select_isa(name); }, py::arg("name"),
        "Tests only: switch the kernel path (generic, avx2, avx512, avx512_vnni, avx512_bf16) "
        "in this process.");
}
